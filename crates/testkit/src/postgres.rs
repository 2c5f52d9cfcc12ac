//! A real PostgreSQL for tests: Debian's server (`postgresql-15`) with a cluster made by
//! `initdb` in a temporary directory, listening on a free loopback port with password
//! authentication; stopped when dropped. Run as root (as CI runs), the server runs as the
//! `postgres` account the package creates (PostgreSQL refuses to run as root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::control_plane::{await_start, tail};
use crate::{FixtureError, err, free_port};

/// A running PostgreSQL.
pub struct Postgres {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The superuser's name.
    pub user: String,
    /// The superuser's password.
    pub password: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// The newest PostgreSQL server Debian installed (`/usr/lib/postgresql/<major>/bin`).
fn server_bin() -> Result<PathBuf, FixtureError> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            FixtureError("PostgreSQL is not installed (apt-get install postgresql)".into())
        })?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| FixtureError("no PostgreSQL server under /usr/lib/postgresql".into()))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

impl Postgres {
    /// Makes a cluster and starts the server; waits until it accepts connections.
    ///
    /// # Errors
    /// PostgreSQL is not installed, `initdb` fails, or the server does not accept
    /// connections within 30 s.
    pub fn start() -> Result<Self, FixtureError> {
        let bin = server_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("homelab-postgres-")
            .tempdir()
            .map_err(err("create temp dir"))?;
        let d = dir.path();
        let root = is_root();
        let password = format!("hl-pg-secret-{}", free_port()?);
        let pwfile = d.join("pwfile");
        std::fs::write(&pwfile, &password).map_err(err("write the password file"))?;
        if root {
            // The server's account must reach its files.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(err("open the temp dir"))?;
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(d)
                .output()
                .map_err(err("chown the temp dir"))?;
            if !out.status.success() {
                return Err(FixtureError(format!(
                    "chown postgres {}: {}",
                    d.display(),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        // setpriv execs the program itself (no process between: killing the child kills
        // the server), and the kernel kills it when the test's thread ends.
        let as_server = |program: &Path| {
            let mut c = Command::new("setpriv");
            if root {
                c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]);
            }
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        };
        let data = d.join("data");
        let out = as_server(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "homelab", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(err("run initdb"))?;
        if !out.status.success() {
            return Err(FixtureError(format!(
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let log_path = d.join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(err("create the log"))?;
        let child = as_server(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", d.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(err("start postgres"))?;
        let mut pg = Self {
            child,
            dir,
            bin,
            port,
            user: "homelab".into(),
            password,
        };
        let pg_isready = pg.bin.join("pg_isready");
        await_start(
            &mut pg.child,
            "postgres",
            &log_path,
            Duration::from_secs(30),
            || {
                Command::new(&pg_isready)
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )?;
        Ok(pg)
    }

    /// The libpq environment that reaches it as the superuser, on `database`.
    pub fn env(&self, database: &str) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), self.user.clone()),
            ("PGPASSWORD".into(), self.password.clone()),
            ("PGDATABASE".into(), database.into()),
        ]
    }

    /// Runs `psql` with `sql` on `database` (no `.psqlrc`, stop at the first error,
    /// unaligned tuples only).
    ///
    /// # Errors
    /// psql cannot be run.
    pub fn psql(&self, database: &str, sql: &str) -> Result<Output, FixtureError> {
        Command::new(self.bin.join("psql"))
            .envs(self.env(database))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(err("run psql"))
    }

    /// The directory of the server's programs (`pg_dump`, `pg_restore`, `psql`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("postgres.log"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
