//! Declarative home-lab virtual machines on libvirt.
//!
//! A [`VmClusterSpec`] describes a NAT network, a directory storage pool, a base image and the
//! nodes. [`Hypervisor::plan`] reads what libvirt has (no state file) and says, per object,
//! create / change / replace / start / unchanged / delete; [`Hypervisor::apply`] does only
//! that difference; [`Hypervisor::destroy`] removes only objects that carry this library's
//! ownership metadata (`<metadata>` with the cluster id) and leaves others alone, by name.
//!
//! Each node gets a qcow2 overlay on the base image and a cloud-init NoCloud seed (a FAT
//! volume labelled `cidata`, built in memory) holding the login user, SSH keys, host name,
//! static address and a host key generated here — so the key a node will present is known
//! before it boots, and `wait` verifies it instead of trusting on first use.
//!
//! # Entry points
//! - [`VmClusterSpec`]: what should exist. [`provision::up`] runs preflight, the base image,
//!   the plan, apply, the SSH wait and the seed retirement in one call.
//! - [`Hypervisor`]: one libvirt connection; `plan`, `apply`, `destroy`, `status`.
//! - [`plan::plan`] and [`desired`]: the planner alone, a pure function from what should exist
//!   and what does ([`plan::Live`], whose ownership metadata [`plan::read_owner_meta`] reads
//!   from libvirt's XML) to a [`VmPlan`].
//!
//! The libvirt XML documents and the cloud-init seed image are made by the modules `xml` and
//! `seed`, which are not part of the API (hidden from these docs, public only for this
//! workspace's tests and tools; their shapes change with libvirt's needs). What the API needs
//! of them is here: [`XmlError`], [`SeedError`], [`console_log_path`].
//!
//! # Features
//! - `libvirt` (default): [`Hypervisor`], `preflight` and `provision`; links libvirt's C
//!   library through the `virt` crate. Turns on `ssh`.
//! - `ssh`: `wait`, which checks each node's SSH host key and login (russh, tokio).
//!
//! Without them (`default-features = false`) the crate is its pure part: the spec, the
//! planner, the XML, seeds and base-image recipes, with no native library, no SSH and no
//! network client.
//!
//! ```
//! use libvirt_vm::{VmClusterSpec, DomainType, VmPlan, desired, plan};
//!
//! /// What applying `spec` to a host that has nothing yet would do.
//! fn first_run(spec: &VmClusterSpec) -> VmPlan {
//!     plan::plan(&desired(spec, DomainType::Kvm), &plan::Live::default())
//! }
//! ```
//!
//! With the `libvirt` feature, against a real host:
//!
//! ```no_run
//! # #[cfg(feature = "libvirt")]
//! fn bring_up(spec: &libvirt_vm::VmClusterSpec) -> libvirt_vm::Result<()> {
//!     let hv = libvirt_vm::Hypervisor::connect("qemu:///system")?;
//!     println!("{}", hv.plan(spec)?);
//!     hv.apply(spec, &|event| println!("{event:?}"))?;
//!     Ok(())
//! }
//! ```

mod error;
pub mod event;
#[cfg(feature = "libvirt")]
mod hypervisor;
pub mod image;
pub mod plan;
#[cfg(feature = "libvirt")]
pub mod preflight;
#[cfg(feature = "libvirt")]
pub mod provision;
#[doc(hidden)]
pub mod seed;
mod spec;
#[cfg(feature = "ssh")]
pub mod wait;
#[doc(hidden)]
pub mod xml;

pub use error::{Error, Result};
pub use event::{Event, Events};
#[cfg(feature = "libvirt")]
pub use hypervisor::{
    Hypervisor, KnownHost, NodeStatus, host_cpu_has_virtualization, is_local_uri,
};
pub use plan::{Action, Change, ObjectKind, VmPlan, desired};
pub use seed::SeedError;
pub use spec::{
    Access, BaseImage, BootMode, DiskFormat, DomainType, DomainTypeChoice, Mac, NetworkSpec,
    PoolSpec, VmClusterSpec, VmSpec,
};
pub use xml::{XmlError, console_log_path};

#[cfg(test)]
pub(crate) mod testing;
