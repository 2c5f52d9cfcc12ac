//! Talks to container registries: any OCI distribution (v2) registry, and Harbor's REST API.
//!
//! - [`reference`]: image references and digests.
//! - [`registry`]: the distribution API — blobs (chunked, resumable, streamed from disk),
//!   mounts, manifests, tags, catalog, and anonymous / basic / bearer-token auth.
//! - [`image`]: whole images — push from and pull into OCI image layouts, copy between
//!   registries, mirror lists of images.

pub mod image;
pub mod reference;
pub mod registry;
