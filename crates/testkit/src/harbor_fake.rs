//! A contract fake of Harbor's REST API v2.0, served over real HTTP on loopback, stateful,
//! one implementation for every test. It follows the published API (swagger v2.0): base path
//! `/api/v2.0`, basic auth (401 for bad credentials, 403 for a user without the right),
//! `page`/`page_size` (default 10, at most 100, else 422) with `X-Total-Count` and `Link`
//! headers, `X-Request-Id` on every response, `{"errors":[{"code","message"}]}` bodies, 201
//! with `Location` on create, 409 on duplicates, 412 when deleting a project that still has
//! repositories, and repository names inside a project double-encoded (`a%252Fb`); a
//! single-encoded slash does not reach the repository, as in Harbor, whose router decodes
//! once before matching.
//!
//! Artifacts arrive in Harbor by pushes to its registry, not through this API; tests add
//! them with [`HarborFake::push_artifact`].
//!
//! Where the fake follows Harbor's handlers (src/server/v2.0/handler) beyond the swagger, the
//! operation is named at its route: a wrong password makes the caller anonymous, not 401
//! (the basic-auth security generator yields nothing; `getCurrentUserInfo` then answers 401);
//! `ListRobot` without `q` lists system robots only; `CreateRetention` refuses a second policy
//! for a project (400) and records the policy id as the project's `retention_id` metadata;
//! `UpdateGCSchedule` validates the cron of every scheduled type (`ValidateCronString`);
//! `RefreshSec` returns an empty secret when the caller chose it.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "a test fixture: a poisoned lock or a bad header is a test bug"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::percent_decode;

#[derive(Debug, Clone)]
struct Artifact {
    id: i64,
    digest: String,
    push_time: String,
    tags: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    requests: u64,
    /// name -> (id, public)
    projects: BTreeMap<String, (i64, bool)>,
    /// full repository name -> artifacts
    repositories: BTreeMap<String, Vec<Artifact>>,
    /// id -> (name, level, permissions, secret)
    robots: BTreeMap<i64, (String, String, Value, String)>,
    /// robot id -> its project's id (0 for system robots)
    robot_project: BTreeMap<i64, i64>,
    retentions: BTreeMap<i64, Value>,
    /// project id -> its retention policy id (Harbor's `retention_id` project metadata)
    retention_of: BTreeMap<i64, i64>,
    gc_schedule: Value,
    gc_runs: BTreeMap<i64, Value>,
    scans: Vec<String>,
    log: Vec<String>,
}

/// The running fake.
#[derive(Clone)]
pub struct HarborFake {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:port`.
    pub url: String,
}

/// The system administrator of the fake.
pub const ADMIN: (&str, &str) = ("admin", "Harbor12345");
/// A user who may read but not administer.
pub const DEVELOPER: (&str, &str) = ("dev", "dev-password");

struct Reply {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

fn reply(status: StatusCode, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
        headers: Vec::new(),
    }
}

fn empty(status: StatusCode) -> Reply {
    Reply {
        status,
        body: None,
        headers: Vec::new(),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    reply(
        status,
        json!({ "errors": [{ "code": code, "message": message }] }),
    )
}

fn created(location: String) -> Reply {
    Reply {
        status: StatusCode::CREATED,
        body: None,
        headers: vec![("Location".into(), location)],
    }
}

fn query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// One page of `items`, with Harbor's headers, or 422 for a bad page size.
fn paged(path: &str, q: &BTreeMap<String, String>, items: Vec<Value>) -> Reply {
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size: usize = q
        .get("page_size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(10);
    if size > 100 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_ENTITY",
            "validation failure list:\npage_size in query should be less than or equal to 100",
        );
    }
    let total = items.len();
    let start = (page - 1) * size;
    let chunk: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!(
            "<{path}?page={}&page_size={size}>; rel=\"prev\"",
            page - 1
        ));
    }
    if start + size < total {
        links.push(format!(
            "<{path}?page={}&page_size={size}>; rel=\"next\"",
            page + 1
        ));
    }
    let mut r = reply(StatusCode::OK, Value::Array(chunk));
    r.headers.push(("X-Total-Count".into(), total.to_string()));
    if !links.is_empty() {
        r.headers.push(("Link".into(), links.join(" , ")));
    }
    r
}

/// Harbor's `utils.ValidateCronString`: non-empty, six fields (robfig/cron with seconds), the
/// first (seconds) `0`. The field values themselves are not parsed here.
fn validate_cron(cron: &str) -> Result<(), &'static str> {
    if cron.is_empty() {
        return Err("empty cron string is invalid");
    }
    let fields: Vec<&str> = cron.split(' ').collect();
    if fields.len() != 6 || fields.iter().any(|f| f.is_empty()) {
        return Err("expected exactly 6 fields");
    }
    if fields[0] != "0" {
        return Err("the 1st field (indicating Seconds of time) of the cron setting must be 0");
    }
    Ok(())
}

impl HarborFake {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            next_id: 1,
            gc_schedule: json!({ "schedule": { "type": "None" } }),
            ..State::default()
        }));
        let handler_state = state.clone();
        let url = crate::serve_loopback(move |req: Request<Body>| {
            let fake = Self {
                state: handler_state.clone(),
                url: String::new(),
            };
            async move { fake.serve(req).await }
        })
        .await;
        Self { state, url }
    }

    /// Adds an artifact to a repository, as a push to Harbor's registry would.
    pub fn push_artifact(&self, repository: &str, digest: &str, tags: &[&str], push_time: &str) {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.repositories
            .entry(repository.to_owned())
            .or_default()
            .push(Artifact {
                id,
                digest: digest.to_owned(),
                push_time: push_time.to_owned(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            });
    }

    /// The digests a repository holds.
    pub fn digests(&self, repository: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .repositories
            .get(repository)
            .map(|a| a.iter().map(|a| a.digest.clone()).collect())
            .unwrap_or_default()
    }

    /// Every request as `METHOD /path?query`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Artifacts whose scan was requested, `repository@reference`.
    pub fn scans(&self) -> Vec<String> {
        self.state.lock().unwrap().scans.clone()
    }

    fn user(req: &Request<Body>) -> Option<&'static str> {
        let header = req.headers().get("authorization")?.to_str().ok()?;
        let encoded = header.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        [ADMIN, DEVELOPER]
            .into_iter()
            .find(|(u, p)| text == format!("{u}:{p}"))
            .map(|(u, _)| u)
    }

    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let request_id = {
            let mut s = self.state.lock().unwrap();
            s.requests += 1;
            s.log.push(format!(
                "{} {}{}",
                req.method(),
                req.uri().path(),
                req.uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default()
            ));
            format!("fake-req-{:06}", s.requests)
        };
        // A wrong password is not refused: Harbor's security context is then anonymous.
        let user = Self::user(&req);
        let reply = {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let q = query(req.uri().query());
            let resource_by_name = req
                .headers()
                .get("x-is-resource-name")
                .is_some_and(|v| v == "true");
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.route(method.as_str(), &path, &q, &body, user, resource_by_name)
        };
        let mut response = Response::new(match &reply.body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        });
        *response.status_mut() = reply.status;
        let headers = response.headers_mut();
        headers.insert("X-Request-Id", HeaderValue::from_str(&request_id).unwrap());
        if reply.body.is_some() {
            headers.insert("Content-Type", HeaderValue::from_static("application/json"));
        }
        for (k, v) in reply.headers {
            headers.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        response
    }

    #[allow(clippy::too_many_lines)]
    fn route(
        &self,
        method: &str,
        path: &str,
        q: &BTreeMap<String, String>,
        body: &Value,
        user: Option<&str>,
        by_name: bool,
    ) -> Reply {
        let Some(rest) = path.strip_prefix("/api/v2.0/") else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found");
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let admin = user == Some(ADMIN.0);
        // Anonymous may read health, systeminfo and public projects (`listProjects` filters
        // them); everything else needs a user.
        let needs_login = !matches!(
            (method, segments.as_slice()),
            ("GET", ["health" | "systeminfo" | "projects"])
        );
        if needs_login && user.is_none() {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "unauthorized");
        }
        let forbidden = || error(StatusCode::FORBIDDEN, "FORBIDDEN", "forbidden");
        let mut s = self.state.lock().unwrap();
        // `X-Is-Resource-Name`: a key that does not parse as an integer is a name anyway.
        let find_project = |s: &State, key: &str| -> Option<(String, i64, bool)> {
            if by_name || key.parse::<i64>().is_err() {
                s.projects.get(key).map(|(id, p)| (key.to_owned(), *id, *p))
            } else {
                let id: i64 = key.parse().ok()?;
                s.projects
                    .iter()
                    .find(|(_, (i, _))| *i == id)
                    .map(|(n, (i, p))| (n.clone(), *i, *p))
            }
        };
        let project_json = |s: &State, name: &str, id: i64, public: bool| {
            let mut metadata = json!({ "public": public.to_string() });
            if let Some(policy) = s.retention_of.get(&id) {
                metadata["retention_id"] = json!(policy.to_string());
            }
            json!({ "project_id": id, "name": name, "metadata": metadata })
        };
        match (method, segments.as_slice()) {
            ("GET", ["health"]) => reply(
                StatusCode::OK,
                json!({ "status": "healthy", "components": [
                    { "name": "core", "status": "healthy" }, { "name": "registry", "status": "healthy" } ] }),
            ),
            // `getCurrentUserInfo`: (needs a user; see needs_login above).
            ("GET", ["users", "current"]) => reply(
                StatusCode::OK,
                json!({ "user_id": 1, "username": user.unwrap_or_default(), "sysadmin_flag": admin }),
            ),
            ("GET", ["systeminfo"]) => reply(
                StatusCode::OK,
                json!({ "harbor_version": "v2.13.0-fake", "auth_mode": "db_auth", "with_chartmuseum": false }),
            ),
            ("GET", ["projects"]) => {
                let items = s
                    .projects
                    .iter()
                    .filter(|(n, _)| q.get("name").is_none_or(|want| want == *n))
                    .filter(|(_, (_, public))| user.is_some() || *public)
                    .map(|(n, (id, p))| project_json(&s, n, *id, *p))
                    .collect();
                paged("/api/v2.0/projects", q, items)
            }
            ("HEAD", ["projects"]) => {
                let name = q.get("project_name").cloned().unwrap_or_default();
                empty(if s.projects.contains_key(&name) {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                })
            }
            ("POST", ["projects"]) => {
                if !admin {
                    return forbidden();
                }
                let Some(name) = body["project_name"].as_str() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "project_name is required",
                    );
                };
                if name.is_empty() || name != name.to_lowercase() || name.len() > 255 {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "project name is not in lower case or contains illegal characters",
                    );
                }
                if s.projects.contains_key(name) {
                    return error(
                        StatusCode::CONFLICT,
                        "CONFLICT",
                        &format!("The project named {name} already exists"),
                    );
                }
                s.next_id += 1;
                let id = s.next_id;
                let public = body["metadata"]["public"].as_str() == Some("true");
                s.projects.insert(name.to_owned(), (id, public));
                created(format!("/api/v2.0/projects/{id}"))
            }
            ("GET", ["projects", key]) => match find_project(&s, key) {
                Some((n, id, p)) => reply(StatusCode::OK, project_json(&s, &n, id, p)),
                None => error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("project {key} not found"),
                ),
            },
            ("DELETE", ["projects", key]) => {
                if !admin {
                    return forbidden();
                }
                let Some((name, _, _)) = find_project(&s, key) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("project {key} not found"),
                    );
                };
                if s.repositories
                    .keys()
                    .any(|r| r.starts_with(&format!("{name}/")))
                {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        "PRECONDITION",
                        &format!("the project {name} contains repositories, can not be deleted"),
                    );
                }
                s.projects.remove(&name);
                empty(StatusCode::OK)
            }
            ("GET", ["projects", project, "repositories"]) => {
                if !s.projects.contains_key(*project) {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("project {project} not found"),
                    );
                }
                let items = s
                    .repositories
                    .iter()
                    .filter(|(r, _)| r.starts_with(&format!("{project}/")))
                    .enumerate()
                    .map(|(i, (r, a))| json!({ "id": i + 1, "name": r, "artifact_count": a.len() }))
                    .collect();
                paged(
                    &format!("/api/v2.0/projects/{project}/repositories"),
                    q,
                    items,
                )
            }
            (_, ["projects", project, "repositories", repo, more @ ..]) => {
                // The path arrives still encoded: decode once, as Harbor's router does. A
                // single-encoded slash is then a real slash and the route does not match.
                let once = percent_decode(repo);
                if once.contains('/') {
                    return error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found");
                }
                let full = format!("{project}/{}", percent_decode(&once));
                let not_found = || {
                    error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("repository {full} not found"),
                    )
                };
                match (method, more) {
                    ("DELETE", []) => {
                        if !admin {
                            return forbidden();
                        }
                        if s.repositories.remove(&full).is_none() {
                            return not_found();
                        }
                        empty(StatusCode::OK)
                    }
                    ("GET", ["artifacts"]) => {
                        let Some(artifacts) = s.repositories.get(&full) else {
                            return not_found();
                        };
                        let items = artifacts
                            .iter()
                            .map(|a| json!({
                                "id": a.id, "digest": a.digest, "push_time": a.push_time,
                                // `listArtifacts`: with_tag defaults to true.
                                "tags": if q.get("with_tag").is_none_or(|w| w == "true") {
                                    Value::Array(a.tags.iter().map(|t| json!({ "name": t })).collect())
                                } else { Value::Null },
                            }))
                            .collect();
                        paged(
                            &format!("/api/v2.0/projects/{project}/repositories/{repo}/artifacts"),
                            q,
                            items,
                        )
                    }
                    ("DELETE", ["artifacts", reference]) => {
                        if !admin {
                            return forbidden();
                        }
                        let Some(artifacts) = s.repositories.get_mut(&full) else {
                            return not_found();
                        };
                        let before = artifacts.len();
                        artifacts.retain(|a| {
                            a.digest != *reference && !a.tags.iter().any(|t| t == reference)
                        });
                        if artifacts.len() == before {
                            return error(
                                StatusCode::NOT_FOUND,
                                "NOT_FOUND",
                                &format!("artifact {full}@{reference} not found"),
                            );
                        }
                        empty(StatusCode::OK)
                    }
                    ("POST", ["artifacts", reference, "scan"]) => {
                        let known = s.repositories.get(&full).is_some_and(|a| {
                            a.iter().any(|a| {
                                a.digest == *reference || a.tags.iter().any(|t| t == reference)
                            })
                        });
                        if !known {
                            return error(
                                StatusCode::NOT_FOUND,
                                "NOT_FOUND",
                                &format!("artifact {full}@{reference} not found"),
                            );
                        }
                        s.scans.push(format!("{full}@{reference}"));
                        empty(StatusCode::ACCEPTED)
                    }
                    _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found"),
                }
            }
            ("POST", ["robots"]) => {
                if !admin {
                    return forbidden();
                }
                let name = body["name"].as_str().unwrap_or_default();
                let level = body["level"].as_str().unwrap_or_default();
                let permissions = body["permissions"].clone();
                // `CreateRobot` (validate): duration -1 (never expires) or more than 0 days;
                // at least one permission, each with a namespace and some access.
                let duration_ok = body["duration"].as_i64().is_some_and(|d| d == -1 || d > 0);
                let permissions_ok = permissions.as_array().is_some_and(|ps| {
                    !ps.is_empty()
                        && ps.iter().all(|p| {
                            p["namespace"].as_str().is_some_and(|n| !n.is_empty())
                                && p["access"].as_array().is_some_and(|a| !a.is_empty())
                        })
                });
                if !duration_ok {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "duration must be -1 (never expires) or greater than 0",
                    );
                }
                if name.is_empty() || !matches!(level, "system" | "project") || !permissions_ok {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "name, level (system|project) and permissions are required",
                    );
                }
                let full = if level == "project" {
                    format!(
                        "robot${}+{name}",
                        permissions[0]["namespace"].as_str().unwrap_or_default()
                    )
                } else {
                    format!("robot${name}")
                };
                if s.robots.values().any(|(n, ..)| *n == full) {
                    return error(
                        StatusCode::CONFLICT,
                        "CONFLICT",
                        &format!("robot account {full} already exists"),
                    );
                }
                s.next_id += 1;
                let id = s.next_id;
                let secret = format!("S3cret{id:04}{}", "x".repeat(26));
                let project_id = if level == "project" {
                    let ns = permissions[0]["namespace"].as_str().unwrap_or_default();
                    match s.projects.get(ns) {
                        Some((pid, _)) => *pid,
                        None => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "BAD_REQUEST",
                                &format!("project {ns} not found"),
                            );
                        }
                    }
                } else {
                    0
                };
                s.robots.insert(
                    id,
                    (full.clone(), level.to_owned(), permissions, secret.clone()),
                );
                s.robot_project.insert(id, project_id);
                let mut r = reply(
                    StatusCode::CREATED,
                    json!({ "id": id, "name": full, "secret": secret, "creation_time": "2026-11-23T12:00:00.000Z", "expires_at": -1 }),
                );
                r.headers
                    .push(("Location".into(), format!("/api/v2.0/robots/{id}")));
                r
            }
            ("GET", ["robots"]) => {
                // `ListRobot`: no `q`, or Level=system, lists system robots;
                // Level=project needs ProjectID (a positive integer).
                let keywords: BTreeMap<&str, &str> = q
                    .get("q")
                    .map(|q| q.split(',').filter_map(|kv| kv.split_once('=')).collect())
                    .unwrap_or_default();
                let project = match keywords.get("Level").copied() {
                    None | Some("system") => 0,
                    Some("project") => match keywords.get("ProjectID").map(|v| v.parse::<i64>()) {
                        Some(Ok(id)) if id > 0 => id,
                        Some(_) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "BAD_REQUEST",
                                "ProjectID must be a positive integer",
                            );
                        }
                        None => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "BAD_REQUEST",
                                "must with project ID when to query project robots",
                            );
                        }
                    },
                    Some(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "BAD_REQUEST",
                            "bad request error level input",
                        );
                    }
                };
                let items = s
                    .robots
                    .iter()
                    .filter(|(id, _)| s.robot_project.get(id).copied().unwrap_or(0) == project)
                    .map(|(id, (n, l, p, _))| json!({ "id": id, "name": n, "level": l, "permissions": p }))
                    .collect();
                paged("/api/v2.0/robots", q, items)
            }
            ("DELETE", ["robots", id]) => {
                if !admin {
                    return forbidden();
                }
                match id.parse::<i64>().ok().and_then(|id| s.robots.remove(&id)) {
                    Some(_) => empty(StatusCode::OK),
                    None => error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("robot {id} not found"),
                    ),
                }
            }
            ("PATCH", ["robots", id]) => {
                if !admin {
                    return forbidden();
                }
                let Some(robot) = id.parse::<i64>().ok().and_then(|id| s.robots.get_mut(&id))
                else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("robot {id} not found"),
                    );
                };
                // `RefreshSec`: a secret the caller chose is not sent back.
                if let Some(chosen) = body["secret"].as_str().filter(|s| !s.is_empty()) {
                    chosen.clone_into(&mut robot.3);
                    reply(StatusCode::OK, json!({ "secret": "" }))
                } else {
                    robot.3 = format!("Refreshed{id}{}", "y".repeat(24));
                    reply(StatusCode::OK, json!({ "secret": robot.3 }))
                }
            }
            ("POST", ["retentions"]) => {
                if !admin {
                    return forbidden();
                }
                if body["rules"].as_array().is_none_or(Vec::is_empty)
                    || body["scope"]["level"] != "project"
                {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "rules and a project scope are required",
                    );
                }
                // `CreateRetention`: one policy per project.
                let project = body["scope"]["ref"].as_i64().unwrap_or_default();
                if !s.projects.values().any(|(id, _)| *id == project) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        &format!("invalid Project id {project}"),
                    );
                }
                if let Some(old) = s.retention_of.get(&project) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        &format!("project {project} already has retention policy {old}"),
                    );
                }
                s.next_id += 1;
                let id = s.next_id;
                s.retentions.insert(id, body.clone());
                s.retention_of.insert(project, id);
                created(format!("/api/v2.0/retentions/{id}"))
            }
            ("PUT", ["retentions", id]) => {
                if !admin {
                    return forbidden();
                }
                match id
                    .parse::<i64>()
                    .ok()
                    .filter(|id| s.retentions.contains_key(id))
                {
                    Some(id) => {
                        s.retentions.insert(id, body.clone());
                        empty(StatusCode::OK)
                    }
                    None => error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        "retention policy not found",
                    ),
                }
            }
            ("GET", ["retentions", id]) => {
                match id.parse::<i64>().ok().and_then(|id| s.retentions.get(&id)) {
                    Some(p) => reply(StatusCode::OK, p.clone()),
                    None => error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        "retention policy not found",
                    ),
                }
            }
            ("GET", ["system", "gc", "schedule"]) => reply(StatusCode::OK, s.gc_schedule.clone()),
            ("PUT", ["system", "gc", "schedule"]) => {
                if !admin {
                    return forbidden();
                }
                // `UpdateGCSchedule` (kick): the swagger's enum first, then per type.
                let kind = body["schedule"]["type"].as_str().unwrap_or_default();
                match kind {
                    "Hourly" | "Daily" | "Weekly" | "Custom" => {
                        let cron = body["schedule"]["cron"].as_str().unwrap_or_default();
                        if let Err(why) = validate_cron(cron) {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "BAD_REQUEST",
                                &format!(
                                    "invalid cron string for scheduled gc: {cron}, error: {why}"
                                ),
                            );
                        }
                        s.gc_schedule = body.clone();
                    }
                    "None" => s.gc_schedule = json!({ "schedule": { "type": "None" } }),
                    // Known to the swagger, ignored by the handler.
                    "Manual" | "Schedule" => {}
                    _ => {
                        return error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "UNPROCESSABLE_ENTITY",
                            &format!(
                                "schedule.type in body should be one of [Hourly Daily Weekly Custom Manual None Schedule]: {kind}"
                            ),
                        );
                    }
                }
                empty(StatusCode::OK)
            }
            ("POST", ["system", "gc", "schedule"]) => {
                if !admin {
                    return forbidden();
                }
                if body["schedule"]["type"] != "Manual" {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "use PUT to set a schedule; POST runs Manual",
                    );
                }
                s.next_id += 1;
                let id = s.next_id;
                s.gc_runs.insert(id, json!({ "id": id, "job_name": "GARBAGE_COLLECTION", "job_kind": "MANUAL", "job_status": "Success", "job_parameters": body["parameters"].to_string() }));
                created(format!("/api/v2.0/system/gc/{id}"))
            }
            ("GET", ["system", "gc", id]) => {
                match id.parse::<i64>().ok().and_then(|id| s.gc_runs.get(&id)) {
                    Some(r) => reply(StatusCode::OK, r.clone()),
                    None => error(StatusCode::NOT_FOUND, "NOT_FOUND", "gc run not found"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found"),
        }
    }
}
