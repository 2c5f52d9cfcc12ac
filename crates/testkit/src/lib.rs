//! Real peers for tests: [`Sshd`] starts OpenSSH's `sshd` on 127.0.0.1 with throwaway host
//! and client keys, and stops it when dropped. [`control_plane::ControlPlane`] runs a real
//! etcd and `kube-apiserver` on loopback; [`kube_api::ApiServer`] is a stateful fake of
//! the Kubernetes API server for fast unit tests of `kube` code. [`registry::Registry`] runs
//! Debian's `docker-registry` on loopback; [`harbor_fake::HarborFake`] is a contract fake of
//! Harbor's REST API. [`s3::S3Server`] runs a real S3-compatible server (Versity's gateway)
//! on loopback; [`postgres::Postgres`] Debian's PostgreSQL.
//! [`upstream`] fetches upstream release files (Argo CD's install manifest) to test against.

pub mod apt_repo;
pub mod containerd;
pub mod control_plane;
pub mod esc_fake;
pub mod etcd;
pub mod harbor_fake;
pub mod kube_api;
pub mod postgres;
pub mod registry;
pub mod s3;
pub mod token_server;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

/// Why a fixture could not start.
#[derive(Debug)]
pub struct FixtureError(pub String);

impl std::fmt::Display for FixtureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FixtureError {}

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FixtureError {
    let what = what.into();
    move |e| FixtureError(format!("{what}: {e}"))
}

/// Whether process `pid` holds the listening TCP socket of `port` (IPv4). A fixture that
/// picked a free port may lose it to another fixture before it binds; connecting alone would
/// then reach the other one.
pub(crate) fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, hex_port) = fields.get(1)?.split_once(':')?;
            let listening = *fields.get(3)? == "0A";
            let inode = fields.get(9)?;
            (listening && u16::from_str_radix(hex_port, 16).ok()? == port)
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        })
    })
}

/// Serves every request with `handler` on a free loopback port (the contract fakes);
/// returns `http://127.0.0.1:<port>`.
///
/// # Panics
/// No loopback port can be bound (a test fixture).
#[allow(
    clippy::unwrap_used,
    reason = "a test fixture: no loopback port is a test bug"
)]
pub(crate) async fn serve_loopback<F, Fut>(handler: F) -> String
where
    F: Fn(axum::http::Request<axum::body::Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::http::Response<axum::body::Body>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(handler);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Decodes `%XX` escapes (and `+` as a space, as in query strings).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A free TCP port on 127.0.0.1 (free when asked: bind it soon).
///
/// # Errors
/// None can be bound.
pub fn free_port() -> Result<u16, FixtureError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(err("find a free port"))
}

/// openssl's arguments for a new P-256 key without a passphrase.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA for a test in `dir`: `ca.key` and `ca.crt`, with common name `cn`, two days.
///
/// # Errors
/// openssl is missing or fails.
pub fn test_ca(dir: &Path, cn: &str) -> Result<(), FixtureError> {
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-x509"];
    args.extend(EC_KEY);
    args.extend([
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", &subject,
    ]);
    openssl(dir, &args)
}

/// `<name>.key` and `<name>.crt` in `dir`, for `subject` (`/CN=...`), signed by the CA of
/// [`test_ca`], with the X.509 extensions `extensions` (lines of an openssl extfile).
///
/// # Errors
/// openssl is missing or fails.
pub fn signed_cert(
    dir: &Path,
    name: &str,
    subject: &str,
    extensions: &str,
) -> Result<(), FixtureError> {
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    let mut req = vec!["req"];
    req.extend(EC_KEY);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &req)?;
    std::fs::write(dir.join(&ext), extensions).map_err(err(format!("write {ext}")))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    )
}

/// Runs `openssl` with `args` in `dir`.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Result<(), FixtureError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(err("run openssl (apt-get install openssl)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FixtureError(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// The path of OpenSSH's server, if installed.
pub fn sshd_path() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A throwaway ed25519 key pair written to `dir`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Private key file (OpenSSH format, mode 0600).
    pub private_path: PathBuf,
    /// Public key line (`ssh-ed25519 AAAA... comment`).
    pub public: String,
}

impl KeyPair {
    /// Generates a key pair and writes the private key to `dir/name`.
    ///
    /// # Errors
    /// The key cannot be written.
    pub fn generate(dir: &Path, name: &str) -> Result<Self, FixtureError> {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(|e| FixtureError(format!("generate key: {e}")))?;
        let private = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| FixtureError(format!("encode key: {e}")))?;
        let private_path = dir.join(name);
        std::fs::write(&private_path, private.as_bytes()).map_err(err("write private key"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&private_path, std::fs::Permissions::from_mode(0o600))
                .map_err(err("chmod private key"))?;
        }
        let mut public = key.public_key().clone();
        public.set_comment(name);
        let public = public
            .to_openssh()
            .map_err(|e| FixtureError(format!("encode public key: {e}")))?;
        Ok(Self {
            private_path,
            public,
        })
    }
}

/// An OpenSSH server on loopback, for as long as the value lives.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its host key (what a client must accept).
    pub host_key: KeyPair,
    /// A client key that may log in.
    pub client_key: KeyPair,
    /// The user that may log in (the user running the tests).
    pub user: String,
}

impl Sshd {
    /// Starts `sshd -D -e` on a free 127.0.0.1 port and waits until it sends its banner.
    ///
    /// # Errors
    /// `sshd` is not installed or does not come up within 10 s.
    pub fn start() -> Result<Self, FixtureError> {
        // The free port picked may be taken by another fixture before sshd binds it; sshd
        // then exits, and a new port is tried.
        let mut last = None;
        for _ in 0..5 {
            match Self::start_once() {
                Err(e) if e.0.contains("exited at start") => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| FixtureError("sshd did not start".into())))
    }

    fn start_once() -> Result<Self, FixtureError> {
        let sshd = sshd_path().ok_or_else(|| {
            FixtureError("OpenSSH server not installed (apt-get install openssh-server)".into())
        })?;
        let dir = tempfile::tempdir().map_err(err("create temp dir"))?;
        let host_key = KeyPair::generate(dir.path(), "host_ed25519")?;
        let client_key = KeyPair::generate(dir.path(), "client_ed25519")?;
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{}\n", client_key.public),
        )
        .map_err(err("write authorized_keys"))?;
        let user = current_user();
        // sshd refuses to start without its privilege separation directory.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(err("find a free port"))?
            .port();
        // Every command a client asks for is recorded (NUL-separated, as the server received
        // it) and then run by the user's login shell, as sshd would run it without this.
        let recorder = dir.path().join("record-command");
        std::fs::write(
            &recorder,
            format!(
                "#!/bin/sh\nprintf '%s\\0' \"$SSH_ORIGINAL_COMMAND\" >> '{log}'\n\
                 [ -n \"$SSH_ORIGINAL_COMMAND\" ] || exec \"$SHELL\" -l\n\
                 exec \"$SHELL\" -c \"$SSH_ORIGINAL_COMMAND\"\n",
                log = dir.path().join("commands.log").display()
            ),
        )
        .map_err(err("write the command recorder"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755))
                .map_err(err("chmod the command recorder"))?;
        }
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nPidFile {dir}/sshd.pid\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n\
                 ForceCommand {recorder}\n",
                host = host_key.private_path.display(),
                dir = dir.path().display(),
                recorder = recorder.display(),
            ),
        )
        .map_err(err("write sshd_config"))?;
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(err(format!("start {}", sshd.display())))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = Self {
            child,
            dir,
            addr,
            host_key,
            client_key,
            user,
        };
        server.wait_for_banner()?;
        Ok(server)
    }

    fn wait_for_banner(&mut self) -> Result<(), FixtureError> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(FixtureError(format!("sshd exited at start: {status}")));
            }
            if !listens(self.child.id(), self.addr.port()) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                let mut line = String::new();
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("SSH-") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(FixtureError("sshd did not answer within 10s".into()))
    }

    /// The listening server's process id (its children serve the connections).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every command line clients have asked this server to run, in order, exactly as the
    /// server received them (what `ps` on the node would have shown).
    pub fn commands(&self) -> Vec<String> {
        std::fs::read(self.dir.path().join("commands.log"))
            .map(|log| {
                log.split(|b| *b == 0)
                    .filter(|c| !c.is_empty())
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the server now (e.g. to test a dropped connection).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}

/// The `kubectl` on the PATH, checked to build kustomizations (`kubectl kustomize`).
///
/// # Panics
/// When there is none: a test that builds kustomizations must fail, not quietly skip the
/// build, on a machine that lacks it. `scripts/deps.sh` installs it.
pub fn require_kubectl() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|path| path.is_file())
    });
    let Some(kubectl) = found else {
        panic!("kubectl is not on the PATH; scripts/deps.sh installs it (make test runs it)");
    };
    let works = Command::new(&kubectl)
        .args(["kustomize", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "{} cannot run `kubectl kustomize`; scripts/deps.sh installs a kubectl that can",
        kubectl.display()
    );
    kubectl
}

/// Makes sure `qemu:///system` answers: when no daemon runs (machines without systemd as
/// PID 1), starts `virtlogd -d` and `libvirtd -d` and waits up to 60 s for them. Gives
/// /dev/kvm the group and mode udev would.
///
/// # Errors
/// The daemons are not installed or do not come up.
pub fn ensure_libvirtd() -> Result<(), FixtureError> {
    let answers = || {
        Command::new("virsh")
            .args(["-c", "qemu:///system", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // What udev does on a normal host: without it /dev/kvm is root-only and libvirt throws
    // its QEMU capability cache away on every call (minutes per domain definition).
    if Path::new("/dev/kvm").exists() {
        let _ = Command::new("chgrp").args(["kvm", "/dev/kvm"]).status();
        let _ = Command::new("chmod").args(["0660", "/dev/kvm"]).status();
    }
    // libvirtd answers without its log daemon (started by hand, without systemd's socket
    // units), and then fails only when a domain starts: "Failed to connect socket to
    // '/run/libvirt/virtlogd-sock'".
    let virtlogd_answers =
        || std::os::unix::net::UnixStream::connect("/run/libvirt/virtlogd-sock").is_ok();
    if !virtlogd_answers() {
        Command::new("virtlogd").arg("-d").status().map_err(err(
            "start virtlogd (apt-get install libvirt-daemon-system)",
        ))?;
    }
    if answers() {
        return Ok(());
    }
    Command::new("libvirtd").arg("-d").status().map_err(err(
        "start libvirtd (apt-get install libvirt-daemon-system)",
    ))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(FixtureError(
        "libvirtd started but qemu:///system does not answer after 60s".into(),
    ))
}

/// Whether golden files are to be rewritten: `UPDATE_GOLDEN=1` exactly. Any other value
/// (`0`, `false`, empty) compares, so that a stray variable never turns the check into a write.
pub fn update_golden() -> bool {
    update_golden_from(std::env::var_os("UPDATE_GOLDEN").as_deref())
}

fn update_golden_from(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// Compares `actual` with the reviewed file `dir/name`; with `UPDATE_GOLDEN=1` in the
/// environment, writes it instead (then review the diff).
///
/// # Panics
/// When the file differs or is missing (the message says how to create it).
pub fn check_golden(dir: &Path, name: &str, actual: &str) {
    compare_or_write(dir, name, actual, update_golden());
}

fn compare_or_write(dir: &Path, name: &str, actual: &str, write: bool) {
    let path = dir.join(name);
    if write {
        if let Err(e) = std::fs::write(&path, actual) {
            panic!("cannot write {}: {e}", path.display());
        }
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) => assert_eq!(
            actual,
            expected,
            "{name} differs from the golden file {}",
            path.display()
        ),
        Err(e) => panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        ),
    }
}

/// Writes a `date` into `bin` (to put ahead of the system's on `PATH`) that prints, at its
/// n-th call, `format` (a `printf` format) filled with n: one day later at each run of a
/// scheduled job's script, e.g. `202612%02dT030000Z`.
///
/// # Panics
/// The file cannot be written (a test fixture).
pub fn date_shim(bin: &Path, format: &str) {
    let counter = bin.join(".date-calls");
    stand_in(
        bin,
        "date",
        &format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{c}'\n\
             printf '{format}\\n' \"$n\"\n",
            c = counter.display()
        ),
    );
}

/// Writes `script` as the executable `bin/name`, a stand-in for a program that tests put
/// first on `PATH` (creating `bin` when missing); a script without a `#!` line runs under
/// `/bin/sh`. Returns its path.
///
/// # Panics
/// The file cannot be written (a test fixture).
pub fn stand_in(bin: &Path, name: &str, script: &str) -> PathBuf {
    std::fs::create_dir_all(bin).unwrap_or_else(|e| panic!("create {}: {e}", bin.display()));
    let path = bin.join(name);
    let text = if script.starts_with("#!") {
        script.to_owned()
    } else {
        format!("#!/bin/sh\n{script}")
    };
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path
}

/// The names of the entries of `dir`, sorted.
///
/// # Panics
/// The directory cannot be read (a test fixture).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_rewrites_golden_files() {
        assert!(update_golden_from(Some("1".as_ref())));
        for value in ["0", "", "true", "yes", "01", " 1"] {
            assert!(!update_golden_from(Some(value.as_ref())), "{value:?}");
        }
        assert!(!update_golden_from(None));
    }

    #[test]
    fn a_differing_golden_file_fails_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.txt"), "expected").unwrap();
        let result =
            std::panic::catch_unwind(|| compare_or_write(dir.path(), "g.txt", "actual", false));
        assert!(result.is_err(), "a difference passed");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("g.txt")).unwrap(),
            "expected"
        );
        compare_or_write(dir.path(), "g.txt", "actual", true);
        compare_or_write(dir.path(), "g.txt", "actual", false);
    }
}
