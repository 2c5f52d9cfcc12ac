//! Turns SSH-reachable Linux nodes into a kubeadm cluster.
//!
//! This crate knows nothing of how the nodes were made: its input is a list of hosts
//! (name, address, SSH user, key). Its parts:
//!
//! - [`ssh`]: the transport, [`homelab_ssh`] re-exported — key login, a `known_hosts`
//!   policy that refuses changed keys, commands with exit status and time limits,
//!   non-interactive sudo, atomic uploads, reused connections.
//! - [`steps`]: the step engine — check / describe / apply per step, hosts in parallel,
//!   dry runs, a lock on each host, failures that name host, step, command and stderr.
//! - [`kubeadm`]: InitConfiguration, ClusterConfiguration, JoinConfiguration and
//!   KubeletConfiguration from one typed spec (v1beta3 or v1beta4 by release).
//! - [`ca`]: the discovery hash of the cluster CA, computed here.
//! - [`kubeconfig`]: merging the admin kubeconfig into a user's file.
//! - [`bootstrap`]: `kubeadm init`, bootstrap tokens, parallel joins, the admin kubeconfig.
//! - [`cni`]: Flannel's manifest, pinned by digest, pod CIDR set, applied server-side.
//! - [`nodes`]: node readiness by watching, cordon and drain.
//! - [`upgrade`]: kubeadm upgrades node by node with pre- and post-checks.
//! - [`prepare`]: node preparation steps (swap, modules, sysctls, containerd, packages).
//! - [`backup`]: etcd snapshots over SSH, checked on the node and here, kept by count and age.
//! - [`restore`]: a snapshot restored onto a single control plane as idempotent steps.
//! - [`bundle`]: the offline node bundle (kubeadm, kubelet, kubectl, CNI plugins checked by
//!   digest and installed over SSH instead of from a package repository).
//! - [`signing_key`]: the package repository's key, fetched on the host and checked against a
//!   pinned OpenPGP fingerprint.
//! - [`cluster`]: the whole sequence in one call ([`cluster::up`]): prepare, bootstrap,
//!   kubeconfig, pod network, every node `Ready`.
//!
//! # Features
//! `cluster` (default) is everything that runs on nodes or talks to the API server: `ssh`,
//! `steps`, `prepare`, `bundle`, `bootstrap`, `cni`, `nodes`, `upgrade`, `backup`, `restore`,
//! `cluster` and `signing_key::fetch` (russh, tokio, kube, reqwest). Without it
//! (`default-features = false`) the crate is its pure part, with no SSH and no network client:
//! [`kubeadm`], [`ca`], [`kubeconfig`] and the signing-key checks.
//!
//! ```
//! use kubeadm_boot::kubeadm::{KubeadmSpec, KubeadmNode, init_config};
//!
//! // Pods on 10.244.0.0/16 and services on 10.96.0.0/12 unless set otherwise.
//! let spec = KubeadmSpec::new("homelab", "1.33.2".parse()?, "192.168.122.10:6443");
//! let node = KubeadmNode::new("cp1", "192.168.122.10".parse()?);
//! // The file `kubeadm init --config` reads, for kubeadm's v1beta4 API (Kubernetes 1.31+).
//! let yaml = init_config(&spec, &node, None)?;
//! assert!(yaml.contains("kubeadm.k8s.io/v1beta4") && yaml.contains("podSubnet: 10.244.0.0/16"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "cluster")]
pub mod backup;
#[cfg(feature = "cluster")]
pub mod bootstrap;
#[cfg(feature = "cluster")]
pub mod bundle;
pub mod ca;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "cluster")]
pub mod cni;
#[cfg(feature = "cluster")]
pub mod event;
pub mod kubeadm;
pub mod kubeconfig;
#[cfg(feature = "cluster")]
pub mod nodes;
#[cfg(feature = "cluster")]
pub mod prepare;
#[cfg(feature = "cluster")]
pub mod restore;
pub mod signing_key;
#[cfg(feature = "cluster")]
pub mod steps;
#[cfg(feature = "cluster")]
pub mod upgrade;

#[cfg(feature = "cluster")]
pub use event::{Event, Events};
#[cfg(feature = "cluster")]
pub use homelab_ssh as ssh;

#[cfg(test)]
mod testing;
