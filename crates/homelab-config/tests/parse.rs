//! Reading `homelab.toml` through the public API: defaults, located errors, unknown keys,
//! secrets, and the round-trip and mutation properties.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use homelab_config::{
    Config, Diagnostic, EMBEDDED_DEFAULT, KeyPath, Location, Mebibytes, Node, NodeRole, Report,
    parse_str, validate,
};
use proptest::prelude::*;

fn errors(text: &str) -> Report {
    parse_str("homelab.toml", text).expect_err("expected errors")
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "compared with Option<Location> fields"
)]
fn at(line: usize, column: usize) -> Option<Location> {
    Some(Location { line, column })
}

#[test]
fn embedded_default_is_the_reference_topology() {
    let loaded = parse_str("default", EMBEDDED_DEFAULT).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config, Config::default());
    let c = loaded.config;
    let cp: Vec<&Node> = c.control_plane_nodes().collect();
    assert_eq!(cp.len(), 1);
    assert_eq!(cp[0].ip, Ipv4Addr::new(192, 168, 122, 10));
    assert_eq!(
        (cp[0].vcpus, cp[0].memory, cp[0].disk),
        (4, Mebibytes::gib(8), Mebibytes::gib(50))
    );
    let workers: Vec<&Node> = c.worker_nodes().collect();
    assert_eq!(
        workers.iter().map(|n| n.ip.octets()[3]).collect::<Vec<_>>(),
        [11, 12]
    );
    for w in workers {
        assert_eq!(
            (w.vcpus, w.memory, w.disk),
            (2, Mebibytes::gib(4), Mebibytes::gib(30))
        );
    }
    assert_eq!(
        c.network.metallb_range.to_string(),
        "192.168.122.100-192.168.122.150"
    );
    assert_eq!(c.network.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(c.network.service_cidr.to_string(), "10.96.0.0/12");
    assert!(c.cluster.kubernetes_version.minor >= 29);
}

#[test]
fn empty_file_means_all_defaults() {
    assert_eq!(parse_str("x", "").unwrap().config, Config::default());
}

#[test]
fn five_distinct_mistakes_give_five_located_errors() {
    let text = r#"[cluster]
name = "Home_Lab"
kubernetes_version = "1.33"

[network]
pod_cidr = "10.96.0.0/16"

[[nodes]]
name = "cp"
role = "control-plane"
vcpus = 1
ip = "192.168.122.10"

[[nodes]]
name = "w1"
ip = "10.1.1.1"
cpus = 2
"#;
    let report = errors(text);
    let got: Vec<(String, Option<Location>)> = report
        .diagnostics
        .iter()
        .map(|d| (d.path.to_string(), d.location))
        .collect();
    assert_eq!(
        got,
        vec![
            ("cluster.name".into(), at(2, 8)),
            ("cluster.kubernetes_version".into(), at(3, 22)),
            ("network.pod_cidr".into(), at(6, 12)),
            ("nodes[0].vcpus".into(), at(11, 9)),
            ("nodes[1].ip".into(), at(16, 6)),
            ("nodes[1].cpus".into(), at(17, 1)),
        ]
        .into_iter()
        .collect::<Vec<_>>()
    );
    let rendered = report.to_string();
    assert!(
        rendered.contains("homelab.toml:17:1: error: nodes[1].cpus: unknown key `cpus`"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `vcpus`?"), "{rendered}");
    assert!(
        rendered.contains("homelab.toml:3:22: error: cluster.kubernetes_version:"),
        "{rendered}"
    );
    assert!(
        rendered.ends_with("homelab.toml: 6 errors, 0 warnings"),
        "{rendered}"
    );
}

#[test]
fn several_type_errors_are_all_reported() {
    let text = r#"
[cluster]
kubernetes_version = 133

[[nodes]]
name = "cp"
role = "boss"
memory = 8
ip = "192.168.122.300"

[phases.vms]
timeout = "soon"
"#;
    let report = errors(text);
    let paths: Vec<String> = report.errors().map(|d| d.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            "cluster.kubernetes_version",
            "nodes[0].role",
            "nodes[0].memory",
            "nodes[0].ip",
            "phases.vms.timeout"
        ]
    );
    let role = &report.diagnostics[1];
    assert!(role.message.contains("control-plane"), "{}", role.message);
}

#[test]
fn unknown_keys_anywhere_get_suggestions() {
    let text = r#"
[netwrok]
name = "x"

[network.load_balancer_ips]
ingres = "192.168.122.100"

[harbor.storage]
registery = "1Gi"
"#;
    let report = errors(text);
    let d: Vec<&Diagnostic> = report.errors().collect();
    assert_eq!(d.len(), 3);
    assert_eq!(d[0].path.to_string(), "netwrok");
    assert_eq!(d[0].help.as_deref(), Some("did you mean `network`?"));
    assert_eq!(d[1].help.as_deref(), Some("did you mean `ingress`?"));
    assert_eq!(d[2].path.to_string(), "harbor.storage.registery");
    assert_eq!(d[2].help.as_deref(), Some("did you mean `registry`?"));
    assert_eq!(d[2].location, at(9, 1));
}

#[test]
fn syntax_error_is_located() {
    let report = errors("[cluster]\nname = \"x\n");
    assert_eq!(report.diagnostics.len(), 1);
    assert!(
        report.diagnostics[0]
            .message
            .starts_with("TOML syntax error")
    );
    assert_eq!(report.diagnostics[0].location.map(|l| l.line), Some(2));
}

#[test]
fn inline_secret_is_an_error_that_never_echoes_the_value() {
    let text = "[esc]\norganization = \"o\"\ntoken = \"pul-abcdef0123456789\"\n";
    let report = errors(text);
    let rendered = report.to_string();
    assert!(
        rendered.contains("homelab.toml:3:9: error: esc.token"),
        "{rendered}"
    );
    assert!(!rendered.contains("pul-abcdef"), "{rendered}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("pul-abcdef"));
}

#[test]
fn problems_from_defaults_point_at_the_key_that_moved_them() {
    // The nodes keep their default addresses, which the new NAT network no longer contains.
    let text = "[network]\nnat_cidr = \"10.10.0.0/24\"\ngateway = \"10.10.0.1\"\nmetallb_range = \"10.10.0.100-10.10.0.150\"\n\n[network.load_balancer_ips]\ningress = \"10.10.0.100\"\nharbor = \"10.10.0.101\"\nargocd = \"10.10.0.102\"\n";
    let report = errors(text);
    let d: Vec<&Diagnostic> = report.errors().collect();
    assert_eq!(d.len(), 3, "{report}");
    for (i, diag) in d.iter().enumerate() {
        // Reported at the key the user wrote, naming the node it affects.
        assert_eq!(diag.path.to_string(), "network.nat_cidr");
        assert_eq!(diag.location, at(2, 12));
        assert_eq!(diag.related[0].path.to_string(), format!("nodes[{i}].ip"));
        assert_eq!(diag.related[0].location, None);
        assert!(
            diag.message.starts_with("node address 192.168.122.1"),
            "{}",
            diag.message
        );
    }
    assert!(
        report
            .to_string()
            .contains("see nodes[0].ip (default value)")
    );
}

#[test]
fn a_problem_with_a_whole_array_points_at_its_first_table() {
    let report = errors(
        "[features]\nmonitoring = true\n\n[[nodes]]\nname = \"w\"\nip = \"192.168.122.20\"\n",
    );
    let text = report.to_string();
    assert!(
        text.contains("homelab.toml:4:1: error: nodes: no node has role"),
        "{text}"
    );
    assert!(text.contains("see nodes[0].role (default value)"), "{text}");
}

#[test]
fn missing_required_node_keys_point_at_the_node() {
    let text = "[[nodes]]\nname = \"cp\"\nrole = \"control-plane\"\nip = \"192.168.122.10\"\n\n[[nodes]]\nrole = \"worker\"\n";
    let report = errors(text);
    let d: Vec<&Diagnostic> = report.errors().collect();
    assert_eq!(
        d.iter().map(|d| d.path.to_string()).collect::<Vec<_>>(),
        ["nodes[1].name", "nodes[1].ip"]
    );
    assert_eq!(d[0].location.map(|l| l.line), Some(6));
}

#[test]
fn warnings_do_not_fail() {
    let loaded = parse_str("x", "[ssh]\nuser = \"root\"\n").unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].path.to_string(), "ssh.user");
}

#[test]
fn schema_describes_every_section() {
    let schema = homelab_config::json_schema();
    let props = schema["properties"].as_object().unwrap();
    for key in [
        "cluster", "ssh", "network", "libvirt", "versions", "packages", "harbor", "esc", "github",
        "gitops", "phases", "features", "nodes",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

// ---------- properties ----------

fn node_strategy(index: usize, third: u8) -> impl Strategy<Value = Node> {
    (
        prop_oneof![Just(NodeRole::ControlPlane), Just(NodeRole::Worker)],
        2u32..16,
        2048u64..65536,
        10u64..500,
        proptest::option::of(proptest::array::uniform3(any::<u8>())),
    )
        .prop_map(move |(role, vcpus, memory, disk_gib, mac)| Node {
            name: format!("node-{index}"),
            // The first node is always a control plane (a cluster needs one).
            role: if index == 0 {
                NodeRole::ControlPlane
            } else {
                role
            },
            vcpus,
            memory: Mebibytes(memory),
            disk: Mebibytes::gib(disk_gib),
            ip: Ipv4Addr::new(192, 168, third, 10 + u8::try_from(index).unwrap()),
            mac: mac.map(|m| homelab_config::MacAddress([0x52, 0x54, 0x00, m[0], m[1], m[2]])),
        })
}

fn secret_strategy() -> impl Strategy<Value = homelab_config::SecretRef> {
    prop_oneof![
        "[A-Z][A-Z0-9_]{0,15}".prop_map(homelab_config::SecretRef::Env),
        "[a-z][a-z0-9]{0,8}"
            .prop_map(|n| homelab_config::SecretRef::File(format!("/etc/homelab/{n}").into())),
    ]
}

fn pinned() -> impl Strategy<Value = homelab_config::PinnedVersion> {
    ("v?", 0u32..20, 0u32..40, 0u32..40)
        .prop_map(|(v, a, b, c)| format!("{v}{a}.{b}.{c}").parse().unwrap())
}

fn quantity() -> impl Strategy<Value = homelab_config::Quantity> {
    (1u32..999, prop::sample::select(vec!["Mi", "Gi", "Ti"]))
        .prop_map(|(n, unit)| format!("{n}{unit}").parse().unwrap())
}

fn phase() -> impl Strategy<Value = homelab_config::PhaseSettings> {
    (1u64..100_000, 0u32..10).prop_map(|(secs, retries)| homelab_config::PhaseSettings {
        timeout: homelab_config::HumanDuration(std::time::Duration::from_secs(secs)),
        retries,
    })
}

/// Every section of the file: cluster, ssh, network, libvirt, versions, harbor, esc,
/// github, gitops, phases, features and nodes.
#[allow(
    clippy::too_many_lines,
    reason = "one generator per section, read top to bottom"
)]
fn config_strategy() -> impl Strategy<Value = Config> {
    let cluster = (
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        (29u32..40, 0u32..20),
        any::<bool>(),
        proptest::option::of("[a-z][a-z0-9-]{0,8}"),
    );
    let ssh = ("[a-z][a-z0-9_]{0,10}", "[a-z]{1,8}");
    // The NAT network's third octet, and the pod network's second (never inside the
    // service network 10.96.0.0/12).
    let network = (
        0u8..=254,
        prop_oneof![0u8..96, 112u8..=255],
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
    );
    let libvirt = (
        prop::sample::select(vec![
            "qemu:///system",
            "qemu+ssh://ops@kvm.lan/system",
            "test:///default",
        ]),
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        any::<bool>(),
        proptest::option::of(Just(())),
        "[a-z=/ ]{0,30}",
        prop::sample::select(vec![
            homelab_config::DomainType::Auto,
            homelab_config::DomainType::Kvm,
            homelab_config::DomainType::Qemu,
        ]),
    );
    let versions = (
        prop::collection::vec(pinned(), 10),
        proptest::option::of("[0-9a-f]{64}"),
        "[0-9A-F]{40}",
    );
    let harbor = (
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        secret_strategy(),
        prop::collection::vec(quantity(), 5),
    );
    let esc = proptest::option::of((
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        secret_strategy(),
    ));
    let github = proptest::option::of((
        "[a-z]([a-z0-9-]{0,9}[a-z0-9])?",
        secret_strategy(),
        prop::collection::btree_map("[a-z]([a-z0-9-]{0,9}[a-z0-9])?", (0u32..3, 3u32..10), 0..3),
    ));
    let gitops = proptest::option::of(("[a-z]([a-z0-9-]{0,9}[a-z0-9])?", "[a-z][a-z0-9/-]{0,10}"));
    let phases = prop::collection::vec(phase(), 5);
    let features = any::<(bool, bool, bool, bool)>();
    (
        (cluster, ssh, network, libvirt),
        (versions, harbor, esc, github, gitops),
        (phases, features),
        (1usize..7, 0u8..=254).prop_flat_map(|(n, third)| {
            (0..n).map(|i| node_strategy(i, third)).collect::<Vec<_>>()
        }),
    )
        .prop_map(|(a, b, c, nodes)| {
            let (
                (name, (minor, patch), existing, context),
                (user, key),
                (third, pod, net_name),
                libvirt,
            ) = a;
            let (versions, harbor, esc, github, gitops) = b;
            let (phases, features) = c;
            let mut conf = Config::default();
            conf.cluster.name = name;
            conf.cluster.kubernetes_version.minor = minor;
            conf.cluster.kubernetes_version.patch = patch;
            if existing {
                conf.cluster.provider = homelab_config::ClusterProvider::Existing;
                conf.cluster.kubeconfig = format!("/home/ops/.kube/{key}").into();
            }
            conf.cluster.context = context;
            conf.ssh.user = user;
            conf.ssh.private_key = format!("/home/ops/.ssh/{key}").into();
            conf.ssh.public_key = format!("/home/ops/.ssh/{key}.pub").into();
            conf.ssh.known_hosts = format!("/home/ops/.config/{key}/known_hosts").into();
            // The nodes' addresses follow the network: the strategy draws both from `third`.
            let third = nodes.first().map_or(third, |n| n.ip.octets()[2]);
            let net = &mut conf.network;
            net.name.clone_from(&net_name);
            net.bridge = format!("virbr-{}", &net_name[..net_name.len().min(8)]);
            net.nat_cidr = format!("192.168.{third}.0/24").parse().unwrap();
            net.gateway = Ipv4Addr::new(192, 168, third, 1);
            net.pod_cidr = format!("10.{pod}.0.0/16").parse().unwrap();
            net.metallb_range = format!("192.168.{third}.100-192.168.{third}.150")
                .parse()
                .unwrap();
            net.load_balancer_ips.ingress = Ipv4Addr::new(192, 168, third, 100);
            net.load_balancer_ips.harbor = Ipv4Addr::new(192, 168, third, 101);
            net.load_balancer_ips.argocd = Ipv4Addr::new(192, 168, third, 102);
            let (uri, pool, build, kernel, cmdline, domain_type) = libvirt;
            let lv = &mut conf.libvirt;
            lv.uri = uri.to_owned();
            lv.pool_name.clone_from(&pool);
            lv.pool_path = format!("/srv/libvirt/{pool}").into();
            lv.base_image = format!("/srv/libvirt/{pool}/base.qcow2").into();
            lv.build_base_image = build;
            lv.image_mirror = format!("http://mirror.lan/{pool}");
            if kernel.is_some() {
                lv.kernel = Some(format!("/srv/libvirt/{pool}/vmlinuz").into());
                lv.initrd = Some(format!("/srv/libvirt/{pool}/initrd.img").into());
            }
            lv.kernel_cmdline = cmdline;
            lv.domain_type = domain_type;
            let (pins, sha, key_fingerprint) = versions;
            conf.packages.repository = format!("http://mirror.lan/{pool}/k8s");
            conf.packages.key_fingerprint = key_fingerprint;
            conf.cluster.slow_nodes = build;
            if build {
                conf.packages.bundle = Some(format!("/srv/{pool}/bundle").into());
                conf.packages.mirrors.insert(
                    "registry.k8s.io".into(),
                    format!("http://mirror.lan:5000/{pool}"),
                );
                conf.packages
                    .mirrors
                    .insert("ghcr.io".into(), "https://mirror.lan".into());
            }
            let v = &mut conf.versions;
            [
                &mut v.flannel,
                &mut v.metallb,
                &mut v.ingress_nginx,
                &mut v.cert_manager,
                &mut v.external_secrets,
                &mut v.argocd,
                &mut v.argocd_chart,
                &mut v.harbor,
                &mut v.actions_runner_controller,
                &mut v.local_path_provisioner,
            ]
            .into_iter()
            .zip(pins)
            .for_each(|(slot, pin)| *slot = pin);
            // An Argo CD release is a tag: vMAJOR.MINOR.PATCH.
            v.argocd = format!("v{}", v.argocd.as_str().trim_start_matches('v'))
                .parse()
                .unwrap();
            v.argocd_manifest_sha256.clone_from(&sha);
            v.flannel_manifest_sha256 = sha;
            let (host, project, password, sizes) = harbor;
            let h = &mut conf.harbor;
            h.url = format!("https://{host}.lan");
            h.project = project;
            h.admin_password = password;
            [
                &mut h.storage.registry,
                &mut h.storage.database,
                &mut h.storage.redis,
                &mut h.storage.jobservice,
                &mut h.storage.trivy,
            ]
            .into_iter()
            .zip(sizes)
            .for_each(|(slot, q)| *slot = q);
            conf.esc = esc.map(|(organization, project, environment, token)| {
                let mut e = homelab_config::EscConfig::default();
                (e.organization, e.project, e.environment, e.token) =
                    (organization, project, environment, token);
                e
            });
            conf.github = github.map(|(owner, token, runners)| homelab_config::GithubConfig {
                owner,
                token,
                runners: runners
                    .into_iter()
                    .map(|(name, (min, max))| homelab_config::RunnerRepo { name, min, max })
                    .collect(),
            });
            conf.gitops = gitops.map(|(repo, path)| homelab_config::GitopsConfig {
                repo_url: format!("https://git.lan/{repo}.git"),
                path,
                ..homelab_config::GitopsConfig::default()
            });
            let [vms, nodes_phase, cluster, platform, gitops_phase]: [homelab_config::PhaseSettings;
                5] = phases.try_into().unwrap();
            conf.phases.vms = vms;
            conf.phases.nodes = nodes_phase;
            conf.phases.cluster = cluster;
            conf.phases.platform = platform;
            conf.phases.gitops = gitops_phase;
            let f = &mut conf.features;
            (f.external_secrets, f.runners, f.monitoring, f.backups) = features;
            // A feature needs its section.
            f.external_secrets &= conf.esc.is_some();
            f.runners &= conf.github.as_ref().is_some_and(|g| !g.runners.is_empty());
            conf.nodes = nodes;
            conf
        })
}

/// The leaf values of a TOML document, as key paths.
fn leaves(item: &toml_edit::Item, path: &KeyPath, out: &mut Vec<KeyPath>) {
    match item {
        toml_edit::Item::Table(t) => {
            for (k, v) in t {
                leaves(v, &path.key(k), out);
            }
        }
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                for (k, v) in t {
                    leaves(v, &path.index(i).key(k), out);
                }
            }
        }
        toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
            for (k, v) in t {
                out.push(path.key(k));
                let _ = v;
            }
        }
        toml_edit::Item::Value(_) => out.push(path.clone()),
        toml_edit::Item::None => {}
    }
}

fn item_at<'a>(doc: &'a mut toml_edit::DocumentMut, path: &KeyPath) -> &'a mut toml_edit::Item {
    let mut item = doc.as_item_mut();
    for segment in path.segments() {
        item = match segment {
            homelab_config::Segment::Key(k) => &mut item[k.as_str()],
            homelab_config::Segment::Index(i) => &mut item[*i],
        };
    }
    item
}

fn mutation_value() -> impl Strategy<Value = toml_edit::Value> {
    prop_oneof![
        "\\PC{0,12}".prop_map(toml_edit::Value::from),
        (-5i64..100_000).prop_map(toml_edit::Value::from),
        any::<bool>().prop_map(toml_edit::Value::from),
        (0u8..=255).prop_map(|o| toml_edit::Value::from(format!("192.168.122.{o}"))),
        (0u8..=255, 8u8..=30).prop_map(|(o, l)| toml_edit::Value::from(format!("10.{o}.0.0/{l}"))),
        Just(toml_edit::Value::from("latest")),
        Just(toml_edit::Value::from("")),
        Just(toml_edit::Value::from("control-plane")),
    ]
}

fn names(d: &Diagnostic, key: &KeyPath) -> bool {
    &d.path == key || key.parent() == d.path || d.related.iter().any(|r| &r.path == key)
}

proptest! {
    // Failures are saved beside this file (parse.proptest-regressions), and the seeds checked
    // in there run first.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Every section, both ways: a configuration written as TOML reads back as the same
    /// configuration, and that text, read and written again, is the same text.
    #[test]
    fn valid_configs_round_trip_through_toml(config in config_strategy()) {
        let errors: Vec<String> = validate(&config).iter().filter(|d| d.is_error()).map(|d| format!("{}: {}", d.path, d.message)).collect();
        prop_assert!(errors.is_empty(), "the generator made an invalid configuration: {:?}", errors);
        let text = config.to_toml().unwrap();
        let back = parse_str("round-trip", &text).map_err(|r| TestCaseError::fail(r.to_string()))?;
        prop_assert_eq!(&back.config, &config);
        prop_assert_eq!(back.config.to_toml().unwrap(), text);
    }

    #[test]
    fn a_mutated_key_validates_or_is_named(pick in any::<prop::sample::Index>(), value in mutation_value()) {
        let mut doc: toml_edit::DocumentMut = EMBEDDED_DEFAULT.parse().unwrap();
        let mut keys = Vec::new();
        leaves(doc.as_item(), &KeyPath::root(), &mut keys);
        let key = pick.get(&keys).clone();
        *item_at(&mut doc, &key) = toml_edit::Item::Value(value);
        let text = doc.to_string();
        match parse_str("mutated", &text) {
            // Refused: the errors name the key that was changed.
            Err(report) => prop_assert!(
                report.errors().any(|d| names(d, &key)),
                "mutating {} gave errors that do not name it:\n{}\n---\n{}", key, report, text
            ),
            // Accepted: the configuration, written out, still has the key and reads back
            // the same; and the value written out for the key, put back into the changed
            // document, means the same configuration (a value is kept in one form).
            Ok(loaded) => {
                let written = loaded.config.to_toml().unwrap();
                let reread = parse_str("written", &written).map_err(|r| TestCaseError::fail(r.to_string()))?;
                prop_assert_eq!(&reread.config, &loaded.config);
                let mut out: toml_edit::DocumentMut = written.parse().unwrap();
                let kept = item_at(&mut out, &key).clone();
                prop_assert!(!kept.is_none(), "{} was accepted but is gone from\n{}", key, written);
                let mut back = doc.clone();
                *item_at(&mut back, &key) = kept;
                let again = parse_str("written-back", &back.to_string()).map_err(|r| TestCaseError::fail(r.to_string()))?;
                prop_assert_eq!(&again.config, &loaded.config);
            }
        }
    }
}

#[test]
fn mirrors_name_registry_hosts_and_urls_without_credentials() {
    let report = homelab_config::parse_str(
        "homelab.toml",
        "[packages]\nbundle = \"/srv/bundle\"\n[packages.mirrors]\n\"registry.k8s.io\" = \"http://192.168.122.1:5000\"\n\"bad host\" = \"http://m.lan\"\n\"ghcr.io\" = \"ftp://m.lan\"\n\"quay.io\" = \"https://robot:s3cr3t@m.lan\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        report.contains("`bad host` is not a registry host"),
        "{report}"
    );
    assert!(
        report.contains("ghcr.io") && report.contains("ftp"),
        "{report}"
    );
    assert!(
        report.contains("quay.io") && !report.contains("s3cr3t"),
        "{report}"
    );
    assert!(
        !report.contains("packages.mirrors.registry.k8s.io"),
        "{report}"
    );
    assert!(report.contains("3 errors"), "{report}");
}

#[test]
fn the_containerd_package_must_be_a_package_name() {
    let report = homelab_config::parse_str(
        "homelab.toml",
        "[packages]\ncontainerd = \"containerd; rm -rf /\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        report.contains("packages.containerd: `containerd; rm -rf /` is not a Debian package name"),
        "{report}"
    );
    let ok = homelab_config::parse_str(
        "homelab.toml",
        "[packages]\ncontainerd = \"containerd.io\"\n",
    )
    .unwrap();
    assert_eq!(ok.config.packages.containerd, "containerd.io");
}

#[test]
fn error_messages_never_repeat_a_credential() {
    for (text, secret) in [
        // A token as user name, a password: refused, and not repeated.
        (
            "[harbor]\nurl = \"https://ghp_tok123456@harbor.lan\"\n",
            "ghp_tok123456",
        ),
        (
            "[harbor]\nurl = \"https://admin:Harbor12345@harbor.lan\"\n",
            "Harbor12345",
        ),
        (
            "[packages]\nrepository = \"https://tok987654@mirror.lan/k8s\"\n",
            "tok987654",
        ),
        (
            "[gitops]\nrepo_url = \"https://x-access-token:ghs_abcdef@github.com/o/r.git\"\n",
            "ghs_abcdef",
        ),
        // A URL that does not parse, with a password in it.
        (
            "[harbor]\nurl = \"https://admin:s3cr3tpw@har bor.lan\"\n",
            "s3cr3tpw",
        ),
        // A secret pasted where the variable's name belongs.
        (
            "[harbor]\nadmin_password = { env = \"Harbor12345!\" }\n",
            "Harbor12345!",
        ),
    ] {
        let report = homelab_config::parse_str("homelab.toml", text)
            .map_or_else(|r| r.to_string(), |_| String::from("accepted"));
        assert_ne!(report, "accepted", "{text}");
        // The report quotes the offending source line (that is the file the user wrote);
        // the messages themselves must not repeat the value.
        let messages: String = report
            .lines()
            .filter(|l| l.contains("error:") || l.contains("help:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!messages.contains(secret), "{text}:\n{report}");
    }
    // ssh's user is not a credential.
    homelab_config::parse_str(
        "homelab.toml",
        "[gitops]\nrepo_url = \"ssh://git@github.com/o/r.git\"\n",
    )
    .unwrap();
    assert_eq!(
        homelab_config::without_userinfo("https://a:b@h st/x@y"),
        "https://***@h st/x@y"
    );
}

#[test]
fn an_unencrypted_libvirt_connection_is_warned_about() {
    let loaded = homelab_config::parse_str(
        "homelab.toml",
        "[libvirt]\nuri = \"qemu+tcp://kvm.lan/system\"\n",
    )
    .unwrap();
    let warnings: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| w.render("homelab.toml"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("libvirt.uri") && w.contains("host private key")),
        "{warnings:#?}"
    );
    let quiet = homelab_config::parse_str(
        "homelab.toml",
        "[libvirt]\nuri = \"qemu+ssh://me@kvm.lan/system\"\n",
    )
    .unwrap();
    assert!(
        quiet
            .warnings
            .iter()
            .all(|w| !w.render("x").contains("libvirt.uri"))
    );
}
