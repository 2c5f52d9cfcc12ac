//! Manifests (get, resolve, put, delete) and the listings that follow `Link` (tags, the
//! catalog).

use super::*;

impl Registry {
    /// A manifest by tag or digest; its digest is checked when asked for by digest.
    ///
    /// # Errors
    /// The registry refuses (`is_not_found` when there is none) or the digest differs.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<Manifest> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let accept = MANIFEST_TYPES.join(", ");
        let response = self
            .send(
                Method::GET,
                &url,
                &repo_scope(repository, "pull"),
                &[],
                &|r| r.header(ACCEPT, accept.clone()),
            )
            .await?;
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(transport(Method::GET, &url))?
            .to_vec();
        let digest = Digest::of(&bytes);
        if let Ok(wanted) = reference.parse::<Digest>()
            && wanted != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {repository}@{reference}"),
                expected: wanted,
                actual: digest,
            });
        }
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The digest a tag (or digest) resolves to, `None` when there is none.
    ///
    /// # Errors
    /// The request fails.
    pub async fn resolve(&self, repository: &str, reference: &str) -> Result<Option<Digest>> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let accept = MANIFEST_TYPES.join(", ");
        let response = self
            .send(
                Method::HEAD,
                &url,
                &repo_scope(repository, "pull"),
                &[StatusCode::NOT_FOUND],
                &|r| r.header(ACCEPT, accept.clone()),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // The header is optional for HEAD in the distribution spec: without it, the manifest
        // itself is fetched and its digest computed.
        let Some(digest) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        else {
            return self
                .get_manifest(repository, reference)
                .await
                .map(|m| Some(m.digest));
        };
        digest
            .parse()
            .map(Some)
            .map_err(|source| RegistryError::BadDigest {
                url: url.to_string(),
                what: "Docker-Content-Digest".into(),
                source,
            })
    }

    /// Stores a manifest under a tag (or its digest). Returns its digest.
    ///
    /// # Errors
    /// The registry refuses (for example, a blob it names is missing).
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let body = bytes::Bytes::copy_from_slice(bytes);
        let media_type = media_type.to_owned();
        let stored = self
            .send(
                Method::PUT,
                &url,
                &repo_scope(repository, "pull,push"),
                &[],
                &|r| {
                    r.header(CONTENT_TYPE, media_type.clone())
                        .body(body.clone())
                },
            )
            .await?;
        let digest = Digest::of(bytes);
        returned_digest(
            &stored,
            &digest,
            &format!("manifest {repository}:{reference}"),
        )?;
        Ok(digest)
    }

    /// Deletes a manifest by tag or digest (a tag is resolved first: the API deletes by
    /// digest, which removes every tag pointing at it).
    ///
    /// # Errors
    /// There is no such manifest, or the registry refuses (deletion disabled: 405).
    pub async fn delete_manifest(&self, repository: &str, reference: &str) -> Result<Digest> {
        let digest =
            match reference.parse::<Digest>() {
                Ok(d) => d,
                Err(_) => self.resolve(repository, reference).await?.ok_or_else(|| {
                    RegistryError::Status {
                        method: Method::HEAD,
                        url: self
                            .url(&format!("v2/{repository}/manifests/{reference}"))
                            .to_string(),
                        status: StatusCode::NOT_FOUND,
                        errors: vec![ApiError {
                            code: "MANIFEST_UNKNOWN".into(),
                            message: format!("no tag {reference}"),
                        }],
                    }
                })?,
            };
        let url = self.url(&format!("v2/{repository}/manifests/{digest}"));
        self.send(
            Method::DELETE,
            &url,
            &repo_scope(repository, "delete"),
            &[],
            &|r| r,
        )
        .await?;
        Ok(digest)
    }

    pub(super) async fn paginate(
        &self,
        first: Url,
        scope: &str,
        field: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let response = self.send(Method::GET, &url, scope, &[], &|r| r).await?;
            next = next_link(response.headers()).and_then(|l| url.join(&l).ok());
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(transport(Method::GET, &url))?;
            out.extend(
                body[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            );
        }
        Ok(out)
    }

    /// Every tag of a repository, following `Link` pages of `page_size`.
    ///
    /// # Errors
    /// The request fails.
    pub async fn tags(&self, repository: &str, page_size: usize) -> Result<Vec<String>> {
        let mut url = self.url(&format!("v2/{repository}/tags/list"));
        url.query_pairs_mut()
            .append_pair("n", &page_size.to_string());
        self.paginate(url, &repo_scope(repository, "pull"), "tags")
            .await
    }

    /// Every repository of the registry, following `Link` pages of `page_size`.
    ///
    /// # Errors
    /// The request fails.
    pub async fn catalog(&self, page_size: usize) -> Result<Vec<String>> {
        let mut url = self.url("v2/_catalog");
        url.query_pairs_mut()
            .append_pair("n", &page_size.to_string());
        self.paginate(url, "registry:catalog:*", "repositories")
            .await
    }
}
