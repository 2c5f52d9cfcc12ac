//! The platform's web interfaces on this machine: a local TCP port forwarded to a Service's
//! pod through the Kubernetes API (the pods' `portforward` subresource, as `kubectl
//! port-forward svc/…` does, without kubectl), and where each interface's login comes from.
//!
//! Each accepted connection looks the Service's pod up again, so a forward outlives a
//! restarted pod; a connection that cannot be forwarded is reported and closed, and the
//! listener goes on.
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), platform::open::OpenError> {
//! use platform::open::{Ui, serve};
//! let ui = Ui::argocd();
//! let listener = tokio::net::TcpListener::bind(("127.0.0.1", ui.local_port)).await
//!     .map_err(|source| platform::open::OpenError::Bind { address: ui.url(), source })?;
//! println!("{} at {} — {}", ui.title, ui.url(), ui.login);
//! serve(client, &ui.service, listener, &|event| eprintln!("{event}")).await
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};

use crate::event::{Event, Events};

/// What went wrong opening an interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, naming the object.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The Service selects no pod that is running and ready.
    #[error(
        "no running and ready pod behind Service {namespace}/{service} (is it deployed? `kubectl -n {namespace} get pods`)"
    )]
    NoPod {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
    },
    /// The Service has no such port, or its target port is not on the pod.
    #[error("Service {namespace}/{service}: {detail}")]
    Port {
        /// The Service's namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// What is missing.
        detail: String,
    },
    /// The local port could not be listened on.
    #[error(
        "cannot listen for {address}: {source} (another program on that port? choose one with --port)"
    )]
    Bind {
        /// The local address.
        address: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Accepting a local connection failed.
    #[error("accepting a local connection: {0}")]
    Accept(#[source] std::io::Error),
}

/// A port of a Service to forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service.
    pub service: String,
    /// The Service's port (its number, not the pod's).
    pub port: i32,
}

/// The pod and container port a [`ServicePort`] leads to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod.
    pub pod: String,
    /// The port on the pod.
    pub port: u16,
}

/// Where a login is read from. It is never read by this crate, only named: the password
/// stays in the cluster until the user asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name, when it is fixed (`admin`).
    pub user: Option<String>,
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret.
    pub secret: String,
    /// The Secret's key with the user name, when it is not fixed.
    pub user_key: Option<String>,
    /// The Secret's key with the password.
    pub password_key: String,
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let read = |key: &str| {
            format!(
                "kubectl -n {} get secret {} -o jsonpath='{{.data.{}}}' | base64 -d",
                self.namespace,
                self.secret,
                key.replace('.', "\\.")
            )
        };
        match (&self.user, &self.user_key) {
            (Some(user), _) => write!(f, "user {user}, password: {}", read(&self.password_key)),
            (None, Some(key)) => write!(
                f,
                "user: {}; password: {}",
                read(key),
                read(&self.password_key)
            ),
            (None, None) => write!(f, "password: {}", read(&self.password_key)),
        }
    }
}

/// A web interface of the platform and its usual local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ui {
    /// Its name (`Grafana`).
    pub title: &'static str,
    /// The Service port it is reached through.
    pub service: ServicePort,
    /// The local port (Grafana 9000, Argo CD 8080).
    pub local_port: u16,
    /// `http` or `https` (what the pod serves on that port).
    pub scheme: &'static str,
    /// Where the login comes from.
    pub login: Login,
}

impl Ui {
    /// Grafana of the monitoring stack (`kube-prometheus-stack-grafana`, port 80) on local
    /// port 9000; its login in `monitoring`'s Secret `secret` (keys `admin-user` and
    /// `admin-password`: `gitops::scaffold::Monitoring::grafana_login`).
    pub fn grafana(secret: &str) -> Self {
        Self {
            title: "Grafana",
            service: ServicePort {
                namespace: gitops::scaffold::MONITORING_NAMESPACE.into(),
                service: "kube-prometheus-stack-grafana".into(),
                port: 80,
            },
            local_port: 9000,
            scheme: "http",
            login: Login {
                user: None,
                namespace: gitops::scaffold::MONITORING_NAMESPACE.into(),
                secret: secret.into(),
                user_key: Some("admin-user".into()),
                password_key: "admin-password".into(),
            },
        }
    }

    /// Argo CD's server (`argocd-server`, port 443, which serves TLS with its own
    /// certificate) on local port 8080; user `admin`, the password Argo CD generated into
    /// `argocd-initial-admin-secret`.
    pub fn argocd() -> Self {
        Self {
            title: "Argo CD",
            service: ServicePort {
                namespace: "argocd".into(),
                service: "argocd-server".into(),
                port: 443,
            },
            local_port: 8080,
            scheme: "https",
            login: Login {
                user: Some("admin".into()),
                namespace: "argocd".into(),
                secret: "argocd-initial-admin-secret".into(),
                user_key: None,
                password_key: "password".into(),
            },
        }
    }

    /// The local URL (`http://localhost:9000`).
    pub fn url(&self) -> String {
        format!("{}://localhost:{}", self.scheme, self.local_port)
    }
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> OpenError {
    move |source| OpenError::Kube { action, source }
}

/// The pod and port `target` leads to: a running pod whose `Ready` condition is true among
/// those the Service selects, and the Service port's target port on it (a number, or a
/// container port's name).
///
/// # Errors
/// The Service cannot be read, has no such port, or selects no ready pod.
pub async fn resolve(client: &Client, target: &ServicePort) -> Result<Endpoint, OpenError> {
    let ns = &target.namespace;
    let port_err = |detail: String| OpenError::Port {
        namespace: ns.clone(),
        service: target.service.clone(),
        detail,
    };
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get(&target.service)
        .await
        .map_err(kube_err(format!("read Service {ns}/{}", target.service)))?;
    let spec = service.spec.unwrap_or_default();
    let port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.port == target.port)
        .ok_or_else(|| port_err(format!("has no port {}", target.port)))?;
    let selector = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        return Err(port_err("selects no pods (no selector)".into()));
    }
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(kube_err(format!(
            "list the pods of Service {ns}/{}",
            target.service
        )))?;
    let ready = |pod: &Pod| {
        let status = pod.status.as_ref();
        pod.metadata.deletion_timestamp.is_none()
            && status.and_then(|s| s.phase.as_deref()) == Some("Running")
            && status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let pod = pods
        .items
        .into_iter()
        .find(ready)
        .ok_or_else(|| OpenError::NoPod {
            namespace: ns.clone(),
            service: target.service.clone(),
        })?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let number = match port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => n,
        Some(IntOrString::String(named)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(named.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| {
                port_err(format!("target port `{named}` is not a port of pod {name}"))
            })?,
    };
    let port = u16::try_from(number)
        .map_err(|_| port_err(format!("target port {number} is not a TCP port")))?;
    Ok(Endpoint { pod: name, port })
}

/// Forwards every connection `listener` accepts to `target`'s pod until the task is
/// cancelled (or accepting fails). Each connection is forwarded on its own task, through
/// its own port-forward stream of the API server.
///
/// # Errors
/// Accepting a connection failed. A connection that cannot be forwarded is an event, not
/// an error.
pub async fn serve(
    client: Client,
    target: &ServicePort,
    listener: TcpListener,
    events: Events<'_>,
) -> Result<(), OpenError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, _) = accepted.map_err(OpenError::Accept)?;
                let (client, target, tx) = (client.clone(), target.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward_one(&client, &target, socket, &tx).await {
                        let _ = tx.send(Event::NotForwarded(Arc::new(e)));
                    }
                });
            }
            Some(event) = rx.recv() => events(event),
        }
    }
}

async fn forward_one(
    client: &Client,
    target: &ServicePort,
    mut socket: TcpStream,
    events: &tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<(), OpenError> {
    let endpoint = resolve(client, target).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &target.namespace);
    let action = || {
        format!(
            "port-forward to pod {}/{} port {}",
            target.namespace, endpoint.pod, endpoint.port
        )
    };
    let mut forwarder = pods
        .portforward(&endpoint.pod, &[endpoint.port])
        .await
        .map_err(kube_err(action()))?;
    let mut upstream = forwarder
        .take_stream(endpoint.port)
        .ok_or_else(|| OpenError::Port {
            namespace: target.namespace.clone(),
            service: target.service.clone(),
            detail: format!("{}: the forward has no stream", action()),
        })?;
    let _ = events.send(Event::Forwarding {
        endpoint: endpoint.clone(),
    });
    let copied = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
    drop(upstream);
    forwarder.abort();
    let (sent, received) = copied.unwrap_or_default();
    let _ = events.send(Event::Forwarded {
        endpoint,
        sent,
        received,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_name_where_the_password_is_never_what_it_is() {
        let argocd = Ui::argocd().login.to_string();
        assert_eq!(
            argocd,
            "user admin, password: kubectl -n argocd get secret argocd-initial-admin-secret -o jsonpath='{.data.password}' | base64 -d"
        );
        let grafana = Ui::grafana("grafana-admin").login.to_string();
        assert!(grafana.starts_with("user: kubectl -n monitoring get secret grafana-admin -o jsonpath='{.data.admin-user}'"), "{grafana}");
        assert_eq!(Ui::grafana("x").url(), "http://localhost:9000");
        assert_eq!(Ui::argocd().url(), "https://localhost:8080");
    }
}
