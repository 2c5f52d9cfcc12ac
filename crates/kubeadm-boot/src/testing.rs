//! Helpers for this crate's unit tests of Kubernetes API code.

#[cfg(feature = "cluster")]
pub(crate) use homelab_testkit::kube_api::ApiServer;
#[cfg(feature = "cluster")]
use serde_json::{Value, json};

use crate::kubeadm::{KubeadmSpec, Version};

/// A Node as the kubelet reports it: Ready or not (with the message a node without a CNI
/// shows), and its kubelet version.
#[cfg(feature = "cluster")]
pub(crate) fn node(name: &str, ready: bool, version: &str) -> Value {
    let condition = if ready {
        json!({ "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status" })
    } else {
        json!({ "type": "Ready", "status": "False", "reason": "KubeletNotReady",
                "message": "container runtime network not ready: cni plugin not initialized" })
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name },
        "spec": {},
        "status": { "conditions": [condition], "nodeInfo": {
            "kubeletVersion": version, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://1.7.24",
            "kernelVersion": "6.1.0", "kubeProxyVersion": version, "machineID": "", "operatingSystem": "linux",
            "osImage": "Debian GNU/Linux 12 (bookworm)", "systemUUID": "" } }
    })
}

/// The cluster most tests use, at Kubernetes 1.<minor>.2.
pub(crate) fn cluster_spec(minor: u32) -> KubeadmSpec {
    KubeadmSpec::new(
        "homelab",
        Version {
            major: 1,
            minor,
            patch: 2,
        },
        "192.168.122.10:6443",
    )
}
