//! Pulumi ESC for the home lab.
//!
//! One Pulumi access token is the root credential; every other secret the platform needs
//! lives in one ESC environment and reaches the cluster as Kubernetes Secrets.
//!
//! - [`client`]: the ESC API — environments listed, opened once and read as typed values,
//!   definitions read and updated with their etag; retries honour `Retry-After`.
//! - [`path`]: Pulumi property paths (`a.b[0]`, `a["x.y"]`), parsed and printed by one type.
//! - [`value`]: an environment's values, whose secrets never print.
//! - [`declared`]: the one list of every secret the platform needs (data), and the check that
//!   names each missing path with the `esc env set` line that adds it.
//! - [`deliver`]: those secrets as Kubernetes Secrets — applied directly from one read of the
//!   environment (never overwriting a Secret homelab did not make), or as External Secrets
//!   Operator's `ClusterSecretStore` and `ExternalSecret`s for Argo CD to own.
//!
//! ```
//! use esc_secrets::declared::{Needs, declared};
//!
//! // Which Secrets a lab with the monitoring stack needs, and where in ESC each comes from.
//! let needs = Needs { monitoring: true, ..Needs::default() };
//! let grafana = declared(&needs).into_iter().find(|d| d.name == "grafana-admin").unwrap();
//! assert_eq!((grafana.namespace.as_str(), grafana.source.to_string().as_str()), ("monitoring", "grafana"));
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod declared;
pub mod deliver;
pub mod eso;
pub mod path;
pub mod value;

pub use client::{EnvRef, Esc, EscError, EscOptions};
pub use path::PropertyPath;
pub use value::Value;
