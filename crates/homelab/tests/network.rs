//! The NAT network's collisions as libvirt reports them (its test driver, whose `default`
//! network is active on 192.168.122.0/24, as on most hosts), before anything is created.
#![allow(clippy::unwrap_used)]

use homelab_config::Config;

#[test]
fn an_active_network_on_the_same_range_is_named_with_its_fix() {
    let mut config = Config::default();
    config.libvirt.uri = "test:///default".into();
    let found = homelab::vms::network_collisions(&config).unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .detail
            .contains("libvirt network `default` (active) uses 192.168.122.0/24"),
        "{found:#?}"
    );
    assert!(
        found[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("virsh net-destroy default")
    );
    // Another range: nothing to report.
    config.network.nat_cidr = "192.168.150.0/24".parse().unwrap();
    assert!(
        homelab::vms::network_collisions(&config)
            .unwrap()
            .is_empty()
    );
    // libvirt out of reach: nothing can be said, and nothing hangs.
    config.libvirt.uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock".into();
    assert!(homelab::vms::network_collisions(&config).is_none());
}
