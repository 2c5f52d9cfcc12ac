//! Harbor's REST API (v2.0): health and system info, projects, robot accounts, repositories
//! and artifacts (paged with `page_size` ≤ 100, following `Link`; nested repository names
//! double-encoded as Harbor requires), a keep-the-newest-N cleanup with a dry run, tag
//! retention, garbage collection, and vulnerability scans. Errors carry Harbor's
//! `{"errors":[{code, message}]}` and the `X-Request-Id` of the request.

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::registry::{ApiError, next_link};

/// Largest page Harbor serves.
pub const MAX_PAGE_SIZE: usize = 100;

/// A Harbor API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarborError {
    /// Harbor answered with an error status.
    #[error("{method} {path}: HTTP {status}{}{}", errors.iter().fold(String::new(), |s, e| s + ": " + &e.code + " " + &e.message), request_id.as_ref().map(|r| format!(" (X-Request-Id {r})")).unwrap_or_default())]
    Status {
        /// Method.
        method: Method,
        /// Path below the API base.
        path: String,
        /// Status.
        status: StatusCode,
        /// Harbor's errors.
        errors: Vec<ApiError>,
        /// The request id Harbor logged it under.
        request_id: Option<String>,
    },
    /// The request could not be sent or the answer read.
    #[error("{method} {path}: {source}")]
    Transport {
        /// Method.
        method: Method,
        /// Path.
        path: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The client could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A CA certificate given to trust cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The Harbor URL does not parse (it is not repeated: it may hold a password).
    #[error("the Harbor URL does not parse: {source}")]
    Url {
        /// The parser's error.
        source: url::ParseError,
    },
    /// An API path does not join the base URL.
    #[error("{path}: {source}")]
    Path {
        /// The path.
        path: String,
        /// The parser's error.
        source: url::ParseError,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {source}")]
    Client {
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// Harbor answered with something that is not what its API describes.
    #[error("{path}: unexpected answer: {source}")]
    Answer {
        /// The path called.
        path: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// A request body could not be encoded.
    #[error("{path}: cannot encode the request: {source}")]
    Encode {
        /// The path to be called.
        path: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
}

impl HarborError {
    /// The HTTP status, when Harbor answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, HarborError>;

/// The path segment of a repository name inside a project: Harbor wants `/` in it encoded
/// twice (`a/b` → `a%252Fb`), because its router decodes once before matching.
pub fn repository_segment(name: &str) -> String {
    name.replace('%', "%25")
        .replace('/', "%2F")
        .replace('%', "%25")
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Id.
    pub project_id: i64,
    /// Name.
    pub name: String,
    /// Metadata (`public`: "true"/"false", ...).
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Project {
    /// Whether anyone may pull.
    pub fn is_public(&self) -> bool {
        self.metadata.get("public").is_some_and(|v| v == "true")
    }
}

/// A garbage-collection schedule, as Harbor's `ScheduleObj` takes it. Harbor validates the cron
/// of every scheduled type (`utils.ValidateCronString`: six fields, seconds first and fixed at
/// 0), and silently ignores types its handler does not know (`Schedule`), so only these exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcSchedule {
    /// Every hour, at minute 0.
    Hourly,
    /// Every day at midnight.
    Daily,
    /// Every Sunday at midnight.
    Weekly,
    /// On a six-field cron (`0 30 2 * * *`).
    Custom(String),
    /// No schedule.
    None,
}

impl GcSchedule {
    /// From the words a user types: `Hourly`, `Daily`, `Weekly`, `None` (any case), or
    /// `Custom` with `cron`.
    ///
    /// # Errors
    /// Another word, a cron given for a fixed type, a Custom without cron, or a cron Harbor
    /// would refuse.
    pub fn parse(kind: &str, cron: Option<&str>) -> std::result::Result<Self, String> {
        let fixed = |s: Self| match cron {
            Some(_) => Err(format!("--cron goes with Custom only, not {kind}")),
            None => Ok(s),
        };
        match kind.to_ascii_lowercase().as_str() {
            "hourly" => fixed(Self::Hourly),
            "daily" => fixed(Self::Daily),
            "weekly" => fixed(Self::Weekly),
            "none" => fixed(Self::None),
            "custom" => {
                let cron =
                    cron.ok_or("Custom needs --cron (six fields: sec min hour dom mon dow)")?;
                check_cron(cron)?;
                Ok(Self::Custom(cron.to_owned()))
            }
            _ => Err(format!(
                "`{kind}` is not a schedule: Hourly, Daily, Weekly, Custom (with --cron) or None"
            )),
        }
    }

    /// The schedule type's name in Harbor's API.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hourly => "Hourly",
            Self::Daily => "Daily",
            Self::Weekly => "Weekly",
            Self::Custom(_) => "Custom",
            Self::None => "None",
        }
    }

    /// The cron Harbor runs it on (what its UI sends for the fixed types).
    pub fn cron(&self) -> Option<&str> {
        match self {
            Self::Hourly => Some("0 0 * * * *"),
            Self::Daily => Some("0 0 0 * * *"),
            Self::Weekly => Some("0 0 0 * * 0"),
            Self::Custom(cron) => Some(cron),
            Self::None => None,
        }
    }

    fn body(&self) -> serde_json::Value {
        match self.cron() {
            Some(cron) => serde_json::json!({ "type": self.kind(), "cron": cron }),
            None => serde_json::json!({ "type": self.kind() }),
        }
    }
}

/// Harbor's rule for a cron: six space-separated fields, the first (seconds) `0`.
fn check_cron(cron: &str) -> std::result::Result<(), String> {
    let fields: Vec<&str> = cron.split(' ').collect();
    if fields.len() != 6 || fields.iter().any(|f| f.is_empty()) {
        return Err(format!(
            "`{cron}` is not a six-field cron (sec min hour dom mon dow, one space apart)"
        ));
    }
    if fields[0] != "0" {
        return Err(format!(
            "`{cron}`: Harbor needs the first (seconds) field to be 0"
        ));
    }
    Ok(())
}

/// One permission of a robot account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotPermission {
    /// `project` (or `system`).
    pub kind: String,
    /// The project name (`*` for every project; `/` for system).
    pub namespace: String,
    /// What it may do.
    pub access: Vec<Access>,
}

/// One allowed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository`, `artifact`, `tag`, `scan`, ...
    pub resource: String,
    /// `pull`, `push`, `delete`, `read`, `list`, `create`, ...
    pub action: String,
}

/// Permissions to pull (and, with `push`, push) the repositories of `project`.
pub fn repository_access(project: &str, push: bool) -> RobotPermission {
    let mut access = vec![Access {
        resource: "repository".into(),
        action: "pull".into(),
    }];
    if push {
        access.push(Access {
            resource: "repository".into(),
            action: "push".into(),
        });
    }
    RobotPermission {
        kind: "project".into(),
        namespace: project.into(),
        access,
    }
}

/// A robot account to create.
#[derive(Debug, Clone, Serialize)]
pub struct RobotCreate {
    /// Short name (Harbor prefixes it: `robot$project+name` or `robot$name`).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// `system` or `project`.
    pub level: String,
    /// Lifetime in days, `-1` for never expiring.
    pub duration: i64,
    /// What it may do.
    pub permissions: Vec<RobotPermission>,
}

/// A robot account as Harbor lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Robot {
    /// Id.
    pub id: i64,
    /// Full name, as used to log in.
    pub name: String,
    /// Level.
    #[serde(default)]
    pub level: String,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<RobotPermission>,
}

/// A robot's credentials: returned once, at creation or when the secret is refreshed.
#[derive(Debug, Clone)]
pub struct RobotCredentials {
    /// Id.
    pub id: i64,
    /// Full name to log in with.
    pub name: String,
    /// The secret; never printed.
    pub secret: SecretString,
}

/// A repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Repository {
    /// Id.
    pub id: i64,
    /// Full name, `project/path`.
    pub name: String,
    /// Number of artifacts.
    #[serde(default)]
    pub artifact_count: i64,
}

/// A tag of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Tag {
    /// Name.
    pub name: String,
}

/// An artifact (an image manifest or index).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Artifact {
    /// Id.
    pub id: i64,
    /// Digest.
    pub digest: String,
    /// When it was pushed (RFC 3339).
    pub push_time: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
}

/// What a cleanup removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    /// `repository@digest` of every artifact removed.
    pub removed: Vec<String>,
    /// How many were kept.
    pub kept: usize,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
    name: String,
    secret: String,
}

#[derive(Deserialize)]
struct Sec {
    secret: String,
}

/// [`HarborError::Answer`] for `path`.
fn answer(path: &str) -> impl FnOnce(serde_json::Error) -> HarborError {
    let path = path.to_owned();
    move |source| HarborError::Answer { path, source }
}

/// The id at the end of the `Location` of a 201 answer (`/api/v2.0/retentions/7` → 7).
fn created_id(headers: &HeaderMap, path: &str) -> Result<i64> {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.rsplit('/').next())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            HarborError::Setup(format!(
                "{path}: the answer has no Location ending in the new id"
            ))
        })
}

/// A Harbor instance.
///
/// ```no_run
/// # async fn demo() -> Result<(), harbor_client::harbor::HarborError> {
/// use harbor_client::harbor::{Harbor, HarborOptions};
///
/// let options = HarborOptions::default().ca_file(Some("/etc/homelab/ca.crt".into()));
/// let harbor = Harbor::new("https://harbor.homelab.lan", "admin", "Harbor12345".into(), &options)?;
/// // A wrong password is not refused by Harbor: the call runs anonymously. Check first.
/// harbor.check_login().await?;
/// let (project, created) = harbor.ensure_project("homelab", false).await?;
/// println!("{} (id {}, new: {created})", project.name, project.project_id);
/// for repository in harbor.repositories("homelab").await? {
///     println!("{} ({} artifacts)", repository.name, repository.artifact_count);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Harbor {
    base: Url,
    http: reqwest::Client,
    username: String,
    password: SecretString,
}

/// How to reach Harbor beyond its URL.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HarborOptions {
    /// Trust this CA certificate (PEM) too.
    pub ca_file: Option<std::path::PathBuf>,
    /// Trust this CA certificate (PEM bytes) too, e.g. one read from a cluster's Secret.
    pub ca_pem: Option<Vec<u8>>,
    /// Reach Harbor's host at this address instead of asking DNS (a lab whose names only
    /// its nodes know).
    pub resolve: Option<std::net::SocketAddr>,
    /// Allow an `http://` URL: the password then crosses the network in clear text, so it
    /// must be asked for.
    pub plain_http: bool,
}

impl HarborOptions {
    /// With a CA certificate to trust.
    #[must_use]
    pub fn ca_file(mut self, ca_file: Option<std::path::PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// With a CA certificate (PEM bytes) to trust.
    #[must_use]
    pub fn ca_pem(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca_pem = pem;
        self
    }

    /// Reaching Harbor's host at `address`, not through DNS.
    #[must_use]
    pub fn resolve(mut self, address: Option<std::net::SocketAddr>) -> Self {
        self.resolve = address;
        self
    }

    /// Allowing `http://`.
    #[must_use]
    pub fn plain_http(mut self, plain_http: bool) -> Self {
        self.plain_http = plain_http;
        self
    }
}

impl Harbor {
    /// A client for the Harbor at `url` (`https://harbor.example`), logging in as
    /// `username`.
    ///
    /// # Errors
    /// The URL is not absolute, is `http://` without [`HarborOptions::plain_http`], or the
    /// CA file is unusable.
    pub fn new(
        url: &str,
        username: &str,
        password: SecretString,
        options: &HarborOptions,
    ) -> Result<Self> {
        let mut base =
            // Not repeated: a URL that does not parse may still hold a password.
            Url::parse(url).map_err(|source| HarborError::Url { source })?;
        if base.scheme() == "http" && !options.plain_http {
            return Err(HarborError::Setup(format!(
                "the Harbor URL is plain HTTP ({}): the password would cross the network in \
                 clear text; use https, or allow it explicitly (--plain-http)",
                base.host_str().unwrap_or_default()
            )));
        }
        base.set_path(&format!("{}/api/v2.0/", base.path().trim_end_matches('/')));
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("homelab-harbor-client/", env!("CARGO_PKG_VERSION")))
            // An https Harbor is never left for plain HTTP (a redirect or link included).
            .https_only(base.scheme() == "https");
        if let (Some(address), Some(host)) = (options.resolve, base.host_str()) {
            builder = builder.resolve(host, address);
        }
        let builder = crate::tls::trust(
            builder,
            options.ca_file.as_deref(),
            options.ca_pem.as_deref(),
        )?;
        Ok(Self {
            base,
            http: builder
                .build()
                .map_err(|source| HarborError::Client { source })?,
            username: username.to_owned(),
            password,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>)> {
        let mut url = self.base.join(path).map_err(|source| HarborError::Path {
            path: path.to_owned(),
            source,
        })?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        let mut request = self
            .http
            .request(method.clone(), url)
            .basic_auth(&self.username, Some(self.password.expose_secret()));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| HarborError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok((status, headers, bytes));
        }
        Err(HarborError::Status {
            method,
            path: path.to_owned(),
            status,
            errors: serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.errors)
                .unwrap_or_default(),
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let (_, _, bytes) = self.call(Method::GET, path, query, None, &[]).await?;
        serde_json::from_slice(&bytes).map_err(answer(path))
    }

    /// Every item of a paged list, `page_size` ([`MAX_PAGE_SIZE`] at most) at a time,
    /// following `Link: rel="next"` until `X-Total-Count` items have been read.
    async fn all_pages<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut page = 1usize;
        loop {
            let mut q = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("page_size", MAX_PAGE_SIZE.to_string()));
            let (_, headers, bytes) = self.call(Method::GET, path, &q, None, &[]).await?;
            let batch: Vec<T> = serde_json::from_slice(&bytes).map_err(answer(path))?;
            let got = batch.len();
            items.extend(batch);
            let total = headers
                .get("x-total-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let more = next_link(&headers).is_some() && total.is_none_or(|t| items.len() < t);
            if !more || got == 0 {
                return Ok(items);
            }
            page += 1;
        }
    }

    /// Harbor's overall health status (`healthy` or `unhealthy`) and each component's.
    ///
    /// # Errors
    /// The call fails.
    pub async fn health(&self) -> Result<serde_json::Value> {
        self.get_json("health", &[]).await
    }

    /// System information (version, auth mode, ...).
    ///
    /// # Errors
    /// The call fails.
    pub async fn system_info(&self) -> Result<serde_json::Value> {
        self.get_json("systeminfo", &[]).await
    }

    /// A project by name, `None` when there is none.
    ///
    /// # Errors
    /// The call fails otherwise.
    pub async fn project(&self, name: &str) -> Result<Option<Project>> {
        match self
            .call(
                Method::GET,
                &format!("projects/{name}"),
                &[],
                None,
                &[("X-Is-Resource-Name", "true")],
            )
            .await
        {
            Ok((_, _, bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(answer(&format!("projects/{name}"))),
            Err(e)
                if e.status() == Some(StatusCode::NOT_FOUND)
                    || e.status() == Some(StatusCode::FORBIDDEN) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every project visible to the user.
    ///
    /// # Errors
    /// The call fails.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        self.all_pages("projects", &[]).await
    }

    /// Creates the project unless it exists; returns it and whether it was created.
    ///
    /// # Errors
    /// The call fails.
    pub async fn ensure_project(&self, name: &str, public: bool) -> Result<(Project, bool)> {
        if let Some(p) = self.project(name).await? {
            return Ok((p, false));
        }
        let body = serde_json::json!({
            "project_name": name,
            "metadata": { "public": if public { "true" } else { "false" } },
        });
        let created = match self
            .call(Method::POST, "projects", &[], Some(&body), &[])
            .await
        {
            Ok(_) => true,
            // Created meanwhile by someone else.
            Err(e) if e.status() == Some(StatusCode::CONFLICT) => false,
            Err(e) => return Err(e),
        };
        let project = self.project(name).await?.ok_or_else(|| {
            HarborError::Setup(format!("project {name} was created but cannot be read"))
        })?;
        Ok((project, created))
    }

    /// Deletes a project (it must be empty).
    ///
    /// # Errors
    /// The call fails (412 when it still holds repositories).
    pub async fn delete_project(&self, name: &str) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!("projects/{name}"),
            &[],
            None,
            &[("X-Is-Resource-Name", "true")],
        )
        .await
        .map(|_| ())
    }

    /// Creates a robot account; its secret is in the answer (and nowhere else, ever).
    ///
    /// # Errors
    /// The call fails (409 when the name is taken).
    pub async fn create_robot(&self, robot: &RobotCreate) -> Result<RobotCredentials> {
        let body = serde_json::to_value(robot).map_err(|source| HarborError::Encode {
            path: "robots".into(),
            source,
        })?;
        let (_, _, bytes) = self
            .call(Method::POST, "robots", &[], Some(&body), &[])
            .await?;
        let created: Created = serde_json::from_slice(&bytes).map_err(answer("robots"))?;
        Ok(RobotCredentials {
            id: created.id,
            name: created.name,
            secret: created.secret.into(),
        })
    }

    /// Every robot account.
    ///
    /// # Errors
    /// The call fails.
    pub async fn robots(&self, project: Option<&Project>) -> Result<Vec<Robot>> {
        // Harbor's `ListRobot` lists system robots unless asked for a project's by id.
        let q = match project {
            Some(p) => format!("Level=project,ProjectID={}", p.project_id),
            None => "Level=system".to_owned(),
        };
        self.all_pages("robots", &[("q", q)]).await
    }

    /// Deletes a robot account.
    ///
    /// # Errors
    /// The call fails.
    pub async fn delete_robot(&self, id: i64) -> Result<()> {
        self.call(Method::DELETE, &format!("robots/{id}"), &[], None, &[])
            .await
            .map(|_| ())
    }

    /// Gives a robot account a new secret (generated by Harbor) and returns it.
    ///
    /// # Errors
    /// The call fails.
    pub async fn refresh_robot_secret(&self, id: i64) -> Result<SecretString> {
        let (_, _, bytes) = self
            .call(
                Method::PATCH,
                &format!("robots/{id}"),
                &[],
                Some(&serde_json::json!({})),
                &[],
            )
            .await?;
        let sec: Sec = serde_json::from_slice(&bytes).map_err(answer(&format!("robots/{id}")))?;
        Ok(sec.secret.into())
    }

    /// Every repository of a project.
    ///
    /// # Errors
    /// The call fails.
    pub async fn repositories(&self, project: &str) -> Result<Vec<Repository>> {
        self.all_pages(&format!("projects/{project}/repositories"), &[])
            .await
    }

    fn repo_path(project: &str, repository: &str) -> String {
        let inner = repository
            .strip_prefix(&format!("{project}/"))
            .unwrap_or(repository);
        format!(
            "projects/{project}/repositories/{}",
            repository_segment(inner)
        )
    }

    /// Deletes a repository (`project/path` or just `path`) and everything in it.
    ///
    /// # Errors
    /// The call fails.
    pub async fn delete_repository(&self, project: &str, repository: &str) -> Result<()> {
        self.call(
            Method::DELETE,
            &Self::repo_path(project, repository),
            &[],
            None,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Every artifact of a repository, with tags.
    ///
    /// # Errors
    /// The call fails.
    pub async fn artifacts(&self, project: &str, repository: &str) -> Result<Vec<Artifact>> {
        self.all_pages(
            &format!("{}/artifacts", Self::repo_path(project, repository)),
            &[("with_tag", "true".into())],
        )
        .await
    }

    /// Deletes an artifact by digest or tag.
    ///
    /// # Errors
    /// The call fails.
    pub async fn delete_artifact(
        &self,
        project: &str,
        repository: &str,
        reference: &str,
    ) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!(
                "{}/artifacts/{reference}",
                Self::repo_path(project, repository)
            ),
            &[],
            None,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Starts a vulnerability scan of an artifact.
    ///
    /// # Errors
    /// The call fails.
    pub async fn scan(&self, project: &str, repository: &str, reference: &str) -> Result<()> {
        self.call(
            Method::POST,
            &format!(
                "{}/artifacts/{reference}/scan",
                Self::repo_path(project, repository)
            ),
            &[],
            None,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Keeps the `keep` most recently pushed artifacts of every repository of `project` and
    /// deletes the others (with `dry_run`, only says which).
    ///
    /// # Errors
    /// A call fails; what was removed before it is lost from the report but stays removed.
    pub async fn cleanup(&self, project: &str, keep: usize, dry_run: bool) -> Result<Cleanup> {
        let mut report = Cleanup::default();
        for repo in self.repositories(project).await? {
            let mut artifacts = self.artifacts(project, &repo.name).await?;
            // RFC 3339 times in UTC sort as text; newest first.
            artifacts.sort_by(|a, b| b.push_time.cmp(&a.push_time));
            report.kept += artifacts.len().min(keep);
            for old in artifacts.iter().skip(keep) {
                if !dry_run {
                    self.delete_artifact(project, &repo.name, &old.digest)
                        .await?;
                }
                report.removed.push(format!("{}@{}", repo.name, old.digest));
            }
        }
        Ok(report)
    }

    /// Sets a tag retention policy on a project: keep the `keep` most recently pushed
    /// artifacts of each repository, run on `cron` (Harbor's six-field cron). Returns the
    /// policy's id. A project has at most one policy: Harbor's `CreateRetention` refuses a
    /// second, so an existing one (the project's `retention_id` metadata) is updated with
    /// `UpdateRetention` instead.
    ///
    /// # Errors
    /// The call fails.
    pub async fn set_retention(&self, project: &Project, keep: u32, cron: &str) -> Result<i64> {
        let body = serde_json::json!({
            "algorithm": "or",
            "rules": [{
                "disabled": false,
                "action": "retain",
                "template": "latestPushedK",
                "params": { "latestPushedK": keep },
                "tag_selectors": [{ "kind": "doublestar", "decoration": "matches", "pattern": "**" }],
                "scope_selectors": { "repository": [{ "kind": "doublestar", "decoration": "repoMatches", "pattern": "**" }] },
            }],
            "trigger": { "kind": "Schedule", "settings": { "cron": cron } },
            "scope": { "level": "project", "ref": project.project_id },
        });
        let current = self
            .project(&project.name)
            .await?
            .and_then(|p| p.metadata.get("retention_id").cloned())
            .and_then(|id| id.parse::<i64>().ok());
        if let Some(id) = current {
            self.call(
                Method::PUT,
                &format!("retentions/{id}"),
                &[],
                Some(&body),
                &[],
            )
            .await?;
            return Ok(id);
        }
        let (_, headers, _) = self
            .call(Method::POST, "retentions", &[], Some(&body), &[])
            .await?;
        created_id(&headers, "retentions")
    }

    /// Checks that Harbor accepts the credentials (`GET /users/current`). Harbor treats a
    /// caller whose password is wrong as anonymous on most endpoints (`GET /projects` then
    /// lists public projects only), so a command would quietly act as nobody: this asks the
    /// one question anonymous cannot answer. A robot account gets 412 there, which means its
    /// credentials were accepted.
    ///
    /// # Errors
    /// Harbor answers 401 (wrong user or password), or the call fails.
    pub async fn check_login(&self) -> Result<()> {
        match self
            .call(Method::GET, "users/current", &[], None, &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::PRECONDITION_FAILED) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                Err(HarborError::Setup(format!(
                    "Harbor refused the credentials of {}: wrong user name or password \
                     (Harbor would otherwise treat every request as anonymous)",
                    self.username
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the garbage-collection schedule (Harbor's `UpdateGCSchedule`: `PUT
    /// /system/gc/schedule`). Harbor validates the cron of every scheduled type, so each type
    /// is sent with the cron Harbor's own UI uses for it.
    ///
    /// # Errors
    /// The call fails (a cron Harbor refuses is caught before: see [`GcSchedule::parse`]).
    pub async fn set_gc_schedule(&self, schedule: &GcSchedule) -> Result<()> {
        let body = serde_json::json!({ "schedule": schedule.body() });
        self.call(Method::PUT, "system/gc/schedule", &[], Some(&body), &[])
            .await
            .map(|_| ())
    }

    /// Starts a garbage collection now; returns its id.
    ///
    /// # Errors
    /// The call fails.
    pub async fn run_gc(&self, delete_untagged: bool) -> Result<i64> {
        let body = serde_json::json!({
            "schedule": { "type": "Manual" },
            "parameters": { "delete_untagged": delete_untagged },
        });
        let (_, headers, _) = self
            .call(Method::POST, "system/gc/schedule", &[], Some(&body), &[])
            .await?;
        created_id(&headers, "system/gc/schedule")
    }

    /// A garbage-collection run's status (`job_status`: Pending, Running, Success, Error, ...).
    ///
    /// # Errors
    /// The call fails.
    pub async fn gc_status(&self, id: i64) -> Result<serde_json::Value> {
        self.get_json(&format!("system/gc/{id}"), &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_repository_names_are_encoded_twice() {
        assert_eq!(repository_segment("app"), "app");
        assert_eq!(repository_segment("team/app"), "team%252Fapp");
        assert_eq!(repository_segment("a/b/c"), "a%252Fb%252Fc");
        assert_eq!(
            Harbor::repo_path("p", "p/team/app"),
            "projects/p/repositories/team%252Fapp"
        );
    }
}
