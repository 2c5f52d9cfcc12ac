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

pub mod backup;
pub mod bootstrap;
pub mod bundle;
pub mod ca;
pub mod cluster;
pub mod cni;
pub mod kubeadm;
pub mod kubeconfig;
pub mod nodes;
pub mod prepare;
pub mod restore;
pub mod signing_key;
pub mod steps;
pub mod upgrade;

pub use homelab_ssh as ssh;

#[cfg(test)]
mod testing;
