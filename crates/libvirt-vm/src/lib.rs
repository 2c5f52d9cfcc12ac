//! Declarative home-lab virtual machines on libvirt.
//!
//! A [`ClusterSpec`] describes a NAT network, a directory storage pool, a base image and the
//! nodes. [`Hypervisor::plan`] reads what libvirt has (no state file) and says, per object,
//! create / change / replace / start / unchanged / delete; [`Hypervisor::apply`] does only
//! that difference; [`Hypervisor::destroy`] removes only objects that carry this library's
//! ownership metadata (`<metadata>` with the cluster id) and leaves others alone, by name.
//!
//! Each node gets a qcow2 overlay on the base image and a cloud-init NoCloud seed (a FAT
//! volume labelled `cidata`, built in memory) holding the login user, SSH keys, host name,
//! static address and a host key generated here — so the key a node will present is known
//! before it boots, and [`wait`] verifies it instead of trusting on first use.
//!
//! ```no_run
//! fn bring_up(spec: &libvirt_vm::ClusterSpec) -> libvirt_vm::Result<()> {
//!     let hv = libvirt_vm::Hypervisor::connect("qemu:///system")?;
//!     println!("{}", hv.plan(spec)?);
//!     hv.apply(spec, &mut |action| println!("{} {} {}", action.change.label(), action.kind, action.name))?;
//!     Ok(())
//! }
//! ```

mod error;
mod hypervisor;
pub mod image;
pub mod plan;
pub mod preflight;
pub mod provision;
pub mod seed;
mod spec;
pub mod wait;
pub mod xml;

pub use error::{Error, Result};
pub use hypervisor::{
    Hypervisor, KnownHost, NodeStatus, desired, host_cpu_has_virtualization, is_local_uri,
};
pub use plan::{Action, Change, ObjectKind, Plan};
pub use spec::{
    Access, BaseImage, BootMode, ClusterSpec, DiskFormat, DomainType, DomainTypeChoice, Mac,
    NetworkSpec, NodeSpec, PoolSpec,
};

#[cfg(test)]
pub(crate) mod testing;
