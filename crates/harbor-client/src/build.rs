//! Images built from files: one layer holding the given files (and the directories above
//! them), an image configuration (entrypoint, environment, platform) and a manifest, written
//! into an OCI image layout ([`Layout`]) under a tag, ready for [`crate::image::push`].
//!
//! The result depends only on the files' contents, names and modes: entries are sorted, owned
//! by root, dated at the epoch, and no creation time is recorded, so building the same files
//! twice gives the same digests (a second push uploads nothing). The layer is an uncompressed
//! tar (`application/vnd.oci.image.layer.v1.tar`): every OCI runtime reads it, and nodes
//! without hardware virtualisation unpack it faster than a gzip one.
//!
//! ```no_run
//! # fn example() -> Result<(), harbor_client::registry::RegistryError> {
//! use std::path::Path;
//! use harbor_client::build::ImageBuilder;
//! use harbor_client::image::Layout;
//!
//! let layout = Layout::open_or_create(Path::new("images"))?;
//! let descriptor = ImageBuilder::new()
//!     .file("/coredns", Path::new("bundle/images/coredns"), 0o755)
//!     .entrypoint(["/coredns"])
//!     .write(&layout, "coredns-v1.12.0")?;
//! println!("{}", descriptor.digest());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest as _, Sha256};

use crate::image::Layout;
use crate::reference::Digest;
use crate::registry::RegistryError;

/// The layer media type this builder writes.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The `PATH` images get unless [`ImageBuilder::env`] sets one (what container runtimes
/// assume for images without one).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
enum Entry {
    File { source: PathBuf, mode: u32 },
    Symlink { target: String },
}

/// An image to build from files on this machine.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    entries: BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    os: String,
    architecture: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The OCI architecture name of the machine this runs on (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Normalises an in-image path: absolute, no `.`/`..`/empty parts, no trailing slash.
fn image_path(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    (!parts.is_empty() && path.starts_with('/') && parts.iter().all(|p| *p != "." && *p != ".."))
        .then(|| parts.join("/"))
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ImageBuilder {
    /// An empty image for this machine's platform (`linux` and [`host_architecture`]).
    pub fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            os: "linux".into(),
            architecture: host_architecture().into(),
        }
    }

    /// Adds the local file `source` at `path` (absolute, in the image) with `mode`. A later
    /// entry at the same path replaces an earlier one.
    #[must_use]
    pub fn file(mut self, path: &str, source: &Path, mode: u32) -> Self {
        self.entries.insert(
            path.to_owned(),
            Entry::File {
                source: source.to_owned(),
                mode,
            },
        );
        self
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    #[must_use]
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.insert(
            path.to_owned(),
            Entry::Symlink {
                target: target.to_owned(),
            },
        );
        self
    }

    /// The process the image runs (`ENTRYPOINT`).
    #[must_use]
    pub fn entrypoint<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    /// Its default arguments (`CMD`).
    #[must_use]
    pub fn cmd<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable, `NAME=value`.
    #[must_use]
    pub fn env(mut self, variable: impl Into<String>) -> Self {
        self.env.push(variable.into());
        self
    }

    /// Another platform than this machine's.
    #[must_use]
    pub fn platform(mut self, os: &str, architecture: &str) -> Self {
        os.clone_into(&mut self.os);
        architecture.clone_into(&mut self.architecture);
        self
    }

    /// Writes the layer, the configuration and the manifest into `layout` and names the
    /// manifest `tag` there; returns the manifest's descriptor.
    ///
    /// # Errors
    /// A path is not absolute or leaves the root, a source file cannot be read, or the
    /// layout cannot be written.
    pub fn write(&self, layout: &Layout, tag: &str) -> Result<Descriptor, RegistryError> {
        let tmp_path = layout.blob_dir().join(".layer.tmp");
        let file = std::fs::File::create(&tmp_path).map_err(io_error(&tmp_path))?;
        let (layer_digest, layer_size) =
            self.layer_into(std::io::BufWriter::new(file), &tmp_path)?;
        let blob = layout.blob(&layer_digest);
        std::fs::rename(&tmp_path, &blob).map_err(io_error(&blob))?;
        let (config, manifest) = self.documents(&layer_digest, layer_size, &blob)?;
        write_blob(layout, &config)?;
        let (manifest_digest, manifest_size) = write_blob(layout, &manifest)?;
        let descriptor = manifest_descriptor(&manifest_digest, manifest_size, &blob)?;
        layout.set_tag(tag, descriptor.clone())?;
        Ok(descriptor)
    }

    /// The digest the image's manifest will have, computed by reading the files without
    /// writing anything (a registry holding this digest under the tag has this very image).
    ///
    /// # Errors
    /// A path is not absolute or leaves the root, or a source file cannot be read.
    pub fn digest(&self) -> Result<Digest, RegistryError> {
        let nowhere = Path::new("(digest only)");
        let (layer_digest, layer_size) = self.layer_into(std::io::sink(), nowhere)?;
        let (_, manifest) = self.documents(&layer_digest, layer_size, nowhere)?;
        Ok(Digest::of(&manifest))
    }

    /// The image configuration and the manifest, as bytes.
    fn documents(
        &self,
        layer_digest: &Digest,
        layer_size: u64,
        path: &Path,
    ) -> Result<(Vec<u8>, Vec<u8>), RegistryError> {
        let json_error = |e: serde_json::Error| RegistryError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        };
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_owned());
        }
        let mut config = serde_json::json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": { "Env": env },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest.to_string()] },
        });
        if !self.entrypoint.is_empty() {
            config["config"]["Entrypoint"] = self.entrypoint.clone().into();
        }
        if !self.cmd.is_empty() {
            config["config"]["Cmd"] = self.cmd.clone().into();
        }
        let config = serde_json::to_vec(&config).map_err(json_error)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": Digest::of(&config).to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_TAR,
                "digest": layer_digest.to_string(),
                "size": layer_size,
            }],
        });
        let manifest = serde_json::to_vec(&manifest).map_err(json_error)?;
        Ok((config, manifest))
    }

    /// The layer written into `out` (directories first as `tar` needs them, then every
    /// entry, sorted); returns its digest and size. `path` names `out` in errors.
    fn layer_into<W: Write>(&self, out: W, path: &Path) -> Result<(Digest, u64), RegistryError> {
        let mut entries = BTreeMap::new();
        for (image_path_text, entry) in &self.entries {
            let normal = image_path(image_path_text).ok_or_else(|| RegistryError::Io {
                path: PathBuf::from(image_path_text),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an image path must be absolute and stay inside the image",
                ),
            })?;
            entries.insert(normal, entry);
        }
        let mut dirs = std::collections::BTreeSet::new();
        for p in entries.keys() {
            let mut parent = Path::new(p).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_string_lossy().into_owned());
                parent = dir.parent();
            }
        }
        let mut tar = tar::Builder::new(Hashing {
            inner: out,
            hasher: Sha256::new(),
            size: 0,
        });
        tar.mode(tar::HeaderMode::Deterministic);
        let header = |kind: tar::EntryType, mode: u32, size: u64| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h
        };
        let write = |e| io_error(path)(e);
        for dir in &dirs {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, format!("{dir}/"), std::io::empty())
                .map_err(write)?;
        }
        for (name, entry) in entries {
            match entry {
                Entry::File { source, mode } => {
                    let file = std::fs::File::open(source).map_err(io_error(source))?;
                    let size = file.metadata().map_err(io_error(source))?.len();
                    let mut h = header(tar::EntryType::Regular, *mode, size);
                    tar.append_data(&mut h, &name, file).map_err(write)?;
                }
                Entry::Symlink { target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, &name, target).map_err(write)?;
                }
            }
        }
        let mut hashing = tar.into_inner().map_err(write)?;
        hashing.flush().map_err(write)?;
        let digest = Digest::from_sha256(hashing.hasher.finalize().into());
        Ok((digest, hashing.size))
    }
}

fn manifest_descriptor(
    digest: &Digest,
    size: u64,
    path: &Path,
) -> Result<Descriptor, RegistryError> {
    let digest = oci_spec::image::Digest::from_str(digest.as_str()).map_err(|source| {
        RegistryError::Oci {
            what: format!("{}: digest {digest}", path.display()),
            source,
        }
    })?;
    Ok(Descriptor::new(MediaType::ImageManifest, size, digest))
}

/// Writes `bytes` as a blob of `layout`; returns its digest and size.
fn write_blob(layout: &Layout, bytes: &[u8]) -> Result<(Digest, u64), RegistryError> {
    let digest = Digest::of(bytes);
    let path = layout.blob(&digest);
    std::fs::write(&path, bytes).map_err(io_error(&path))?;
    Ok((digest, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use oci_spec::image::{ImageConfiguration, ImageManifest};

    fn build(dir: &Path, contents: &str) -> (Layout, Descriptor) {
        let src = dir.join("coredns");
        std::fs::write(&src, contents).unwrap();
        let layout = Layout::open_or_create(&dir.join("layout")).unwrap();
        let d = ImageBuilder::new()
            .file("/usr/local/bin/coredns", &src, 0o755)
            .symlink("/coredns", "/usr/local/bin/coredns")
            .entrypoint(["/coredns"])
            .cmd(["-conf", "/etc/coredns/Corefile"])
            .write(&layout, "v1")
            .unwrap();
        (layout, d)
    }

    #[test]
    fn the_image_holds_the_files_under_their_directories_with_its_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, descriptor) = build(dir.path(), "binary");
        assert_eq!(
            layout.manifest_descriptor(Some("v1")).unwrap().digest(),
            descriptor.digest()
        );
        let digest: Digest = descriptor.digest().to_string().parse().unwrap();
        let manifest = ImageManifest::from_file(layout.blob(&digest)).unwrap();
        let config_digest: Digest = manifest.config().digest().to_string().parse().unwrap();
        let config = ImageConfiguration::from_file(layout.blob(&config_digest)).unwrap();
        assert_eq!(config.architecture().to_string(), host_architecture());
        let c = config.config().as_ref().unwrap();
        assert_eq!(
            c.entrypoint().as_deref(),
            Some(&["/coredns".to_owned()][..])
        );
        assert_eq!(c.env().as_ref().unwrap()[0], DEFAULT_PATH);
        let layer = &manifest.layers()[0];
        assert_eq!(layer.media_type().to_string(), LAYER_TAR);
        assert_eq!(
            config.rootfs().diff_ids()[0],
            layer.digest().to_string(),
            "an uncompressed layer's diff id is its digest"
        );
        let layer_digest: Digest = layer.digest().to_string().parse().unwrap();
        let mut archive =
            tar::Archive::new(std::fs::File::open(layout.blob(&layer_digest)).unwrap());
        let listed: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("usr/".to_owned(), 0o755, 0),
                ("usr/local/".to_owned(), 0o755, 0),
                ("usr/local/bin/".to_owned(), 0o755, 0),
                ("coredns".to_owned(), 0o777, 0),
                ("usr/local/bin/coredns".to_owned(), 0o755, 0),
            ]
        );
    }

    #[test]
    fn the_same_files_give_the_same_digest_and_other_contents_another() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let (_, first) = build(a.path(), "binary");
        let (_, again) = build(b.path(), "binary");
        let (_, other) = build(c.path(), "binary 2");
        assert_eq!(first.digest(), again.digest());
        assert_ne!(first.digest(), other.digest());
    }

    #[test]
    fn the_digest_without_writing_is_the_digest_written() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("pause");
        std::fs::write(&src, "binary").unwrap();
        let builder = ImageBuilder::new()
            .file("/pause", &src, 0o755)
            .entrypoint(["/pause"]);
        let layout = Layout::open_or_create(&dir.path().join("layout")).unwrap();
        let written = builder.write(&layout, "t").unwrap();
        assert_eq!(
            builder.digest().unwrap().as_str(),
            written.digest().to_string()
        );
        std::fs::write(&src, "binary 2").unwrap();
        assert_ne!(
            builder.digest().unwrap().as_str(),
            written.digest().to_string()
        );
    }

    #[test]
    fn paths_outside_the_image_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(dir.path()).unwrap();
        for bad in ["relative/x", "/../etc/x", "/"] {
            let err = ImageBuilder::new()
                .symlink(bad, "/x")
                .write(&layout, "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains("absolute"), "{bad}: {err}");
        }
    }
}
