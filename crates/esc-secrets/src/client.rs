//! The Pulumi ESC REST API, as Pulumi's own client (`github.com/pulumi/esc`,
//! `cmd/esc/cli/client`) calls it: `Accept: application/vnd.pulumi+8`, `Authorization: token
//! …` (a header, never a URL or a message), environments listed a page at a time with
//! `continuationToken`, an environment opened once (`POST …/open?duration=`) and read through
//! that session (`GET …/open/{id}`, `?property=` for one path), its definition read with its
//! `ETag` and `Pulumi-ESC-Revision` and updated with that `ETag` so that a concurrent edit is
//! refused, not overwritten. 429 and 5xx answers are retried with backoff, honouring
//! `Retry-After`: reads always, writes only after a 429 (the request was not processed).

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::path::PropertyPath;
use crate::value::Value;

/// The API version every request accepts.
pub const ACCEPT: &str = "application/vnd.pulumi+8";
/// Pulumi Cloud's API.
pub const DEFAULT_API_URL: &str = "https://api.pulumi.com";
/// The header carrying an environment's revision.
pub const REVISION_HEADER: &str = "Pulumi-ESC-Revision";

/// An environment: `organization/project/environment`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct EnvRef {
    /// Organization.
    pub organization: String,
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: String,
}

impl EnvRef {
    /// `organization/project/environment`.
    pub fn new(organization: &str, project: &str, environment: &str) -> Self {
        Self {
            organization: organization.to_owned(),
            project: project.to_owned(),
            environment: environment.to_owned(),
        }
    }
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.organization, self.project, self.environment
        )
    }
}

/// What went wrong talking to ESC. No variant holds the token or a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EscError {
    /// The client cannot be built from its inputs.
    #[error("{0}")]
    Setup(String),
    /// ESC answered with an error.
    #[error("{method} {path} ({env}): HTTP {status}: {message}{}", request_id.as_ref().map(|r| format!(" (request {r})")).unwrap_or_default())]
    Api {
        /// HTTP method.
        method: String,
        /// The API path (no host, no query).
        path: String,
        /// The environment (or organization) concerned.
        env: String,
        /// Status code.
        status: u16,
        /// ESC's message.
        message: String,
        /// `X-Pulumi-Request-ID`, for Pulumi's support.
        request_id: Option<String>,
    },
    /// ESC could not be reached.
    #[error("{method} {path} ({env}): {source}")]
    Transport {
        /// HTTP method.
        method: String,
        /// The API path.
        path: String,
        /// The environment concerned.
        env: String,
        /// The HTTP client's error (without the URL).
        source: reqwest::Error,
    },
    /// The answer's body is not what the API defines.
    #[error("{path} ({env}): unexpected answer: {source}")]
    Body {
        /// The API path.
        path: String,
        /// The environment concerned.
        env: String,
        /// The HTTP client's decoding error (without the URL).
        source: reqwest::Error,
    },
    /// The ESC API URL does not parse.
    #[error("the ESC API URL does not parse: {source}")]
    Url {
        /// The parser's error.
        source: url::ParseError,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {source}")]
    Client {
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The answer is not what the API defines.
    #[error("{path} ({env}): unexpected answer: {message}")]
    Decode {
        /// The API path.
        path: String,
        /// The environment concerned.
        env: String,
        /// Why.
        message: String,
    },
    /// ESC refused the environment's definition (opening or updating it).
    #[error("environment {env} has errors:\n  {}", messages.join("\n  "))]
    Diagnostics {
        /// The environment.
        env: String,
        /// ESC's diagnostics, with their places.
        messages: Vec<String>,
    },
    /// The definition changed since it was read: nothing was written.
    #[error(
        "environment {env} changed since it was read (etag {etag}): nothing was written; read it again and retry"
    )]
    Conflict {
        /// The environment.
        env: String,
        /// The etag the update was based on.
        etag: String,
    },
    /// No value at a path of an opened environment.
    #[error("environment {env} has no value at {path}")]
    NoValue {
        /// The environment.
        env: String,
        /// The path.
        path: PropertyPath,
    },
}

impl EscError {
    /// The HTTP status ESC answered with, if it did.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How to reach ESC beyond the token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EscOptions {
    /// The API's base URL ([`DEFAULT_API_URL`], or a self-hosted service's).
    pub api_url: String,
    /// Retries of a request answered 429 or 5xx (or not answered, for reads).
    pub retries: u32,
    /// The first backoff; doubled each time up to `max_delay`.
    pub first_delay: Duration,
    /// The longest wait between tries (a longer `Retry-After` is cut to it).
    pub max_delay: Duration,
}

impl Default for EscOptions {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.into(),
            retries: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl EscOptions {
    /// With another API URL.
    #[must_use]
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// With other retry timings.
    #[must_use]
    pub fn backoff(mut self, retries: u32, first_delay: Duration, max_delay: Duration) -> Self {
        self.retries = retries;
        self.first_delay = first_delay;
        self.max_delay = max_delay;
        self
    }
}

/// An environment's definition as stored: YAML, with what an update must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The YAML text (secrets in it are ciphertext).
    pub yaml: String,
    /// Its `ETag`, for [`Esc::update`].
    pub etag: String,
    /// Its revision.
    pub revision: i64,
}

/// An opened environment: readable until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The environment.
    pub env: EnvRef,
    /// The session's id.
    pub id: String,
}

/// A client of the ESC API.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use esc_secrets::{EnvRef, Esc, EscOptions, PropertyPath};
///
/// let token = std::env::var("PULUMI_ACCESS_TOKEN")?.into();
/// let esc = Esc::new(token, EscOptions::default())?;
/// // One open session, every value read at once; secrets stay `SecretString`s.
/// let values = esc.read(&EnvRef::new("my-org", "homelab", "dev")).await?;
/// let password = values.get(&"harbor.adminPassword".parse::<PropertyPath>()?);
/// assert!(password.is_some_and(|v| v.is_secret()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Esc {
    base: Url,
    http: reqwest::Client,
    token: SecretString,
    options: EscOptions,
}

impl fmt::Debug for Esc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Esc")
            .field("base", &self.base.as_str())
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    diagnostics: Vec<serde_json::Value>,
}

fn diagnostic_text(d: &serde_json::Value) -> String {
    let summary = d["summary"].as_str().unwrap_or("error");
    match (
        d["range"]["begin"]["line"].as_i64(),
        d["range"]["begin"]["column"].as_i64(),
    ) {
        (Some(line), Some(column)) => format!("{line}:{column}: {summary}"),
        _ => summary.to_owned(),
    }
}

struct Call<'a> {
    method: Method,
    segments: Vec<&'a str>,
    query: Vec<(&'a str, String)>,
    body: Option<(Vec<u8>, &'static str)>,
    headers: Vec<(&'static str, String)>,
    env: String,
}

/// The API path of `env`, then `extra`.
fn env_segments<'a>(env: &'a EnvRef, extra: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec![
        "api",
        "esc",
        "environments",
        env.organization.as_str(),
        env.project.as_str(),
        env.environment.as_str(),
    ];
    segments.extend_from_slice(extra);
    segments
}

impl Esc {
    /// A client with `token` (a Pulumi access token).
    ///
    /// # Errors
    /// The API URL does not parse, is not http(s), or holds credentials.
    pub fn new(token: SecretString, options: EscOptions) -> Result<Self, EscError> {
        let base = Url::parse(&options.api_url).map_err(|source| EscError::Url { source })?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(EscError::Setup(format!(
                "the ESC API URL must be http(s), not {}",
                base.scheme()
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(EscError::Setup(
                "the ESC API URL must not hold credentials: the token goes in [esc] token".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("homelab-esc-secrets/", env!("CARGO_PKG_VERSION")))
            .https_only(base.scheme() == "https")
            .build()
            .map_err(|source| EscError::Client { source })?;
        Ok(Self {
            base,
            http,
            token,
            options,
        })
    }

    fn url(&self, segments: &[&str]) -> Result<Url, EscError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| EscError::Setup("the ESC API URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, EscError> {
        let url = self.url(&call.segments)?;
        let path = url.path().to_owned();
        let method_name = call.method.as_str().to_owned();
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(call.method.clone(), url.clone())
                .header("Accept", ACCEPT)
                .header(
                    "Authorization",
                    format!("token {}", self.token.expose_secret()),
                )
                .query(&call.query);
            for (name, value) in &call.headers {
                request = request.header(*name, value);
            }
            if let Some((body, content_type)) = &call.body {
                request = request
                    .header("Content-Type", *content_type)
                    .body(body.clone());
            }
            let reads = call.method == Method::GET;
            let result = request.send().await;
            let retry_in = match &result {
                Err(_) if reads => Some(None),
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => Some(retry_after(r)),
                Ok(r) if r.status().is_server_error() && reads => Some(retry_after(r)),
                _ => None,
            };
            if let Some(hint) = retry_in
                && attempt < self.options.retries
            {
                let backoff = self.options.first_delay * 2u32.saturating_pow(attempt);
                let wait = hint.unwrap_or(backoff).min(self.options.max_delay);
                tracing::debug!(
                    target: "esc_secrets",
                    "{method_name} {path}: retry {} in {}ms",
                    attempt + 1,
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            let response = result.map_err(|e| EscError::Transport {
                method: method_name.clone(),
                path: path.clone(),
                env: call.env.clone(),
                source: e.without_url(),
            })?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            let request_id = response
                .headers()
                .get("X-Pulumi-Request-ID")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = response.text().await.unwrap_or_default();
            let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
            if let Some(b) = &body
                && !b.diagnostics.is_empty()
            {
                return Err(EscError::Diagnostics {
                    env: call.env.clone(),
                    messages: b.diagnostics.iter().map(diagnostic_text).collect(),
                });
            }
            let message = body
                .map(|b| b.message)
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| text.trim().chars().take(200).collect());
            return Err(EscError::Api {
                method: method_name,
                path,
                env: call.env,
                status,
                message,
                request_id,
            });
        }
    }

    async fn json(&self, call: Call<'_>) -> Result<serde_json::Value, EscError> {
        let env = call.env.clone();
        let response = self.send(call).await?;
        let path = response.url().path().to_owned();
        response.json().await.map_err(|e| EscError::Body {
            path,
            env,
            source: e.without_url(),
        })
    }

    fn get(segments: Vec<&str>, env: String) -> Call<'_> {
        Call {
            method: Method::GET,
            segments,
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
            env,
        }
    }

    /// Every environment of `organization` (a page at a time, following
    /// `continuationToken`).
    ///
    /// # Errors
    /// A call fails or the answer is malformed.
    pub async fn list_environments(&self, organization: &str) -> Result<Vec<EnvRef>, EscError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = Self::get(
                vec!["api", "esc", "environments", organization],
                organization.to_owned(),
            );
            if let Some(t) = &token {
                call.query.push(("continuationToken", t.clone()));
            }
            let page = self.json(call).await?;
            for e in page["environments"].as_array().into_iter().flatten() {
                out.push(EnvRef::new(
                    e["organization"].as_str().unwrap_or(organization),
                    e["project"].as_str().unwrap_or_default(),
                    e["name"].as_str().unwrap_or_default(),
                ));
            }
            match page["nextToken"].as_str().filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() != Some(next) => token = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Opens `env` for `duration`: ESC evaluates it once (providers, rotations, imports);
    /// read it through the session as often as needed until then.
    ///
    /// # Errors
    /// The call fails, or the environment has errors (its diagnostics).
    pub async fn open(&self, env: &EnvRef, duration: Duration) -> Result<Session, EscError> {
        let call = Call {
            method: Method::POST,
            segments: env_segments(env, &["open"]),
            query: vec![("duration", format!("{}s", duration.as_secs().max(1)))],
            body: None,
            headers: Vec::new(),
            env: env.to_string(),
        };
        let answer = self.json(call).await?;
        let id = answer["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| EscError::Decode {
                path: "open".into(),
                env: env.to_string(),
                message: "no session id".into(),
            })?;
        Ok(Session {
            env: env.clone(),
            id: id.to_owned(),
        })
    }

    /// Every value of an opened environment.
    ///
    /// # Errors
    /// The call fails (404 once the session expired) or the answer is malformed.
    pub async fn values(&self, session: &Session) -> Result<Value, EscError> {
        let env = &session.env;
        let answer = self
            .json(Self::get(
                env_segments(env, &["open", &session.id]),
                env.to_string(),
            ))
            .await?;
        let empty = serde_json::Map::new();
        Ok(Value::from_properties(
            answer["properties"].as_object().unwrap_or(&empty),
        ))
    }

    /// One value of an opened environment.
    ///
    /// # Errors
    /// The call fails; there is no value at `path` ([`EscError::NoValue`]).
    pub async fn property(
        &self,
        session: &Session,
        path: &PropertyPath,
    ) -> Result<Value, EscError> {
        let env = &session.env;
        let mut call = Self::get(env_segments(env, &["open", &session.id]), env.to_string());
        call.query.push(("property", path.to_string()));
        match self.json(call).await {
            Ok(v) => Ok(Value::from_esc(&v)),
            Err(e) if e.status() == Some(404) => Err(EscError::NoValue {
                env: env.to_string(),
                path: path.clone(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Opens `env` once and reads all its values.
    ///
    /// # Errors
    /// As [`Esc::open`] and [`Esc::values`].
    pub async fn read(&self, env: &EnvRef) -> Result<Value, EscError> {
        let session = self.open(env, Duration::from_secs(300)).await?;
        self.values(&session).await
    }

    /// The environment's definition, its etag and revision.
    ///
    /// # Errors
    /// The call fails or the answer lacks its headers.
    pub async fn definition(&self, env: &EnvRef) -> Result<Definition, EscError> {
        let response = self
            .send(Self::get(env_segments(env, &[]), env.to_string()))
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let decode = |message: &str| EscError::Decode {
            path: "definition".into(),
            env: env.to_string(),
            message: message.to_owned(),
        };
        let etag = header("ETag").ok_or_else(|| decode("no ETag"))?;
        let revision = header(REVISION_HEADER)
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| decode("no Pulumi-ESC-Revision"))?;
        let yaml = response
            .text()
            .await
            .map_err(|e| decode(&e.without_url().to_string()))?;
        Ok(Definition {
            yaml,
            etag,
            revision,
        })
    }

    /// Replaces the definition, unless it changed since `etag` was read; returns the new
    /// revision.
    ///
    /// # Errors
    /// [`EscError::Conflict`] when it changed meanwhile; [`EscError::Diagnostics`] when ESC
    /// refuses the YAML; other failed calls.
    pub async fn update(&self, env: &EnvRef, yaml: &str, etag: &str) -> Result<i64, EscError> {
        let call = Call {
            method: Method::PATCH,
            segments: env_segments(env, &[]),
            query: Vec::new(),
            body: Some((yaml.as_bytes().to_vec(), "application/x-yaml")),
            // Pulumi's client sends the etag it read in an `ETag` request header.
            headers: vec![("ETag", etag.to_owned())],
            env: env.to_string(),
        };
        let response = match self.send(call).await {
            Err(e) if matches!(e.status(), Some(409 | 412)) => {
                return Err(EscError::Conflict {
                    env: env.to_string(),
                    etag: etag.to_owned(),
                });
            }
            other => other?,
        };
        response
            .headers()
            .get(REVISION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| EscError::Decode {
                path: "update".into(),
                env: env.to_string(),
                message: "no Pulumi-ESC-Revision".into(),
            })
    }
}

impl Esc {
    /// Sets the value at `path` (under the definition's `values:`; `fn::secret` when
    /// `secret`), reading the definition and writing it back with its etag: a concurrent
    /// edit is refused ([`EscError::Conflict`]), never overwritten. Returns the new revision.
    ///
    /// The YAML is re-written from its data: comments and layout in the definition are not
    /// kept (Pulumi's console and `esc env edit` keep them).
    ///
    /// # Errors
    /// The definition cannot be read, edited at `path`, or written.
    pub async fn set(
        &self,
        env: &EnvRef,
        path: &PropertyPath,
        value: &SecretString,
        secret: bool,
    ) -> Result<i64, EscError> {
        let definition = self.definition(env).await?;
        let yaml = with_value(&definition.yaml, path, value, secret).map_err(|message| {
            EscError::Setup(format!("environment {env}: cannot set {path}: {message}"))
        })?;
        self.update(env, &yaml, &definition.etag).await
    }
}

/// `yaml` (an environment definition) with the value at `path` under `values:` replaced.
///
/// # Errors
/// The YAML does not parse, or `path` crosses something that is not a map (or an index
/// past an array's end).
pub fn with_value(
    yaml: &str,
    path: &PropertyPath,
    value: &SecretString,
    secret: bool,
) -> Result<String, String> {
    use crate::path::Segment;
    use serde_norway::Value as Y;
    let mut doc: Y = if yaml.trim().is_empty() {
        Y::Mapping(serde_norway::Mapping::new())
    } else {
        serde_norway::from_str(yaml).map_err(|e| format!("the definition does not parse: {e}"))?
    };
    let Y::Mapping(root) = &mut doc else {
        return Err("the definition is not a map".into());
    };
    let mut at = root
        .entry(Y::String("values".into()))
        .or_insert_with(|| Y::Mapping(serde_norway::Mapping::new()));
    for segment in path.segments() {
        at = match (segment, at) {
            (Segment::Key(k), node) => {
                if !matches!(node, Y::Mapping(_)) {
                    if matches!(node, Y::Null) {
                        *node = Y::Mapping(serde_norway::Mapping::new());
                    } else {
                        return Err(format!("`{k}` is under something that is not a map"));
                    }
                }
                let Y::Mapping(map) = node else {
                    return Err(format!("`{k}` is under something that is not a map"));
                };
                map.entry(Y::String(k.clone())).or_insert(Y::Null)
            }
            (Segment::Index(i), Y::Sequence(items)) => items
                .get_mut(*i)
                .ok_or_else(|| format!("index {i} is past the array's end"))?,
            (Segment::Index(i), _) => return Err(format!("[{i}] is not in an array")),
        };
    }
    let text = Y::String(value.expose_secret().to_owned());
    *at = if secret {
        let mut m = serde_norway::Mapping::new();
        m.insert(Y::String("fn::secret".into()), text);
        Y::Mapping(m)
    } else {
        text
    };
    serde_norway::to_string(&doc).map_err(|e| e.to_string())
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("Retry-After")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_set_under_values_creating_maps_and_marking_secrets() {
        let yaml =
            "imports: [base]\nvalues:\n  harbor:\n    url: https://harbor.lan\n  list: [a, b]\n";
        let out = with_value(
            yaml,
            &"harbor.admin.password".parse().unwrap(),
            &"pw".to_owned().into(),
            true,
        )
        .unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&out).unwrap();
        assert_eq!(doc["imports"][0], "base");
        assert_eq!(doc["values"]["harbor"]["url"], "https://harbor.lan");
        assert_eq!(
            doc["values"]["harbor"]["admin"]["password"]["fn::secret"],
            "pw"
        );
        let out = with_value(
            yaml,
            &"list[1]".parse().unwrap(),
            &"c".to_owned().into(),
            false,
        )
        .unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&out).unwrap();
        assert_eq!(doc["values"]["list"][1], "c");
        assert_eq!(
            with_value(
                yaml,
                &"list[5]".parse().unwrap(),
                &"c".to_owned().into(),
                false
            )
            .unwrap_err(),
            "index 5 is past the array's end"
        );
        assert_eq!(
            with_value(
                yaml,
                &"harbor.url.x".parse().unwrap(),
                &"c".to_owned().into(),
                false
            )
            .unwrap_err(),
            "`x` is under something that is not a map"
        );
        assert!(with_value("", &"a".parse().unwrap(), &"v".to_owned().into(), false).is_ok());
    }
}
