//! A contract fake of Pulumi ESC's REST API, served over real HTTP on loopback, stateful.
//!
//! It follows the published client (`github.com/pulumi/esc` v0.25.0,
//! `cmd/esc/cli/client/client.go`), each route naming the client call it answers:
//! `Authorization: token …` required (401 with `{"code","message"}` otherwise), JSON errors
//! `{"code","message"}` (and `diagnostics` for a definition with errors), environments
//! listed a page at a time with `nextToken`/`continuationToken`, a definition read as YAML
//! with `ETag` and `Pulumi-ESC-Revision` and updated by PATCH carrying the etag it was read
//! with, environments opened for a duration and read through the session id. Values are
//! computed from the definition's `values:` (`fn::secret` marks a secret), each answered as
//! ESC's `{"value", "secret", "trace"}`.
//!
//! Not in the published client, so chosen here and said so: an etag that is not the
//! current one is answered 409; a session past its duration and a property with no value
//! are answered 404. Every request's `Accept` header and whether it carried a token in its
//! URL are recorded for the tests to check ([`EscFake::requests`]).

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "a test fixture: a poisoned lock or a bad header is a test bug"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::percent_decode;

/// The token the fake accepts.
pub const TOKEN: &str = "pul-fake0123456789abcdef0123456789abcdef";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD /path?query`.
    pub line: String,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `Authorization` header carried the token.
    pub authorized: bool,
}

struct Environment {
    yaml: String,
    revision: i64,
}

/// organization, project, environment
type Key = (String, String, String);

#[derive(Default)]
struct State {
    environments: BTreeMap<Key, Environment>,
    /// session id -> (environment, opened at, duration)
    sessions: BTreeMap<String, (Key, Instant, Duration)>,
    next_session: u64,
    requests: Vec<Seen>,
    /// Answer the next N requests 429 with this `Retry-After`.
    throttle: Option<(u32, u64)>,
    page_size: usize,
}

/// The running fake.
#[derive(Clone)]
pub struct EscFake {
    state: Arc<Mutex<State>>,
    /// `http://127.0.0.1:port`.
    pub url: String,
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    reply(
        status,
        &json!({ "code": status.as_u16(), "message": message }),
    )
}

/// Go's `time.ParseDuration` for the forms a client sends (`300s`, `2h0m0s`, `1h30m`).
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = number.parse().ok()?;
        number.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        any = true;
    }
    (any && number.is_empty()).then(|| Duration::from_secs_f64(total))
}

/// ESC's value JSON for a plain YAML value; `fn::secret` marks a secret.
fn esc_value(v: &Value, secret: bool) -> Value {
    match v {
        Value::Object(map) if map.len() == 1 && map.contains_key("fn::secret") => {
            esc_value(&map["fn::secret"], true)
        }
        Value::Object(map) => {
            let inner: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), esc_value(v, secret)))
                .collect();
            json!({ "value": inner, "trace": { "def": { "environment": "fake" } } })
        }
        Value::Array(items) => {
            let inner: Vec<Value> = items.iter().map(|v| esc_value(v, secret)).collect();
            json!({ "value": inner, "trace": {} })
        }
        scalar => {
            let mut out = json!({ "value": scalar, "trace": { "def": { "environment": "fake" } } });
            if secret {
                out["secret"] = true.into();
            }
            out
        }
    }
}

/// The fake's own reading of a property path (`a.b[0]`, `a["x.y"]`): independent of the
/// client's parser on purpose.
fn walk<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = root;
    let bytes = path.as_bytes();
    let mut i = 0;
    let mut first = true;
    while i < bytes.len() {
        let key: String;
        if bytes[i] == b'[' {
            if bytes.get(i + 1) == Some(&b'"') {
                let end = path[i + 2..].find("\"]")? + i + 2;
                key = path[i + 2..end].replace("\\\"", "\"").replace("\\\\", "\\");
                i = end + 2;
            } else {
                let end = path[i..].find(']')? + i;
                let n: usize = path[i + 1..end].parse().ok()?;
                at = at["value"].as_array()?.get(n)?;
                i = end + 1;
                first = false;
                continue;
            }
        } else {
            if bytes[i] == b'.' && !first {
                i += 1;
            }
            let end = path[i..].find(['.', '[']).map_or(path.len(), |e| e + i);
            key = path[i..end].to_owned();
            i = end;
        }
        at = at["value"].as_object()?.get(&key)?;
        first = false;
    }
    Some(at)
}

impl EscFake {
    /// Starts the fake on a free loopback port; environments are listed two to a page.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            page_size: 2,
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

    /// Creates or replaces an environment's definition (YAML with a `values:` map).
    pub fn define(&self, org: &str, project: &str, env: &str, yaml: &str) {
        let mut s = self.state.lock().unwrap();
        let key = (org.to_owned(), project.to_owned(), env.to_owned());
        let revision = s.environments.get(&key).map_or(1, |e| e.revision + 1);
        s.environments.insert(
            key,
            Environment {
                yaml: yaml.to_owned(),
                revision,
            },
        );
    }

    /// The definition as stored now.
    pub fn definition(&self, org: &str, project: &str, env: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.environments
            .get(&(org.to_owned(), project.to_owned(), env.to_owned()))
            .map(|e| e.yaml.clone())
    }

    /// Answers the next `count` requests 429 with `Retry-After: seconds`.
    pub fn throttle(&self, count: u32, seconds: u64) {
        self.state.lock().unwrap().throttle = Some((count, seconds));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many times an environment was opened.
    pub fn opens(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.line.starts_with("POST ") && r.line.contains("/open"))
            .count()
    }

    fn etag(env: &Environment) -> String {
        format!("\"rev-{}\"", env.revision)
    }

    fn evaluate(yaml: &str) -> Result<Value, String> {
        let doc: Value = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        let values = doc.get("values").cloned().unwrap_or_else(|| json!({}));
        if !values.is_object() {
            return Err("`values` must be an object".into());
        }
        Ok(esc_value(&values, false))
    }

    #[allow(clippy::too_many_lines, clippy::many_single_char_names)]
    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), percent_decode(v))
            })
            .collect();
        let (accept, authorized, etag_sent) = {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            (
                header("accept"),
                header("authorization").as_deref() == Some(&format!("token {TOKEN}")),
                header("etag").or_else(|| header("if-match")),
            )
        };
        let line = format!(
            "{method} {path}{}",
            req.uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        );
        {
            let mut s = self.state.lock().unwrap();
            s.requests.push(Seen {
                line,
                accept,
                authorized,
            });
            if let Some((count, seconds)) = s.throttle {
                s.throttle = (count > 1).then(|| (count - 1, seconds));
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
                r.headers_mut().insert(
                    "Retry-After",
                    HeaderValue::from_str(&seconds.to_string()).unwrap(),
                );
                return r;
            }
        }
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: No credentials provided or are invalid.",
            );
        }
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let Some(rest) = path.strip_prefix("/api/esc/environments/") else {
            return error(StatusCode::NOT_FOUND, "Not Found");
        };
        let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let mut s = self.state.lock().unwrap();
        let key = |org: &str, project: &str, env: &str| {
            (org.to_owned(), project.to_owned(), env.to_owned())
        };
        match (method.as_str(), segments.as_slice()) {
            // `ListOrganizationEnvironments`.
            ("GET", [org]) => {
                let all: Vec<Value> = s
                    .environments
                    .keys()
                    .filter(|(o, _, _)| o == org)
                    .map(|(o, p, e)| json!({ "organization": o, "project": p, "name": e }))
                    .collect();
                let start: usize = query
                    .get("continuationToken")
                    .and_then(|t| t.strip_prefix("page-"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let end = (start + s.page_size).min(all.len());
                let mut page = json!({ "environments": all[start.min(end)..end] });
                if end < all.len() {
                    page["nextToken"] = format!("page-{end}").into();
                }
                reply(StatusCode::OK, &page)
            }
            // `GetEnvironment`: the YAML with its etag and revision.
            ("GET", [org, project, env]) => match s.environments.get(&key(org, project, env)) {
                Some(e) => {
                    let mut r = Response::new(Body::from(e.yaml.clone()));
                    let h = r.headers_mut();
                    h.insert(
                        "Content-Type",
                        HeaderValue::from_static("application/x-yaml"),
                    );
                    h.insert("ETag", HeaderValue::from_str(&Self::etag(e)).unwrap());
                    h.insert(
                        "Pulumi-ESC-Revision",
                        HeaderValue::from_str(&e.revision.to_string()).unwrap(),
                    );
                    r
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("Environment '{org}/{project}/{env}' not found"),
                ),
            },
            // `UpdateEnvironmentWithRevision`: the etag read is sent back (as `ETag`).
            ("PATCH", [org, project, env]) => {
                let Some(e) = s.environments.get_mut(&key(org, project, env)) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("Environment '{org}/{project}/{env}' not found"),
                    );
                };
                if etag_sent.as_deref() != Some(Self::etag(e).as_str()) {
                    return error(
                        StatusCode::CONFLICT,
                        "the environment has been modified since it was read",
                    );
                }
                let yaml = String::from_utf8_lossy(&body).into_owned();
                if let Err(e) = Self::evaluate(&yaml) {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        &json!({ "code": 400, "message": "invalid environment definition",
                                 "diagnostics": [ { "summary": e } ] }),
                    );
                }
                e.yaml = yaml;
                e.revision += 1;
                let mut r = reply(StatusCode::OK, &json!({}));
                r.headers_mut().insert(
                    "Pulumi-ESC-Revision",
                    HeaderValue::from_str(&e.revision.to_string()).unwrap(),
                );
                r
            }
            // `OpenEnvironment`: `?duration=` (a Go duration) required.
            ("POST", [org, project, env, "open"]) => {
                let Some(duration) = query.get("duration").and_then(|d| go_duration(d)) else {
                    return error(StatusCode::BAD_REQUEST, "invalid or missing duration");
                };
                let k = key(org, project, env);
                let Some(e) = s.environments.get(&k) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("Environment '{org}/{project}/{env}' not found"),
                    );
                };
                if let Err(message) = Self::evaluate(&e.yaml) {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        &json!({ "code": 400, "message": "environment has errors",
                                 "diagnostics": [ { "summary": message,
                                   "range": { "environment": env, "begin": { "line": 1, "column": 1 } } } ] }),
                    );
                }
                s.next_session += 1;
                let id = format!("{:032x}", s.next_session * 0x9e37_79b9);
                s.sessions.insert(id.clone(), (k, Instant::now(), duration));
                reply(StatusCode::OK, &json!({ "id": id }))
            }
            // `GetOpenEnvironmentWithProject` / `GetOpenProperty`.
            ("GET", [org, project, env, "open", id]) => {
                let Some((k, at, duration)) = s.sessions.get(*id).cloned() else {
                    return error(StatusCode::NOT_FOUND, "open environment not found");
                };
                if k != key(org, project, env) || at.elapsed() > duration {
                    return error(StatusCode::NOT_FOUND, "open environment not found");
                }
                let Some(e) = s.environments.get(&k) else {
                    return error(StatusCode::NOT_FOUND, "environment not found");
                };
                let values = Self::evaluate(&e.yaml).unwrap_or_else(|_| json!({ "value": {} }));
                match query.get("property") {
                    Some(p) => match walk(&values, p) {
                        Some(v) => reply(StatusCode::OK, v),
                        None => error(StatusCode::NOT_FOUND, &format!("property '{p}' not found")),
                    },
                    None => reply(
                        StatusCode::OK,
                        &json!({ "properties": values["value"], "schema": {} }),
                    ),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "Not Found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(go_duration("2h0m0s"), Some(Duration::from_secs(7200)));
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration("x"), None);
    }

    #[test]
    fn paths_walk_values() {
        let v = esc_value(
            &json!({ "a": { "b": [1, { "fn::secret": "s" }], "x.y": 2 } }),
            false,
        );
        assert_eq!(walk(&v, "a.b[0]").unwrap()["value"], 1);
        assert_eq!(walk(&v, "a.b[1]").unwrap()["secret"], true);
        assert_eq!(walk(&v, r#"a["x.y"]"#).unwrap()["value"], 2);
        assert!(walk(&v, "a.c").is_none());
    }
}
