//! Helpers for this crate's unit tests of Kubernetes API code.

pub(crate) use homelab_testkit::kube_api::ApiServer;
use serde_json::{Value, json};

/// A Node as the kubelet reports it: Ready or not (with the message a node without a CNI
/// shows), and its kubelet version.
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
