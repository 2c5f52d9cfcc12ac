//! A stand-in for the Kubernetes package repository: a real, signed Debian repository built by
//! the test (`dpkg-deb`, `apt-ftparchive`, a throwaway GnuPG key) holding small `kubeadm`,
//! `kubelet`, `kubectl` and `cri-tools` packages that report their version, served over HTTP
//! in the layout of `pkgs.k8s.io` (`<base>/v1.33/deb/`, a flat repository with `InRelease`
//! and `Release.key`).

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

/// The files of the stand-in package `name` at `version`: (path, contents, executable).
fn package_files(name: &str, version: &str) -> Vec<(&'static str, String, bool)> {
    match name {
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
                "lib/systemd/system/kubelet.service",
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

fn build_package(work: &Path, out: &Path, name: &str, version: &str) -> Result<(), FixtureError> {
    let root = work.join(format!("{name}-{version}"));
    for (path, text, executable) in package_files(name, version) {
        let file = root.join(path);
        if executable {
            write_exec(&file, &text)?;
        } else {
            std::fs::create_dir_all(file.parent().unwrap_or(&root))
                .map_err(err("create package dir"))?;
            std::fs::write(&file, text).map_err(err(format!("write {}", file.display())))?;
        }
    }
    let depends = if name == "kubeadm" {
        "Depends: cri-tools\n"
    } else {
        ""
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
    run(
        work,
        "dpkg-deb",
        &[
            "--build",
            "--root-owner-group",
            root.to_str().unwrap_or_default(),
            deb.to_str().unwrap_or_default(),
        ],
    )?;
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
            for name in ["kubeadm", "kubelet", "kubectl", "cri-tools"] {
                build_package(&work, &channel, name, version)?;
            }
        }
        let packages = run(&channel, "apt-ftparchive", &["packages", "."])?;
        std::fs::write(channel.join("Packages"), packages).map_err(err("write Packages"))?;
        let release = run(&channel, "apt-ftparchive", &["release", "."])?;
        std::fs::write(channel.join("Release"), release).map_err(err("write Release"))?;
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
