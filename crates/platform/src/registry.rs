//! The registry on the nodes, once Harbor answers: Harbor's project for the platform's
//! images, a pull-only robot account (never the admin account for pulls), the robot's pull
//! Secret in each namespace that pulls from Harbor, and containerd on every node told to
//! trust Harbor with the homelab CA (`hosts.toml` and the CA beside it, over SSH).
//!
//! This module composes `harbor-client` (the REST calls, the pull Secret's format,
//! containerd's `hosts.toml`) and `kubeadm-boot` (steps over SSH, checked before they
//! change anything); neither knows the other. Every part is idempotent: a second
//! [`wire`] changes nothing — the robot is kept while every namespace holds its Secret, and
//! its secret is renewed (and every Secret rewritten) only when one is missing or names
//! another account.

use std::collections::BTreeMap;

use harbor_client::harbor::{Harbor, HarborError, Robot, RobotCreate};
use harbor_client::node::{DOCKER_CONFIG_JSON, MirrorTls};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube_manifest::{Applied, ApplyOptions};
use kubeadm_boot::ssh::Target;
use kubeadm_boot::steps::{Report, Runner, Step};
use secrecy::SecretString;

use crate::{FIELD_MANAGER, PlatformError};

/// Where the homelab CA's certificate is: the Secret cert-manager writes for the
/// `homelab-ca` Certificate of the GitOps repository.
pub const CA_SECRET: (&str, &str) = ("cert-manager", "homelab-ca");

/// containerd's `config_path` as the node preparation sets it.
pub const CONTAINERD_CERTS_DIR: &str = "/etc/containerd/certs.d";

/// Which certificate containerd on the nodes (and this client) trusts for Harbor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `ca.crt` (else `tls.crt`) of this Secret in the cluster.
    Secret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// This PEM certificate.
    Pem(String),
    /// The nodes' system trust store (Harbor's certificate comes from a public CA).
    System,
}

impl Default for CaSource {
    fn default() -> Self {
        Self::Secret {
            namespace: CA_SECRET.0.into(),
            name: CA_SECRET.1.into(),
        }
    }
}

/// What [`wire`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryWiring {
    /// The registry as image references name it, `host[:port]` ([`registry_of`]).
    pub registry: String,
    /// Harbor's project of the platform's images.
    pub project: String,
    /// The pull robot's short name (Harbor names it `robot$<project>+<name>`).
    pub robot: String,
    /// The pull Secret's name in each namespace.
    pub secret_name: String,
    /// The namespaces that pull from Harbor (created when missing).
    pub namespaces: Vec<String>,
    /// The certificate Harbor's is checked against.
    pub ca: CaSource,
    /// containerd's `config_path` on the nodes ([`CONTAINERD_CERTS_DIR`]).
    pub certs_dir: String,
    /// Harbor's address, written with its host name into each node's `hosts_file` (a lab
    /// whose DNS does not know the name); `None` leaves name resolution alone.
    pub address: Option<std::net::IpAddr>,
    /// The nodes' hosts file (`/etc/hosts`).
    pub hosts_file: String,
}

impl RegistryWiring {
    /// The wiring of `project` on the Harbor at `url`, with the defaults: robot `pull`,
    /// Secret `harbor-pull` in `namespaces`, the homelab CA from [`CA_SECRET`].
    ///
    /// # Errors
    /// The URL has no host.
    pub fn new(url: &str, project: &str, namespaces: &[String]) -> Result<Self, PlatformError> {
        Ok(Self {
            registry: registry_of(url)?,
            project: project.to_owned(),
            robot: "pull".into(),
            secret_name: "harbor-pull".into(),
            namespaces: namespaces.to_vec(),
            ca: CaSource::default(),
            certs_dir: CONTAINERD_CERTS_DIR.into(),
            address: None,
            hosts_file: "/etc/hosts".into(),
        })
    }

    /// The directory of Harbor's host configuration on a node.
    pub fn host_dir(&self) -> String {
        format!("{}/{}", self.certs_dir.trim_end_matches('/'), self.registry)
    }
}

/// `host[:port]` of a registry URL (`https://harbor.lan:8443/` → `harbor.lan:8443`): how
/// image references and containerd's host directories name it.
///
/// # Errors
/// The URL does not parse or has no host.
pub fn registry_of(url: &str) -> Result<String, PlatformError> {
    // Not repeated: a URL that does not parse may hold a password.
    let parsed = reqwest::Url::parse(url).map_err(|source| PlatformError::HarborUrl { source })?;
    let host = parsed
        .host_str()
        .ok_or_else(|| PlatformError::Manifest("the Harbor URL has no host".into()))?;
    Ok(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// What happened to the pull robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotChange {
    /// It did not exist and was created.
    Created,
    /// It existed, but a namespace lacked its Secret: its secret was renewed and every
    /// Secret rewritten.
    Renewed,
    /// It existed and every namespace holds its Secret.
    Kept,
}

/// Harbor's and the cluster's side of pulling, as [`ensure_pull_access`] left them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullAccess {
    /// The project was created.
    pub project_created: bool,
    /// The robot.
    pub robot: RobotChange,
    /// Its full name (what the pull Secrets log in as).
    pub robot_name: String,
    /// The namespaces and Secrets applied.
    pub applied: Vec<Applied>,
}

/// What [`wire`] did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    /// Harbor's and the cluster's side.
    pub access: PullAccess,
    /// The node steps, per node.
    pub nodes: Vec<Report>,
}

/// The homelab CA's certificate (PEM) as `source` names it; `None` for [`CaSource::System`].
///
/// # Errors
/// The Secret cannot be read, or holds no PEM certificate.
pub async fn ca_pem(client: &Client, source: &CaSource) -> Result<Option<String>, PlatformError> {
    let (namespace, name) = match source {
        CaSource::System => return Ok(None),
        CaSource::Pem(pem) => return certificate(pem, "the CA given").map(Some),
        CaSource::Secret { namespace, name } => (namespace, name),
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| PlatformError::Kube {
            action: format!("read Secret {namespace}/{name}"),
            source,
        })?
        .ok_or_else(|| {
            PlatformError::Manifest(format!(
                "Secret {namespace}/{name} does not exist: cert-manager writes it for the \
                 homelab CA (wave of cert-manager); wait for the platform first"
            ))
        })?;
    let data = secret.data.unwrap_or_default();
    let pem = ["ca.crt", "tls.crt"]
        .iter()
        .find_map(|key| data.get(*key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| {
            PlatformError::Manifest(format!(
                "Secret {namespace}/{name} has neither ca.crt nor tls.crt"
            ))
        })?;
    certificate(&pem, &format!("Secret {namespace}/{name}")).map(Some)
}

/// The first PEM certificate of `text`, with its armour.
fn certificate(text: &str, what: &str) -> Result<String, PlatformError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN);
    let end = start.and_then(|s| text[s..].find(END).map(|e| s + e + END.len()));
    match (start, end) {
        (Some(s), Some(e)) => Ok(format!("{}\n", &text[s..e])),
        _ => Err(PlatformError::Manifest(format!(
            "{what} holds no PEM certificate"
        ))),
    }
}

/// The steps that make containerd on a node pull from Harbor trusting `ca` (the CA file
/// first, then `hosts.toml`, which names it). containerd reads both on every pull: nothing
/// restarts.
pub fn node_steps(wiring: &RegistryWiring, ca: Option<&str>) -> Vec<Step> {
    let dir = wiring.host_dir();
    let mut steps = Vec::new();
    let tls = match ca {
        Some(pem) => {
            let path = format!("{dir}/ca.crt");
            let mut step = Step::file("harbor-ca", &path, pem.as_bytes().to_vec(), 0o644, None);
            step.description = format!("trust the homelab CA for {} ({path})", wiring.registry);
            steps.push(step);
            MirrorTls::CaFile(path)
        }
        None => MirrorTls::System,
    };
    let host = wiring
        .registry
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(wiring.registry.as_str(), |(h, _)| h);
    if let Some(address) = wiring.address
        && host.parse::<std::net::IpAddr>().is_err()
    {
        let line = format!("{address} {host}");
        let file = &wiring.hosts_file;
        let pattern = host.replace('.', "\\.");
        steps.push(Step::command(
            "harbor-address",
            &format!("resolve {host} to {address} ({file})"),
            &format!("grep -qxF '{line}' {file}"),
            &format!("sed -i '/[[:space:]]{pattern}$/d' {file} && echo '{line}' >> {file}"),
        ));
    }
    let server = format!("https://{}", wiring.registry);
    let text = harbor_client::node::hosts_toml(&wiring.registry, &server, &tls);
    let mut step = Step::file(
        "harbor-hosts",
        &format!("{dir}/hosts.toml"),
        text.into_bytes(),
        0o644,
        None,
    );
    step.description = format!("containerd pulls {} with that CA", wiring.registry);
    steps.push(step);
    steps
}

/// The login a pull Secret holds for `registry`: its user name and password (from
/// `username`/`password`, else its `auth`), `None` when it is not a pull Secret for it.
pub fn pull_login(secret: &Secret, registry: &str) -> Option<(String, SecretString)> {
    if secret.type_.as_deref() != Some(DOCKER_CONFIG_JSON) {
        return None;
    }
    let bytes = secret.data.as_ref()?.get(".dockerconfigjson")?;
    let config: serde_json::Value = serde_json::from_slice(&bytes.0).ok()?;
    let entry = &config["auths"][registry];
    if let (Some(user), Some(password)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Some((user.to_owned(), password.to_owned().into()));
    }
    let auth = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        entry["auth"].as_str()?,
    )
    .ok()?;
    let text = String::from_utf8(auth).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned().into()))
}

/// Whether `secret` is a pull Secret for `registry` logging in as `username`.
pub fn holds_login(secret: &Secret, registry: &str, username: &str) -> bool {
    pull_login(secret, registry).is_some_and(|(user, _)| user == username)
}

/// The project's robot with this short name (Harbor's full name is
/// `<prefix><project>+<name>`, the prefix `robot$` unless the instance changed it).
fn find_robot<'a>(robots: &'a [Robot], project: &str, name: &str) -> Option<&'a Robot> {
    let suffix = format!("{project}+{name}");
    robots.iter().find(|r| r.name.ends_with(&suffix))
}

/// A robot that may do more than pull from the project is not used for pulls.
fn pull_only(robot: &Robot, project: &str) -> Result<(), PlatformError> {
    let extra: Vec<String> = robot
        .permissions
        .iter()
        .flat_map(|p| {
            p.access
                .iter()
                .filter(move |a| {
                    !(p.kind == "project" && p.namespace == project && a.action == "pull")
                })
                .map(move |a| format!("{} {} on {} {}", a.action, a.resource, p.kind, p.namespace))
        })
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(PlatformError::Manifest(format!(
            "Harbor's robot account {} may do more than pull ({}): the nodes' pull Secret \
             must not carry that; delete it (harbor robot delete {}) or name another robot",
            robot.name,
            extra.join(", "),
            robot.id
        )))
    }
}

fn harbor_error(action: &str) -> impl FnOnce(HarborError) -> PlatformError + '_ {
    move |source| PlatformError::Harbor {
        action: action.to_owned(),
        source: Box::new(source),
    }
}

/// Brings Harbor's side and the cluster's side of pulling into place: the project, the
/// pull-only robot, the namespaces and their pull Secrets. With `dry_run`, Harbor is only
/// read and the Secrets applied with `dryRun=All` (a robot that would be created or renewed
/// is reported, its Secrets not).
///
/// # Errors
/// Harbor or the API server refuses a call, or the robot may do more than pull.
pub async fn ensure_pull_access(
    harbor: &Harbor,
    client: &Client,
    wiring: &RegistryWiring,
    dry_run: bool,
) -> Result<PullAccess, PlatformError> {
    let (project, project_created) = if dry_run {
        match harbor
            .project(&wiring.project)
            .await
            .map_err(harbor_error("read the project"))?
        {
            Some(p) => (Some(p), false),
            None => (None, true),
        }
    } else {
        let (p, created) = harbor
            .ensure_project(&wiring.project, false)
            .await
            .map_err(harbor_error("create the project"))?;
        (Some(p), created)
    };
    let robots = match &project {
        Some(p) => harbor
            .robots(Some(p))
            .await
            .map_err(harbor_error("list the project's robot accounts"))?,
        None => Vec::new(),
    };
    let existing = find_robot(&robots, &wiring.project, &wiring.robot).cloned();
    if let Some(robot) = &existing {
        pull_only(robot, &wiring.project)?;
    }

    let mut objects = namespaces(wiring);
    let secrets_current = match &existing {
        None => false,
        Some(robot) => pull_secret_status(client, wiring, &robot.name)
            .await?
            .values()
            .all(|held| *held),
    };
    let (change, robot_name, secret): (RobotChange, String, Option<SecretString>) =
        match (&existing, secrets_current) {
            (Some(robot), true) => (RobotChange::Kept, robot.name.clone(), None),
            (Some(robot), false) if dry_run => (RobotChange::Renewed, robot.name.clone(), None),
            (Some(robot), false) => {
                let secret = harbor
                    .refresh_robot_secret(robot.id)
                    .await
                    .map_err(harbor_error("renew the pull robot's secret"))?;
                (RobotChange::Renewed, robot.name.clone(), Some(secret))
            }
            (None, _) if dry_run => (
                RobotChange::Created,
                format!("robot${}+{}", wiring.project, wiring.robot),
                None,
            ),
            (None, _) => {
                let created = harbor
                    .create_robot(&RobotCreate {
                        name: wiring.robot.clone(),
                        description: format!(
                            "homelab: nodes and workloads pull from {} (pull only)",
                            wiring.project
                        ),
                        level: "project".into(),
                        duration: -1,
                        permissions: vec![harbor_client::harbor::repository_access(
                            &wiring.project,
                            false,
                        )],
                    })
                    .await
                    .map_err(harbor_error("create the pull robot"))?;
                (RobotChange::Created, created.name, Some(created.secret))
            }
        };
    if let Some(secret) = &secret {
        let names: Vec<&str> = wiring.namespaces.iter().map(String::as_str).collect();
        for s in harbor_client::node::pull_secrets(
            &wiring.secret_name,
            &names,
            &wiring.registry,
            &robot_name,
            secret,
        ) {
            objects.push(to_dynamic(&s)?);
        }
    }
    let options = ApplyOptions::new(FIELD_MANAGER).dry_run(dry_run);
    let applied = kube_manifest::apply(client, &objects, &options).await?;
    Ok(PullAccess {
        project_created,
        robot: change,
        robot_name,
        applied,
    })
}

/// The namespaces, labelled (an object holding only its name would change once more on the
/// next apply).
fn namespaces(wiring: &RegistryWiring) -> Vec<DynamicObject> {
    wiring
        .namespaces
        .iter()
        .filter_map(|ns| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": ns, "labels": { "app.kubernetes.io/managed-by": "homelab" } },
            }))
            .ok()
        })
        .collect()
}

fn to_dynamic(secret: &Secret) -> Result<DynamicObject, PlatformError> {
    let json = |source| PlatformError::Json {
        what: "the pull Secret".into(),
        source,
    };
    let mut value = serde_json::to_value(secret).map_err(json)?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    serde_json::from_value(value).map_err(json)
}

/// Everything: Harbor's project and pull robot, the pull Secrets, then containerd on every
/// node in `targets` (through `runner`, which may be a dry run too).
///
/// # Errors
/// As [`ensure_pull_access`], the CA cannot be read, or a node step fails (the error names
/// the node, the step and the command).
pub async fn wire(
    harbor: &Harbor,
    client: &Client,
    runner: &Runner,
    targets: &[Target],
    wiring: &RegistryWiring,
) -> Result<Wired, PlatformError> {
    let ca = ca_pem(client, &wiring.ca).await?;
    let access = ensure_pull_access(harbor, client, wiring, runner.dry_run).await?;
    let steps = node_steps(wiring, ca.as_deref());
    let work = targets.iter().map(|t| (t.clone(), steps.clone())).collect();
    let nodes = runner
        .run(work, &|_| {})
        .await
        .map_err(PlatformError::Nodes)?;
    Ok(Wired { access, nodes })
}

/// The namespaces' pull Secrets by name, for status: which hold the robot's login.
///
/// # Errors
/// A Secret cannot be read.
pub async fn pull_secret_status(
    client: &Client,
    wiring: &RegistryWiring,
    robot_name: &str,
) -> Result<BTreeMap<String, bool>, PlatformError> {
    let mut out = BTreeMap::new();
    for ns in &wiring.namespaces {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let held =
            api.get_opt(&wiring.secret_name)
                .await
                .map_err(|source| PlatformError::Kube {
                    action: format!("read Secret {ns}/{}", wiring.secret_name),
                    source,
                })?;
        out.insert(
            ns.clone(),
            held.is_some_and(|s| holds_login(&s, &wiring.registry, robot_name)),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_the_url_s_host_and_port() {
        assert_eq!(
            registry_of("https://harbor.homelab.lan").unwrap(),
            "harbor.homelab.lan"
        );
        assert_eq!(
            registry_of("https://harbor.lan:8443/").unwrap(),
            "harbor.lan:8443"
        );
        assert_eq!(
            registry_of("http://127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000"
        );
        let err = registry_of("harbor.lan").unwrap_err().to_string();
        assert!(err.contains("does not parse"), "{err}");
    }

    #[test]
    fn the_ca_is_the_first_certificate_and_junk_is_refused() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificate(pem, "x").unwrap(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        );
        let err = certificate("-----BEGIN PRIVATE KEY-----", "Secret a/b")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "Secret a/b holds no PEM certificate");
    }

    #[test]
    fn node_steps_write_the_ca_then_hosts_toml_naming_it() {
        let mut wiring =
            RegistryWiring::new("https://harbor.lan:8443", "homelab", &["apps".into()]).unwrap();
        wiring.certs_dir = "/etc/containerd/certs.d/".into();
        let steps = node_steps(&wiring, Some("PEM\n"));
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["harbor-ca", "harbor-hosts"]);
        let kubeadm_boot::steps::Check::File { path, contents, .. } = &steps[1].check else {
            panic!("a file step");
        };
        assert_eq!(path, "/etc/containerd/certs.d/harbor.lan:8443/hosts.toml");
        let text = String::from_utf8(contents.clone()).unwrap();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["server"].as_str(), Some("https://harbor.lan:8443"));
        assert_eq!(
            parsed["host"]["https://harbor.lan:8443"]["ca"].as_str(),
            Some("/etc/containerd/certs.d/harbor.lan:8443/ca.crt")
        );
        // A public certificate: only hosts.toml, no CA file.
        let steps = node_steps(&wiring, None);
        assert_eq!(steps.len(), 1);
    }

    #[test]
    fn the_login_of_a_pull_secret_is_read_from_its_fields_or_its_auth() {
        use secrecy::ExposeSecret;
        let secret = |config: serde_json::Value| Secret {
            type_: Some(DOCKER_CONFIG_JSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                k8s_openapi::ByteString(config.to_string().into_bytes()),
            )])),
            ..Secret::default()
        };
        let written = harbor_client::node::pull_secrets(
            "harbor-pull",
            &["apps"],
            "harbor.lan",
            "robot$homelab+pull",
            &SecretString::from("s3cret"),
        );
        let (user, password) = pull_login(&written[0], "harbor.lan").unwrap();
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("robot$homelab+pull", "s3cret")
        );
        assert!(holds_login(&written[0], "harbor.lan", "robot$homelab+pull"));
        assert!(pull_login(&written[0], "other.lan").is_none());
        // Only `auth` (as `kubectl create secret docker-registry` once wrote it).
        let only_auth = secret(serde_json::json!({ "auths": { "harbor.lan": {
            "auth": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "u:p:q") } } }));
        let (user, password) = pull_login(&only_auth, "harbor.lan").unwrap();
        assert_eq!((user.as_str(), password.expose_secret()), ("u", "p:q"));
        // Not a pull Secret.
        let mut opaque = only_auth.clone();
        opaque.type_ = Some("Opaque".into());
        assert!(pull_login(&opaque, "harbor.lan").is_none());
    }

    #[test]
    fn a_robot_that_may_push_is_not_used_for_pulls() {
        let robot = |access: Vec<(&str, &str)>| Robot {
            id: 7,
            name: "robot$homelab+pull".into(),
            level: "project".into(),
            permissions: vec![harbor_client::harbor::RobotPermission {
                kind: "project".into(),
                namespace: "homelab".into(),
                access: access
                    .into_iter()
                    .map(|(r, a)| harbor_client::harbor::Access {
                        resource: r.into(),
                        action: a.into(),
                    })
                    .collect(),
            }],
        };
        pull_only(&robot(vec![("repository", "pull")]), "homelab").unwrap();
        let err = pull_only(
            &robot(vec![("repository", "pull"), ("repository", "push")]),
            "homelab",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("push repository on project homelab"), "{err}");
        assert!(err.contains("harbor robot delete 7"), "{err}");
        // Pull from another project is more than this project's pulls.
        assert!(pull_only(&robot(vec![("repository", "pull")]), "other").is_err());
    }
}
