//! Integration tests on real bridges, TAPs, veths, nftables and a DHCP
//! client, each inside a network namespace the test creates for itself (a
//! thread that unshares its network namespace). Everything a test creates
//! lives in that namespace and disappears with it when the thread ends,
//! also when the test fails.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use net::dhcp::{DhcpConfig, DhcpServer, ServerOptions};
use net::nat::{self, NatError, NatNetwork};
use net::port::{self, PortError, PortSpec};
use net::switch::{self, SwitchError, SwitchSpec};
use net::{Mac, Netlink};

/// Runs `f` on a thread in a new network namespace (loopback up). Returns
/// false, after printing SKIPPED, when namespaces cannot be made here.
fn in_netns<F: FnOnce(&Netlink) + Send + 'static>(test: &str, f: F) -> bool {
    let test = test.to_string();
    let t = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's
        // network namespace; no memory is involved.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            println!(
                "SKIPPED ({test}: cannot create a network namespace: {})",
                std::io::Error::last_os_error()
            );
            return false;
        }
        let nl = Netlink::new().expect("netlink socket");
        let lo = nl.link("lo").unwrap().unwrap();
        nl.set_up(lo.index, true).unwrap();
        f(&nl);
        true
    });
    match t.join() {
        Ok(ran) => ran,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn spec(ifname: &str, uplinks: &[&str]) -> SwitchSpec {
    SwitchSpec {
        ifname: ifname.into(),
        label: format!("label-{ifname}"),
        mtu: 1500,
        uplinks: uplinks.iter().map(|s| s.to_string()).collect(),
    }
}

fn port_spec(name: &str, bridge: &str, vlan: u16) -> PortSpec {
    PortSpec {
        name: name.into(),
        label: format!("vm/{name}"),
        bridge: bridge.into(),
        vlan,
        owner: None,
        up: true,
    }
}

fn vlan_filtering_works(nl: &Netlink, test: &str) -> bool {
    let br = switch::get(nl, "kbr0").unwrap();
    if !br.vlan_filtering {
        println!("SKIPPED ({test}: this kernel has no bridge VLAN filtering)");
        return false;
    }
    true
}

#[test]
fn switch_lifecycle_uplinks_and_ensure() {
    in_netns("switch lifecycle", |nl| {
        nl.add_veth("up0", "up0p").unwrap();
        nl.add_veth("up1", "up1p").unwrap();
        let info = switch::create(nl, &spec("kbr0", &["up0"])).unwrap();
        assert_eq!(info.label, "label-kbr0");
        assert_eq!(info.uplinks, vec!["up0".to_string()]);
        assert!(info.up && info.mtu == 1500);
        assert_eq!(switch::list(nl).unwrap(), vec![info.clone()]);

        // Bad input.
        assert!(matches!(
            switch::create(nl, &spec("kbr0", &[])),
            Err(SwitchError::Exists(_))
        ));
        let mut s = spec("kbr1", &[]);
        s.mtu = 9001;
        assert!(matches!(
            switch::create(nl, &s),
            Err(SwitchError::Mtu(9001))
        ));
        assert!(matches!(
            switch::create(nl, &spec("kbr1", &["nope0"])),
            Err(SwitchError::UplinkMissing(_))
        ));
        assert!(
            matches!(switch::create(nl, &spec("kbr1", &["up0"])), Err(SwitchError::UplinkEnslaved(u, b)) if u == "up0" && b == "kbr0")
        );
        assert!(matches!(
            switch::add_uplink(nl, "kbr0", "kbr0"),
            Err(SwitchError::UplinkInvalid(..))
        ));
        assert!(matches!(
            switch::add_uplink(nl, "kbr0", "lo"),
            Err(SwitchError::UplinkInvalid(..))
        ));
        assert!(matches!(
            switch::create(nl, &spec("bad name", &[])),
            Err(SwitchError::Name(_))
        ));
        assert!(
            nl.link("kbr1").unwrap().is_none(),
            "a failed create leaves nothing behind"
        );

        // MTU, link state, uplinks.
        switch::set_mtu(nl, "kbr0", 9000).unwrap();
        assert_eq!(nl.link("up0").unwrap().unwrap().mtu, 9000);
        switch::set_up(nl, "kbr0", false).unwrap();
        assert!(!switch::get(nl, "kbr0").unwrap().up);
        switch::add_uplink(nl, "kbr0", "up1").unwrap();
        switch::remove_uplink(nl, "kbr0", "up0").unwrap();
        assert_eq!(
            switch::get(nl, "kbr0").unwrap().uplinks,
            vec!["up1".to_string()]
        );
        assert!(matches!(
            switch::remove_uplink(nl, "kbr0", "up0"),
            Err(SwitchError::NotUplink(..))
        ));

        // ensure: fixes what drifted, keeps the rest.
        let mut want = spec("kbr0", &["up0", "up1"]);
        want.mtu = 1500;
        let rep = switch::ensure(nl, &want).unwrap();
        assert!(!rep.created);
        assert_eq!(rep.uplinks_added, vec!["up0".to_string()]);
        assert!(
            rep.changed.contains(&"mtu".to_string()) && rep.changed.contains(&"up".to_string())
        );
        let rep = switch::ensure(nl, &want).unwrap();
        assert_eq!(rep, Default::default(), "a second ensure changes nothing");

        // Host reboot: the bridge is gone; ensure recreates it.
        switch::delete(nl, "kbr0").unwrap();
        assert!(nl.link("kbr0").unwrap().is_none());
        assert!(
            nl.link("up0").unwrap().unwrap().master.is_none(),
            "uplinks stay on the host"
        );
        let rep = switch::ensure(nl, &want).unwrap();
        assert!(rep.created);
        let info = switch::get(nl, "kbr0").unwrap();
        assert_eq!(info.uplinks.len(), 2);

        // A bridge Keel did not create is left alone.
        nl.add_veth("fx0", "fx0p").unwrap();
        let out = Command::new("ip")
            .args(["link", "add", "foreign0", "type", "bridge"])
            .status();
        if out.is_ok_and(|s| s.success()) {
            assert!(matches!(
                switch::delete(nl, "foreign0"),
                Err(SwitchError::NotOwned(_))
            ));
            assert!(matches!(
                switch::ensure(nl, &spec("foreign0", &[])),
                Err(SwitchError::NotOwned(_))
            ));
            assert!(matches!(
                switch::add_uplink(nl, "foreign0", "fx0"),
                Err(SwitchError::NotOwned(_))
            ));
            assert!(switch::list(nl)
                .unwrap()
                .iter()
                .all(|s| s.ifname != "foreign0"));
        }
    });
}

#[test]
fn tap_ports_untagged_and_leftovers() {
    in_netns("tap ports", |nl| {
        switch::create(nl, &spec("kbr0", &[])).unwrap();
        let a = port::create(nl, &port_spec("kt1n0", "kbr0", 0)).unwrap();
        let b = port::create(nl, &port_spec("kt2n0", "kbr0", 0)).unwrap();
        assert_eq!(a.bridge.as_deref(), Some("kbr0"));
        assert_eq!(a.label, "vm/kt1n0");
        assert!(a.up && b.up);
        let sw = switch::get(nl, "kbr0").unwrap();
        assert_eq!(sw.ports, ["kt1n0", "kt2n0"]);
        assert!(sw.uplinks.is_empty());
        port::set_link(nl, "kt1n0", false).unwrap();
        assert!(!port::get(nl, "kt1n0").unwrap().up);
        port::detach(nl, "kt2n0").unwrap();
        assert_eq!(port::get(nl, "kt2n0").unwrap().bridge, None);
        port::attach(nl, "kt2n0", "kbr0", 0).unwrap();
        assert_eq!(
            port::get(nl, "kt2n0").unwrap().bridge.as_deref(),
            Some("kbr0")
        );

        // Bad input.
        assert!(matches!(
            port::create(nl, &port_spec("kt1n0", "kbr0", 0)),
            Err(PortError::Exists(_))
        ));
        assert!(matches!(
            port::create(nl, &port_spec("tap9", "kbr0", 0)),
            Err(PortError::Name(_))
        ));
        assert!(matches!(
            port::create(nl, &port_spec("kt9", "nobr", 0)),
            Err(PortError::Switch(_))
        ));
        if !switch::get(nl, "kbr0").unwrap().vlan_filtering {
            assert!(matches!(
                port::create(nl, &port_spec("kt9", "kbr0", 10)),
                Err(PortError::NoVlanFiltering(_))
            ));
            assert!(nl.link("kt9").unwrap().is_none());
        }
        nl.add_veth("kt8", "kt8p").unwrap();
        assert!(matches!(
            port::delete(nl, "kt8"),
            Err(PortError::NotOwned(_))
        ));

        // Leftovers after a crash: listed, then deleted; deleting twice is fine.
        let mut names: Vec<_> = port::list(nl)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        names.sort();
        assert_eq!(names, ["kt1n0", "kt2n0"]);
        for n in &names {
            port::delete(nl, n).unwrap();
            port::delete(nl, n).unwrap();
        }
        assert!(port::list(nl).unwrap().is_empty());
        assert!(switch::get(nl, "kbr0").unwrap().ports.is_empty());
    });
}

#[test]
fn tap_ports_on_vlans() {
    in_netns("tap ports on VLANs", |nl| {
        nl.add_veth("up0", "up0p").unwrap();
        switch::create(nl, &spec("kbr0", &["up0"])).unwrap();
        if !vlan_filtering_works(nl, "tap ports on VLANs (needs the rig's L1 kernel)") {
            return;
        }
        let a = port::create(nl, &port_spec("kt1n0", "kbr0", 10)).unwrap();
        let b = port::create(nl, &port_spec("kt2n0", "kbr0", 20)).unwrap();
        let c = port::create(nl, &port_spec("kt3n0", "kbr0", 0)).unwrap();
        assert_eq!((a.pvid, b.pvid, c.pvid), (Some(10), Some(20), Some(1)));
        // Only the port's own VLAN, untagged; the default VLAN 1 is gone.
        let v = nl.port_vlans(a.index).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].vid == 10 && v[0].pvid && v[0].untagged);
        // The uplink is a trunk: VLAN 1 untagged, 2-4094 tagged.
        let up = nl.link("up0").unwrap().unwrap();
        let t = nl.port_vlans(up.index).unwrap();
        assert!(t.iter().any(|v| v.vid == 1 && v.pvid));
        assert!(t.iter().any(|v| v.vid == 10 && !v.untagged));
        // Moving a port to another VLAN.
        port::set_vlan(nl, "kt1n0", 20).unwrap();
        assert_eq!(port::get(nl, "kt1n0").unwrap().pvid, Some(20));
        assert_eq!(nl.port_vlans(a.index).unwrap().len(), 1);
        port::set_vlan(nl, "kt1n0", 0).unwrap();
        assert_eq!(port::get(nl, "kt1n0").unwrap().pvid, Some(1));
    });
}

#[test]
fn tap_is_persistent_and_openable_by_name() {
    in_netns("persistent tap", |nl| {
        switch::create(nl, &spec("kbr0", &[])).unwrap();
        port::create(nl, &port_spec("kt5n0", "kbr0", 0)).unwrap();
        // The creating fd is closed: the TAP stays, and an attach by name works.
        let tap = virtio_free_attach("kt5n0");
        assert!(tap.is_ok(), "{tap:?}");
        assert!(nl.link("kt5n0").unwrap().is_some());
    });
}

/// Attaches to an existing TAP as keel-vmm does (TUNSETIFF without create).
fn virtio_free_attach(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    #[repr(C)]
    struct Req {
        name: [u8; 16],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let mut r = Req {
        name: [0; 16],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        pad: [0; 22],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads/writes an ifreq-shaped struct that lives across the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut r as *mut Req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn nft_available(test: &str) -> bool {
    if Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    println!("SKIPPED ({test}: the nft command is not installed: apt-get install nftables)");
    false
}

#[test]
fn nat_table_added_and_removed() {
    in_netns("nat", |nl| {
        if !nft_available("NAT table") {
            return;
        }
        switch::create(nl, &spec("kbr0", &[])).unwrap();
        let net = NatNetwork::new("kbr0", "10.77.0.0/24".parse().unwrap());
        nat::setup(nl, std::slice::from_ref(&net)).unwrap();
        let rules = nat::list_rules().unwrap().expect("table inet keel exists");
        assert!(
            rules.contains("masquerade") && rules.contains("10.77.0.0/24"),
            "{rules}"
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );
        let addrs = nl.addresses_v4().unwrap();
        let br = nl.link("kbr0").unwrap().unwrap();
        assert!(addrs.contains(&(br.index, Ipv4Addr::new(10, 77, 0, 1), 24)));
        // Idempotent.
        nat::setup(nl, std::slice::from_ref(&net)).unwrap();
        assert_eq!(nat::list_rules().unwrap().unwrap(), rules);
        // Overlap with the host's own addresses and routes.
        nl.add_veth("h0", "h0p").unwrap();
        let h0 = nl.link("h0").unwrap().unwrap();
        nl.add_address_v4(h0.index, Ipv4Addr::new(10, 88, 3, 4), 16)
            .unwrap();
        nl.set_up(h0.index, true).unwrap();
        let clash = NatNetwork::new("kbr0", "10.88.7.0/24".parse().unwrap());
        let e = nat::setup(nl, &[clash]).unwrap_err();
        assert!(matches!(e, NatError::Overlap { .. }), "{e}");
        assert!(
            e.to_string().contains("10.88.3.4/16") && e.to_string().contains("h0"),
            "{e}"
        );
        let two = [
            net.clone(),
            NatNetwork::new("h0", "10.77.0.0/25".parse().unwrap()),
        ];
        assert!(matches!(
            nat::setup(nl, &two),
            Err(NatError::Overlapping(..))
        ));
        // Removal: the whole table goes, twice is fine.
        nat::teardown(nl, std::slice::from_ref(&net)).unwrap();
        assert!(nat::list_rules().unwrap().is_none());
        nat::teardown(nl, std::slice::from_ref(&net)).unwrap();
        assert!(!nl.addresses_v4().unwrap().iter().any(|a| a.0 == br.index));
    });
}

fn busybox_udhcpc(test: &str) -> bool {
    let ok = Command::new("busybox")
        .arg("udhcpc")
        .arg("--help")
        .output()
        .is_ok_and(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            t.contains("Usage: udhcpc")
        });
    if !ok {
        println!("SKIPPED ({test}: busybox with udhcpc is not installed)");
    }
    ok
}

/// Runs `busybox udhcpc` on `iface` until bound; returns the address it got.
fn udhcpc(dir: &Path, iface: &str) -> Option<Ipv4Addr> {
    let out = dir.join(format!("{iface}.ip"));
    let script = dir.join("script.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $router $dns\" > {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    let st = Command::new("busybox")
        .args([
            "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", iface, "-s",
        ])
        .arg(&script)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&out).ok()?;
    let mut w = text.split_whitespace();
    let ip = w.next()?.parse().ok();
    assert_eq!(
        w.next(),
        Some("10.77.0.1"),
        "router; udhcpc said: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    ip
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-net-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn dhcp_server_leases_to_a_real_client() {
    in_netns("dhcp", |nl| {
        if !busybox_udhcpc("DHCP with a real client") {
            return;
        }
        let dir = temp_dir("dhcp");
        switch::create(nl, &spec("kbr0", &[])).unwrap();
        let br = nl.link("kbr0").unwrap().unwrap();
        nl.add_address_v4(br.index, Ipv4Addr::new(10, 77, 0, 1), 24)
            .unwrap();
        // The client: a veth whose peer is a port of the bridge.
        nl.add_veth("c0", "c0p").unwrap();
        switch::add_uplink(nl, "kbr0", "c0p").unwrap();
        let c0 = nl.link("c0").unwrap().unwrap();
        nl.set_up(c0.index, true).unwrap();
        let client_mac = Mac(c0.mac.unwrap());

        let subnet = "10.77.0.0/24".parse().unwrap();
        let mut cfg = DhcpConfig::new(subnet, Ipv4Addr::new(10, 77, 0, 1));
        cfg.pool_start = Ipv4Addr::new(10, 77, 0, 100);
        let lease_file = dir.join("kbr0.leases.json");
        let (tx, rx) = mpsc::channel();
        let start = |tx: mpsc::Sender<(Mac, Ipv4Addr)>| {
            DhcpServer::start(ServerOptions {
                bridge: "kbr0".into(),
                config: cfg.clone(),
                lease_file: lease_file.clone(),
                on_bind: Some(Box::new(move |m, ip| {
                    let _ = tx.send((m, ip));
                })),
            })
            .unwrap()
        };
        let server = start(tx);
        let ip = udhcpc(&dir, "c0").expect("udhcpc got a lease");
        assert_eq!(ip, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            (client_mac, ip)
        );
        assert_eq!(server.lease_of(client_mac).unwrap().ip, ip);
        let file = std::fs::read_to_string(&lease_file).unwrap();
        assert!(file.contains(&client_mac.to_string()), "{file}");
        server.stop();

        // A restarted server keeps the lease: the client gets the same
        // address, another client another one.
        let (tx, rx) = mpsc::channel();
        let server = start(tx);
        assert_eq!(server.lease_of(client_mac).unwrap().ip, ip);
        assert_eq!(udhcpc(&dir, "c0"), Some(ip));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            (client_mac, ip)
        );
        nl.add_veth("c1", "c1p").unwrap();
        switch::add_uplink(nl, "kbr0", "c1p").unwrap();
        let c1 = nl.link("c1").unwrap().unwrap();
        nl.set_up(c1.index, true).unwrap();
        assert_eq!(udhcpc(&dir, "c1"), Some(Ipv4Addr::new(10, 77, 0, 101)));
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
