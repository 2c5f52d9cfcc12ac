//! The offline node bundle across layers: the bundle itself is the cluster layer's
//! ([`kubeadm_boot::bundle`]); here its images are built with the registry layer's image
//! builder ([`harbor_client::build`]) and pushed to the mirrors `[packages] mirrors` names, so
//! that containerd on every node pulls `registry.k8s.io/…` and `ghcr.io/…` from the lab's own
//! registry (containerd's `hosts.toml`, written by node preparation).
//!
//! Which images a release needs is asked of the bundle's own kubeadm (`kubeadm config images
//! list`, run on this machine) and read from the bundle's Flannel manifest; each is built from
//! the bundle's files (see [`image_builder`]).

use harbor_client::build::ImageBuilder;
use harbor_client::image::Layout;
use harbor_client::reference::Reference;
use harbor_client::registry::{Credentials, Options, Registry};
use kubeadm_boot::bundle::NodeBundle;
use kubeadm_boot::kubeadm::Version;

use crate::Error;

/// Flannel's manifest inside a bundle.
pub const FLANNEL_MANIFEST: &str = "manifests/kube-flannel.yml";

/// Opens `[packages] bundle` (every file checked against `SHA256SUMS`), if one is set.
///
/// # Errors
/// The bundle cannot be read or a file differs from its digest.
pub fn open(config: &homelab_config::Config) -> Result<Option<NodeBundle>, Error> {
    config
        .packages
        .bundle
        .as_ref()
        .map(|dir| NodeBundle::open(&homelab_config::expand_home(dir)).map_err(Error::from))
        .transpose()
}

fn bundle_error(bundle: &NodeBundle, message: String) -> Error {
    Error::Bundle(kubeadm_boot::bundle::BundleError::Sums {
        path: bundle.dir.clone(),
        line: 0,
        message,
    })
}

/// The images kubeadm deploys for `version`, as the bundle's kubeadm lists them.
///
/// # Errors
/// The bundle's kubeadm cannot run here or prints nothing.
pub fn kubeadm_images(bundle: &NodeBundle, version: &Version) -> Result<Vec<String>, Error> {
    let kubeadm = bundle.file("bin/kubeadm")?;
    let out = std::process::Command::new(&kubeadm.local)
        .args(["config", "images", "list", "--kubernetes-version"])
        .arg(version.to_string())
        .output()
        .map_err(|e| {
            bundle_error(
                bundle,
                format!("cannot run {}: {e}", kubeadm.local.display()),
            )
        })?;
    let images: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if !out.status.success() || images.is_empty() {
        return Err(bundle_error(
            bundle,
            format!(
                "`kubeadm config images list` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(images)
}

/// The images of the bundle's Flannel manifest (containers and init containers).
///
/// # Errors
/// The bundle has no Flannel manifest or it does not parse.
pub fn flannel_images(bundle: &NodeBundle) -> Result<Vec<String>, Error> {
    let file = bundle.file(FLANNEL_MANIFEST)?;
    let text = std::fs::read_to_string(&file.local).map_err(|source| {
        Error::Bundle(kubeadm_boot::bundle::BundleError::Read {
            path: file.local.clone(),
            source,
        })
    })?;
    let objects = kubeadm_boot::cni::parse_manifest(&file.local.display().to_string(), &text)?;
    let mut images = Vec::new();
    for object in &objects {
        let spec = &object.data["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_array().into_iter().flatten() {
                if let Some(image) = container["image"].as_str()
                    && !images.iter().any(|i| i == image)
                {
                    images.push(image.to_owned());
                }
            }
        }
    }
    Ok(images)
}

/// How the image `reference` is made from the bundle: the component's binary where the
/// release's manifests run it, plus `rootfs/` (iptables, cp and their libraries) for the
/// images whose containers run those.
///
/// # Errors
/// The bundle has no binary for that image.
pub fn image_builder(bundle: &NodeBundle, reference: &Reference) -> Result<ImageBuilder, Error> {
    let name = reference
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&reference.repository);
    let binary = |file: &str| {
        bundle
            .file(&format!("images/{file}"))
            .map(|f| f.local.clone())
    };
    let with_rootfs = |mut builder: ImageBuilder| {
        for file in bundle.files.values() {
            if let Some(path) = file.name.strip_prefix("rootfs/") {
                builder = builder.file(&format!("/{path}"), &file.local, 0o755);
            }
        }
        builder
    };
    let builder = match name {
        "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "etcd" => {
            ImageBuilder::new().file(&format!("/usr/local/bin/{name}"), &binary(name)?, 0o755)
        }
        "kube-proxy" => with_rootfs(ImageBuilder::new().file(
            "/usr/local/bin/kube-proxy",
            &binary(name)?,
            0o755,
        )),
        "coredns" => ImageBuilder::new()
            .file("/coredns", &binary("coredns")?, 0o755)
            .entrypoint(["/coredns"]),
        "pause" => ImageBuilder::new()
            .file("/pause", &binary("pause")?, 0o755)
            .entrypoint(["/pause"]),
        "flannel" => with_rootfs(
            ImageBuilder::new()
                .file("/opt/bin/flanneld", &binary("flanneld")?, 0o755)
                .entrypoint(["/opt/bin/flanneld"]),
        ),
        "flannel-cni-plugin" => {
            with_rootfs(ImageBuilder::new().file("/flannel", &binary("cni-flannel")?, 0o755))
        }
        other => {
            return Err(bundle_error(
                bundle,
                format!("the bundle has no binary for the image {other} ({reference})"),
            ));
        }
    };
    Ok(builder)
}

/// One image for a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredImage {
    /// The image as the cluster names it (`registry.k8s.io/etcd:3.5.21-0`).
    pub reference: Reference,
    /// The mirror's URL (`http://192.168.122.1:5000`).
    pub mirror: String,
    /// The digest the bundle builds for it.
    pub digest: harbor_client::reference::Digest,
    /// Whether the mirror has this very image under the tag already.
    pub present: bool,
    /// What the mirror's tag points to now, when that is another image (it is replaced).
    pub replaces: Option<harbor_client::reference::Digest>,
}

fn mirror_client(url: &str) -> Result<(Registry, String), Error> {
    let parsed = url::Url::parse(url).map_err(|source| Error::Url {
        what: "mirror",
        url: url.to_owned(),
        source,
    })?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(Error::Selection(format!("mirror {url}: no host"))),
    };
    let options = Options::default().plain_http(parsed.scheme() == "http");
    Ok((Registry::new(&host, Credentials::Anonymous, options)?, host))
}

/// Every image the cluster needs whose registry has a mirror in `[packages] mirrors`, and
/// whether the mirror holds it already: its tag resolves there to the digest the bundle builds
/// (computed by reading the bundle's files; images are deterministic).
///
/// # Errors
/// The bundle cannot list the images, or a mirror cannot be asked.
pub async fn mirrored_images(
    config: &homelab_config::Config,
    bundle: &NodeBundle,
) -> Result<Vec<MirroredImage>, Error> {
    let version = crate::inputs::kube_version(config);
    let mut wanted = kubeadm_images(bundle, &version)?;
    wanted.extend(flannel_images(bundle)?);
    let mut images = Vec::new();
    for image in wanted {
        let reference: Reference =
            image
                .parse()
                .map_err(|e: harbor_client::reference::ReferenceError| {
                    bundle_error(bundle, format!("image {image}: {}", e.reason))
                })?;
        let Some(mirror) = config.packages.mirrors.get(&reference.registry) else {
            continue;
        };
        let (registry, _) = mirror_client(mirror)?;
        let built = image_builder(bundle, &reference)?.digest()?;
        let held = registry
            .resolve(&reference.repository, reference.reference())
            .await?;
        images.push(MirroredImage {
            present: held.as_ref() == Some(&built),
            replaces: held.filter(|h| *h != built),
            digest: built,
            reference,
            mirror: mirror.clone(),
        });
    }
    Ok(images)
}

/// Builds each image the mirrors lack from the bundle and pushes it there (same repository
/// path and tag as the cluster names it); `events` hears of each, as progress of the `nodes`
/// phase (which publishes them before it prepares the nodes). The images are built in a
/// temporary layout, removed afterwards. Returns how many were pushed.
///
/// # Errors
/// An image cannot be built or a mirror refuses it.
pub async fn publish(
    images: &[MirroredImage],
    bundle: &NodeBundle,
    events: crate::Events<'_>,
) -> Result<usize, Error> {
    if images.iter().all(|i| i.present) {
        return Ok(0);
    }
    let work = tempfile::Builder::new()
        .prefix("homelab-images-")
        .tempdir()
        .map_err(|source| {
            Error::Bundle(kubeadm_boot::bundle::BundleError::Read {
                path: std::env::temp_dir(),
                source,
            })
        })?;
    let layout = Layout::open_or_create(work.path())?;
    let mut pushed = 0;
    for image in images.iter().filter(|i| !i.present) {
        let tag = image.reference.reference().to_owned();
        let name = image.reference.to_string();
        image_builder(bundle, &image.reference)?.write(&layout, &name)?;
        let (registry, host) = mirror_client(&image.mirror)?;
        let target = Reference {
            registry: host,
            repository: image.reference.repository.clone(),
            tag: Some(tag.clone()),
            digest: None,
        };
        let transfer =
            harbor_client::image::push(&registry, &layout, Some(&name), &target, 4).await?;
        events(crate::Event::Progress {
            phase: crate::nodes::NAME,
            message: format!(
                "pushed {} to {} ({} MiB, {})",
                image.reference,
                image.mirror,
                transfer.bytes.div_ceil(1 << 20),
                transfer.digest
            ),
        });
        pushed += 1;
    }
    Ok(pushed)
}
