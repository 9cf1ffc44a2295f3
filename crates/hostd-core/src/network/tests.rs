use std::sync::Arc;

use hostd_api::{
    Accept, NatCreate, NetPolicy, NicConfig, NicCreate, NicEdit, PortGroupCreate, PortGroupEdit,
    PowerOp, Role, SwitchCreate, SwitchEdit, DEFAULT_PORT_GROUP, DEFAULT_SWITCH,
};

use super::runtime::FakeNet;
use crate::error::ErrorKind;
use crate::fsutil::TestDir;
use crate::host::lock;
use crate::host::testutil::{open_fake_net, options, test_host, TestHost};

fn err_of<T: std::fmt::Debug>(r: crate::Result<T>) -> (ErrorKind, String) {
    let e = r.unwrap_err();
    (e.kind, e.message)
}

fn pg(name: &str, switch: &str, vlan: u32) -> PortGroupCreate {
    PortGroupCreate {
        name: name.into(),
        switch: switch.into(),
        vlan,
        policy: NetPolicy::default(),
    }
}

/// A VM with one NIC on `port_group` (default VM Network).
fn vm_with_nic(t: &TestHost, name: &str, port_group: Option<&str>) {
    let mut spec = t.spec(name);
    spec.nics.push(NicConfig {
        port_group: port_group.map(str::to_string),
        ..NicConfig::default()
    });
    let task = t.host.vm_create(&t.admin, spec).unwrap();
    let done = t
        .host
        .task_wait(&t.admin, task.id, std::time::Duration::from_secs(30))
        .unwrap();
    assert!(done.error.is_none(), "{:?}", done.error);
}

#[test]
fn first_start_makes_the_default_network_and_brings_it_up() {
    let t = test_host("net-default");
    let sws = t.host.switch_list(&t.admin).unwrap();
    assert_eq!(sws.len(), 1);
    let s = &sws[0];
    assert_eq!(s.name, DEFAULT_SWITCH);
    assert_eq!(s.bridge, "keelbr1");
    assert_eq!(s.status, "up");
    let nat = s.nat.as_ref().unwrap();
    assert_eq!(
        (nat.subnet.as_str(), nat.gateway.as_str()),
        ("10.77.0.0/24", "10.77.0.1")
    );
    assert!(nat.dhcp);
    assert_eq!(s.port_groups, vec![DEFAULT_PORT_GROUP.to_string()]);
    assert!(lock(&t.net.bridges).contains_key("keelbr1"));
    let nat = lock(&t.net.nat).clone();
    assert_eq!(nat.len(), 1);
    assert!(nat[0].dhcp);
    let pgs = t.host.portgroup_list(&t.admin).unwrap();
    assert_eq!(pgs[0].vlan, 0);
    assert_eq!(pgs[0].policy.promiscuous, Accept::Reject);
    assert!(t.event_kinds().contains(&"network.initialized".to_string()));
}

#[test]
fn the_default_subnet_avoids_the_hosts_networks_and_deleting_it_sticks() {
    let dir = TestDir::new("net-default-overlap");
    let net = Arc::new(FakeNet::default());
    lock(&net.host_subnets).push("10.0.0.0/8".parse().unwrap());
    let (opened, _fake) = open_fake_net(options(dir.path()), net.clone()).unwrap();
    let host = opened.host;
    let admin = crate::Caller {
        user: "admin".into(),
    };
    let s = host.switch_get(&admin, DEFAULT_SWITCH).unwrap();
    assert_eq!(s.nat.unwrap().subnet, "172.31.77.0/24");
    host.portgroup_delete(&admin, DEFAULT_PORT_GROUP).unwrap();
    host.switch_delete(&admin, DEFAULT_SWITCH).unwrap();
    assert!(lock(&net.bridges).is_empty());
    assert!(lock(&net.nat).is_empty());
    drop(host);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (opened, _fake) = open_fake_net(options(dir.path()), net).unwrap();
    assert!(opened.host.switch_list(&admin).unwrap().is_empty());
}

#[test]
fn a_bad_vm_network_subnet_option_is_refused() {
    let dir = TestDir::new("net-default-bad");
    let mut opts = options(dir.path());
    opts.vm_network_subnet = Some("10.1.2.3/33".into());
    let e = open_fake_net(opts, Arc::new(FakeNet::default()))
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::BadRequest, "{}", e.message);
    assert!(e.message.contains("VM network subnet"), "{}", e.message);
}

#[test]
fn switch_requests_are_checked() {
    let t = test_host("net-switch-bad");
    lock(&t.net.host_nics).extend(["eth1".to_string(), "eth2".to_string()]);
    lock(&t.net.host_subnets).push("192.168.1.0/24".parse().unwrap());
    let create = |name: &str, f: &dyn Fn(&mut SwitchCreate)| {
        let mut req = SwitchCreate {
            name: name.into(),
            ..Default::default()
        };
        f(&mut req);
        t.host.switch_create(&t.admin, req)
    };
    let cases: Vec<(crate::Result<hostd_api::Switch>, ErrorKind, &str)> = vec![
        (
            create(DEFAULT_SWITCH, &|_| {}),
            ErrorKind::Conflict,
            "already exists",
        ),
        (create("", &|_| {}), ErrorKind::BadRequest, "name"),
        (
            create("s", &|r| r.mtu = Some(10)),
            ErrorKind::BadRequest,
            "MTU 10",
        ),
        (
            create("s", &|r| r.mtu = Some(9001)),
            ErrorKind::BadRequest,
            "MTU 9001",
        ),
        (
            create("s", &|r| r.uplinks = vec!["eth9".into()]),
            ErrorKind::BadRequest,
            "eth9 does not exist",
        ),
        (
            create("s", &|r| r.uplinks = vec!["eth1".into(), "eth1".into()]),
            ErrorKind::BadRequest,
            "twice",
        ),
        (
            create("s", &|r| {
                r.nat = Some(NatCreate {
                    subnet: "10.77.0.128/25".into(),
                    dhcp: true,
                })
            }),
            ErrorKind::Conflict,
            "vSwitch0",
        ),
        (
            create("s", &|r| {
                r.nat = Some(NatCreate {
                    subnet: "192.168.0.0/16".into(),
                    dhcp: true,
                })
            }),
            ErrorKind::Conflict,
            "overlaps",
        ),
        (
            create("s", &|r| {
                r.nat = Some(NatCreate {
                    subnet: "10.1.0.0/31".into(),
                    dhcp: true,
                })
            }),
            ErrorKind::BadRequest,
            "10.1.0.0/31",
        ),
        (
            create("s", &|r| {
                r.nat = Some(NatCreate {
                    subnet: "banana".into(),
                    dhcp: true,
                })
            }),
            ErrorKind::BadRequest,
            "banana",
        ),
    ];
    for (r, kind, needle) in cases {
        let (k, m) = err_of(r);
        assert_eq!(k, kind, "{m}");
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    }
    // Nothing half-made: only vSwitch0 in the inventory and the kernel.
    assert_eq!(t.host.switch_list(&t.admin).unwrap().len(), 1);
    assert_eq!(lock(&t.net.bridges).len(), 1);

    let s1 = create("vSwitch1", &|r| {
        r.uplinks = vec!["eth1".into()];
        r.mtu = Some(9000);
    })
    .unwrap();
    assert_eq!(
        (s1.mtu, s1.uplinks.clone()),
        (9000, vec!["eth1".to_string()])
    );
    assert_eq!(lock(&t.net.bridges)[&s1.bridge].uplinks, vec!["eth1"]);
    let (k, m) = err_of(create("vSwitch2", &|r| r.uplinks = vec!["eth1".into()]));
    assert_eq!(k, ErrorKind::Conflict, "{m}");
    assert!(m.contains("already used by switch vSwitch1"), "{m}");
    let s = t
        .host
        .switch_edit(
            &t.admin,
            "vSwitch1",
            SwitchEdit {
                mtu: Some(1500),
                uplinks: Some(vec!["eth2".into()]),
            },
        )
        .unwrap();
    assert_eq!((s.mtu, s.uplinks), (1500, vec!["eth2".to_string()]));
    assert_eq!(lock(&t.net.bridges)[&s1.bridge].uplinks, vec!["eth2"]);
    let kinds = t.event_kinds();
    assert!(kinds.contains(&"network.switch-created".to_string()));
    assert!(kinds.contains(&"network.switch-reconfigured".to_string()));
    // Read-only users see switches but cannot change them.
    let ro = t.user("viewer", Some(Role::ReadOnly));
    assert_eq!(t.host.switch_list(&ro).unwrap().len(), 2);
    let (k, m) = err_of(t.host.switch_delete(&ro, "vSwitch1"));
    assert_eq!(k, ErrorKind::Forbidden, "{m}");
    t.host.switch_delete(&t.admin, "vSwitch1").unwrap();
    assert!(!lock(&t.net.bridges).contains_key(&s1.bridge));
}

#[test]
fn port_groups_are_checked_and_in_use_ones_stay() {
    let t = test_host("net-pg");
    let (k, m) = err_of(
        t.host
            .portgroup_create(&t.admin, pg("p", DEFAULT_SWITCH, 4095)),
    );
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    assert!(m.contains("4095"), "{m}");
    let (k, _) = err_of(t.host.portgroup_create(&t.admin, pg("p", "nope", 0)));
    assert_eq!(k, ErrorKind::NotFound);
    let (k, m) = err_of(
        t.host
            .portgroup_create(&t.admin, pg(DEFAULT_PORT_GROUP, DEFAULT_SWITCH, 0)),
    );
    assert_eq!(k, ErrorKind::Conflict, "{m}");
    let mut bad = pg("p", DEFAULT_SWITCH, 0);
    bad.policy.shaping = Some(hostd_api::Shaping {
        average_kbps: 1000,
        peak_kbps: Some(10),
        burst_kib: None,
    });
    let (k, m) = err_of(t.host.portgroup_create(&t.admin, bad));
    assert_eq!(k, ErrorKind::BadRequest, "{m}");
    *lock(&t.net.no_vlan_filtering) = true;
    let (k, m) = err_of(
        t.host
            .portgroup_create(&t.admin, pg("v10", DEFAULT_SWITCH, 10)),
    );
    assert_eq!(k, ErrorKind::Conflict, "{m}");
    assert!(m.contains("VLAN filtering"), "{m}");
    *lock(&t.net.no_vlan_filtering) = false;
    let p = t
        .host
        .portgroup_create(&t.admin, pg("v10", DEFAULT_SWITCH, 10))
        .unwrap();
    assert_eq!((p.vlan, p.switch.as_str()), (10, DEFAULT_SWITCH));

    vm_with_nic(&t, "web", Some("v10"));
    let (k, m) = err_of(t.host.portgroup_delete(&t.admin, "v10"));
    assert_eq!(k, ErrorKind::Conflict, "{m}");
    assert!(m.contains("in use by VM web"), "{m}");
    let (k, m) = err_of(t.host.switch_delete(&t.admin, DEFAULT_SWITCH));
    assert_eq!(k, ErrorKind::Conflict, "{m}");
    assert!(m.contains("port groups"), "{m}");
    assert_eq!(
        t.host.portgroup_get(&t.admin, "v10").unwrap().vms,
        vec!["web".to_string()]
    );
    // A VM on a port group that does not exist cannot be created.
    let mut spec = t.spec("db");
    spec.nics.push(NicConfig {
        port_group: Some("nope".into()),
        ..NicConfig::default()
    });
    let (k, _) = err_of(t.host.vm_create(&t.admin, spec));
    assert_eq!(k, ErrorKind::NotFound);
}

#[test]
fn a_nic_gets_a_unique_mac_and_a_tap_while_the_vm_runs() {
    let t = test_host("net-nic");
    vm_with_nic(&t, "web", None);
    let info = t.host.vm_get(&t.admin, "web").unwrap();
    let nic = &info.nics[0];
    assert_eq!(nic.port_group.as_deref(), Some(DEFAULT_PORT_GROUP));
    assert!(nic.mac.starts_with("02:4b:"), "{}", nic.mac);
    assert!(nic.connected && nic.tap.is_none());
    // The same MAC for another VM is refused.
    let mut spec = t.spec("db");
    spec.nics.push(NicConfig {
        mac: Some(nic.mac.to_uppercase()),
        ..NicConfig::default()
    });
    let (k, m) = err_of(t.host.vm_create(&t.admin, spec));
    assert_eq!(k, ErrorKind::Conflict, "{m}");
    assert!(m.contains("already used"), "{m}");

    t.power(&t.admin, "web", PowerOp::On).unwrap();
    let id = lock(&t.fake.starts)[0].0;
    let tap = format!("kt{id}n0");
    let made = lock(&t.net.taps)[&tap].clone();
    assert_eq!((made.bridge.as_str(), made.vlan), ("keelbr1", 0));
    let nets = lock(&t.fake.nets)[&id].clone();
    assert_eq!(
        nets,
        vec![format!(
            "tap={tap},mac={},link=up,promiscuous=reject,mac-changes=accept,forged-transmits=accept",
            nic.mac
        )]
    );
    *lock(&t.net.leases)
        .entry(nic.mac.parse().unwrap())
        .or_insert([0; 4].into()) = "10.77.0.23".parse().unwrap();
    let info = t.host.vm_get(&t.admin, "web").unwrap();
    assert_eq!(info.nics[0].tap.as_deref(), Some(tap.as_str()));
    assert_eq!(info.ip.as_deref(), Some("10.77.0.23"));

    // Disconnect while running: the VMM is told, the config remembers.
    let n = t
        .host
        .vm_nic_edit(
            &t.admin,
            "web",
            0,
            NicEdit {
                connected: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!n.connected);
    assert_eq!(
        lock(&t.fake.links).clone(),
        vec![(id, "net0".to_string(), false)]
    );
    // Move to another port group while running: the TAP moves.
    t.host
        .portgroup_create(&t.admin, pg("v20", DEFAULT_SWITCH, 20))
        .unwrap();
    t.host
        .vm_nic_edit(
            &t.admin,
            "web",
            0,
            NicEdit {
                port_group: Some("v20".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(lock(&t.net.taps)[&tap].vlan, 20);
    t.host
        .portgroup_edit(
            &t.admin,
            "v20",
            PortGroupEdit {
                vlan: Some(30),
                policy: None,
            },
        )
        .unwrap();
    assert_eq!(lock(&t.net.taps)[&tap].vlan, 30);
    // Adding, removing and changing MACs need the VM off.
    let (k, _) = err_of(t.host.vm_nic_add(&t.admin, "web", NicCreate::default()));
    assert_eq!(k, ErrorKind::Conflict);
    let (k, _) = err_of(t.host.vm_nic_remove(&t.admin, "web", 0));
    assert_eq!(k, ErrorKind::Conflict);

    t.power(&t.admin, "web", PowerOp::Off).unwrap();
    assert!(lock(&t.net.taps).is_empty(), "the TAP goes with the VMM");
    let cfg = t.host.vm_get(&t.admin, "web").unwrap().config;
    assert_eq!(cfg.nics[0].port_group.as_deref(), Some("v20"));
    assert!(!cfg.nics[0].connected);
    let added = t
        .host
        .vm_nic_add(&t.admin, "web", NicCreate::default())
        .unwrap();
    assert_eq!(added.index, 1);
    assert_ne!(added.mac, nic.mac);
    let (k, _) = err_of(t.host.vm_nic_edit(
        &t.admin,
        "web",
        1,
        NicEdit {
            mac: Some(nic.mac.clone()),
            ..Default::default()
        },
    ));
    assert_eq!(k, ErrorKind::Conflict);
    let (k, _) = err_of(t.host.vm_nic_remove(&t.admin, "web", 5));
    assert_eq!(k, ErrorKind::NotFound);
    t.host.vm_nic_remove(&t.admin, "web", 0).unwrap();
    assert_eq!(t.host.vm_nics(&t.admin, "web").unwrap().len(), 1);
    // A disconnected NIC starts with its link down.
    t.host
        .vm_nic_edit(
            &t.admin,
            "web",
            0,
            NicEdit {
                connected: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    t.power(&t.admin, "web", PowerOp::On).unwrap();
    assert!(lock(&t.fake.nets)[&id][0].contains(",link=down,"));
}

#[test]
fn a_restart_recreates_missing_bridges_and_removes_stale_taps() {
    let dir = TestDir::new("net-restart");
    let net = Arc::new(FakeNet::default());
    let (opened, _fake) = open_fake_net(options(dir.path()), net.clone()).unwrap();
    drop(opened);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // "Host reboot": bridges gone; a TAP of a VM that no longer runs.
    lock(&net.bridges).clear();
    lock(&net.taps).insert(
        "kt9n0".into(),
        super::runtime::TapSpec {
            tap: "kt9n0".into(),
            label: String::new(),
            bridge: "keelbr1".into(),
            vlan: 0,
            up: true,
        },
    );
    let (opened, _fake) = open_fake_net(options(dir.path()), net.clone()).unwrap();
    assert!(lock(&net.bridges).contains_key("keelbr1"));
    assert!(lock(&net.taps).is_empty());
    let events = opened
        .host
        .event_list(
            &crate::Caller {
                user: "admin".into(),
            },
            None,
            100,
            None,
        )
        .unwrap();
    assert!(events
        .items
        .iter()
        .any(|e| e.kind == "network.switch-recreated"));
}

#[test]
fn keelds_own_interface_names_are_not_for_vms() {
    let t = test_host("net-reserved-tap");
    for tap in ["kt1n0", "keelbr1"] {
        let mut spec = t.spec("web");
        spec.nics.push(NicConfig {
            tap: Some(tap.into()),
            ..NicConfig::default()
        });
        let (k, m) = err_of(t.host.vm_create(&t.admin, spec));
        assert_eq!(k, ErrorKind::BadRequest, "{m}");
        assert!(m.contains("reserved"), "{m}");
    }
}
