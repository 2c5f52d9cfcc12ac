//! A stand-in for the Kubernetes package repository: a real, signed Debian repository built by
//! the test (`dpkg-deb`, `apt-ftparchive`, a throwaway GnuPG key) holding `kubeadm`,
//! `kubelet`, `kubectl`, `kubernetes-cni` and `cri-tools` packages, served over HTTP in the
//! layout of `pkgs.k8s.io` (`<base>/v1.33/deb/`, a flat repository with `InRelease` and
//! `Release.key`). The packages are small scripts that report their version, or, for one
//! version, the real programs ([`RealPackages`]: kubeadm, kubelet, kubectl and the CNI plugins
//! built from their Go modules, with the kubelet's systemd unit and kubeadm's drop-in, where
//! the distribution's packages put them), so that a node prepared from it runs a cluster.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{FixtureError, err};

/// A signed repository being served.
#[derive(Debug)]
pub struct AptRepo {
    dir: tempfile::TempDir,
    /// Base URL, as `[packages] repository` takes it (`http://ADDR/core`).
    pub base_url: String,
    /// The fingerprint of the key that signs it.
    pub fingerprint: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Result<Vec<u8>, FixtureError> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(err(format!("run {program} (scripts/deps.sh installs it)")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(FixtureError(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn write_exec(path: &Path, text: &str) -> Result<(), FixtureError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err(format!("create {}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(err(format!("write {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(err(format!("chmod {}", path.display())))
}

/// The real programs of one version's packages.
#[derive(Debug, Clone)]
pub struct RealPackages {
    /// The version (`1.33.5`) whose packages carry them.
    pub version: String,
    /// A directory with `kubeadm`, `kubelet` and `kubectl`.
    pub bin_dir: PathBuf,
    /// A directory with the CNI plugins (`kubernetes-cni` puts them in `/opt/cni/bin`).
    pub cni_dir: PathBuf,
    /// The kubelet's systemd unit.
    pub kubelet_unit: String,
    /// kubeadm's drop-in for that unit (`10-kubeadm.conf`).
    pub kubeadm_drop_in: String,
}

/// What a packaged file holds.
enum Content {
    Text(String),
    Copy(PathBuf),
}

/// The files of the real package `name`: (path, contents, executable).
fn real_files(
    name: &str,
    real: &RealPackages,
) -> Result<Vec<(String, Content, bool)>, FixtureError> {
    let bin = |b: &str| {
        (
            format!("usr/bin/{b}"),
            Content::Copy(real.bin_dir.join(b)),
            true,
        )
    };
    Ok(match name {
        "kubeadm" => vec![
            bin("kubeadm"),
            (
                "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf".into(),
                Content::Text(real.kubeadm_drop_in.clone()),
                false,
            ),
        ],
        "kubelet" => vec![
            bin("kubelet"),
            (
                "usr/lib/systemd/system/kubelet.service".into(),
                Content::Text(real.kubelet_unit.clone()),
                false,
            ),
        ],
        "kubectl" => vec![bin("kubectl")],
        "kubernetes-cni" => {
            let entries = std::fs::read_dir(&real.cni_dir)
                .map_err(err(format!("read {}", real.cni_dir.display())))?;
            let mut plugins = Vec::new();
            for entry in entries.flatten() {
                plugins.push((
                    format!("opt/cni/bin/{}", entry.file_name().to_string_lossy()),
                    Content::Copy(entry.path()),
                    true,
                ));
            }
            plugins
        }
        _ => stand_in_files(name, &real.version),
    })
}

/// The files of the stand-in package `name` at `version`: (path, contents, executable).
fn stand_in_files(name: &str, version: &str) -> Vec<(String, Content, bool)> {
    package_files(name, version)
        .into_iter()
        .map(|(path, text, executable)| (path.to_owned(), Content::Text(text), executable))
        .collect()
}

/// The files of the stand-in package `name` at `version`: (path, contents, executable).
fn package_files(name: &str, version: &str) -> Vec<(&'static str, String, bool)> {
    match name {
        "kubernetes-cni" => vec![],
        "kubeadm" => vec![(
            "usr/bin/kubeadm",
            format!(
                "#!/bin/sh\ncase \"$1 $2 $3\" in\n  'version -o short') echo v{version} ;;\n  \
                 'config images list') echo registry.k8s.io/kube-apiserver:v{version}; \
                 echo registry.k8s.io/coredns/coredns:v1.12.0; echo registry.k8s.io/pause:3.10; \
                 echo registry.k8s.io/etcd:3.5.21-0 ;;\n  *) echo \"stand-in kubeadm v{version}: $*\" ;;\nesac\n"
            ),
            true,
        )],
        "kubelet" => vec![
            (
                "usr/bin/kubelet",
                format!(
                    "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'Kubernetes v{version}'; exit 0; }}\nexec sleep infinity\n"
                ),
                true,
            ),
            (
                "usr/lib/systemd/system/kubelet.service",
                "[Unit]\nDescription=stand-in kubelet of homelab's tests\n\n[Service]\nExecStart=/usr/bin/kubelet\n\n[Install]\nWantedBy=multi-user.target\n".into(),
                false,
            ),
        ],
        "kubectl" => vec![(
            "usr/bin/kubectl",
            format!("#!/bin/sh\necho 'stand-in kubectl v{version}'\n"),
            true,
        )],
        _ => vec![(
            "usr/bin/crictl",
            format!("#!/bin/sh\necho 'stand-in crictl v{version}'\n"),
            true,
        )],
    }
}

fn build_package(
    work: &Path,
    out: &Path,
    name: &str,
    version: &str,
    real: Option<&RealPackages>,
) -> Result<(), FixtureError> {
    let root = work.join(format!("{name}-{version}"));
    let files = match real {
        Some(real) if real.version == version => real_files(name, real)?,
        _ => stand_in_files(name, version),
    };
    for (path, content, executable) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&root))
            .map_err(err("create package dir"))?;
        match content {
            Content::Text(text) if executable => write_exec(&file, &text)?,
            Content::Text(text) => {
                std::fs::write(&file, text).map_err(err(format!("write {}", file.display())))?;
            }
            Content::Copy(from) => {
                std::fs::copy(&from, &file).map_err(err(format!("copy {}", from.display())))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    .map_err(err(format!("chmod {}", file.display())))?;
            }
        }
    }
    // As pkgs.k8s.io's: kubeadm needs crictl, the kubelet the CNI plugins.
    let depends = match name {
        "kubeadm" => "Depends: cri-tools\n",
        "kubelet" => "Depends: kubernetes-cni\n",
        _ => "",
    };
    let control = root.join("DEBIAN/control");
    std::fs::create_dir_all(root.join("DEBIAN")).map_err(err("create DEBIAN"))?;
    std::fs::write(
        &control,
        format!(
            "Package: {name}\nVersion: {version}-1.1\nArchitecture: amd64\n{depends}\
             Maintainer: homelab tests <tests@homelab.invalid>\n\
             Description: stand-in {name} for homelab's tests\n"
        ),
    )
    .map_err(err("write control"))?;
    let deb = out.join(format!("{name}_{version}-1.1_amd64.deb"));
    // Uncompressed: the real programs are large, and unpacking costs the emulated nodes more
    // than the bytes cost the virtual network.
    run(
        work,
        "dpkg-deb",
        &[
            "-Znone",
            "--build",
            "--root-owner-group",
            root.to_str().unwrap_or_default(),
            deb.to_str().unwrap_or_default(),
        ],
    )?;
    Ok(())
}

/// The channel's `Packages` and `Release`.
fn write_indexes(channel: &Path) -> Result<(), FixtureError> {
    // SHA256 only: apt checks every hash an index lists while it downloads, and on the
    // emulated nodes each pass over the real programs' 200 MB costs seconds of CPU.
    let packages = run(
        channel,
        "apt-ftparchive",
        &[
            "-o",
            "APT::FTPArchive::MD5=false",
            "-o",
            "APT::FTPArchive::SHA1=false",
            "-o",
            "APT::FTPArchive::SHA512=false",
            "packages",
            ".",
        ],
    )?;
    std::fs::write(channel.join("Packages"), packages).map_err(err("write Packages"))?;
    let release = run(channel, "apt-ftparchive", &["release", "."])?;
    std::fs::write(channel.join("Release"), release).map_err(err("write Release"))?;
    Ok(())
}

impl AptRepo {
    /// Builds the channel `v<major>.<minor>` holding every package at each of `versions`
    /// (`1.33.5`, ...; one minor release), signs it with a new key and serves it on `bind`
    /// (a loopback address, or the gateway of a libvirt network the test made).
    ///
    /// # Errors
    /// A tool is missing or fails, or the address cannot be bound.
    pub async fn start(bind: std::net::IpAddr, versions: &[&str]) -> Result<Self, FixtureError> {
        Self::start_with(bind, versions, None).await
    }

    /// As [`AptRepo::start`], the packages of `real`'s version carrying the real programs.
    ///
    /// # Errors
    /// A tool is missing or fails, a program cannot be read, or the address cannot be bound.
    pub async fn start_with(
        bind: std::net::IpAddr,
        versions: &[&str],
        real: Option<&RealPackages>,
    ) -> Result<Self, FixtureError> {
        let dir = tempfile::tempdir().map_err(err("create temp dir"))?;
        let d = dir.path();
        let minor = versions
            .first()
            .and_then(|v| v.rsplit_once('.'))
            .map(|(mm, _)| mm.to_owned())
            .ok_or_else(|| FixtureError("no versions".into()))?;
        let channel: PathBuf = d.join(format!("www/core/v{minor}/deb"));
        std::fs::create_dir_all(&channel).map_err(err("create the channel"))?;
        let work = d.join("work");
        std::fs::create_dir_all(&work).map_err(err("create work dir"))?;
        for version in versions {
            for name in [
                "kubeadm",
                "kubelet",
                "kubectl",
                "kubernetes-cni",
                "cri-tools",
            ] {
                build_package(&work, &channel, name, version, real)?;
            }
        }
        write_indexes(&channel)?;
        // The signing key, in a GnuPG home of its own.
        let home = d.join("gnupg");
        std::fs::create_dir(&home).map_err(err("create gnupg home"))?;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
            .map_err(err("chmod gnupg home"))?;
        let home = home.to_str().unwrap_or_default().to_owned();
        let gpg = |args: &[&str]| {
            let mut all = vec![
                "--homedir",
                home.as_str(),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ];
            all.extend_from_slice(args);
            run(&channel, "gpg", &all)
        };
        gpg(&[
            "--quick-gen-key",
            "homelab test repository <repo@homelab.invalid>",
            "rsa2048",
            "sign",
            "1d",
        ])?;
        gpg(&["--clearsign", "-o", "InRelease", "Release"])?;
        gpg(&[
            "--armor",
            "-o",
            "Release.key",
            "--export",
            "repo@homelab.invalid",
        ])?;
        let colons =
            String::from_utf8_lossy(&gpg(&["--with-colons", "--fingerprint"])?).into_owned();
        let fingerprint = colons
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| f.len() == 40))
            .ok_or_else(|| FixtureError(format!("no fingerprint in {colons}")))?
            .to_owned();

        let root = d.join("www");
        let app = axum::Router::new().route(
            "/{*path}",
            axum::routing::get(
                move |axum::extract::Path(path): axum::extract::Path<String>| {
                    let root = root.clone();
                    async move {
                        if path.split('/').any(|part| part == "..") {
                            return Err(axum::http::StatusCode::NOT_FOUND);
                        }
                        std::fs::read(root.join(&path))
                            .map_err(|_| axum::http::StatusCode::NOT_FOUND)
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind((bind, 0))
            .await
            .map_err(err(format!("bind {bind}")))?;
        let addr = listener.local_addr().map_err(err("local address"))?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            dir,
            base_url: format!("http://{addr}/core"),
            fingerprint,
            addr,
        })
    }

    /// The directory the repository is served from.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}
