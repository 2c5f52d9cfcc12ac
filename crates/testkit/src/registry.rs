//! A real OCI registry for tests: Debian's `docker-registry` (distribution v2) on
//! 127.0.0.1 at a free port, with its storage in a temporary directory, deletes enabled, and
//! optionally htpasswd (bcrypt) auth and TLS from a CA made for the test. Never Debian's
//! default configuration, which listens on every interface.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{FixtureError, err};

/// The registry binary, if installed.
pub fn registry_path() -> Option<PathBuf> {
    ["/usr/bin/docker-registry"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// How to start the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Require this user and password (htpasswd, bcrypt).
    pub user: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a CA made for the test.
    pub tls: bool,
    /// Bearer-token auth: the token server's realm and the certificate (PEM) its tokens are
    /// signed under (see [`crate::token_server::TokenServer`]).
    pub token: Option<(String, PathBuf)>,
    /// Listen on this address instead of 127.0.0.1 (a libvirt network's gateway, for VMs).
    pub address: Option<std::net::Ipv4Addr>,
}

/// A running registry; stopped and removed when dropped.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA certificate (PEM file) to trust, with TLS.
    pub ca_file: Option<PathBuf>,
}

fn free_port(address: std::net::Ipv4Addr) -> Result<u16, FixtureError> {
    let listener = TcpListener::bind((address, 0)).map_err(err("bind a free port"))?;
    Ok(listener.local_addr().map_err(err("local address"))?.port())
}

/// Makes `ca.crt` and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) -> Result<(), FixtureError> {
    crate::test_ca(dir, "homelab test CA")?;
    crate::signed_cert(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
}

impl Registry {
    /// Starts an open registry over plain HTTP.
    ///
    /// # Errors
    /// `docker-registry` is missing or does not come up.
    pub fn start() -> Result<Self, FixtureError> {
        Self::start_with(&RegistryConfig::default())
    }

    /// Starts a registry as `config` says.
    ///
    /// # Errors
    /// `docker-registry` (or openssl, for TLS) is missing, or the registry does not come up.
    pub fn start_with(config: &RegistryConfig) -> Result<Self, FixtureError> {
        // The free port picked may be taken by another fixture before the registry binds
        // it; the registry then exits, and a new port is tried.
        let mut last = None;
        for _ in 0..5 {
            match Self::start_once(config) {
                Err(e) if e.0.contains("exited with") => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| FixtureError("docker-registry did not start".into())))
    }

    fn start_once(config: &RegistryConfig) -> Result<Self, FixtureError> {
        let binary = registry_path().ok_or_else(|| {
            FixtureError("docker-registry not installed (apt-get install docker-registry)".into())
        })?;
        let dir = tempfile::tempdir().map_err(err("create temp dir"))?;
        let d = dir.path();
        let address = config.address.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let port = free_port(address)?;
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}:{port}\n",
            d.join("data").display()
        );
        let mut ca_file = None;
        if config.tls {
            make_certificates(d)?;
            let _ = write!(
                yaml,
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
            ca_file = Some(d.join("ca.crt"));
        }
        if let Some((user, password)) = &config.user {
            let hash =
                bcrypt::hash(password, 5).map_err(|e| FixtureError(format!("bcrypt: {e}")))?;
            std::fs::write(d.join("htpasswd"), format!("{user}:{hash}\n"))
                .map_err(err("write htpasswd"))?;
            let _ = write!(
                yaml,
                "auth:\n  htpasswd:\n    realm: homelab-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
        }
        if let Some((realm, cert)) = &config.token {
            let _ = write!(
                yaml,
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                crate::token_server::SERVICE,
                crate::token_server::ISSUER,
                cert.display()
            );
        }
        let config_path = d.join("config.yml");
        std::fs::write(&config_path, yaml).map_err(err("write config.yml"))?;
        let log = std::fs::File::create(d.join("registry.log")).map_err(err("create log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err("log"))?)
            .stderr(log)
            .spawn()
            .map_err(err("start docker-registry"))?;
        let addr: SocketAddr = (address, port).into();
        let mut registry = Self {
            child,
            dir,
            addr,
            ca_file,
        };
        let started = Instant::now();
        while !crate::listens(registry.child.id(), port)
            || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
        {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(FixtureError(format!(
                    "docker-registry exited with {status}: {}",
                    registry.log()
                )));
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(FixtureError(format!(
                    "docker-registry did not listen on {addr} within 20 s: {}",
                    registry.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// `address:port` (`127.0.0.1:port` unless another address was asked for).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The directory the registry stores blobs in.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
