//! Per-NIC policies in a real guest, in the rig: the link state set over
//! the control socket (`nic-link`) is what the guest's driver shows as its
//! carrier, and a NIC with `forged-transmits=reject` lets nothing out once
//! the guest changed its MAC, while a NIC that accepts them keeps working.
//!
//! L1 makes two persistent TAPs with addresses (the host side of each NIC);
//! keel-vmm attaches to them; a driver script in L1 talks to keel-vmm's
//! control socket with `keel-api-client` while the guest prints what it
//! sees. Everything lives and dies with L1.

use std::path::Path;

use e2e::LinuxVm;
use vmm_api::Reply;

/// The guest: both NICs up, ping the host through each; wait for the
/// carrier of eth0 to drop and come back; then change both MACs and ping
/// again; at the end wait for eth1's carrier to drop (the driver's sign
/// that it has read the counters). Terse: it travels on the kernel command
/// line.
const GUEST: &str = r#"
r(){ n=$1;shift;i=0;until "$@";do i=$((i+1));[ $i -ge $n ]&&return 1;sleep 1;done;}
w(){ i=0;while [ "$(cat /sys/class/net/${2:-eth0}/carrier)" = $1 ]&&[ $i -lt 600 ];do sleep 0.1;i=$((i+1));done;}
p(){ ping -c3 -W2 $1|grep -o '[0-9]* packets received'|cut -d' ' -f1;}
m(){ ip link set $1 down;ip link set $1 address $2;ip link set $1 up;}
ip link set lo up
ip link set eth0 up;ip addr add 10.0.5.2/24 dev eth0
ip link set eth1 up;ip addr add 10.0.6.2/24 dev eth1
r 60 ping -c1 -W1 10.0.5.1 >/dev/null;r 60 ping -c1 -W1 10.0.6.1 >/dev/null
echo P0=$(p 10.0.5.1)
echo P1=$(p 10.0.6.1)
echo C0=$(cat /sys/class/net/eth0/carrier)
echo LINK_READY
w 1
echo CDOWN=$(cat /sys/class/net/eth0/carrier)
echo LINK_SAW_DOWN
w 0
echo CUP=$(cat /sys/class/net/eth0/carrier)
r 30 ping -c1 -W1 10.0.5.1 >/dev/null
echo PUP=$(p 10.0.5.1)
m eth0 02:6b:65:00:01:00;m eth1 02:6b:65:00:01:01
echo M0=$(cat /sys/class/net/eth0/address)
r 15 ping -c1 -W1 10.0.6.1 >/dev/null
echo F1=$(p 10.0.6.1)
echo F0=$(p 10.0.5.1)
echo GUEST_DONE
w 1 eth1
"#;

const L1_BEFORE: &str = r#"
[ -d /sys/module/tun ] || insmod /rig-net/tun.ko
ip tuntap add dev kpa mode tap && ip addr add 10.0.5.1/24 dev kpa && ip link set kpa up
ip tuntap add dev kpb mode tap && ip addr add 10.0.6.1/24 dev kpb && ip link set kpb up
"#;

const DRIVER: &str = r#"
c=keel-api-client; s=api.sock
fail() { echo "DRIVER_FAILED=$*"; $c $s stop; exit 1; }
seen() { n=0; until grep -q "$1" "$out"; do sleep 0.5; n=$((n+1)); [ $n -lt 600 ] || fail "the guest never printed $1"; done; }
$c $s wait || exit 1
seen LINK_READY
echo DOWN=$($c $s nic-link net0 down)
echo COUNTERS_DOWN=$($c $s counters)
seen LINK_SAW_DOWN
echo UP=$($c $s nic-link net0 up)
echo NO_NIC=$($c $s nic-link net9 down)
seen GUEST_DONE
echo COUNTERS_END=$($c $s counters)
# The guest powers off once it sees eth1's carrier drop: after the read.
$c $s nic-link net1 down >/dev/null
"#;

fn api_client() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keel-api-client"))
}

#[test]
fn nic_link_drops_the_guests_carrier_and_forged_transmits_are_rejected() {
    if e2e::linux_runner().is_none() {
        return;
    }
    let g = xtask::guest::build().expect("building the test guest");
    let modules = xtask::guest::module_index(&g.kernel_root, &g.kernel_release)
        .expect("the kernel package's modules");
    let tun = modules.get("tun").expect("tun.ko in the kernel package");
    let Some(out) = LinuxVm::new()
        .cmd(GUEST)
        .rig_file(tun, "/rig-net/tun.ko")
        .l1_before(L1_BEFORE)
        .arg("--net")
        .arg("tap=kpa,mac=02:6b:65:00:00:0a,forged-transmits=reject,mac-changes=reject")
        .arg("--net")
        .arg("tap=kpb,mac=02:6b:65:00:00:0b")
        .arg("--api-socket")
        .arg("api.sock")
        .run_with_driver(DRIVER, &[api_client()])
    else {
        return;
    };
    let guest = |name: &str| out.vm.value(name).unwrap_or_default();
    let driver = |name: &str| out.value(name).unwrap_or_default();
    let dump = out.dump();
    assert_eq!(out.vm.status, Some(0), "{dump}");
    assert_eq!(out.value("DRIVER_FAILED"), None, "{dump}");
    // Both NICs work with their own MACs.
    assert_eq!(
        (guest("P0"), guest("P1")),
        ("3".into(), "3".into()),
        "{dump}"
    );
    // nic-link down: the guest's carrier goes 1 → 0, and back.
    assert_eq!(guest("C0"), "1", "{dump}");
    assert_eq!(driver("DOWN"), "\"done\"", "{dump}");
    assert!(
        driver("COUNTERS_DOWN").contains("\"link_up\":false"),
        "{dump}"
    );
    assert_eq!(guest("CDOWN"), "0", "carrier after nic-link down: {dump}");
    assert_eq!(driver("UP"), "\"done\"", "{dump}");
    assert_eq!(guest("CUP"), "1", "carrier after nic-link up: {dump}");
    assert_eq!(guest("PUP"), "3", "ping after the link came back: {dump}");
    assert!(driver("NO_NIC").contains("no-device"), "{dump}");
    // A changed MAC: the NIC that rejects forged transmits lets nothing
    // out, the one that accepts them goes on.
    assert_eq!(guest("M0"), "02:6b:65:00:01:00", "{dump}");
    assert_eq!(guest("F1"), "3", "accepting NIC after a MAC change: {dump}");
    assert_eq!(guest("F0"), "0", "rejecting NIC after a MAC change: {dump}");
    let counters: Reply =
        serde_json::from_str(&driver("COUNTERS_END")).unwrap_or_else(|e| panic!("{e}: {dump}"));
    let Reply::Counters(c) = counters else {
        panic!("not counters: {dump}")
    };
    assert!(c.nics[0].tx_forged > 0, "{dump}");
    assert_eq!(c.nics[1].tx_forged, 0, "{dump}");
    assert!(c.nics[0].link_up && c.nics[1].link_up, "{dump}");
}
