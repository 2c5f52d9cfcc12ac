//! The offline node bundle: kubeadm, kubelet, kubectl and the CNI plugins as files on the
//! host, installed on the nodes over SSH instead of from a package repository (air-gapped
//! labs, or a release the repository does not serve).
//!
//! A bundle is a directory:
//!
//! ```text
//! VERSION          the Kubernetes release, e.g. v1.33.5
//! SHA256SUMS       `sha256sum` lines for every file below (and only those are used)
//! bin/kubeadm      → /usr/bin/kubeadm on every node
//! bin/kubelet      → /usr/bin/kubelet
//! bin/kubectl      → /usr/bin/kubectl
//! cni/bridge …     → /opt/cni/bin/… (bridge, host-local, loopback, portmap at least)
//! images/…         binaries the host builds the cluster's images from (not for nodes)
//! ```
//!
//! [`NodeBundle::open`] reads `SHA256SUMS` and hashes every listed file: a file that changed
//! since the sums were written is refused before anything reaches a node. On the node each
//! file is streamed to a temporary file, checked with `sha256sum` there and only then moved
//! into place, so a copy damaged on the way is refused too. The kubelet gets its systemd unit
//! and kubeadm's drop-in (the same contract as the distribution packages: flags from
//! `/var/lib/kubelet/kubeadm-flags.env` and `/etc/default/kubelet`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::kubeadm::Version;
use crate::ssh::{Cmd, shell_quote};
use crate::steps::{Change, Check, Step};

/// The file naming the bundle's release.
pub const VERSION_FILE: &str = "VERSION";
/// The file holding the digest of every file of the bundle.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// The binaries every node needs, by their name in the bundle.
pub const NODE_BINARIES: &[&str] = &["bin/kubeadm", "bin/kubelet", "bin/kubectl"];
/// The CNI plugins the pod network needs on every node.
pub const CNI_PLUGINS: &[&str] = &[
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
];
/// Where the kubelet's unit goes.
pub const KUBELET_UNIT: &str = "/etc/systemd/system/kubelet.service";
/// What a node holds from a bundle: its release on the first line, then the `sha256sum` lines
/// of the files installed (read by `status`: cheaper than asking each binary its version).
pub const INSTALLED_MARK: &str = "/var/lib/homelab/node-bundle";
/// Where kubeadm's drop-in for the kubelet goes.
pub const KUBEADM_DROP_IN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";

/// What is wrong with a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file of the bundle cannot be read.
    #[error("node bundle: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of `SHA256SUMS` is not `<64 hex digits>  <relative path>`.
    #[error("node bundle: {path} line {line}: {message}")]
    Sums {
        /// The sums file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file differs from its recorded digest.
    #[error(
        "node bundle: {path} has sha256 {actual}, but {sums} records {expected}: the file changed since the bundle was made; refusing to install it"
    )]
    Digest {
        /// The file.
        path: PathBuf,
        /// The sums file.
        sums: PathBuf,
        /// Recorded digest.
        expected: String,
        /// Digest of the file now.
        actual: String,
    },
    /// A file the nodes need is not in the bundle.
    #[error("node bundle {dir}: {name} is missing (not listed in {SUMS_FILE})")]
    Missing {
        /// The bundle.
        dir: PathBuf,
        /// The missing file.
        name: String,
    },
    /// The bundle holds another release than the cluster's.
    #[error(
        "node bundle {dir} holds Kubernetes {bundle}, but the cluster is configured for {wanted}"
    )]
    Version {
        /// The bundle.
        dir: PathBuf,
        /// Its release.
        bundle: String,
        /// The configured release.
        wanted: String,
    },
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Path inside the bundle (`bin/kubelet`).
    pub name: String,
    /// Path on this machine.
    pub local: PathBuf,
    /// Lower-case hex sha256, checked when the bundle was opened.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A node bundle whose files all match their recorded digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBundle {
    /// The directory.
    pub dir: PathBuf,
    /// The release (`v1.33.5`).
    pub version: String,
    /// Every listed file, by name.
    pub files: BTreeMap<String, BundleFile>,
}

/// The sha256 of a file (lower-case hex), read in blocks.
///
/// # Errors
/// The file cannot be read.
pub fn file_sha256(path: &Path) -> Result<(String, u64), BundleError> {
    let read = |source| BundleError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Parses `sha256sum` output: `<hex>  <name>` (or `<hex> *<name>`), names relative and
/// without `..`.
///
/// # Errors
/// A line that is not of that form, names a path outside the bundle, or repeats a name.
pub fn parse_sums(text: &str, path: &Path) -> Result<BTreeMap<String, String>, BundleError> {
    let mut sums = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| BundleError::Sums {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        let (digest, rest) = line
            .split_once(' ')
            .ok_or_else(|| err("expected `<sha256>  <file>`".into()))?;
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(|| err("expected two spaces (or ` *`) after the digest".into()))?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(format!("{digest:?} is not a sha256 (64 hex digits)")));
        }
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(err(format!(
                "{name:?} is not a relative path inside the bundle"
            )));
        }
        if sums
            .insert(name.to_owned(), digest.to_ascii_lowercase())
            .is_some()
        {
            return Err(err(format!("{name} is listed twice")));
        }
    }
    Ok(sums)
}

impl NodeBundle {
    /// Opens the bundle at `dir` and checks every listed file against its digest.
    ///
    /// # Errors
    /// `VERSION` or `SHA256SUMS` cannot be read or parsed, a listed file is missing or
    /// differs from its digest, or a file every node needs is not listed.
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| BundleError::Read { path, source })
        };
        let version = read(dir.join(VERSION_FILE))?.trim().to_owned();
        let sums_path = dir.join(SUMS_FILE);
        let sums = parse_sums(&read(sums_path.clone())?, &sums_path)?;
        let mut files = BTreeMap::new();
        for (name, expected) in sums {
            let local = dir.join(&name);
            let (actual, size) = file_sha256(&local)?;
            if actual != expected {
                return Err(BundleError::Digest {
                    path: local,
                    sums: sums_path,
                    expected,
                    actual,
                });
            }
            files.insert(
                name.clone(),
                BundleFile {
                    name,
                    local,
                    sha256: actual,
                    size,
                },
            );
        }
        let bundle = Self {
            dir: dir.to_owned(),
            version,
            files,
        };
        for name in NODE_BINARIES.iter().chain(CNI_PLUGINS) {
            bundle.file(name)?;
        }
        Ok(bundle)
    }

    /// The file `name` (`bin/kubelet`).
    ///
    /// # Errors
    /// It is not in the bundle.
    pub fn file(&self, name: &str) -> Result<&BundleFile, BundleError> {
        self.files.get(name).ok_or_else(|| BundleError::Missing {
            dir: self.dir.clone(),
            name: name.to_owned(),
        })
    }

    /// Refuses a bundle of another release than `version`.
    ///
    /// # Errors
    /// [`BundleError::Version`].
    pub fn check_version(&self, version: &Version) -> Result<(), BundleError> {
        if self.version == version.to_string() {
            Ok(())
        } else {
            Err(BundleError::Version {
                dir: self.dir.clone(),
                bundle: self.version.clone(),
                wanted: version.to_string(),
            })
        }
    }

    /// Where a node file of the bundle goes on a node (`None`: not a node file).
    pub fn install_path(name: &str) -> Option<String> {
        if let Some(bin) = name.strip_prefix("bin/") {
            Some(format!("/usr/bin/{bin}"))
        } else {
            name.strip_prefix("cni/")
                .map(|plugin| format!("/opt/cni/bin/{plugin}"))
        }
    }

    /// Writes a bundle of `version` into `dir` from `files` (name in the bundle → source
    /// file), copying each and recording its digest; returns it opened.
    ///
    /// # Errors
    /// A source cannot be read or `dir` cannot be written.
    pub fn write(dir: &Path, version: &str, files: &[(&str, &Path)]) -> Result<Self, BundleError> {
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| BundleError::Read { path, source }
        };
        let mut sums = String::new();
        for (name, source) in files {
            let target = dir.join(name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(write_err(parent))?;
            }
            std::fs::copy(source, &target).map_err(write_err(source))?;
            let (digest, _) = file_sha256(&target)?;
            sums.push_str(&digest);
            sums.push_str("  ");
            sums.push_str(name);
            sums.push('\n');
        }
        let version_path = dir.join(VERSION_FILE);
        std::fs::write(&version_path, format!("{version}\n")).map_err(write_err(&version_path))?;
        let sums_path = dir.join(SUMS_FILE);
        std::fs::write(&sums_path, sums).map_err(write_err(&sums_path))?;
        Self::open(dir)
    }
}

/// The kubelet's systemd unit (what the distribution packages install).
pub fn kubelet_unit() -> String {
    "# Written by homelab (node bundle): the kubelet, restarted whenever it exits.\n\
     [Unit]\n\
     Description=kubelet: The Kubernetes Node Agent\n\
     Documentation=https://kubernetes.io/docs/\n\
     Wants=network-online.target\n\
     After=network-online.target\n\
     \n\
     [Service]\n\
     ExecStart=/usr/bin/kubelet\n\
     Restart=always\n\
     StartLimitInterval=0\n\
     RestartSec=10\n\
     \n\
     [Install]\n\
     WantedBy=multi-user.target\n"
        .to_owned()
}

/// kubeadm's drop-in for the kubelet: the kubeconfigs and configuration kubeadm writes, and
/// the flags it leaves in `/var/lib/kubelet/kubeadm-flags.env`.
pub fn kubeadm_drop_in() -> String {
    "# Written by homelab (node bundle): how kubeadm runs the kubelet.\n\
     [Service]\n\
     Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"\n\
     Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\n\
     EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\n\
     EnvironmentFile=-/etc/default/kubelet\n\
     ExecStart=\n\
     ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n"
        .to_owned()
}

/// The steps that install the bundle's node files: first a guard (a node with another
/// kubeadm is refused: only `upgrade` moves versions), then each binary and CNI plugin by
/// digest, then the kubelet's unit and drop-in. A node whose files already have the
/// bundle's digests is left alone.
///
/// # Errors
/// The bundle holds another release than `version`.
pub fn bundle_steps(version: &Version, bundle: &NodeBundle) -> Result<Vec<Step>, BundleError> {
    bundle_steps_in(version, bundle, "")
}

/// [`bundle_steps`] with every path on the node under `root` (tests install into a directory
/// instead of the machine's `/usr/bin`).
///
/// # Errors
/// The bundle holds another release than `version`.
pub fn bundle_steps_in(
    version: &Version,
    bundle: &NodeBundle,
    root: &str,
) -> Result<Vec<Step>, BundleError> {
    bundle.check_version(version)?;
    let mut steps = Vec::new();
    for file in bundle.files.values() {
        let Some(path) = NodeBundle::install_path(&file.name).map(|p| format!("{root}{p}")) else {
            continue;
        };
        let check = format!(
            "[ \"$(sha256sum {p} 2>/dev/null | cut -d' ' -f1)\" = {sha} ]",
            p = shell_quote(&path),
            sha = shell_quote(&file.sha256)
        );
        let mut changes = Vec::new();
        if file.name == "bin/kubeadm" {
            changes.push(Change::Run(
                Cmd::new(format!(
                    "if v=$({kubeadm} version -o short 2>/dev/null) && [ \"$v\" != {want} ]; then \
                     echo \"kubeadm $v is installed and the bundle holds {version}: preparation never \
                     moves versions, as the version skew policy needs the control plane first and \
                     nodes drained: run homelab upgrade\" >&2; exit 1; fi",
                    want = shell_quote(&version.to_string()),
                    // The installed kubeadm: on a node, the one on the PATH (/usr/bin).
                    kubeadm = if root.is_empty() {
                        "kubeadm".to_owned()
                    } else {
                        shell_quote(&path)
                    },
                ))
                .sudo(),
            ));
        }
        changes.push(Change::UploadFile {
            local: file.local.clone(),
            path: path.clone(),
            sha256: file.sha256.clone(),
            mode: 0o755,
        });
        steps.push(Step {
            name: format!("bundle-{}", file.name.replace('/', "-")),
            description: format!(
                "install {path} from the node bundle ({} MiB, sha256 {})",
                file.size.div_ceil(1 << 20),
                &file.sha256[..12]
            ),
            check: Check::Command(Cmd::new(check).sudo()),
            changes,
        });
    }
    // Last: the mark of what is installed, written only once every file is in place.
    let mark: String = std::iter::once(format!("{}\n", bundle.version))
        .chain(bundle.files.values().filter_map(|f| {
            NodeBundle::install_path(&f.name).map(|p| format!("{}  {p}\n", f.sha256))
        }))
        .collect();
    let mut mark_step = Step::file(
        "bundle-installed",
        &format!("{root}{INSTALLED_MARK}"),
        mark,
        0o644,
        None,
    );
    mark_step.description = format!("record node bundle {} as installed", bundle.version);
    let reload = || Some(Cmd::new("systemctl daemon-reload").sudo());
    steps.push(Step::file(
        "kubelet-unit",
        &format!("{root}{KUBELET_UNIT}"),
        kubelet_unit(),
        0o644,
        reload(),
    ));
    steps.push(Step::file(
        "kubelet-kubeadm-drop-in",
        &format!("{root}{KUBEADM_DROP_IN}"),
        kubeadm_drop_in(),
        0o644,
        reload(),
    ));
    steps.push(mark_step);
    Ok(steps)
}

/// The release a node's [`INSTALLED_MARK`] names (its first line), if it holds one.
pub fn installed_release(mark: &str) -> Option<&str> {
    mark.lines()
        .next()
        .map(str::trim)
        .filter(|v| v.starts_with('v'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bundle_in(dir: &Path) -> NodeBundle {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let names: Vec<&str> = NODE_BINARIES.iter().chain(CNI_PLUGINS).copied().collect();
        let sources: Vec<(String, PathBuf)> = names
            .iter()
            .map(|n| {
                let p = src.join(n.replace('/', "_"));
                std::fs::write(&p, format!("#!/bin/sh\necho {n}\n")).unwrap();
                ((*n).to_owned(), p)
            })
            .collect();
        let refs: Vec<(&str, &Path)> = sources
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        NodeBundle::write(&dir.join("bundle"), "v1.33.5", &refs).unwrap()
    }

    #[test]
    fn a_written_bundle_opens_and_lists_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = bundle_in(dir.path());
        assert_eq!(bundle.version, "v1.33.5");
        assert_eq!(bundle.files.len(), 7);
        let kubelet = bundle.file("bin/kubelet").unwrap();
        assert_eq!(
            kubelet.sha256,
            hex::encode(Sha256::digest(b"#!/bin/sh\necho bin/kubelet\n"))
        );
        assert_eq!(
            NodeBundle::install_path("cni/portmap").as_deref(),
            Some("/opt/cni/bin/portmap")
        );
        assert_eq!(NodeBundle::install_path("images/etcd"), None);
    }

    #[test]
    fn a_changed_file_is_refused_by_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = bundle_in(dir.path());
        let kubelet = bundle.file("bin/kubelet").unwrap().local.clone();
        std::fs::write(&kubelet, "#!/bin/sh\necho something else\n").unwrap();
        let err = NodeBundle::open(&bundle.dir).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BundleError::Digest { .. }), "{text}");
        assert!(
            text.contains("bin/kubelet") && text.contains("refusing"),
            "{text}"
        );
    }

    #[test]
    fn a_bundle_without_a_node_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = bundle_in(dir.path());
        let sums = std::fs::read_to_string(bundle.dir.join(SUMS_FILE)).unwrap();
        let without: String = sums
            .lines()
            .filter(|l| !l.ends_with("cni/loopback"))
            .flat_map(|l| [l, "\n"])
            .collect();
        std::fs::write(bundle.dir.join(SUMS_FILE), without).unwrap();
        let err = NodeBundle::open(&bundle.dir).unwrap_err().to_string();
        assert!(err.contains("cni/loopback is missing"), "{err}");
    }

    #[test]
    fn another_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = bundle_in(dir.path());
        let err = bundle_steps(&"1.34.0".parse().unwrap(), &bundle)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds Kubernetes v1.33.5") && err.contains("v1.34.0"),
            "{err}"
        );
        let steps = bundle_steps(&"1.33.5".parse().unwrap(), &bundle).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"bundle-bin-kubelet"), "{names:?}");
        assert!(names.contains(&"bundle-cni-bridge"), "{names:?}");
        assert_eq!(names.last(), Some(&"bundle-installed"));
        let Check::File { contents, .. } = &steps.last().unwrap().check else {
            panic!("the mark is a file")
        };
        let mark = String::from_utf8_lossy(contents);
        assert_eq!(installed_release(&mark), Some("v1.33.5"));
        assert!(mark.contains("  /usr/bin/kubelet\n"), "{mark}");
    }

    proptest::proptest! {
        /// What `sha256sum` writes for relative names parses back to the same map, and a
        /// name with a `..` component anywhere is refused.
        #[test]
        fn sums_round_trip_and_never_leave_the_bundle(
            entries in proptest::collection::btree_map("[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,3}", "[0-9a-f]{64}", 1..12),
            bad_at in 0usize..4,
        ) {
            let entries: BTreeMap<String, String> = entries
                .into_iter()
                .filter(|(name, _)| name.split('/').all(|p| p != "." && p != ".."))
                .collect();
            let text: String = entries
                .iter()
                .flat_map(|(n, d)| [d.as_str(), "  ", n.as_str(), "\n"])
                .collect();
            let parsed = parse_sums(&text, Path::new("SHA256SUMS")).unwrap();
            proptest::prop_assert_eq!(&parsed, &entries);
            if let Some((name, digest)) = entries.iter().next() {
                let mut parts: Vec<&str> = name.split('/').collect();
                let at = bad_at.min(parts.len());
                parts.insert(at, "..");
                let bad = format!("{text}{digest}  {}\n", parts.join("/"));
                proptest::prop_assert!(parse_sums(&bad, Path::new("SHA256SUMS")).is_err());
            }
        }
    }

    #[test]
    fn sums_lines_are_checked() {
        let p = Path::new("SHA256SUMS");
        let good = format!(
            "{}  bin/kubelet\n{} *cni/bridge\n",
            "a".repeat(64),
            "B".repeat(64)
        );
        let sums = parse_sums(&good, p).unwrap();
        assert_eq!(sums["cni/bridge"], "b".repeat(64));
        for (bad, why) in [
            (
                format!("{}  ../etc/passwd", "a".repeat(64)),
                "relative path",
            ),
            (format!("{}  /usr/bin/x", "a".repeat(64)), "relative path"),
            (format!("{}  bin/kubelet", "a".repeat(63)), "64 hex"),
            (format!("{} bin/kubelet", "a".repeat(64)), "two spaces"),
            (
                format!("{h}  bin/x\n{h}  bin/x", h = "a".repeat(64)),
                "listed twice",
            ),
        ] {
            let err = parse_sums(&bad, p).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
