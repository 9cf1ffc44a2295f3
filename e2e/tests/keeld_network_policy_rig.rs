//! keeld's switches, port groups and policies with real Linux guests
//! (natively on hardware KVM, else inside the KVM rig, whose L1 kernel has
//! bridges with VLAN filtering, TAPs, veths and nftables):
//! - NAT: a VM on `VM Network` fetches a file from a TCP server in a
//!   network namespace that has no route back to the VM's subnet, so only
//!   keeld's masquerading makes it work;
//! - VLANs: on one switch, VMs on port groups with VLAN 10 and 20 cannot
//!   reach each other; moving one NIC (while it runs) to another port group
//!   with VLAN 10 lets them;
//! - forged transmits reject: a guest's frames stop once it changes its
//!   MAC, and the VMM counts them;
//! - traffic shaping: a 2 Mbit/s port group caps a guest's upload to 2
//!   Mbit/s within 15 %.
//!
//! L1 gives vSwitch1's bridge an address (the peer the guests ping); the
//! guests report what they see on their consoles; everything lives and
//! dies with L1.

use std::time::Duration;

use e2e::{keeld_session, BASE_CMDLINE};

/// Terse guest scripts: each travels base64-encoded on its command line.
const HELPERS: &str = r#"cd /tmp;mkfifo h;sleep 900 >h&
r(){ n=$1;shift;i=0;until "$@";do i=$((i+1));[ $i -ge $n ]&&return 1;sleep 1;done;}
p(){ ping -c3 -W2 $1|grep -o '[0-9]* packets received'|cut -d' ' -f1;}
ip link set lo up;ip link set eth0 up
"#;

/// DHCP with the router as the default route; sends a file out.
const NAT_GUEST: &str = r#"printf '#!/bin/sh\n[ "$1" = bound ]||exit 0\nip addr add $ip/$mask dev $interface\nip route add default via ${router%% *}\n'>/s;chmod +x /s
udhcpc -i eth0 -s /s -n -q -t 40 -T 2 >/dev/null 2>&1
echo C_IP=$(ip -4 -o addr show dev eth0|sed 's/.*inet \([0-9.]*\).*/\1/')
r 60 ping -c1 -W1 192.0.2.2 >/dev/null
echo C_PING=$(p 192.0.2.2)
dd if=/dev/urandom of=out bs=1024 count=1024 2>/dev/null
echo C_SENT=$(sha256sum <out|cut -d' ' -f1):$(wc -c <out)
r 30 timeout 120 nc 192.0.2.2 7000 <out
echo C_DONE=$?
"#;

const V1_GUEST: &str = r#"ip addr add 10.9.0.1/24 dev eth0
echo V1_READY
"#;

const V2_GUEST: &str = r#"ip addr add 10.9.0.2/24 dev eth0;sleep 2
echo V2_DIFF=$(p 10.9.0.1)
echo V2_MOVE
r 90 ping -c1 -W1 10.9.0.1 >/dev/null
echo V2_SAME=$(p 10.9.0.1)
"#;

const F_GUEST: &str = r#"ip addr add 10.9.1.2/24 dev eth0
r 60 ping -c1 -W1 10.9.1.1 >/dev/null
echo F_OWN=$(p 10.9.1.1)
ip link set eth0 down;ip link set eth0 address 02:6b:65:00:09:09;ip link set eth0 up
echo F_SPOOF=$(p 10.9.1.1)
echo F_DONE
"#;

/// Sends 2 MiB to L1 and times it with the guest's clock.
const S_GUEST: &str = r#"ip addr add 10.9.1.3/24 dev eth0
r 60 ping -c1 -W1 10.9.1.1 >/dev/null
dd if=/dev/urandom of=out bs=1024 count=2048 2>/dev/null
t0=$(cut -d' ' -f1 /proc/uptime)
r 30 timeout 300 nc 10.9.1.1 7100 <out
t1=$(cut -d' ' -f1 /proc/uptime)
echo S_TIME=$t0:$t1
"#;

const SCRIPT: &str = r#"
{
# wait_log VM PATTERN: until the VM's console shows PATTERN (at most 150 s).
wait_log() {
    end=$(($(date +%s) + 150))
    while ! $K vm log $1 | grep -q "$2"; do
        [ $(date +%s) -lt $end ] || { echo "WAIT_TIMEOUT=$1:$2"; $K vm log $1 | tail -n 15; return 1; }
        sleep 0.5
    done
}
vm() { n=$1; pg=$2; c=$3; $K vm create $n --kernel $PWD/vmlinuz --initrd $PWD/initramfs.cpio.gz \
    --cmdline "$c" --memory 192M --cpus 1 --nic "$pg" --start >/dev/null || echo "CREATE_FAILED=$n"; }
show() { $K vm log $1 | grep -E "^$2[A-Z0-9_]*="; }

# --- VLANs on vSwitch1; L1's address on its bridge is the guests' peer.
$K network switch create vSwitch1 || echo SWITCH_FAILED
BR=$($K --json network switch show vSwitch1 | sed -n 's/.*"bridge": "\([a-z0-9]*\)".*/\1/p')
ip addr add 10.9.1.1/24 dev $BR
$K network portgroup create pg10 --switch vSwitch1 --vlan 10
$K network portgroup create pg20 --switch vSwitch1 --vlan 20
$K network portgroup create pg10b --switch vSwitch1 --vlan 10
$K network portgroup create pgf --switch vSwitch1 --forged-transmits reject --promiscuous accept
$K network portgroup create pgs --switch vSwitch1 --shaping-average 2000 --shaping-burst 32
$K network portgroup list
vm v1 pg10 "$CMD_V1"
wait_log v1 V1_READY
vm v2 pg20 "$CMD_V2"
wait_log v2 V2_MOVE
$K vm nic edit v2 0 --portgroup pg10b
echo MOVE_STATUS=$?
wait_log v2 V2_SAME
echo V2_VLAN=$($K --json vm nic list v2 | grep -c '"port_group": "pg10b"')
show v2 V2_
# The port group in use cannot go.
$K network portgroup delete pg10b 2>&1 | sed 's/^/DELETE_IN_USE: /'
$K vm stop v1 >/dev/null; $K vm stop v2 >/dev/null

# --- Forged transmits.
vm f pgf "$CMD_F"
wait_log f F_DONE
show f F_
echo F_FORGED=$($K --json vm nic list f | sed -n 's/.*"tx_forged": \([0-9]*\).*/\1/p')
$K vm stop f >/dev/null

# --- Shaping: L1 receives 2 MiB from the guest.
# The receiver's input stays open, so it ends only when the guest's data has.
mkfifo h2; sleep 900 >h2 2>/dev/null </dev/null & HOLD2=$!
(timeout 300 nc -l -p 7100 <h2 >shaped 2>/dev/null) &
vm s pgs "$CMD_S"
wait_log s S_TIME
show s S_
echo S_BYTES=$(wc -c <shaped)
$K vm stop s >/dev/null

# --- NAT: a server in a namespace with no route back to the VMs.
ip netns add srv
ip link add vo type veth peer name vi
ip link set vi netns srv
ip addr add 192.0.2.1/24 dev vo; ip link set vo up
ip netns exec srv ip link set lo up
ip netns exec srv ip addr add 192.0.2.2/24 dev vi
ip netns exec srv ip link set vi up
mkfifo h3; sleep 900 >h3 2>/dev/null </dev/null & HOLD3=$!
(ip netns exec srv timeout 300 nc -l -p 7000 <h3 >natgot 2>/dev/null) &
echo NFT_MASQ=$(nft list table inet keel | grep -c masquerade)
vm c "VM Network" "$CMD_C"
wait_log c C_DONE
show c C_
echo NAT_GOT=$(sha256sum <natgot | cut -d' ' -f1):$(wc -c <natgot)

$K vm stop c >/dev/null
echo TAPS_LEFT=$(ls /sys/class/net | grep -c '^kt')
$K event list --limit 40
kill $KEELD $HOLD2 $HOLD3
ip netns del srv
echo '--- keeld.log'; cat keeld.log
} 2>&1 | tee /dev/console
"#;

fn cmdline(script: &str) -> String {
    format!(
        "{BASE_CMDLINE} {}",
        xtask::guest::cmdline_args(&format!("{HELPERS}{script}"), e2e::Then::Wait)
    )
}

#[test]
fn nat_vlans_forged_transmits_and_shaping_through_keeld() {
    let script = format!(
        "CMD_C='{}'\nCMD_V1='{}'\nCMD_V2='{}'\nCMD_F='{}'\nCMD_S='{}'\n{SCRIPT}",
        cmdline(NAT_GUEST),
        cmdline(V1_GUEST),
        cmdline(V2_GUEST),
        cmdline(F_GUEST),
        cmdline(S_GUEST),
    );
    let out = keeld_session("netpol-rig", &script, Duration::from_secs(420));
    let Some(out) = out else {
        return;
    };
    let sh = &out.sh[0];
    let dump = &sh.stdout;
    let v = |n: &str| sh.value(n).unwrap_or_default();
    assert!(!dump.contains("CREATE_FAILED"), "{dump}");
    assert!(!dump.contains("SWITCH_FAILED"), "{dump}");

    // NAT.
    assert_ne!(v("NFT_MASQ"), "0", "keeld's masquerade rule: {dump}");
    assert!(v("C_IP").starts_with("10.77.0."), "DHCP: {dump}");
    assert_eq!(v("C_PING"), "3", "ping through NAT: {dump}");
    assert_eq!(v("C_DONE"), "0", "{dump}");
    assert!(v("C_SENT").ends_with(":1048576"), "{dump}");
    assert_eq!(v("NAT_GOT"), v("C_SENT"), "the file through NAT: {dump}");

    // VLANs.
    assert_eq!(v("V2_DIFF"), "0", "VLAN 20 cannot reach VLAN 10: {dump}");
    assert_eq!(v("MOVE_STATUS"), "0", "{dump}");
    assert_eq!(v("V2_SAME"), "3", "both on VLAN 10: {dump}");
    assert_eq!(v("V2_VLAN"), "1", "{dump}");
    assert!(
        dump.contains("DELETE_IN_USE: ") && dump.contains("in use by VM"),
        "{dump}"
    );

    // Forged transmits.
    assert_eq!(v("F_OWN"), "3", "its own MAC works: {dump}");
    assert_eq!(v("F_SPOOF"), "0", "a changed MAC gets nothing out: {dump}");
    let forged: u64 = v("F_FORGED").parse().unwrap_or(0);
    assert!(forged > 0, "the VMM counted the forged frames: {dump}");

    // Shaping: 2 MiB at 2000 kbit/s (a 32 KiB burst) takes about 8.4 s.
    assert_eq!(v("S_BYTES"), "2097152", "the upload arrived: {dump}");
    let t = v("S_TIME");
    let (t0, t1) = t.split_once(':').unwrap_or(("0", "0"));
    let secs = t1.parse::<f64>().unwrap_or(0.0) - t0.parse::<f64>().unwrap_or(0.0);
    let rate = 2_097_152.0 * 8.0 / secs;
    assert!(
        (rate - 2_000_000.0).abs() <= 0.15 * 2_000_000.0,
        "shaped to 2 Mbit/s within 15 %: {rate:.0} bit/s over {secs:.2} s: {dump}"
    );
    assert_eq!(v("TAPS_LEFT"), "0", "{dump}");
}
