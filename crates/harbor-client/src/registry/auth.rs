//! The request path: credentials attached only to the registry's own origin, bearer
//! tokens fetched from the challenge's realm (credentials only to a realm on the registry's
//! host), one challenge answered per request, 5xx and dropped connections retried.

use super::*;

impl Registry {
    /// `request` to `url` with this registry's credentials for `scope` — only when `url` is
    /// the registry itself: an upload `Location` or a paging `Link` that names another
    /// scheme, host or port gets none.
    pub(super) fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
        scope: &str,
    ) -> reqwest::RequestBuilder {
        if url.origin() != self.base.origin() {
            return request;
        }
        if let Some(token) = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(scope)
        {
            return request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        match &self.credentials {
            Credentials::Basic { username, password } if self.basic.load(Ordering::Relaxed) => {
                request.basic_auth(username, Some(password.expose_secret()))
            }
            _ => request,
        }
    }

    pub(super) async fn fetch_token(&self, challenge: &Challenge, scope: &str) -> Result<()> {
        let realm = challenge.params.get("realm").cloned().unwrap_or_default();
        let mut url = Url::parse(&realm).map_err(|source| RegistryError::BadUrl {
            url: realm.clone(),
            what: "token realm".into(),
            source,
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = challenge.params.get("service") {
                q.append_pair("service", service);
            }
            // One `scope` parameter per scope, as token services expect.
            for one in scope.split(' ').filter(|s| !s.is_empty()) {
                q.append_pair("scope", one);
            }
        }
        let mut request = self.http.get(url.clone());
        // Credentials belong to this registry's host: a realm elsewhere (Docker Hub's
        // auth.docker.io for a mirror source, or whatever a hostile registry names) is asked
        // for an anonymous token. Plain HTTP is refused by the client unless asked for.
        if let Credentials::Basic { username, password } = &self.credentials {
            if url.host_str() == self.base.host_str() {
                request = request.basic_auth(username, Some(password.expose_secret()));
            } else {
                tracing::debug!(
                    realm = %realm,
                    registry = %self.host,
                    "the token realm is not on the registry's host: asking for an anonymous token"
                );
            }
        }
        let response = request
            .send()
            .await
            .map_err(transport(Method::GET, &realm))?;
        let response = check(Method::GET, &realm, response).await?;
        let body: Token = response
            .json()
            .await
            .map_err(transport(Method::GET, &realm))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Protocol {
                url: realm,
                message: "the token response has no token".into(),
            })?;
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(scope.to_owned(), token);
        Ok(())
    }

    /// Sends a request built by `build`, answering one auth challenge and retrying 5xx and
    /// dropped connections with backoff. Error statuses are returned as errors unless
    /// `accept` lists them.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &Url,
        scope: &str,
        accept: &[StatusCode],
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<Response> {
        let mut delay = self.options.backoff;
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self.authorize(
                build(self.http.request(method.clone(), url.clone())),
                url,
                scope,
            );
            let result = match request.send().await {
                Err(source) => Err(transport(method.clone(), &url)(source)),
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    match challenge {
                        Some(c) if c.scheme.eq_ignore_ascii_case("bearer") => {
                            self.fetch_token(&c, scope).await?;
                            attempt -= 1;
                            continue;
                        }
                        Some(c)
                            if c.scheme.eq_ignore_ascii_case("basic")
                                && matches!(self.credentials, Credentials::Basic { .. }) =>
                        {
                            self.basic.store(true, Ordering::Relaxed);
                            attempt -= 1;
                            continue;
                        }
                        _ => check(method.clone(), url.as_str(), response).await,
                    }
                }
                Ok(response) if accept.contains(&response.status()) => Ok(response),
                Ok(response) => check(method.clone(), url.as_str(), response).await,
            };
            match result {
                Err(e) if e.retryable() && attempt < self.options.attempts => {
                    tracing::debug!(error = %e, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }
}
