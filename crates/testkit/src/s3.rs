//! A real S3-compatible server on loopback: Versity's S3 gateway (`versitygw`, built from
//! its Go module by `scripts/kube-tools.sh versitygw`) with its POSIX backend in a temporary
//! directory, one root access key made for the run; stopped when dropped. Each bucket is a
//! directory of [`S3Server::root`] and each object a file under it, so a test can check
//! what a client stored without trusting that client.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::control_plane::{await_start, bound_to_test, kube_bin_dir, tail};
use crate::{FixtureError, err, free_port, listens};

/// A running S3 gateway.
pub struct S3Server {
    child: Child,
    dir: tempfile::TempDir,
    /// Its URL (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    /// The root account's access key id.
    pub access_key_id: String,
    /// The root account's secret access key.
    pub secret_access_key: String,
}

impl S3Server {
    /// Starts the gateway and waits until it listens.
    ///
    /// # Errors
    /// `versitygw` is not built, or it does not listen within 30 s.
    pub fn start() -> Result<Self, FixtureError> {
        let binary = kube_bin_dir()?.join("versitygw");
        if !binary.is_file() {
            return Err(FixtureError(format!(
                "{} is not built: run scripts/kube-tools.sh versitygw (make test does)",
                binary.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("homelab-s3-")
            .tempdir()
            .map_err(err("create temp dir"))?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root).map_err(err("create the gateway's root"))?;
        let port = free_port()?;
        let access_key_id = format!("HLTEST{port}");
        let secret_access_key = format!("hl-s3-secret-{port}-{}", std::process::id());
        let log_path = dir.path().join("versitygw.log");
        let log = std::fs::File::create(&log_path).map_err(err("create the log"))?;
        // The keys travel in the environment, not on the command line.
        let child = bound_to_test(&binary)
            .env("ROOT_ACCESS_KEY_ID", &access_key_id)
            .env("ROOT_SECRET_ACCESS_KEY", &secret_access_key)
            .arg("--port")
            .arg(format!("127.0.0.1:{port}"))
            .arg("posix")
            .arg(&root)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(err("open the log"))?)
            .stderr(log)
            .spawn()
            .map_err(err("start versitygw"))?;
        let mut server = Self {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key_id,
            secret_access_key,
        };
        let pid = server.child.id();
        await_start(
            &mut server.child,
            "versitygw",
            &log_path,
            Duration::from_secs(30),
            || listens(pid, port),
        )?;
        Ok(server)
    }

    /// The POSIX backend's top directory: one directory per bucket, one file per object.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Makes an empty bucket (a directory of the backend: the root account owns every
    /// bucket).
    ///
    /// # Errors
    /// The directory cannot be made.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), FixtureError> {
        std::fs::create_dir(self.root().join(bucket))
            .map_err(err(format!("create bucket {bucket}")))
    }

    /// The files under `bucket/prefix` as the gateway stored them, by name (none when the
    /// prefix holds nothing: the gateway removes emptied directories).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, FixtureError> {
        let dir: &Path = &self.root().join(bucket).join(prefix);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(err(format!("read {}", dir.display())))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("versitygw.log"))
    }
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
