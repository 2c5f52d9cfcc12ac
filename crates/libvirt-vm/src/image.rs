//! Building a bootable Debian base image offline from a package mirror: debootstrap into a
//! directory, configure it for cloud-init, make an ext4 image of it with `mkfs.ext4 -d`,
//! convert it to qcow2, and keep its kernel and initrd beside it for direct kernel boot.
//! Needs root (debootstrap). The result is cached by the hash of its recipe.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, Events};
use crate::spec::fingerprint;

/// Bumped whenever the build steps change, so cached images are rebuilt.
const BUILDER_VERSION: u32 = 1;

/// What goes into an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecipe {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// Package mirror.
    pub mirror: String,
    /// Packages installed on top of debootstrap's default set.
    pub packages: Vec<String>,
    /// Size of the root filesystem (the image grows to the node's disk size at first boot).
    pub size_bytes: u64,
}

impl ImageRecipe {
    /// Debian 12 with SSH, cloud-init, sudo and a kernel: what the cluster layer needs.
    pub fn debian_bookworm(mirror: &str) -> Self {
        Self {
            suite: "bookworm".into(),
            mirror: mirror.into(),
            packages: [
                "openssh-server",
                "cloud-init",
                "python3-cffi-backend",
                "linux-image-amd64",
                "systemd-sysv",
                "sudo",
                "ifupdown",
                // cloud-init's ifupdown renderer adds routes with `route` (net-tools); without
                // it the default route is silently missing.
                "net-tools",
                "ca-certificates",
            ]
            .map(String::from)
            .to_vec(),
            size_bytes: 3 << 30,
        }
    }

    /// The cache key of this recipe.
    pub fn hash(&self) -> String {
        fingerprint(&(BUILDER_VERSION, self))
    }
}

/// The files of a built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFiles {
    /// The qcow2 image (an ext4 filesystem, no partition table).
    pub image: PathBuf,
    /// The kernel, for direct kernel boot.
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: PathBuf,
}

impl ImageFiles {
    /// Kernel and initrd beside `image`: `<image>.vmlinuz` and `<image>.initrd`.
    pub fn beside(image: &Path) -> Self {
        let with = |ext: &str| {
            let mut name = image.as_os_str().to_owned();
            name.push(ext);
            PathBuf::from(name)
        };
        Self {
            image: image.to_owned(),
            kernel: with(".vmlinuz"),
            initrd: with(".initrd"),
        }
    }

    fn manifest(&self) -> PathBuf {
        let mut name = self.image.as_os_str().to_owned();
        name.push(".recipe.json");
        PathBuf::from(name)
    }
}

/// What [`build`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOutcome {
    /// An image built from the same recipe was already there.
    Cached,
    /// The image was built.
    Built,
}

/// Whether the files exist and were built from `recipe`.
pub fn is_cached(recipe: &ImageRecipe, files: &ImageFiles) -> bool {
    let fresh = [&files.image, &files.kernel, &files.initrd]
        .iter()
        .all(|p| p.is_file());
    fresh
        && std::fs::read_to_string(files.manifest())
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v.get("hash").and_then(|h| h.as_str()).map(str::to_owned))
            .is_some_and(|hash| hash == recipe.hash())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    tracing::debug!(command = ?cmd, "running");
    let output = cmd.output().map_err(|source| Error::Io {
        action: "run",
        path: PathBuf::from(cmd.get_program()),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(Error::Image(format!(
        "{what} failed ({}): {}",
        output.status,
        tail.join("\n")
    )))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            action: "create",
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Builds the image unless a build of the same recipe is in place. `work_dir` holds the
/// temporary root filesystem (about 1 GiB). Outputs are written under temporary names and
/// renamed at the end, so an interrupted build leaves no half image behind.
///
/// # Errors
/// A tool is missing or fails (the error names the step and quotes its stderr), or a file
/// cannot be written.
pub fn build(
    recipe: &ImageRecipe,
    files: &ImageFiles,
    work_dir: &Path,
    events: Events<'_>,
) -> Result<BuildOutcome> {
    let progress = |message: &str| {
        events(Event::Image {
            message: message.to_owned(),
        });
    };
    if is_cached(recipe, files) {
        return Ok(BuildOutcome::Cached);
    }
    for tool in ["debootstrap", "mkfs.ext4", "qemu-img"] {
        if which(tool).is_none() {
            return Err(Error::Image(format!(
                "`{tool}` is not installed; run: apt-get install debootstrap e2fsprogs qemu-utils"
            )));
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix("homelab-image-")
        .tempdir_in(work_dir)
        .map_err(|source| Error::Io {
            action: "create a work directory in",
            path: work_dir.to_owned(),
            source,
        })?;
    let rootfs = scratch.path().join("rootfs");
    progress(&format!(
        "debootstrap {} from {} (a few minutes)",
        recipe.suite, recipe.mirror
    ));
    run(
        Command::new("debootstrap")
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg("--components=main")
            .arg(&recipe.suite)
            .arg(&rootfs)
            .arg(&recipe.mirror),
        "debootstrap",
    )?;
    progress("configuring the root filesystem for cloud-init");
    configure_rootfs(&rootfs)?;
    let (kernel, initrd) = boot_files(&rootfs)?;

    progress("making the ext4 image");
    let raw = scratch.path().join("root.raw");
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&rootfs)
            .arg(&raw)
            .arg(format!("{}M", recipe.size_bytes >> 20)),
        "mkfs.ext4",
    )?;
    if let Some(parent) = files.image.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            action: "create",
            path: parent.to_owned(),
            source,
        })?;
    }
    let tmp = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    };
    progress("converting to qcow2");
    run(
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&raw)
            .arg(tmp(&files.image)),
        "qemu-img convert",
    )?;
    for (from, to) in [(&kernel, &files.kernel), (&initrd, &files.initrd)] {
        std::fs::copy(from, tmp(to)).map_err(|source| Error::Io {
            action: "copy",
            path: from.clone(),
            source,
        })?;
    }
    for target in [&files.image, &files.kernel, &files.initrd] {
        std::fs::rename(tmp(target), target).map_err(|source| Error::Io {
            action: "rename into place",
            path: target.clone(),
            source,
        })?;
    }
    let manifest = serde_json::json!({ "hash": recipe.hash(), "recipe": recipe });
    write(&files.manifest(), &format!("{manifest:#}\n"))?;
    Ok(BuildOutcome::Built)
}

fn configure_rootfs(rootfs: &Path) -> Result<()> {
    write(
        &rootfs.join("etc/fstab"),
        "LABEL=root / ext4 defaults,errors=remount-ro 0 1\n",
    )?;
    write(
        &rootfs.join("etc/cloud/cloud.cfg.d/90-homelab.cfg"),
        "# Written by homelab's image builder: only the NoCloud seed is looked for.\n\
         datasource_list: [ NoCloud, None ]\n\
         resize_rootfs: true\n",
    )?;
    // Not the build host's resolver: the seed points each node at its gateway.
    write(
        &rootfs.join("etc/resolv.conf"),
        "# Written at boot by cloud-init (homelab seed).\n",
    )?;
    // A fresh machine id per node, and no host keys baked into the image.
    write(&rootfs.join("etc/machine-id"), "")?;
    let _ = std::fs::remove_file(rootfs.join("var/lib/dbus/machine-id"));
    if let Ok(entries) = std::fs::read_dir(rootfs.join("etc/ssh")) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    // e2scrub_reap once delayed boot by minutes on these machines.
    let mask = rootfs.join("etc/systemd/system/e2scrub_reap.service");
    let _ = std::fs::remove_file(&mask);
    if let Some(dir) = mask.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.to_owned(),
            source,
        })?;
    }
    std::os::unix::fs::symlink("/dev/null", &mask).map_err(|source| Error::Io {
        action: "mask",
        path: mask.clone(),
        source,
    })?;
    // Downloaded packages are not needed in the image.
    if let Ok(entries) = std::fs::read_dir(rootfs.join("var/cache/apt/archives")) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "deb") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

fn boot_files(rootfs: &Path) -> Result<(PathBuf, PathBuf)> {
    let boot = rootfs.join("boot");
    let mut kernel = None;
    let mut initrd = None;
    let entries = std::fs::read_dir(&boot).map_err(|source| Error::Io {
        action: "read",
        path: boot.clone(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("vmlinuz-") {
            kernel = Some(entry.path());
        } else if name.starts_with("initrd.img-") {
            initrd = Some(entry.path());
        }
    }
    match (kernel, initrd) {
        (Some(k), Some(i)) => Ok((k, i)),
        _ => Err(Error::Image(format!(
            "no kernel and initrd in {} (is linux-image-amd64 in the package list?)",
            boot.display()
        ))),
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_hash_changes_with_the_recipe() {
        let a = ImageRecipe::debian_bookworm("http://deb.debian.org/debian");
        let mut b = a.clone();
        b.packages.push("vim".into());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(
            a.hash(),
            ImageRecipe::debian_bookworm("http://deb.debian.org/debian").hash()
        );
    }

    #[test]
    fn cache_needs_all_files_and_the_same_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::beside(&dir.path().join("base.qcow2"));
        assert_eq!(files.kernel, dir.path().join("base.qcow2.vmlinuz"));
        let recipe = ImageRecipe::debian_bookworm("http://m");
        assert!(!is_cached(&recipe, &files));
        for p in [&files.image, &files.kernel, &files.initrd] {
            std::fs::write(p, "x").unwrap();
        }
        assert!(!is_cached(&recipe, &files), "no manifest");
        std::fs::write(
            files.manifest(),
            format!("{{\"hash\":\"{}\"}}", recipe.hash()),
        )
        .unwrap();
        assert!(is_cached(&recipe, &files));
        let other = ImageRecipe::debian_bookworm("http://other");
        assert!(!is_cached(&other, &files));
    }

    #[test]
    fn rootfs_is_configured_for_cloud_init() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "k").unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), "c").unwrap();
        configure_rootfs(root).unwrap();
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(root.join("etc/ssh/sshd_config").exists());
        assert_eq!(
            std::fs::read_link(root.join("etc/systemd/system/e2scrub_reap.service")).unwrap(),
            Path::new("/dev/null")
        );
        let cfg =
            std::fs::read_to_string(root.join("etc/cloud/cloud.cfg.d/90-homelab.cfg")).unwrap();
        assert!(cfg.contains("NoCloud"));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
            ""
        );
    }
}
