//! The node bundle's images against a real registry (Debian's docker-registry on loopback),
//! cross-checked with skopeo: the images a release needs are listed by the bundle's own
//! kubeadm and Flannel manifest, built from the bundle's files, pushed once, recognised as
//! present by digest afterwards, and replaced when the bundle changes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use homelab_testkit::registry::Registry;
use kubeadm_boot::bundle::NodeBundle;

const FLANNEL: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  selector:
    matchLabels: {app: flannel}
  template:
    metadata:
      labels: {app: flannel}
    spec:
      initContainers:
      - name: install-cni-plugin
        image: ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.27.4
";

/// A bundle whose kubeadm is a script that lists two images, as `kubeadm config images list`
/// prints them.
fn bundle(dir: &Path) -> NodeBundle {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut add = |name: &str, body: &str| {
        let p = homelab_testkit::stand_in(&src, &name.replace('/', "-"), body);
        files.push((name.to_owned(), p));
    };
    add(
        "bin/kubeadm",
        "#!/bin/sh\n[ \"$*\" = 'config images list --kubernetes-version v1.33.5' ] || exit 2\n\
         echo registry.k8s.io/pause:3.10\necho registry.k8s.io/etcd:3.5.21-0\n",
    );
    for name in [
        "bin/kubelet",
        "bin/kubectl",
        "cni/bridge",
        "cni/host-local",
        "cni/loopback",
        "cni/portmap",
        "images/pause",
        "images/etcd",
        "images/flanneld",
        "images/cni-flannel",
        "rootfs/usr/sbin/iptables",
    ] {
        add(name, &format!("binary {name}\n"));
    }
    add("manifests/kube-flannel.yml", FLANNEL);
    let refs: Vec<(&str, &Path)> = files
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    NodeBundle::write(&dir.join("bundle"), "v1.33.5", &refs).unwrap()
}

fn skopeo_config(host: &str, image: &str) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--config", "--tls-verify=false"])
        .arg(format!("docker://{host}/{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_release_images_are_built_pushed_once_and_replaced_when_the_bundle_changes() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start().unwrap();
    let mirror = format!("http://{}", registry.host());
    let bundle = bundle(dir.path());
    let mut config = homelab_config::Config::default();
    config.packages.bundle = Some(bundle.dir.clone());
    // ghcr.io is not mirrored: its images are left to the nodes' own pulls.
    config
        .packages
        .mirrors
        .insert("registry.k8s.io".into(), mirror.clone());

    let images = homelab::bundle::mirrored_images(&config, &bundle)
        .await
        .unwrap();
    let names: Vec<String> = images.iter().map(|i| i.reference.to_string()).collect();
    assert_eq!(
        names,
        [
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io/etcd:3.5.21-0"
        ]
    );
    assert!(images.iter().all(|i| !i.present && i.replaces.is_none()));

    let pushed = homelab::bundle::publish(&images, &bundle, &|_| {})
        .await
        .unwrap();
    assert_eq!(pushed, 2);
    // What another client reads back: the binary where the release's manifests run it.
    let pause = skopeo_config(&registry.host(), "pause:3.10");
    assert_eq!(pause["config"]["Entrypoint"], serde_json::json!(["/pause"]));
    assert_eq!(pause["os"], "linux");
    let etcd = skopeo_config(&registry.host(), "etcd:3.5.21-0");
    assert!(
        etcd["config"]["Env"][0]
            .as_str()
            .unwrap()
            .contains("/usr/local/bin")
    );

    // Present by digest: nothing to push again.
    let again = homelab::bundle::mirrored_images(&config, &bundle)
        .await
        .unwrap();
    assert!(again.iter().all(|i| i.present), "{again:#?}");
    assert_eq!(
        homelab::bundle::publish(&again, &bundle, &|_| {})
            .await
            .unwrap(),
        0
    );

    // A new etcd in the bundle: the mirror's tag points to the old image, which is replaced.
    let etcd_file = bundle.file("images/etcd").unwrap().local.clone();
    std::fs::write(&etcd_file, "binary images/etcd, rebuilt\n").unwrap();
    let sums = std::fs::read_to_string(bundle.dir.join("SHA256SUMS")).unwrap();
    let (new_digest, _) = kubeadm_boot::bundle::file_sha256(&etcd_file).unwrap();
    let old_digest = &bundle.file("images/etcd").unwrap().sha256;
    std::fs::write(
        bundle.dir.join("SHA256SUMS"),
        sums.replace(old_digest, &new_digest),
    )
    .unwrap();
    let rebuilt = NodeBundle::open(&bundle.dir).unwrap();
    let changed = homelab::bundle::mirrored_images(&config, &rebuilt)
        .await
        .unwrap();
    let etcd = changed
        .iter()
        .find(|i| i.reference.repository == "etcd")
        .unwrap();
    assert!(!etcd.present && etcd.replaces.is_some(), "{etcd:#?}");
    assert!(
        changed
            .iter()
            .find(|i| i.reference.repository == "pause")
            .unwrap()
            .present
    );
    assert_eq!(
        homelab::bundle::publish(&changed, &rebuilt, &|_| {})
            .await
            .unwrap(),
        1
    );

    // Flannel's images are read from its manifest; an image with no binary is named.
    assert_eq!(
        homelab::bundle::flannel_images(&bundle).unwrap(),
        [
            "ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1",
            "ghcr.io/flannel-io/flannel:v0.27.4"
        ]
    );
    let unknown: harbor_client::reference::Reference =
        "registry.k8s.io/kube-dns:1.0".parse().unwrap();
    let err = homelab::bundle::image_builder(&bundle, &unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no binary for the image kube-dns"), "{err}");
}
