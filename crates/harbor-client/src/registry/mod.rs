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

use crate::event::{Event, Events};
use crate::reference::Digest;

mod auth;
mod blobs;
mod manifests;

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
#[non_exhaustive]
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
    /// A digest the server sent, or a layout or index names, does not parse.
    #[error("{url}: {what}: {source}")]
    BadDigest {
        /// Request URL, or the layout and document.
        url: String,
        /// Which digest (`Docker-Content-Digest`, `a manifest of the index`).
        what: String,
        /// The parser's error.
        source: crate::reference::ReferenceError,
    },
    /// A URL the server sent (a `Location`, a token realm) or was given does not parse.
    #[error("{url}: {what}: {source}")]
    BadUrl {
        /// Request URL, or the URL given.
        url: String,
        /// Which URL.
        what: String,
        /// The parser's error.
        source: url::ParseError,
    },
    /// A document is not the JSON expected.
    #[error("{url}: {what}: {source}")]
    Json {
        /// Request URL, or the layout and document.
        url: String,
        /// Which document.
        what: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An OCI document (image index, manifest) or digest that `oci-spec` refuses.
    #[error("{what}: {source}")]
    Oci {
        /// Which document, and where.
        what: String,
        /// oci-spec's error.
        source: oci_spec::OciSpecError,
    },
    /// A manifest is not a single-platform image manifest (an index, or not OCI at all).
    #[error(
        "{what}: not a single-platform image manifest ({source}); for a multi-platform index, name one platform's manifest by digest"
    )]
    NotImageManifest {
        /// Which manifest.
        what: String,
        /// oci-spec's error.
        source: oci_spec::OciSpecError,
    },
    /// A CA certificate given to trust cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
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

/// Connection settings: `Options::default()` (https, the system's CAs, 4 attempts), changed
/// by its setters.
///
/// ```
/// let options = harbor_client::registry::Options::default()
///     .plain_http(true)
///     .attempts(2);
/// assert!(options.plain_http);
/// ```
#[derive(Clone)]
#[non_exhaustive]
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
    /// Where transfers' events (progress) go, if anywhere.
    pub events: Option<Events>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("plain_http", &self.plain_http)
            .field("ca_file", &self.ca_file)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("resolve", &self.resolve)
            .field("chunk_size", &self.chunk_size)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("events", &self.events.as_ref().map(|_| "<callback>"))
            .finish()
    }
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
            events: None,
        }
    }
}

impl Options {
    /// Using `http://` (only when asked for explicitly) or not.
    #[must_use]
    pub fn plain_http(mut self, plain_http: bool) -> Self {
        self.plain_http = plain_http;
        self
    }

    /// Trusting this CA certificate file (PEM) too.
    #[must_use]
    pub fn ca_file(mut self, ca_file: Option<PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// Trusting this CA certificate (PEM bytes) too.
    #[must_use]
    pub fn ca_pem(mut self, ca_pem: Option<Vec<u8>>) -> Self {
        self.ca_pem = ca_pem;
        self
    }

    /// Reaching the registry's host at this address, not through DNS.
    #[must_use]
    pub fn resolve(mut self, resolve: Option<std::net::SocketAddr>) -> Self {
        self.resolve = resolve;
        self
    }

    /// Uploading in chunks of this size (at most [`MAX_CHUNK`]).
    #[must_use]
    pub fn chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// Making this many attempts at a request that fails with 5xx or a dropped connection.
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Waiting this long before the second attempt (doubled each time).
    #[must_use]
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Telling transfers' events (progress) to this callback.
    #[must_use]
    pub fn events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
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
        Err(source) => Err(RegistryError::BadDigest {
            url: response.url().to_string(),
            what: "Docker-Content-Digest".into(),
            source,
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
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|source| RegistryError::BadUrl {
                url: host.to_owned(),
                what: "registry host".into(),
                source,
            })?;
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
        )?;
        if let Some(address) = options.resolve
            && let Some(name) = base.host_str()
        {
            builder = builder.resolve(name, address);
        }
        let http = builder.build().map_err(RegistryError::HttpClient)?;
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

    fn report(&self, event: Event<'_>) {
        if let Some(events) = &self.options.events {
            events(event);
        }
    }

    /// The registry's `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
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
