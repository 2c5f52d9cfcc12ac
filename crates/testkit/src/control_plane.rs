//! A real Kubernetes control plane on loopback: Debian's `etcd` and a `kube-apiserver` built
//! from its Go module (`scripts/kube-tools.sh`), with certificates made for the run and an
//! admin kubeconfig. Ready in seconds; everything is stopped and removed when the value is
//! dropped.
//!
//! What runs is the API server alone (no controller manager, scheduler or kubelet): admission,
//! defaulting, validation, server-side apply with field ownership, CRDs with structural
//! schemas, watches and dry runs are all real; objects that controllers would act on (a
//! Node's status, a Deployment's replicas) are written by the test itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{FixtureError, err, free_port, listens, openssl};

/// A client of the cluster `KUBECONFIG` names (scenarios run against any cluster), else of a
/// control plane started here, returned beside it: the plane runs while that value lives.
///
/// # Errors
/// The kubeconfig cannot be loaded, or the control plane does not start.
pub async fn cluster() -> Result<(kube::Client, Option<ControlPlane>), FixtureError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("KUBECONFIG").is_some() {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| FixtureError(format!("the cluster KUBECONFIG names: {e}")))?;
        return Ok((client, None));
    }
    let plane = ControlPlane::start().await?;
    Ok((plane.client().await?, Some(plane)))
}

/// Creates a namespace of the test's own, `PREFIX-<nanoseconds>` (unique, so that runs
/// against a shared cluster do not meet), and returns its name.
///
/// # Errors
/// The API server refuses it.
pub async fn namespace(client: &kube::Client, prefix: &str) -> Result<String, FixtureError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("{prefix}-{nanos}");
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let object = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&kube::api::PostParams::default(), &object)
        .await
        .map_err(|e| FixtureError(format!("create namespace {name}: {e}")))?;
    Ok(name)
}

/// The directory holding the built Kubernetes binaries: `HOMELAB_KUBE_BIN`, else the cache
/// that `scripts/kube-tools.sh` builds into.
///
/// # Errors
/// The script cannot be run.
pub fn kube_bin_dir() -> Result<PathBuf, FixtureError> {
    if let Some(dir) = std::env::var_os("HOMELAB_KUBE_BIN") {
        return Ok(dir.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kube-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--dir")
        .output()
        .map_err(err(format!("run {}", script.display())))?;
    if !out.status.success() {
        return Err(FixtureError(format!(
            "{} --dir: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A running etcd and API server.
#[derive(Debug)]
pub struct ControlPlane {
    etcd: Child,
    apiserver: Child,
    /// How the API server was started (program and arguments), to start it again.
    apiserver_command: (PathBuf, Vec<String>),
    api_port: u16,
    /// kube-controller-manager and kube-scheduler, once [`ControlPlane::start_controllers`] ran.
    controllers: Vec<Child>,
    dir: tempfile::TempDir,
    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub url: String,
    /// The Kubernetes version the API server reports (`v1.33.5`).
    pub version: String,
}

/// Certificates of one control plane: a CA, the API server's serving certificate, an admin
/// client certificate (`system:masters`) and the service-account signing key.
fn certificates(dir: &Path) -> Result<(), FixtureError> {
    crate::test_ca(dir, "homelab-test-ca")?;
    crate::signed_cert(
        dir,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.96.0.1\n\
         extendedKeyUsage=serverAuth\n",
    )?;
    crate::signed_cert(
        dir,
        "admin",
        "/O=system:masters/CN=homelab-test-admin",
        "extendedKeyUsage=clientAuth\n",
    )?;
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

impl ControlPlane {
    /// Starts etcd and the API server on free loopback ports and waits until `/readyz`
    /// answers `ok` (a few seconds).
    ///
    /// # Errors
    /// etcd or the API server is not installed or built, or does not become ready within
    /// 60 s (the error carries the end of its log).
    pub async fn start() -> Result<Self, FixtureError> {
        let bin = kube_bin_dir()?;
        let apiserver_bin = bin.join("kube-apiserver");
        if !apiserver_bin.is_file() {
            return Err(FixtureError(format!(
                "{} is not built: run scripts/kube-tools.sh kube-apiserver (make test does)",
                apiserver_bin.display()
            )));
        }
        // etcd 3.5 built with the components (the version Kubernetes requires), else the
        // system's (Debian 12 has 3.4, which kube-apiserver 1.33 still runs on).
        let etcd_bin = [
            bin.join("etcd"),
            PathBuf::from("/usr/bin/etcd"),
            PathBuf::from("/usr/local/bin/etcd"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            FixtureError(
                "etcd is not built or installed: run scripts/kube-tools.sh etcd (make test does)"
                    .into(),
            )
        })?;
        let mut last = None;
        // A free port may be taken by another fixture before the server binds it.
        for _ in 0..5 {
            match Self::start_once(&etcd_bin, &apiserver_bin).await {
                Err(e) if e.0.contains("exited at start") => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| FixtureError("the control plane did not start".into())))
    }

    async fn start_once(etcd_bin: &Path, apiserver_bin: &Path) -> Result<Self, FixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("homelab-cp-")
            .tempdir()
            .map_err(err("create temp dir"))?;
        let d = dir.path();
        certificates(d)?;
        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let log =
            |name: &str| std::fs::File::create(d.join(name)).map_err(err(format!("create {name}")));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = bound_to_test(etcd_bin)
            .arg("--name=homelab-test")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=homelab-test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("etcd.log")?)
            .spawn()
            .map_err(err(format!("start {}", etcd_bin.display())))?;
        let started = Instant::now();
        while !listens(etcd.id(), client_port) {
            if let Ok(Some(status)) = etcd.try_wait() {
                return Err(FixtureError(format!(
                    "etcd exited at start: {status}: {}",
                    tail(&d.join("etcd.log"))
                )));
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = etcd.kill();
                return Err(FixtureError(format!(
                    "etcd did not listen within 30 s: {}",
                    tail(&d.join("etcd.log"))
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let file = |name: &str| d.join(name).display().to_string();
        let args: Vec<String> = vec![
            format!("--etcd-servers={client_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", file("apiserver.crt")),
            format!("--tls-private-key-file={}", file("apiserver.key")),
            format!("--client-ca-file={}", file("ca.crt")),
            format!("--service-account-key-file={}", file("sa.pub")),
            format!("--service-account-signing-key-file={}", file("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
            "--authorization-mode=Node,RBAC".into(),
            format!("--cert-dir={}", file("certs")),
        ];
        let apiserver = spawn_logged(apiserver_bin, &args, &d.join("apiserver.log"));
        let apiserver = match apiserver {
            Ok(child) => child,
            Err(e) => {
                let _ = etcd.kill();
                let _ = etcd.wait();
                return Err(FixtureError(format!(
                    "start {}: {e}",
                    apiserver_bin.display()
                )));
            }
        };
        let url = format!("https://127.0.0.1:{api_port}");
        let mut plane = Self {
            etcd,
            apiserver,
            apiserver_command: (apiserver_bin.to_owned(), args),
            api_port,
            controllers: Vec::new(),
            dir,
            url,
            version: String::new(),
        };
        std::fs::write(plane.kubeconfig(), plane.kubeconfig_text())
            .map_err(err("write the kubeconfig"))?;
        plane.wait_ready(api_port).await?;
        Ok(plane)
    }

    /// Stops the API server (every open watch and connection ends) and starts it again on
    /// the same port and etcd, then waits until it is ready. Its watch cache starts afresh
    /// from etcd, so a watch resumed from an older resourceVersion may be told `410 Gone`.
    ///
    /// # Errors
    /// The API server cannot be started again or is not ready within 60 s.
    pub async fn restart_apiserver(&mut self) -> Result<(), FixtureError> {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let (program, args) = &self.apiserver_command;
        self.apiserver = spawn_logged(program, args, &self.dir.path().join("apiserver.log"))
            .map_err(|e| FixtureError(format!("start {} again: {e}", program.display())))?;
        self.wait_ready(self.api_port).await
    }

    async fn wait_ready(&mut self, port: u16) -> Result<(), FixtureError> {
        let started = Instant::now();
        let mut last = String::from("not listening yet");
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.apiserver.try_wait() {
                return Err(FixtureError(format!(
                    "kube-apiserver exited at start: {status}: {}",
                    tail(&self.dir.path().join("apiserver.log"))
                )));
            }
            if listens(self.apiserver.id(), port) {
                match self.client().await {
                    Ok(client) => {
                        let request = http::Request::get("/readyz")
                            .body(Vec::new())
                            .map_err(|e| FixtureError(e.to_string()))?;
                        match client.request_text(request).await {
                            Ok(body) if body.trim() == "ok" => {
                                self.version = client
                                    .apiserver_version()
                                    .await
                                    .map(|v| v.git_version)
                                    .unwrap_or_default();
                                return Ok(());
                            }
                            Ok(body) => last = body,
                            Err(e) => last = e.to_string(),
                        }
                    }
                    Err(e) => last = e.0,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(FixtureError(format!(
            "kube-apiserver not ready within 60 s (last: {last}): {}",
            tail(&self.dir.path().join("apiserver.log"))
        )))
    }

    fn kubeconfig_text(&self) -> String {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: homelab-test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             users:\n- name: homelab-test-admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
             contexts:\n- name: homelab-test\n  context:\n    cluster: homelab-test\n    user: homelab-test-admin\n\
             current-context: homelab-test\n",
            url = self.url,
            ca = file("ca.crt"),
            crt = file("admin.crt"),
            key = file("admin.key"),
        )
    }

    /// The admin kubeconfig file (context `homelab-test`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A client with the admin's certificate.
    ///
    /// # Errors
    /// The kubeconfig cannot be read or the client built.
    pub async fn client(&self) -> Result<kube::Client, FixtureError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig())
            .map_err(|e| FixtureError(format!("read the kubeconfig: {e}")))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| FixtureError(format!("load the kubeconfig: {e}")))?;
        kube::Client::try_from(config).map_err(|e| FixtureError(format!("build a client: {e}")))
    }

    /// Starts kube-controller-manager and kube-scheduler (built by `scripts/kube-tools.sh`)
    /// against this API server, for scenarios that need what they do: service accounts in new
    /// namespaces, replica sets and pods from deployments, pods bound to nodes, namespaces
    /// that finish deleting. Returns once the controllers work (the `default` service account
    /// of a new namespace appears).
    ///
    /// # Errors
    /// A binary is not built, exits, or the controllers do nothing within 60 s.
    pub async fn start_controllers(&mut self) -> Result<(), FixtureError> {
        let bin = kube_bin_dir()?;
        let d = self.dir.path().to_owned();
        let file = |name: &str| d.join(name).display().to_string();
        let kubeconfig = self.kubeconfig().display().to_string();
        let mut commands = Vec::new();
        let mut kcm = bound_to_test(&bin.join("kube-controller-manager"));
        kcm.arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            // No serving endpoint: nothing here scrapes it.
            .arg("--secure-port=0")
            .arg("--controllers=*")
            .arg("--use-service-account-credentials=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                file("sa.key")
            ))
            .arg(format!("--root-ca-file={}", file("ca.crt")))
            .arg(format!("--cluster-signing-cert-file={}", file("ca.crt")))
            .arg(format!("--cluster-signing-key-file={}", file("ca.key")));
        commands.push(("kube-controller-manager", kcm));
        let mut scheduler = bound_to_test(&bin.join("kube-scheduler"));
        scheduler
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--secure-port=0");
        commands.push(("kube-scheduler", scheduler));
        for (name, mut command) in commands {
            let path = bin.join(name);
            if !path.is_file() {
                return Err(FixtureError(format!(
                    "{} is not built: run scripts/kube-tools.sh {name} (make test does)",
                    path.display()
                )));
            }
            let log = std::fs::File::create(d.join(format!("{name}.log")))
                .map_err(err(format!("create {name}.log")))?;
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(err(format!("start {}", path.display())))?;
            self.controllers.push(child);
        }
        // The service account controller gives a new namespace its `default` account.
        let client = self.client().await?;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(client.clone());
        let probe = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some("homelab-fixture-probe".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&kube::api::PostParams::default(), &probe)
            .await
            .map_err(|e| FixtureError(format!("create a probe namespace: {e}")))?;
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client, "homelab-fixture-probe");
        let started = Instant::now();
        loop {
            for (child, name) in self
                .controllers
                .iter_mut()
                .zip(["kube-controller-manager", "kube-scheduler"])
            {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(FixtureError(format!(
                        "{name} exited: {status}: {}",
                        tail(&d.join(format!("{name}.log")))
                    )));
                }
            }
            if accounts.get_opt("default").await.ok().flatten().is_some() {
                let _ = namespaces
                    .delete("homelab-fixture-probe", &kube::api::DeleteParams::default())
                    .await;
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(FixtureError(format!(
                    "kube-controller-manager made no ServiceAccount within 60 s: {}",
                    tail(&d.join("kube-controller-manager.log"))
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The API server's log so far (for a failing test's message).
    pub fn apiserver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// The process ids of etcd and the API server.
    pub fn pids(&self) -> (u32, u32) {
        (self.etcd.id(), self.apiserver.id())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in &mut self.controllers {
            let _ = child.kill();
            let _ = child.wait();
        }
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A command for `program` that the kernel kills when the thread that started it ends
/// (`setpriv --pdeathsig`, util-linux), so that a test killed by the runner (a time-out)
/// leaves no etcd or API server running for the rest of the suite; [`Drop`] stops them
/// otherwise.
pub(crate) fn bound_to_test(program: &Path) -> Command {
    if Path::new("/usr/bin/setpriv").is_file() {
        let mut command = Command::new("/usr/bin/setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Starts `program` with `args`, its output appended to `log`.
fn spawn_logged(program: &Path, args: &[String], log: &Path) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    bound_to_test(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}

/// Waits until `ready()` holds for the process `child` runs, at most `limit`: fails,
/// naming `what` and the end of its `log`, when the process exits first or time runs out.
pub(crate) fn await_start(
    child: &mut Child,
    what: &str,
    log: &Path,
    limit: std::time::Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), FixtureError> {
    let started = std::time::Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(FixtureError(format!(
                "{what} exited with {status}: {}",
                tail(log)
            )));
        }
        if started.elapsed() > limit {
            return Err(FixtureError(format!(
                "{what} was not ready within {} s: {}",
                limit.as_secs(),
                tail(log)
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last lines of a log file.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
