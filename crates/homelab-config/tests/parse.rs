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
        "cluster", "ssh", "network", "libvirt", "versions", "harbor", "esc", "github", "gitops",
        "phases", "features", "nodes",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

// ---------- properties ----------

fn node_strategy(index: usize) -> impl Strategy<Value = Node> {
    (
        prop_oneof![Just(NodeRole::ControlPlane), Just(NodeRole::Worker)],
        1u32..16,
        1024u64..65536,
        10u64..500,
        proptest::option::of(proptest::array::uniform3(any::<u8>())),
    )
        .prop_map(move |(role, vcpus, memory, disk_gib, mac)| Node {
            name: format!("node-{index}"),
            role,
            vcpus,
            memory: Mebibytes(memory),
            disk: Mebibytes::gib(disk_gib),
            ip: Ipv4Addr::new(192, 168, 122, 10 + u8::try_from(index).unwrap()),
            mac: mac.map(|m| homelab_config::MacAddress([0x52, 0x54, 0x00, m[0], m[1], m[2]])),
        })
}

fn config_strategy() -> impl Strategy<Value = Config> {
    (
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        (29u32..40, 0u32..20),
        (1usize..7).prop_flat_map(|n| (0..n).map(node_strategy).collect::<Vec<_>>()),
        "[a-z][a-z0-9_]{0,10}",
        any::<(bool, bool, bool, bool)>(),
        (1u64..10_000, 0u32..10),
    )
        .prop_map(
            |(name, (minor, patch), nodes, user, features, (secs, retries))| {
                let mut c = Config::default();
                c.cluster.name = name;
                c.cluster.kubernetes_version.minor = minor;
                c.cluster.kubernetes_version.patch = patch;
                c.nodes = nodes;
                c.ssh.user = user;
                (c.features.monitoring, c.features.backups, _, _) = features;
                c.phases.cluster.timeout =
                    homelab_config::HumanDuration(std::time::Duration::from_secs(secs));
                c.phases.vms.retries = retries;
                c
            },
        )
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
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_configs_round_trip_through_toml(config in config_strategy()) {
        prop_assume!(!validate(&config).iter().any(Diagnostic::is_error));
        let text = config.to_toml().unwrap();
        let back = parse_str("round-trip", &text).map_err(|r| TestCaseError::fail(r.to_string()))?;
        prop_assert_eq!(back.config, config);
    }

    #[test]
    fn a_mutated_key_validates_or_is_named(pick in any::<prop::sample::Index>(), value in mutation_value()) {
        let mut doc: toml_edit::DocumentMut = EMBEDDED_DEFAULT.parse().unwrap();
        let mut keys = Vec::new();
        leaves(doc.as_item(), &KeyPath::root(), &mut keys);
        let key = pick.get(&keys).clone();
        *item_at(&mut doc, &key) = toml_edit::Item::Value(value);
        let text = doc.to_string();
        if let Err(report) = parse_str("mutated", &text) {
            prop_assert!(
                report.errors().any(|d| names(d, &key)),
                "mutating {} gave errors that do not name it:\n{}\n---\n{}", key, report, text
            );
        }
    }
}
