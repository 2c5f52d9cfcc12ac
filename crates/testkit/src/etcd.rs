//! A real etcd as a kubeadm control plane runs it: Debian's `etcd` on a free loopback port,
//! clients authenticated by certificates from a CA made for the test (`--client-cert-auth`),
//! its data in a temporary directory; stopped when dropped. [`Etcd::etcdctl`] runs Debian's
//! `etcdctl` against it with a client certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use crate::free_port;
use crate::{FixtureError, err};

/// A running etcd.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
    /// Its client URL (`https://127.0.0.1:<port>`).
    pub endpoint: String,
    /// The CA its server and client certificates come from.
    pub ca: PathBuf,
    /// A client certificate it accepts.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &Path) -> Result<(), FixtureError> {
    crate::test_ca(dir, "etcd-ca")?;
    crate::signed_cert(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )?;
    crate::signed_cert(
        dir,
        "client",
        "/CN=homelab-backup",
        "extendedKeyUsage=clientAuth\n",
    )
}

impl Etcd {
    /// Starts etcd with TLS and client-certificate authentication, and waits until it
    /// answers `etcdctl endpoint health`.
    ///
    /// # Errors
    /// etcd, etcdctl or openssl is missing, or etcd does not come up in 30 s.
    pub fn start() -> Result<Self, FixtureError> {
        Self::start_from(None)
    }

    /// Restores `snapshot` with `etcdctl snapshot restore` (which checks its integrity
    /// trailer) into a new data directory, and starts an etcd from it.
    ///
    /// # Errors
    /// The restore fails (its output is in the message), or etcd does not come up.
    pub fn restore(snapshot: &Path) -> Result<Self, FixtureError> {
        Self::start_from(Some(snapshot))
    }

    /// Starts an etcd on `data_dir`, restored elsewhere for member `name` with the peer URL
    /// `http://127.0.0.1:<peer_port>` (what a restore wrote into it must match).
    ///
    /// # Errors
    /// etcd does not come up.
    pub fn start_on(data_dir: &Path, name: &str, peer_port: u16) -> Result<Self, FixtureError> {
        Self::launch(
            None,
            Some((data_dir.to_owned(), name.to_owned(), peer_port)),
        )
    }

    fn start_from(snapshot: Option<&Path>) -> Result<Self, FixtureError> {
        Self::launch(snapshot, None)
    }

    fn launch(
        snapshot: Option<&Path>,
        data: Option<(PathBuf, String, u16)>,
    ) -> Result<Self, FixtureError> {
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                FixtureError("etcd not installed (apt-get install etcd-server)".into())
            })?;
        let dir = tempfile::Builder::new()
            .prefix("homelab-etcd-")
            .tempdir()
            .map_err(err("create temp dir"))?;
        let d = dir.path();
        certificates(d)?;
        let client = free_port()?;
        let (data_dir, name, peer) = match data {
            Some((dir, name, peer)) => (dir, name, peer),
            None => (d.join("data"), "backup-test".to_owned(), free_port()?),
        };
        let endpoint = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let cluster = format!("{name}={peer_url}");
        if let Some(snapshot) = snapshot {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore"])
                .arg(snapshot)
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--name={name}"))
                .arg(format!("--initial-cluster={cluster}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .output()
                .map_err(err("run etcdctl snapshot restore"))?;
            if !out.status.success() {
                return Err(FixtureError(format!(
                    "etcdctl snapshot restore: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        let log = std::fs::File::create(d.join("etcd.log")).map_err(err("create the log"))?;
        let child = Command::new(binary)
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={cluster}"))
            .arg("--client-cert-auth")
            .arg(format!("--trusted-ca-file={}", d.join("ca.crt").display()))
            .arg(format!("--cert-file={}", d.join("server.crt").display()))
            .arg(format!("--key-file={}", d.join("server.key").display()))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(err("start etcd"))?;
        let mut etcd = Self {
            child,
            endpoint,
            ca: d.join("ca.crt"),
            cert: d.join("client.crt"),
            key: d.join("client.key"),
            data_dir,
            dir,
        };
        let started = Instant::now();
        loop {
            if etcd
                .etcdctl(&["endpoint", "health"])
                .is_ok_and(|o| o.status.success())
            {
                return Ok(etcd);
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(FixtureError(format!(
                    "etcd exited with {status}: {}",
                    etcd.log()
                )));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(FixtureError(format!(
                    "etcd did not answer within 30 s: {}",
                    etcd.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `etcdctl` (API v3) against it with the client certificate.
    ///
    /// # Errors
    /// etcdctl cannot be run.
    pub fn etcdctl(&self, args: &[&str]) -> Result<Output, FixtureError> {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg(format!("--cacert={}", self.ca.display()))
            .arg(format!("--cert={}", self.cert.display()))
            .arg(format!("--key={}", self.key.display()))
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .map_err(err("run etcdctl (apt-get install etcd-client)"))
    }

    /// Its directory (certificates, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
