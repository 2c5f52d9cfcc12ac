//! The OCI distribution API (v2) client: blobs (chunked, resumable uploads streamed from
//! disk; downloads verified while streaming), cross-repository mounts, manifests (put, get,
//! head, delete), tag and catalog listings following `Link`, and the registry auth flows
//! (anonymous, basic, and bearer tokens from `WWW-Authenticate`).
//!
//! Why not `oci-client`: it keeps layers in memory for pushes and offers neither resumable
//! chunked uploads nor manifest deletion; streaming from disk with bounded memory is what
//! mirroring large images on a small host needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, LINK, LOCATION,
    RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use url::Url;

use crate::reference::Digest;

/// Largest chunk sent in one upload request.
pub const MAX_CHUNK: usize = 4 << 20;

/// Media types of manifests this client accepts.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How to log in.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    /// No credentials (public repositories).
    #[default]
    Anonymous,
    /// User name and password (or robot account name and secret).
    Basic {
        /// User.
        username: String,
        /// Password; never printed.
        password: SecretString,
    },
}

/// One error of a distribution or Harbor error body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// Machine-readable code (`MANIFEST_UNKNOWN`, `UNAUTHORIZED`, ...).
    pub code: String,
    /// What the server said.
    #[serde(default)]
    pub message: String,
}

fn describe(errors: &[ApiError]) -> String {
    errors.iter().fold(String::new(), |mut out, e| {
        out.push_str(": ");
        out.push_str(&e.code);
        out.push(' ');
        out.push_str(&e.message);
        out
    })
}

#[derive(Deserialize)]
struct Token {
    token: Option<String>,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ApiError>,
}

/// What went wrong, naming the request or file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The server answered with an error status.
    #[error("{method} {url}: HTTP {status}{}", describe(errors))]
    Status {
        /// Request method.
        method: Method,
        /// Request URL (no credentials in it).
        url: String,
        /// Status.
        status: StatusCode,
        /// The errors of the body, if it had any.
        errors: Vec<ApiError>,
    },
    /// The request could not be sent or its answer read.
    #[error("{method} {url}: {source}")]
    Transport {
        /// Request method.
        method: Method,
        /// Request URL.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// Content does not match its digest.
    #[error("{what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The server said something this client cannot use.
    #[error("{url}: {message}")]
    Protocol {
        /// Request URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The client could not be set up.
    #[error("{0}")]
    Setup(String),
}

impl RegistryError {
    /// Whether the error is the server saying "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Transport { source, .. } => !source.is_builder() && !source.is_redirect(),
            _ => false,
        }
    }
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Maps the HTTP client's error for `method url` (sending, or reading the answer).
fn transport(method: Method, url: &impl ToString) -> impl FnOnce(reqwest::Error) -> RegistryError {
    let url = url.to_string();
    move |source| RegistryError::Transport {
        method,
        url,
        source,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a transfer reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A blob starts moving.
    Start {
        /// Its digest.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob moved (since the last report).
    Bytes {
        /// Its digest.
        digest: &'a Digest,
        /// How many.
        n: u64,
    },
    /// A blob is complete (verified, for downloads).
    Done {
        /// Its digest.
        digest: &'a Digest,
    },
}

/// Hears transfer progress (for progress bars).
#[derive(Clone)]
pub struct ProgressSink(pub std::sync::Arc<dyn Fn(Progress<'_>) + Send + Sync>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Use `http://` instead of `https://` (only when asked for explicitly).
    pub plain_http: bool,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Extra CA certificate (PEM bytes) to trust, e.g. one read from a cluster's Secret.
    pub ca_pem: Option<Vec<u8>>,
    /// Reach the registry's host at this address instead of asking DNS (a lab whose names
    /// only its nodes know).
    pub resolve: Option<std::net::SocketAddr>,
    /// Upload chunk size (at most [`MAX_CHUNK`]).
    pub chunk_size: usize,
    /// Attempts for a request that fails with 5xx or a dropped connection.
    pub attempts: u32,
    /// First delay between attempts (doubled each time).
    pub backoff: Duration,
    /// Where transfer progress goes, if anywhere.
    pub progress: Option<ProgressSink>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            plain_http: false,
            ca_file: None,
            ca_pem: None,
            resolve: None,
            chunk_size: MAX_CHUNK,
            attempts: 4,
            backoff: Duration::from_millis(200),
            progress: None,
        }
    }
}

/// A bearer challenge from `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `Basic` or `Bearer`.
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`).
    pub params: HashMap<String, String>,
}

/// Parses `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` (or `Basic
/// realm="..."`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_owned());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers.get_all(LINK).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(',').find_map(|part| {
            let (target, params) = part.split_once(';')?;
            params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next")
                .then(|| {
                    target
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                })
        })
    })
}

/// A manifest as the registry serves it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The exact bytes (their digest is the manifest's digest).
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

/// A client for one registry. Its `Debug` names the scopes it holds tokens for, never the
/// tokens.
pub struct Registry {
    host: String,
    base: Url,
    http: reqwest::Client,
    credentials: Credentials,
    options: Options,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// The registry asked for basic auth.
    basic: AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scopes: Vec<String> = self
            .tokens
            .lock()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("base", &self.base.as_str())
            .field("credentials", &self.credentials)
            .field("options", &self.options)
            .field("token_scopes", &scopes)
            .field(
                "basic",
                &self.basic.load(std::sync::atomic::Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// How many bytes an upload session holds, from the `Range: 0-<last>` of its status.
/// `0-0` is what distribution (and the OCI distribution spec's examples) answer for a
/// session that has received nothing, so it means 0, not one byte: resuming at byte 1 would
/// leave a hole the registry may not even refuse.
fn received_bytes(range: &str) -> u64 {
    match range.trim().rsplit_once('-') {
        Some((_, last)) if last != "0" => last.parse::<u64>().map_or(0, |last| last + 1),
        _ => 0,
    }
}

/// Checks the `Docker-Content-Digest` a registry answers a PUT with against what was sent
/// (a registry that stored something else must not pass for one that stored this).
fn returned_digest(response: &Response, sent: &Digest, what: &str) -> Result<()> {
    let Some(returned) = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    match returned.parse::<Digest>() {
        Ok(d) if &d == sent => Ok(()),
        Ok(d) => Err(RegistryError::DigestMismatch {
            what: format!("{what} as the registry stored it"),
            expected: sent.clone(),
            actual: d,
        }),
        Err(e) => Err(RegistryError::Protocol {
            url: response.url().to_string(),
            message: format!("Docker-Content-Digest `{returned}`: {e}"),
        }),
    }
}

/// The error a response that is not the one expected stands for (its status and error
/// body; a 2xx that was not expected is a protocol error).
async fn refused(method: Method, url: &Url, response: Response) -> RegistryError {
    check(method, url.as_str(), response)
        .await
        .err()
        .unwrap_or_else(|| RegistryError::Protocol {
            url: url.to_string(),
            message: "unexpected status".into(),
        })
}

/// What a request needs access to, for bearer tokens.
fn repo_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

impl Registry {
    /// A client for `host` (`name[:port]`).
    ///
    /// # Errors
    /// The CA file is unreadable or not PEM, or the HTTP client cannot be built.
    pub fn new(host: &str, credentials: Credentials, options: Options) -> Result<Self> {
        let scheme = if options.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{host}/"))
            .map_err(|e| RegistryError::Setup(format!("registry {host:?}: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("homelab-harbor-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // No request leaves in clear text (a Location, Link or token realm on http://
            // included) unless plain HTTP was asked for.
            .https_only(!options.plain_http);
        builder = crate::tls::trust(
            builder,
            options.ca_file.as_deref(),
            options.ca_pem.as_deref(),
        )
        .map_err(RegistryError::Setup)?;
        if let Some(address) = options.resolve
            && let Some(name) = base.host_str()
        {
            builder = builder.resolve(name, address);
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            host: host.to_owned(),
            base,
            http,
            credentials,
            options: Options {
                chunk_size: options.chunk_size.clamp(1, MAX_CHUNK),
                ..options
            },
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
        })
    }

    fn report(&self, event: Progress<'_>) {
        if let Some(sink) = &self.options.progress {
            (sink.0)(event);
        }
    }

    /// The registry's `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// `request` to `url` with this registry's credentials for `scope` — only when `url` is
    /// the registry itself: an upload `Location` or a paging `Link` that names another
    /// scheme, host or port gets none.
    fn authorize(
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

    async fn fetch_token(&self, challenge: &Challenge, scope: &str) -> Result<()> {
        let realm = challenge.params.get("realm").cloned().unwrap_or_default();
        let mut url = Url::parse(&realm).map_err(|e| RegistryError::Protocol {
            url: realm.clone(),
            message: format!("bad token realm: {e}"),
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
    async fn send(
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

    fn location(url: &Url, response: &Response) -> Result<Url> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                url: url.to_string(),
                message: "the upload response has no Location".into(),
            })?;
        url.join(location).map_err(|e| RegistryError::Protocol {
            url: url.to_string(),
            message: format!("bad Location {location:?}: {e}"),
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
        self.report(Progress::Start { digest, size });
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
                    self.report(Progress::Bytes {
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
        self.report(Progress::Done { digest });
        Ok(true)
    }

    /// Opens an upload session; returns where to send the data.
    async fn open_upload(&self, repository: &str, scope: &str) -> Result<Url> {
        self.open_upload_session(repository, scope)
            .await
            .map(|(url, _)| url)
    }

    /// Opens an upload session; returns where to send the data and the smallest chunk the
    /// registry takes (`OCI-Chunk-Min-Length`, distribution spec 1.1), when it says.
    async fn open_upload_session(
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
    async fn resume(&self, repository: &str, location: &Url) -> Result<(Url, u64)> {
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
        self.report(Progress::Start {
            digest,
            size: response.content_length().unwrap_or(0),
        });
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport(Method::GET, &url))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            self.report(Progress::Bytes {
                digest,
                n: chunk.len() as u64,
            });
            file.write_all(&chunk).await.map_err(io(&tmp))?;
        }
        file.flush().await.map_err(io(&tmp))?;
        drop(file);
        let actual = Digest::from_sha256_hex(&hex::encode(hasher.finalize())).map_err(|e| {
            RegistryError::Protocol {
                url: url.to_string(),
                message: e.to_string(),
            }
        })?;
        if &actual != digest {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {repository}@{digest}"),
                expected: digest.clone(),
                actual,
            });
        }
        tokio::fs::rename(&tmp, path).await.map_err(io(path))?;
        self.report(Progress::Done { digest });
        Ok(size)
    }

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
            .map_err(
                |e: crate::reference::ReferenceError| RegistryError::Protocol {
                    url: url.to_string(),
                    message: e.to_string(),
                },
            )
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

    async fn paginate(&self, first: Url, scope: &str, field: &str) -> Result<Vec<String>> {
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

async fn check(method: Method, url: &str, response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    let errors = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.errors)
        .unwrap_or_default();
    Err(RegistryError::Status {
        method,
        url: url.to_owned(),
        status,
        errors,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_upload_status_range_counts_the_bytes_received() {
        assert_eq!(received_bytes("0-0"), 0, "nothing received yet");
        assert_eq!(received_bytes("0-4194303"), 4_194_304);
        assert_eq!(received_bytes("0-1"), 2);
        assert_eq!(received_bytes("garbage"), 0);
    }

    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn challenges_are_parsed() {
        let c = parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "Basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }

    #[test]
    fn next_links_are_found() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"</v2/x?page=1>; rel="prev", </v2/x?page=3>; rel="next""#),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/x?page=3"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
