//! A token server for the registry's bearer-token auth (the flow Harbor's registry uses):
//! `GET /token?service=…&scope=…` with basic credentials answers a JWT (ES256, signed with
//! a key made for the test, its certificate in the `x5c` header) granting the requested
//! actions. The registry trusts the certificate through `auth.token.rootcertbundle`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::{FixtureError, openssl, percent_decode};

/// The service name the registry and the tokens agree on.
pub const SERVICE: &str = "homelab-test-registry";
/// The issuer of the tokens.
pub const ISSUER: &str = "homelab-test-issuer";

/// A running token server.
pub struct TokenServer {
    /// Its token endpoint (the registry's `realm`).
    pub realm: String,
    /// The certificate (PEM) the registry must trust.
    pub cert_pem: PathBuf,
    /// Scopes asked for, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Per request, the Basic user name it came with (`None`: no credentials).
    pub users: Arc<Mutex<Vec<Option<String>>>>,
    /// Seconds from issue to the `exp` of the tokens issued from now on (300 unless set).
    lifetime: Arc<AtomicI64>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenServer {
    /// Makes a key and certificate in `dir` and serves tokens to `user`/`password` on a free
    /// loopback port (from the current tokio runtime).
    ///
    /// # Errors
    /// openssl fails or the port cannot be bound.
    #[allow(
        clippy::too_many_lines,
        reason = "key, certificate and server, in order"
    )]
    pub fn start(dir: &Path, user: &str, password: &str) -> Result<Self, FixtureError> {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "token.key",
            ],
        )?;
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "token.key",
                "-outform",
                "DER",
                "-out",
                "token.pk8",
            ],
        )?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-key",
                "token.key",
                "-out",
                "token.pem",
                "-days",
                "2",
                "-subj",
                "/CN=homelab test token issuer",
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-in",
                "token.pem",
                "-outform",
                "DER",
                "-out",
                "token.der",
            ],
        )?;
        let pkcs8 = std::fs::read(dir.join("token.pk8"))
            .map_err(|e| FixtureError(format!("token.pk8: {e}")))?;
        let cert_der = std::fs::read(dir.join("token.der"))
            .map_err(|e| FixtureError(format!("token.der: {e}")))?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| FixtureError(format!("token key: {e}")))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| FixtureError(format!("bind: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| FixtureError(format!("bind: {e}")))?;
        let addr: SocketAddr = listener
            .local_addr()
            .map_err(|e| FixtureError(format!("bind: {e}")))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| FixtureError(format!("bind: {e}")))?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let users = Arc::new(Mutex::new(Vec::new()));
        let lifetime = Arc::new(AtomicI64::new(300));
        let state = Arc::new((
            key,
            cert_der,
            format!("{user}:{password}"),
            requests.clone(),
            users.clone(),
            lifetime.clone(),
        ));
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let state = state.clone();
            async move {
                let given = basic_of(&req);
                state
                    .4
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(given.map(|g| g.split(':').next().unwrap_or_default().to_owned()));
                let lifetime = state.5.load(Ordering::Relaxed);
                issue(&state.0, &state.1, &state.2, &state.3, lifetime, &req)
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            realm: format!("http://{addr}/token"),
            cert_pem: dir.join("token.pem"),
            requests,
            users,
            lifetime,
        })
    }

    /// Tokens issued from now on expire `seconds` after they are issued (negative: before).
    /// distribution accepts a token until 60 s after its `exp` (its `Leeway`), so a token
    /// with `seconds = -58` is honoured for about two seconds.
    pub fn set_lifetime(&self, seconds: i64) {
        self.lifetime.store(seconds, Ordering::Relaxed);
    }
}

/// The `user:password` of a request's Basic authorization.
fn basic_of(req: &Request<Body>) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
}

fn issue(
    key: &EcdsaKeyPair,
    cert_der: &[u8],
    credentials: &str,
    requests: &Mutex<Vec<String>>,
    lifetime: i64,
    req: &Request<Body>,
) -> Response<Body> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r
    };
    let given = basic_of(req);
    if given.as_deref() != Some(credentials) {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.into(),
        );
    }
    let mut access = Vec::new();
    for pair in req.uri().query().unwrap_or_default().split('&') {
        let Some(scope) = pair.strip_prefix("scope=") else {
            continue;
        };
        let scope = percent_decode(scope);
        requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(scope.clone());
        // type:name:actions, where the name may hold ':' (a port) only in theory.
        let mut parts = scope.splitn(2, ':');
        let kind = parts.next().unwrap_or_default().to_owned();
        let rest = parts.next().unwrap_or_default();
        let (name, actions) = rest.rsplit_once(':').unwrap_or((rest, ""));
        access.push(serde_json::json!({
            "type": kind, "name": name, "actions": actions.split(',').filter(|a| !a.is_empty()).collect::<Vec<_>>(),
        }));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let header = serde_json::json!({
        "typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": credentials.split(':').next().unwrap_or_default(), "aud": SERVICE,
        "exp": now + lifetime, "nbf": now - 120, "iat": now, "jti": format!("jti-{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let Ok(signature) = key.sign(&SystemRandom::new(), signing_input.as_bytes()) else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "signing failed".into());
    };
    let token = format!("{signing_input}.{}", b64(signature.as_ref()));
    reply(
        StatusCode::OK,
        serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string(),
    )
}
