//! keeld's virtual networking on the real kernel, natively: keeld runs in a
//! network namespace of the test's own (see `e2e::private_netns`) and
//! creates its bridges, NAT rules and TAPs there; VMs are payload guests
//! (the NIC is a real virtio-net device on a real TAP, which the payload
//! does not drive — what the guest sees is tested in the rig).

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{native_kvm, Keeld, Payload};

fn payload() -> String {
    xtask::payload::build(Payload::Echo)
        .expect("building the payload")
        .display()
        .to_string()
}

/// `ip -o link show …` in the test's namespace.
fn ip_link(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .args(args)
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `keel` as admin, expecting failure: its one-line error.
fn keel_err(k: &Keeld, args: &[&str]) -> String {
    let out = k.keel("admin", e2e::ADMIN_PASSWORD, args);
    assert!(!out.status.success(), "keel {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn default_network_vm_taps_and_restarts() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("network");
    // The default network: vSwitch0 (bridge keelbr1) with NAT and DHCP.
    let sws = k.keel_ok(&["network", "switch", "list"]);
    assert!(sws.contains("vSwitch0") && sws.contains("keelbr1"), "{sws}");
    assert!(
        sws.contains("10.77.0.0/24 +DHCP") && sws.contains(" up"),
        "{sws}"
    );
    let addr = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", "keelbr1"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains("10.77.0.1/24"),
        "the gateway address on the bridge"
    );
    let nft = Command::new("nft")
        .args(["list", "table", "inet", "keel"])
        .output()
        .expect("running nft");
    let rules = String::from_utf8_lossy(&nft.stdout);
    assert!(rules.contains("masquerade"), "NAT rules: {rules}");

    // Bad input: one line each, nothing made.
    assert!(keel_err(
        &k,
        &["network", "portgroup", "create", "p", "--vlan", "4095"]
    )
    .contains("4095"));
    assert!(keel_err(&k, &["network", "switch", "create", "vSwitch0"]).contains("already exists"));
    assert!(keel_err(
        &k,
        &[
            "network",
            "switch",
            "create",
            "s1",
            "--uplink",
            "nonexistent0"
        ]
    )
    .contains("does not exist"));
    assert!(keel_err(
        &k,
        &["network", "switch", "create", "s1", "--nat", "10.77.0.0/16"]
    )
    .contains("overlaps"));
    assert!(!link_exists("keelbr2"), "no half-made switch");

    // A VM on VM Network: its TAP exists while it runs, on keelbr1.
    let kernel = payload();
    k.keel_ok(&[
        "vm",
        "create",
        "web",
        "--kernel",
        &kernel,
        "--memory",
        "32M",
        "--nic",
        "VM Network",
        "--start",
    ]);
    let nics = k.keel_ok(&["--json", "vm", "nic", "list", "web"]);
    let nics: serde_json::Value = serde_json::from_str(&nics).unwrap();
    let tap = nics[0]["tap"]
        .as_str()
        .expect("a TAP while running")
        .to_string();
    let mac = nics[0]["mac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("02:4b:"), "{mac}");
    let on_bridge = ip_link(&["master", "keelbr1"]);
    assert!(on_bridge.contains(&format!("{tap}:")), "{on_bridge}");
    // A port group in use stays.
    assert!(keel_err(&k, &["network", "portgroup", "delete", "VM Network"]).contains("in use"));
    // Disconnect and connect while running.
    k.keel_ok(&["vm", "nic", "disconnect", "web", "0"]);
    let show = k.keel_ok(&["vm", "show", "web"]);
    assert!(show.contains("disconnected"), "{show}");
    k.keel_ok(&["vm", "nic", "connect", "web", "0"]);

    // keeld killed and restarted: the VM and its TAP are kept.
    let state = k.stop_with(libc::SIGKILL);
    let k = Keeld::start_in(state);
    assert!(link_exists(&tap), "the running VM keeps its TAP");
    let show = k.keel_ok(&["vm", "show", "web"]);
    assert!(show.contains("poweredOn") && show.contains(&tap), "{show}");
    // Powering off removes it.
    k.keel_ok(&["vm", "stop", "web"]);
    wait_for("the TAP to go", Duration::from_secs(10), || {
        !link_exists(&tap)
    });

    // "Host reboot": the bridge is gone while keeld is down; keeld makes it
    // again.
    let state = k.stop_with(libc::SIGTERM);
    let del = Command::new("ip")
        .args(["link", "del", "keelbr1"])
        .status()
        .unwrap();
    assert!(del.success());
    let k = Keeld::start_in(state);
    assert!(link_exists("keelbr1"), "the bridge is back");
    let events = k.keel_ok(&["event", "list", "--limit", "100"]);
    assert!(events.contains("was missing and was recreated"), "{events}");
    k.keel_ok(&["vm", "start", "web"]);
    let on_bridge = ip_link(&["master", "keelbr1"]);
    assert!(on_bridge.contains(&format!("{tap}:")), "{on_bridge}");
    k.keel_ok(&["vm", "stop", "web"]);
}
