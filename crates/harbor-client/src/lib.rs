//! Talks to container registries: any OCI distribution (v2) registry, and Harbor's REST API.
//!
//! - [`reference`]: image references and digests.
//! - [`registry`]: the distribution API — blobs (chunked, resumable, streamed from disk),
//!   mounts, manifests, tags, catalog, and anonymous / basic / bearer-token auth.
//! - [`harbor`]: Harbor's REST API v2.0 — projects, robots, repositories, artifacts,
//!   cleanup, retention, garbage collection, scans.
//! - [`image`]: whole images — push from and pull into OCI image layouts, copy between
//!   registries, mirror lists of images.
//! - [`build`]: images built from files into an OCI image layout (deterministic digests).
//! - [`node`]: pull Secrets from robot credentials, containerd `hosts.toml` for mirrors.
//! - [`tls`]: extra CA certificates, refused when they hold no certificate.
//! - [`event`]: what a transfer reports while it works ([`Event`], for progress bars).
//!
//! ```
//! use harbor_client::reference::Reference;
//!
//! let image: Reference = "harbor.homelab.lan/homelab/shop-backend:0.1.0".parse()?;
//! assert_eq!(image.registry, "harbor.homelab.lan");
//! assert_eq!(image.repository, "homelab/shop-backend");
//! assert_eq!(image.tag.as_deref(), Some("0.1.0"));
//! // The registry is always written out: a short name is refused, naming it.
//! let err = "alpine:3.20".parse::<Reference>().unwrap_err();
//! assert!(err.to_string().contains("alpine:3.20"));
//! # Ok::<(), harbor_client::reference::ReferenceError>(())
//! ```

pub mod build;
pub mod event;
pub mod harbor;
pub mod image;
pub mod node;
pub mod reference;
pub mod registry;
pub mod tls;

pub use event::{Event, Events};
