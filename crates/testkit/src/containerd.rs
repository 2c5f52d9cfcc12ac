//! A real containerd for tests: Debian's `containerd` with its root, state and socket in a
//! temporary directory (never the machine's `/run/containerd`), the CRI plugin off (it
//! wants CNI and a kubelet), stopped when dropped. `ctr --address <socket>` talks to it; a
//! pull through it exercises what a node does with `hosts.toml`, a CA and a login.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{FixtureError, err};

/// The daemon, if installed.
pub fn containerd_path() -> Option<PathBuf> {
    ["/usr/bin/containerd", "/usr/local/bin/containerd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A running containerd; killed and its directory removed when dropped.
#[derive(Debug)]
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    /// Its gRPC socket (`ctr --address`).
    pub socket: PathBuf,
}

impl Containerd {
    /// Starts one and waits until `ctr version` answers through its socket.
    ///
    /// # Errors
    /// containerd is not installed, this is not root, or it does not come up in 20 s.
    pub fn start() -> Result<Self, FixtureError> {
        let binary = containerd_path().ok_or_else(|| {
            FixtureError("containerd not installed (apt-get install containerd)".into())
        })?;
        let dir = tempfile::tempdir().map_err(err("create temp dir"))?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n\
             [ttrpc]\n  address = \"{ttrpc}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            ttrpc = d.join("ttrpc.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).map_err(err("write config.toml"))?;
        let log = std::fs::File::create(d.join("containerd.log")).map_err(err("create log"))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err("log"))?)
            .stderr(log)
            .spawn()
            .map_err(err("start containerd"))?;
        let mut daemon = Self { child, dir, socket };
        let started = Instant::now();
        loop {
            let answered = Command::new("ctr")
                .arg("--address")
                .arg(&daemon.socket)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(FixtureError(format!(
                    "containerd exited with {status}: {}",
                    daemon.log()
                )));
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(FixtureError(format!(
                    "containerd did not answer within 20 s: {}",
                    daemon.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its directory (root, state, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The image references held in containerd namespace `namespace`.
    ///
    /// # Errors
    /// `ctr` fails.
    pub fn images(&self, namespace: &str) -> Result<Vec<String>, FixtureError> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", namespace, "images", "ls", "-q"])
            .output()
            .map_err(err("run ctr images ls"))?;
        if !out.status.success() {
            return Err(FixtureError(format!(
                "ctr images ls: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may still be mounted under root/ (overlayfs): unmount before the
        // directory goes.
        let root = self.dir.path().join("root");
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for line in mounts.lines() {
                if let Some(target) = line.split_whitespace().nth(1)
                    && Path::new(target).starts_with(&root)
                {
                    let _ = Command::new("umount").arg(target).status();
                }
            }
        }
    }
}
