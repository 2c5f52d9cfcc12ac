//! `homelab destroy` for every kind of cluster: what would go ([`plan`]), then removing it
//! ([`apply`]). Only what this cluster owns goes: the libvirt objects homelab's metadata
//! marks as the cluster's, a Kind cluster whose nodes carry homelab's label; a cluster of
//! provider `existing` is never homelab's to remove.

use std::fmt;

use homelab_config::ClusterProvider;

use crate::{Error, Events, Lab};

/// What [`apply`] would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestroyPlan {
    /// Provider `existing`: the cluster is not homelab's; nothing goes.
    NotOurs {
        /// The cluster's name.
        cluster: String,
    },
    /// Provider `kind`: the Kind cluster, when it exists (its ownership is checked again
    /// when it is deleted).
    Kind {
        /// The cluster's name.
        cluster: String,
        /// Whether Kind lists it.
        exists: bool,
    },
    /// Provider `libvirt`: the cluster's libvirt objects.
    Libvirt {
        /// The cluster's name.
        cluster: String,
        /// The objects, in the order they go.
        plan: libvirt_vm::VmPlan,
    },
}

impl DestroyPlan {
    /// Whether nothing would be removed.
    pub fn is_noop(&self) -> bool {
        match self {
            Self::NotOurs { .. } => true,
            Self::Kind { exists, .. } => !exists,
            Self::Libvirt { plan, .. } => plan.is_noop(),
        }
    }

    /// The question to confirm before [`apply`].
    pub fn question(&self) -> String {
        match self {
            Self::NotOurs { cluster } => format!("leave cluster {cluster} alone?"),
            Self::Kind { cluster, .. } => {
                format!("delete kind cluster {cluster} and everything in it?")
            }
            Self::Libvirt { cluster, .. } => format!("destroy these objects of cluster {cluster}?"),
        }
    }
}

impl fmt::Display for DestroyPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOurs { cluster } => write!(
                f,
                "cluster {cluster} is not homelab's (provider \"existing\"): nothing to destroy"
            ),
            Self::Kind {
                cluster,
                exists: false,
            } => write!(f, "no kind cluster {cluster}: nothing to destroy"),
            Self::Kind { cluster, .. } => write!(f, "delete kind cluster {cluster}"),
            Self::Libvirt { cluster, plan } if plan.is_noop() => {
                write!(f, "nothing of cluster {cluster} to destroy")
            }
            Self::Libvirt { plan, .. } => write!(f, "{plan}"),
        }
    }
}

/// What removing the lab's cluster would do, read from what exists.
///
/// # Errors
/// libvirt cannot be read, or Kind's tools are missing or fail.
pub async fn plan(lab: &Lab) -> Result<DestroyPlan, Error> {
    let cluster = lab.config.cluster.name.clone();
    Ok(match lab.config.cluster.provider {
        ClusterProvider::Existing => DestroyPlan::NotOurs { cluster },
        ClusterProvider::Kind => {
            let exists = crate::kind::Tools::from_env()?
                .clusters()
                .await?
                .contains(&cluster);
            DestroyPlan::Kind { cluster, exists }
        }
        ClusterProvider::Libvirt => DestroyPlan::Libvirt {
            plan: crate::vms::destroy_plan(lab).await?,
            cluster,
        },
    })
}

/// Removes what [`plan`] finds (read again, not taken from an earlier plan); `events` is
/// told of each object. Returns what was done, as [`DestroyPlan`] says it.
///
/// # Errors
/// A libvirt call or `kind` fails (what was removed before stays removed; run it again), or
/// the Kind cluster is not provably homelab's (left alone, and the error says why).
pub async fn apply(lab: &Lab, events: Events<'_>) -> Result<String, Error> {
    let cluster = &lab.config.cluster.name;
    Ok(match lab.config.cluster.provider {
        ClusterProvider::Existing => DestroyPlan::NotOurs {
            cluster: cluster.clone(),
        }
        .to_string(),
        ClusterProvider::Kind => {
            if crate::kind::destroy(lab).await? {
                format!("deleted kind cluster {cluster}")
            } else {
                format!("no kind cluster {cluster}: nothing to destroy")
            }
        }
        ClusterProvider::Libvirt => crate::vms::destroy(lab, events).await?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_existing_cluster_is_never_destroyed_and_each_plan_says_what_it_does() {
        let mut config = homelab_config::Config::default();
        config.cluster.provider = ClusterProvider::Existing;
        let lab = Lab::new(config);
        let plan = plan(&lab).await.unwrap();
        assert!(plan.is_noop());
        assert!(plan.to_string().contains("not homelab's"), "{plan}");
        let done = apply(&lab, &|_| panic!("no event")).await.unwrap();
        assert!(done.contains("nothing to destroy"), "{done}");

        let kind = |exists| DestroyPlan::Kind {
            cluster: "lab".into(),
            exists,
        };
        assert!(kind(false).is_noop() && !kind(true).is_noop());
        assert_eq!(
            kind(false).to_string(),
            "no kind cluster lab: nothing to destroy"
        );
        assert_eq!(
            kind(true).question(),
            "delete kind cluster lab and everything in it?"
        );
        let libvirt = DestroyPlan::Libvirt {
            cluster: "lab".into(),
            plan: libvirt_vm::VmPlan::default(),
        };
        assert!(libvirt.is_noop());
        assert_eq!(libvirt.to_string(), "nothing of cluster lab to destroy");
    }
}
