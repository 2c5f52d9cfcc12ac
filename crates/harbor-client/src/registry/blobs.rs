//! Blobs: existence, cross-repository mounts, chunked uploads streamed from disk (resumed
//! after a cut chunk, the token renewed when it expires mid-upload), monolithic uploads of
//! small blobs, and downloads verified while they stream.

use super::*;

impl Registry {
    /// Checks that the registry speaks the v2 API (and that the credentials work).
    ///
    /// # Errors
    /// It does not, or refuses the credentials.
    pub async fn ping(&self) -> Result<()> {
        let url = self.url("v2/");
        self.send(Method::GET, &url, "", &[], &|r| r)
            .await
            .map(|_| ())
    }

    /// The size of a blob when the repository has it.
    ///
    /// # Errors
    /// The request fails.
    pub async fn blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let scope = repo_scope(repository, "pull");
        let response = self
            .send(Method::HEAD, &url, &scope, &[StatusCode::NOT_FOUND], &|r| r)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    pub(super) fn location(url: &Url, response: &Response) -> Result<Url> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                url: url.to_string(),
                message: "the upload response has no Location".into(),
            })?;
        url.join(location).map_err(|source| RegistryError::BadUrl {
            url: url.to_string(),
            what: format!("Location {location:?}"),
            source,
        })
    }

    /// Mounts a blob from another repository of the same registry. `false` when the
    /// registry would not (it then wants an upload).
    ///
    /// # Errors
    /// The request fails.
    pub async fn mount_blob(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut url = self.url(&format!("v2/{repository}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let scope = format!(
            "{} {}",
            repo_scope(repository, "pull,push"),
            repo_scope(from, "pull")
        );
        let response = self
            .send(Method::POST, &url, &scope, &[StatusCode::ACCEPTED], &|r| {
                r.header(CONTENT_LENGTH, "0")
            })
            .await?;
        if response.status() == StatusCode::CREATED {
            return Ok(true);
        }
        // An upload session was opened instead; close it.
        let location = Self::location(&url, &response)?;
        let _ = self
            .send(
                Method::DELETE,
                &location,
                &scope,
                &[StatusCode::NOT_FOUND],
                &|r| r,
            )
            .await;
        Ok(false)
    }

    /// Uploads the blob in `path` (whose digest and size are known) unless the repository has
    /// it: in chunks of at most [`Options::chunk_size`] read from disk one at a time, so
    /// memory stays bounded whatever the size. A chunk that fails (dropped connection, 5xx)
    /// is resumed from the offset the registry reports for the session, or, when the registry
    /// dropped the session (distribution does after a cut chunk), sent again in a new one.
    /// Returns whether
    /// anything was uploaded.
    ///
    /// # Errors
    /// The file cannot be read, the registry refuses, or the digest does not match.
    pub async fn push_blob_file(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
        size: u64,
    ) -> Result<bool> {
        if self.blob_size(repository, digest).await?.is_some() {
            return Ok(false);
        }
        let scope = repo_scope(repository, "pull,push");
        let (mut location, min_chunk) = self.open_upload_session(repository, &scope).await?;
        // Every chunk but the last at least as large as the registry asks (held in memory:
        // a demand beyond 256 MiB is refused rather than allocated).
        let min_chunk = min_chunk.unwrap_or(0);
        if min_chunk > 256 << 20 {
            return Err(RegistryError::Protocol {
                url: location.to_string(),
                message: format!(
                    "the registry asks for chunks of at least {min_chunk} bytes (OCI-Chunk-Min-Length); more than 256 MiB is not buffered"
                ),
            });
        }
        let chunk_size = self.options.chunk_size.max(min_chunk);
        self.report(Event::Start { digest, size });
        let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
        let mut offset: u64 = 0;
        let mut buffer = vec![0u8; chunk_size];
        let mut failures = 0;
        let mut renewed = false;
        while offset < size {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io(path))?;
            let want =
                usize::try_from((size - offset).min(chunk_size as u64)).unwrap_or(chunk_size);
            file.read_exact(&mut buffer[..want])
                .await
                .map_err(io(path))?;
            let chunk = bytes::Bytes::copy_from_slice(&buffer[..want]);
            let end = offset + want as u64 - 1;
            let result = self
                .http
                .patch(location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{offset}-{end}"))
                .header(CONTENT_LENGTH, want.to_string());
            let result = self
                .authorize(result, &location, &scope)
                .body(chunk)
                .send()
                .await;
            let outcome = match result {
                Ok(r) if r.status() == StatusCode::ACCEPTED => Ok(r),
                // The token expired between two chunks (a long upload outlives Harbor's
                // 30-minute tokens): a new one, and the same chunk again — once; a second
                // refusal in a row is the registry's answer.
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !renewed => {
                    let challenge = r
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                        .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"));
                    if let Some(challenge) = challenge {
                        tracing::debug!(repository, %digest, offset, "token refused mid-upload; renewing it");
                        self.fetch_token(&challenge, &scope).await?;
                        renewed = true;
                        continue;
                    }
                    Err(refused(Method::PATCH, &location, r).await)
                }
                Ok(r) => Err(refused(Method::PATCH, &location, r).await),
                Err(source) => Err(transport(Method::PATCH, &location)(source)),
            };
            match outcome {
                Ok(response) => {
                    location = Self::location(&location, &response)?;
                    offset = end + 1;
                    failures = 0;
                    renewed = false;
                    self.report(Event::Bytes {
                        digest,
                        n: want as u64,
                    });
                }
                Err(e) if e.retryable() && failures + 1 < self.options.attempts => {
                    failures += 1;
                    tracing::info!(repository, %digest, offset, error = %e, "upload chunk failed; resuming");
                    tokio::time::sleep(self.options.backoff * 2u32.pow(failures)).await;
                    (location, offset) = self.resume(repository, &location).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let mut done = location.clone();
        done.query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let closed = self
            .send(Method::PUT, &done, &scope, &[], &|r| {
                r.header(CONTENT_LENGTH, "0")
            })
            .await?;
        returned_digest(&closed, digest, &format!("blob {repository}@{digest}"))?;
        self.report(Event::Done { digest });
        Ok(true)
    }

    /// Opens an upload session; returns where to send the data.
    pub(super) async fn open_upload(&self, repository: &str, scope: &str) -> Result<Url> {
        self.open_upload_session(repository, scope)
            .await
            .map(|(url, _)| url)
    }

    /// Opens an upload session; returns where to send the data and the smallest chunk the
    /// registry takes (`OCI-Chunk-Min-Length`, distribution spec 1.1), when it says.
    pub(super) async fn open_upload_session(
        &self,
        repository: &str,
        scope: &str,
    ) -> Result<(Url, Option<usize>)> {
        let start = self.url(&format!("v2/{repository}/blobs/uploads/"));
        let response = self
            .send(Method::POST, &start, scope, &[], &|r| {
                r.header(CONTENT_LENGTH, "0")
            })
            .await?;
        let min = response
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0);
        Ok((Self::location(&start, &response)?, min))
    }

    /// Where an interrupted upload session can go on from: the offset the registry reports,
    /// or, when it dropped the session (distribution does after a cut chunk), a new session
    /// from the start.
    pub(super) async fn resume(&self, repository: &str, location: &Url) -> Result<(Url, u64)> {
        let scope = repo_scope(repository, "pull,push");
        match self
            .send(
                Method::GET,
                location,
                &scope,
                &[StatusCode::NO_CONTENT],
                &|r| r,
            )
            .await
        {
            Ok(status) => {
                let offset = status
                    .headers()
                    .get(RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map_or(0, received_bytes);
                tracing::info!(repository, offset, "resuming the upload session");
                Ok((
                    Self::location(location, &status).unwrap_or_else(|_| location.clone()),
                    offset,
                ))
            }
            Err(e) if e.is_not_found() => {
                tracing::info!(
                    repository,
                    "the registry dropped the upload session; starting again"
                );
                Ok((self.open_upload(repository, &scope).await?, 0))
            }
            Err(e) => Err(e),
        }
    }

    /// Uploads a small blob held in memory (a config) in one request, unless present.
    ///
    /// # Errors
    /// The registry refuses.
    pub async fn push_blob_bytes(&self, repository: &str, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.blob_size(repository, &digest).await?.is_some() {
            return Ok(digest);
        }
        let scope = repo_scope(repository, "pull,push");
        let mut done = self.open_upload(repository, &scope).await?;
        done.query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let body = bytes::Bytes::copy_from_slice(bytes);
        let stored = self
            .send(Method::PUT, &done, &scope, &[], &|r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        returned_digest(&stored, &digest, &format!("blob {repository}@{digest}"))?;
        Ok(digest)
    }

    /// Downloads a blob into `path` (through a temporary file renamed at the end), checking
    /// its digest while it streams. Returns its size.
    ///
    /// # Errors
    /// The registry refuses, the file cannot be written, or the digest differs (nothing is
    /// left at `path` then).
    pub async fn pull_blob_to_file(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
    ) -> Result<u64> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let response = self
            .send(
                Method::GET,
                &url,
                &repo_scope(repository, "pull"),
                &[],
                &|r| r,
            )
            .await?;
        let tmp = path.with_extension("partial");
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        self.report(Event::Start {
            digest,
            size: response.content_length().unwrap_or(0),
        });
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport(Method::GET, &url))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            self.report(Event::Bytes {
                digest,
                n: chunk.len() as u64,
            });
            file.write_all(&chunk).await.map_err(io(&tmp))?;
        }
        file.flush().await.map_err(io(&tmp))?;
        drop(file);
        let actual = Digest::from_sha256(hasher.finalize().into());
        if &actual != digest {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {repository}@{digest}"),
                expected: digest.clone(),
                actual,
            });
        }
        tokio::fs::rename(&tmp, path).await.map_err(io(path))?;
        self.report(Event::Done { digest });
        Ok(size)
    }
}
