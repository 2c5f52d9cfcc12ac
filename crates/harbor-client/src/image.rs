//! Whole images: push from an OCI image layout directory, pull into one, copy between
//! registries (a cross-repository mount on the same registry; only the blobs the target
//! lacks are uploaded), and mirror a list of images. Several blobs move at once (bounded);
//! each streams from or to disk.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Serialize;

use crate::reference::{Digest, Reference};
use crate::registry::{Manifest, Registry, RegistryError};

/// The annotation naming a manifest in an image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What an image operation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// The manifest's digest.
    pub digest: String,
    /// Blobs sent or received.
    pub transferred: usize,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: usize,
    /// Blobs the target had already.
    pub skipped: usize,
    /// Bytes sent or received.
    pub bytes: u64,
}

fn layout_error(path: &Path, message: impl Into<String>) -> RegistryError {
    RegistryError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message.into()),
    }
}

fn oci_error(path: &Path) -> impl FnOnce(oci_spec::OciSpecError) -> RegistryError {
    let what = path.display().to_string();
    move |source| RegistryError::Oci { what, source }
}

fn digest_of(descriptor: &Descriptor, path: &Path) -> Result<Digest, RegistryError> {
    descriptor
        .digest()
        .to_string()
        .parse()
        .map_err(|source| RegistryError::BadDigest {
            url: path.display().to_string(),
            what: "a descriptor's digest".into(),
            source,
        })
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout at `dir` (created, empty, when missing).
    ///
    /// # Errors
    /// The directory cannot be created or written.
    pub fn open_or_create(dir: &Path) -> Result<Self, RegistryError> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| RegistryError::Io { path: p, source }
        };
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io(dir))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            std::fs::write(&marker, "{\"imageLayoutVersion\":\"1.0.0\"}").map_err(io(&marker))?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            std::fs::write(&index, "{\"schemaVersion\":2,\"manifests\":[]}").map_err(io(&index))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory holding the blobs (`blobs/sha256`).
    pub fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    /// The path of a blob.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn index(&self) -> Result<ImageIndex, RegistryError> {
        let path = self.dir.join("index.json");
        ImageIndex::from_file(&path).map_err(oci_error(&path))
    }

    /// The descriptor of the manifest named `tag` (or the only one, when `tag` is `None`).
    ///
    /// # Errors
    /// No such manifest, or several and no tag.
    pub fn manifest_descriptor(&self, tag: Option<&str>) -> Result<Descriptor, RegistryError> {
        let path = self.dir.join("index.json");
        let index = self.index()?;
        let named = |d: &&Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .map(String::as_str)
                == tag
        };
        let found: Vec<&Descriptor> = match tag {
            Some(_) => index.manifests().iter().filter(named).collect(),
            None => index.manifests().iter().collect(),
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(layout_error(&path, format!("no manifest named {tag:?}"))),
            _ => Err(layout_error(&path, "several manifests: name one (dir:tag)")),
        }
    }

    /// Records `descriptor` under `tag` in `index.json` (replacing one of that name).
    ///
    /// # Errors
    /// `index.json` cannot be read or written.
    pub fn set_tag(&self, tag: &str, descriptor: Descriptor) -> Result<(), RegistryError> {
        let path = self.dir.join("index.json");
        let mut index = self.index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_none_or(|n| n != tag)
            })
            .cloned()
            .collect();
        let mut descriptor = descriptor;
        let mut annotations = descriptor.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_owned(), tag.to_owned());
        descriptor.set_annotations(Some(annotations));
        manifests.push(descriptor);
        index.set_manifests(manifests);
        let text = index.to_string_pretty().map_err(oci_error(&path))?;
        std::fs::write(&path, text).map_err(|source| RegistryError::Io { path, source })
    }
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<ImageManifest, RegistryError> {
    ImageManifest::from_reader(bytes).map_err(|source| RegistryError::NotImageManifest {
        what: what.to_owned(),
        source,
    })
}

/// Whether the registry refused a manifest because a blob it names is unknown.
fn blob_unknown(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Status { errors, .. } if errors.iter().any(|x| x.code == "MANIFEST_BLOB_UNKNOWN" || x.code == "BLOB_UNKNOWN"))
}

fn blobs_of(manifest: &ImageManifest) -> Vec<Descriptor> {
    std::iter::once(manifest.config().clone())
        .chain(manifest.layers().iter().cloned())
        .collect()
}

/// Pushes the image `tag` of `layout` to `target` (its tag, or the layout's tag), `parallel`
/// blobs at a time; blobs the repository has are skipped. A multi-platform image (an OCI
/// index or a Docker manifest list in the layout) is pushed whole: each platform's manifest
/// and its blobs by digest, then the index byte for byte (its digest is unchanged).
///
/// # Errors
/// A blob or a platform's manifest is missing from the layout, or the registry refuses.
pub async fn push(
    registry: &Registry,
    layout: &Layout,
    tag: Option<&str>,
    target: &Reference,
    parallel: usize,
) -> Result<Transfer, RegistryError> {
    let descriptor = layout.manifest_descriptor(tag)?;
    let top = layout_manifest(layout, &descriptor)?;
    if !is_index(&top) {
        return push_manifest(registry, layout, &top, target, target.reference(), parallel).await;
    }
    let what = format!("{}@{}", layout.dir.display(), top.digest);
    let mut total = Transfer::default();
    for child in index_children(&top, &what)? {
        let digest: Digest = child
            .digest
            .parse()
            .map_err(|source| RegistryError::BadDigest {
                url: what.clone(),
                what: "a manifest of the index".into(),
                source,
            })?;
        let path = layout.blob(&digest);
        if !path.exists() {
            return Err(RegistryError::Protocol {
                url: what,
                message: format!(
                    "the layout lacks the {} manifest {digest} its index names (pulled with one platform?)",
                    platform_text(&child.platform)
                ),
            });
        }
        let manifest = Manifest {
            bytes: std::fs::read(&path).map_err(|source| RegistryError::Io {
                path: path.clone(),
                source,
            })?,
            media_type: child.media_type,
            digest: digest.clone(),
        };
        total += push_manifest(
            registry,
            layout,
            &manifest,
            target,
            digest.as_str(),
            parallel,
        )
        .await?;
    }
    let digest = registry
        .put_manifest(
            &target.repository,
            target.reference(),
            &top.bytes,
            &top.media_type,
        )
        .await?;
    total.digest = digest.to_string();
    Ok(total)
}

/// The manifest `descriptor` names in `layout`, checked against its digest.
fn layout_manifest(layout: &Layout, descriptor: &Descriptor) -> Result<Manifest, RegistryError> {
    let digest = digest_of(descriptor, &layout.dir)?;
    let path = layout.blob(&digest);
    let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
        path: path.clone(),
        source,
    })?;
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(RegistryError::DigestMismatch {
            what: path.display().to_string(),
            expected: digest,
            actual,
        });
    }
    Ok(Manifest {
        bytes,
        media_type: descriptor.media_type().to_string(),
        digest,
    })
}

/// One image manifest of `layout` and its blobs to `target`'s repository as `reference`.
async fn push_manifest(
    registry: &Registry,
    layout: &Layout,
    manifest: &Manifest,
    target: &Reference,
    reference: &str,
    parallel: usize,
) -> Result<Transfer, RegistryError> {
    let path = layout.blob(&manifest.digest);
    let parsed = parse_manifest(&manifest.bytes, &path.display().to_string())?;
    let results: Vec<(bool, u64)> = futures::stream::iter(blobs_of(&parsed))
        .map(|d| async move {
            let digest = digest_of(&d, &layout.dir)?;
            let sent = registry
                .push_blob_file(&target.repository, &digest, &layout.blob(&digest), d.size())
                .await?;
            Ok::<_, RegistryError>((sent, d.size()))
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    let mut attempt = 0;
    let digest = loop {
        match registry
            .put_manifest(
                &target.repository,
                reference,
                &manifest.bytes,
                &manifest.media_type,
            )
            .await
        {
            // Another push of the same blobs into the same repository can leave one briefly
            // unknown to the registry (distribution relinks it as the second upload
            // commits): check every blob again, upload what is missing, and retry.
            Err(e) if blob_unknown(&e) && attempt < 3 => {
                attempt += 1;
                tracing::info!(target = %target, attempt, "the registry lost a blob of the manifest; uploading again");
                for d in blobs_of(&parsed) {
                    let digest = digest_of(&d, &layout.dir)?;
                    registry
                        .push_blob_file(
                            &target.repository,
                            &digest,
                            &layout.blob(&digest),
                            d.size(),
                        )
                        .await?;
                }
            }
            other => break other?,
        }
    };
    Ok(Transfer {
        digest: digest.to_string(),
        transferred: results.iter().filter(|(s, _)| *s).count(),
        mounted: 0,
        skipped: results.iter().filter(|(s, _)| !*s).count(),
        bytes: results.iter().filter(|(s, _)| *s).map(|(_, n)| n).sum(),
    })
}

/// Pulls `source` into `layout` under `tag`, `parallel` blobs at a time, each verified
/// against its digest while it streams; blobs the layout has are skipped. A multi-platform
/// image is pulled whole ([`Platforms::All`]); see [`pull_platforms`].
///
/// # Errors
/// The registry refuses, a digest differs, or the layout cannot be written.
pub async fn pull(
    registry: &Registry,
    source: &Reference,
    layout: &Layout,
    tag: &str,
    parallel: usize,
) -> Result<Transfer, RegistryError> {
    pull_platforms(registry, source, layout, tag, parallel, &Platforms::All).await
}

/// As [`pull`], choosing the platforms of a multi-platform image: with [`Platforms::All`],
/// every platform's manifest and blobs, then the index, tagged `tag` (the layout holds the
/// image as the registry does, digests unchanged); with one platform, that platform's
/// manifest tagged `tag`.
///
/// # Errors
/// As [`pull`], or the index has no such platform (the error lists those it has).
pub async fn pull_platforms(
    registry: &Registry,
    source: &Reference,
    layout: &Layout,
    tag: &str,
    parallel: usize,
    platforms: &Platforms,
) -> Result<Transfer, RegistryError> {
    let top = registry
        .get_manifest(&source.repository, source.reference())
        .await?;
    if !is_index(&top) {
        let (transfer, descriptor) =
            pull_manifest(registry, source, &top, layout, parallel).await?;
        layout.set_tag(tag, descriptor)?;
        return Ok(transfer);
    }
    let what = source.to_string();
    let children = index_children(&top, &what)?;
    let chosen: Vec<&Child> = match platforms {
        Platforms::All => children.iter().collect(),
        one @ Platforms::One { .. } => vec![choose(&children, one, &what)?],
    };
    let mut total = Transfer::default();
    let mut last = None;
    for child in chosen {
        let manifest = registry
            .get_manifest(&source.repository, &child.digest)
            .await?;
        if is_index(&manifest) {
            return Err(RegistryError::Protocol {
                url: format!("{what}@{}", child.digest),
                message: "an index inside an index is not pulled".into(),
            });
        }
        let (transfer, descriptor) =
            pull_manifest(registry, source, &manifest, layout, parallel).await?;
        total += transfer;
        total.digest = manifest.digest.to_string();
        last = Some(descriptor);
    }
    let descriptor = if let (Platforms::One { .. }, Some(descriptor)) = (platforms, last) {
        descriptor
    } else {
        total.digest = top.digest.to_string();
        write_manifest(layout, &top, &what)?
    };
    layout.set_tag(tag, descriptor)?;
    Ok(total)
}

/// One image manifest's blobs, then the manifest, into `layout`; its descriptor.
async fn pull_manifest(
    registry: &Registry,
    source: &Reference,
    manifest: &Manifest,
    layout: &Layout,
    parallel: usize,
) -> Result<(Transfer, Descriptor), RegistryError> {
    let what = format!(
        "{}/{}@{}",
        source.registry, source.repository, manifest.digest
    );
    let parsed = parse_manifest(&manifest.bytes, &what)?;
    let results: Vec<(bool, u64)> = futures::stream::iter(blobs_of(&parsed))
        .map(|d| async move {
            let digest = digest_of(&d, &layout.dir)?;
            let path = layout.blob(&digest);
            if path.exists() {
                return Ok((false, 0));
            }
            let n = registry
                .pull_blob_to_file(&source.repository, &digest, &path)
                .await?;
            Ok::<_, RegistryError>((true, n))
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    let descriptor = write_manifest(layout, manifest, &what)?;
    Ok((
        Transfer {
            digest: manifest.digest.to_string(),
            transferred: results.iter().filter(|(t, _)| *t).count(),
            mounted: 0,
            skipped: results.iter().filter(|(t, _)| !*t).count(),
            bytes: results.iter().map(|(_, n)| n).sum(),
        },
        descriptor,
    ))
}

/// Writes a manifest (or index) into the layout's blobs; its descriptor.
fn write_manifest(
    layout: &Layout,
    manifest: &Manifest,
    what: &str,
) -> Result<Descriptor, RegistryError> {
    let path = layout.blob(&manifest.digest);
    std::fs::write(&path, &manifest.bytes).map_err(|source| RegistryError::Io { path, source })?;
    let media_type = if manifest.media_type.is_empty() {
        serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned())
    } else {
        manifest.media_type.clone()
    };
    Ok(Descriptor::new(
        oci_spec::image::MediaType::from(media_type.as_str()),
        manifest.bytes.len() as u64,
        oci_spec::image::Digest::try_from(manifest.digest.as_str()).map_err(|source| {
            RegistryError::Oci {
                what: format!("{what}: digest {}", manifest.digest),
                source,
            }
        })?,
    ))
}

/// One manifest an index names.
#[derive(Debug, Clone)]
struct Child {
    digest: String,
    media_type: String,
    platform: serde_json::Value,
}

/// The manifests `index` names, in its order.
fn index_children(index: &Manifest, what: &str) -> Result<Vec<Child>, RegistryError> {
    let parsed: serde_json::Value =
        serde_json::from_slice(&index.bytes).map_err(|source| RegistryError::Json {
            url: what.to_owned(),
            what: "the index".into(),
            source,
        })?;
    Ok(parsed["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Child {
                digest: m["digest"].as_str()?.to_owned(),
                media_type: m["mediaType"].as_str().unwrap_or_default().to_owned(),
                platform: m["platform"].clone(),
            })
        })
        .collect())
}

/// The child of `platform` ([`Platforms::One`]); [`Platforms::All`] chooses the first.
///
/// # Errors
/// No child is of that platform: the error lists those there are.
fn choose<'a>(
    children: &'a [Child],
    platform: &Platforms,
    what: &str,
) -> Result<&'a Child, RegistryError> {
    let Platforms::One {
        os,
        architecture,
        variant,
    } = platform
    else {
        return children.first().ok_or_else(|| RegistryError::Protocol {
            url: what.to_owned(),
            message: "the index names no manifest".into(),
        });
    };
    children
        .iter()
        .find(|c| {
            let p = &c.platform;
            p["os"] == os.as_str()
                && p["architecture"] == architecture.as_str()
                && variant.as_ref().is_none_or(|v| p["variant"] == v.as_str())
        })
        .ok_or_else(|| RegistryError::Protocol {
            url: what.to_owned(),
            message: format!(
                "no {os}/{architecture}{} in the index; it has: {}",
                variant
                    .as_ref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default(),
                children
                    .iter()
                    .map(|c| platform_text(&c.platform))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Which platforms of a multi-platform image (an OCI index or a Docker manifest list) to
/// copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Platforms {
    /// Every manifest of the index, then the index itself, byte for byte (its digest is
    /// unchanged), like `skopeo copy --all`.
    #[default]
    All,
    /// Only this platform's manifest (`linux/amd64`, `linux/arm64/v8`), under the target's
    /// tag.
    One {
        /// `os`.
        os: String,
        /// `architecture`.
        architecture: String,
        /// `variant`, when given.
        variant: Option<String>,
    },
}

impl std::str::FromStr for Platforms {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "all" {
            return Ok(Self::All);
        }
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self::One {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self::One {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*variant).into()),
                })
            }
            _ => Err(format!(
                "`{text}` is not a platform: os/architecture[/variant] (linux/amd64, linux/arm64/v8) or all"
            )),
        }
    }
}

/// Whether a manifest is an index (OCI image index or Docker manifest list).
fn is_index(manifest: &Manifest) -> bool {
    manifest.media_type.contains("image.index")
        || manifest.media_type.contains("manifest.list")
        || serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
            .is_ok_and(|v| v["manifests"].is_array() && v["layers"].is_null())
}

fn platform_text(p: &serde_json::Value) -> String {
    let mut text = format!(
        "{}/{}",
        p["os"].as_str().unwrap_or("?"),
        p["architecture"].as_str().unwrap_or("?")
    );
    if let Some(v) = p["variant"].as_str() {
        text.push('/');
        text.push_str(v);
    }
    text
}

impl std::ops::AddAssign for Transfer {
    fn add_assign(&mut self, other: Self) {
        self.transferred += other.transferred;
        self.mounted += other.mounted;
        self.skipped += other.skipped;
        self.bytes += other.bytes;
    }
}

/// Copies `source` (on `from`) to `target` (on `to`): blobs the target has are skipped; on
/// the same registry the others are mounted across repositories; otherwise each is
/// downloaded to `work_dir` (verified) and uploaded in chunks. The manifest keeps its digest.
/// A multi-platform image is copied whole ([`Platforms::All`]); see [`copy_platforms`].
///
/// # Errors
/// Either registry refuses, or a digest differs.
pub async fn copy(
    from: &Registry,
    source: &Reference,
    to: &Registry,
    target: &Reference,
    work_dir: &Path,
    parallel: usize,
) -> Result<Transfer, RegistryError> {
    copy_platforms(
        from,
        source,
        to,
        target,
        work_dir,
        parallel,
        &Platforms::All,
    )
    .await
}

/// As [`copy`], choosing the platforms of a multi-platform image: with
/// [`Platforms::All`], each platform's manifest (and its blobs) first, by digest, then the
/// index under the target's tag, byte for byte; with one platform, that platform's manifest
/// under the target's tag. A single-platform image is copied as it is either way.
///
/// # Errors
/// Either registry refuses, a digest differs, or the index has no such platform (the
/// error lists those it has).
pub async fn copy_platforms(
    from: &Registry,
    source: &Reference,
    to: &Registry,
    target: &Reference,
    work_dir: &Path,
    parallel: usize,
    platforms: &Platforms,
) -> Result<Transfer, RegistryError> {
    let manifest = from
        .get_manifest(&source.repository, source.reference())
        .await?;
    let copy_one = |manifest: Manifest, reference: String| async move {
        copy_manifest(
            from,
            &source.repository,
            manifest,
            to,
            &target.repository,
            &reference,
            work_dir,
            parallel,
        )
        .await
    };
    if !is_index(&manifest) {
        return copy_one(manifest, target.reference().to_owned()).await;
    }
    let what = source.to_string();
    let children = index_children(&manifest, &what)?;
    match platforms {
        Platforms::All => {
            let mut total = Transfer::default();
            for child in &children {
                let manifest = from.get_manifest(&source.repository, &child.digest).await?;
                if is_index(&manifest) {
                    return Err(RegistryError::Protocol {
                        url: format!("{what}@{}", child.digest),
                        message: "an index inside an index is not copied".into(),
                    });
                }
                total += copy_one(manifest, child.digest.clone()).await?;
            }
            let digest = to
                .put_manifest(
                    &target.repository,
                    target.reference(),
                    &manifest.bytes,
                    &manifest.media_type,
                )
                .await?;
            total.digest = digest.to_string();
            Ok(total)
        }
        one @ Platforms::One { .. } => {
            let chosen = choose(&children, one, &what)?;
            let child = from
                .get_manifest(&source.repository, &chosen.digest)
                .await?;
            copy_one(child, target.reference().to_owned()).await
        }
    }
}

/// One image manifest and its blobs from `from`/`src_repo` to `to`/`dst_repo` as
/// `reference` (a tag or its digest).
#[allow(
    clippy::too_many_arguments,
    reason = "both ends of a copy, each a registry and a repository"
)]
async fn copy_manifest(
    from: &Registry,
    src_repo: &str,
    manifest: Manifest,
    to: &Registry,
    dst_repo: &str,
    reference: &str,
    work_dir: &Path,
    parallel: usize,
) -> Result<Transfer, RegistryError> {
    let parsed = parse_manifest(&manifest.bytes, &format!("{src_repo}@{}", manifest.digest))?;
    let same_registry = from.host() == to.host();
    let mut attempt = 0;
    let (results, digest) = loop {
        let results: Vec<(u8, u64)> = futures::stream::iter(blobs_of(&parsed))
            .map(|d| async move {
                let digest = digest_of(&d, work_dir)?;
                if to.blob_size(dst_repo, &digest).await?.is_some() {
                    return Ok((0, 0));
                }
                if same_registry && to.mount_blob(dst_repo, src_repo, &digest).await? {
                    return Ok((1, 0));
                }
                let path = work_dir.join(digest.hex());
                from.pull_blob_to_file(src_repo, &digest, &path).await?;
                let pushed = to.push_blob_file(dst_repo, &digest, &path, d.size()).await;
                let _ = tokio::fs::remove_file(&path).await;
                pushed?;
                Ok::<_, RegistryError>((2, d.size()))
            })
            .buffer_unordered(parallel.max(1))
            .try_collect()
            .await?;
        match to
            .put_manifest(dst_repo, reference, &manifest.bytes, &manifest.media_type)
            .await
        {
            // As in `push`: a blob relinked by a concurrent upload; check them all again.
            Err(e) if blob_unknown(&e) && attempt < 3 => attempt += 1,
            other => break (results, other?),
        }
    };
    Ok(Transfer {
        digest: digest.to_string(),
        transferred: results.iter().filter(|(k, _)| *k == 2).count(),
        mounted: results.iter().filter(|(k, _)| *k == 1).count(),
        skipped: results.iter().filter(|(k, _)| *k == 0).count(),
        bytes: results.iter().map(|(_, n)| n).sum(),
    })
}

/// The reference an image gets in a mirror: `to_host/prefix/<source repository>`, same tag
/// or digest.
///
/// ```
/// use harbor_client::image::mirrored;
/// use harbor_client::reference::Reference;
///
/// let source: Reference = "registry.k8s.io/coredns/coredns:v1.12.0".parse()?;
/// let target = mirrored(&source, "harbor.homelab.lan", "mirror/");
/// assert_eq!(target.to_string(), "harbor.homelab.lan/mirror/coredns/coredns:v1.12.0");
/// # Ok::<(), harbor_client::reference::ReferenceError>(())
/// ```
pub fn mirrored(source: &Reference, to_host: &str, prefix: &str) -> Reference {
    let prefix = prefix.trim_matches('/');
    Reference {
        registry: to_host.to_owned(),
        repository: if prefix.is_empty() {
            source.repository.clone()
        } else {
            format!("{prefix}/{}", source.repository)
        },
        tag: source.tag.clone(),
        digest: source.digest.clone(),
    }
}

/// Copies every image of `images` into `to` under `prefix` (see [`mirrored`]), one image at
/// a time with `parallel` blobs each; `connect` gives the client of each source registry.
/// Stops at the first failure, naming the image.
///
/// # Errors
/// An image cannot be copied.
pub async fn mirror(
    images: &[Reference],
    connect: &(dyn Fn(&str) -> Result<Registry, RegistryError> + Sync),
    to: &Registry,
    prefix: &str,
    work_dir: &Path,
    parallel: usize,
) -> Result<Vec<(Reference, Transfer)>, (Reference, RegistryError)> {
    let mut done = Vec::new();
    for image in images {
        let from = connect(&image.registry).map_err(|e| (image.clone(), e))?;
        let target = mirrored(image, to.host(), prefix);
        let transfer = copy(&from, image, to, &target, work_dir, parallel)
            .await
            .map_err(|e| (image.clone(), e))?;
        done.push((target, transfer));
    }
    Ok(done)
}
