//! keeld's default network with real Linux guests (natively on hardware
//! KVM, else inside the KVM rig, whose L1 kernel has bridges and TAPs):
//! two VMs on `VM Network` get addresses from keeld's DHCP server (reported
//! by `keel vm nic list`), ping each other and move a 2 MiB file with a
//! checksum; disconnecting a NIC with `keel vm nic disconnect` drops the
//! guest's carrier.

use std::time::Duration;

use e2e::{keeld_session, BASE_CMDLINE};

/// busybox udhcpc's hook: the address it was given goes on the NIC.
const DHCP: &str = r#"ip link set lo up;ip link set eth0 up
printf '#!/bin/sh\n[ "$1" = bound ]&&ip addr add $ip/$mask dev $interface\n'>/s;chmod +x /s
udhcpc -i eth0 -s /s -n -q -t 40 -T 2 >/dev/null 2>&1
echo IP=$(ip -4 -o addr show dev eth0|sed 's/.*inet \([0-9.]*\).*/\1/')
"#;

/// VM a: DHCP, receive a file, print its checksum, then report its
/// carrier once it drops.
const GUEST_A: &str = r#"cd /tmp;mkfifo h;sleep 1200 >h&
(timeout 600 nc -l -p 5000 <h >in;touch in.done)&
i=0;while [ ! -e in.done ]&&[ $i -lt 600 ];do sleep 1;i=$((i+1));done
echo A_GOT=$(sha256sum <in|cut -d' ' -f1):$(wc -c <in)
i=0;while [ "$(cat /sys/class/net/eth0/carrier)" = 1 ]&&[ $i -lt 1200 ];do sleep 0.1;i=$((i+1));done
echo A_CARRIER=$(cat /sys/class/net/eth0/carrier)
"#;

/// VM b: DHCP, ping a (its address is `keelaip=` on b's command line),
/// send it a file.
const GUEST_B: &str = r#"cd /tmp
AIP=$(sed -n 's/.*keelaip=\([0-9.]*\).*/\1/p' /proc/cmdline)
r(){ n=$1;shift;i=0;until "$@";do i=$((i+1));[ $i -ge $n ]&&return 1;sleep 1;done;}
r 60 ping -c1 -W1 $AIP >/dev/null
echo B_PING=$(ping -c3 -W2 $AIP|grep -o '[0-9]* packets received'|cut -d' ' -f1)
dd if=/dev/urandom of=out bs=1024 count=2048 2>/dev/null
echo B_SENT=$(sha256sum <out|cut -d' ' -f1):$(wc -c <out)
r 60 timeout 600 nc $AIP 5000 <out
echo B_SEND_STATUS=$?
"#;

const SCRIPT: &str = r#"
$K network switch list
$K vm create a --kernel $PWD/vmlinuz --initrd $PWD/initramfs.cpio.gz \
    --cmdline "$CMDLINE_A" --memory 256M --cpus 1 --nic "VM Network" --start
echo CREATE_A=$?
ip_of() { $K --json vm nic list $1 | sed -n 's/.*"ip": "\([0-9.]*\)".*/\1/p'; }
i=0; while [ -z "$(ip_of a)" ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done
AIP=$(ip_of a)
echo AIP=$AIP
CMDLINE_B=$(echo "$CMDLINE_B" | sed "s/AIPVALUE/$AIP/")
$K vm create b --kernel $PWD/vmlinuz --initrd $PWD/initramfs.cpio.gz \
    --cmdline "$CMDLINE_B" --memory 256M --cpus 1 --nic "VM Network" --start
echo CREATE_B=$?
i=0; while ! $K vm log b | grep -q B_SEND_STATUS && [ $i -lt 1200 ]; do sleep 0.5; i=$((i+1)); done
i=0; while ! $K vm log a | grep -q A_GOT && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done
echo BIP=$(ip_of b)
$K vm nic list a
$K vm nic disconnect a 0
echo DISCONNECT=$?
i=0; while ! $K vm log a | grep -q A_CARRIER && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
echo "--- a"; $K vm log a | grep -E '^(IP|A_)[A-Z_]*='
echo "--- b"; $K vm log b | grep -E '^(IP|B_)[A-Z_]*='
$K vm stop a; $K vm stop b
echo TAPS_LEFT=$(ls /sys/class/net | grep -c '^kt')
$K event list --limit 30
kill $KEELD
echo '--- keeld.log'; cat keeld.log
"#;

#[test]
fn two_vms_on_vm_network_get_dhcp_addresses_and_exchange_a_file() {
    // The guests' commands travel base64-encoded on their command lines.
    let a = format!(
        "{BASE_CMDLINE} {}",
        xtask::guest::cmdline_args(&format!("{DHCP}{GUEST_A}"), e2e::Then::Wait)
    );
    let b = format!(
        "{BASE_CMDLINE} {} keelaip=AIPVALUE",
        xtask::guest::cmdline_args(&format!("{DHCP}{GUEST_B}"), e2e::Then::Wait)
    );
    let script = format!("CMDLINE_A='{a}'\nCMDLINE_B='{b}'\n{SCRIPT}");
    let out = keeld_session("net-rig", &script, Duration::ZERO);
    let Some(out) = out else {
        return;
    };
    let sh = &out.sh[0];
    let dump = &sh.stdout;
    let v = |n: &str| sh.value(n).unwrap_or_default();
    assert_eq!(v("CREATE_A"), "0", "{dump}");
    assert_eq!(v("CREATE_B"), "0", "{dump}");
    let (aip, bip) = (v("AIP"), v("BIP"));
    assert!(aip.starts_with("10.77.0."), "a's address from DHCP: {dump}");
    assert!(
        bip.starts_with("10.77.0.") && bip != aip,
        "b's address: {dump}"
    );
    assert_eq!(v("B_PING"), "3", "b pings a: {dump}");
    let sent = v("B_SENT");
    assert!(sent.ends_with(":2097152"), "{dump}");
    assert_eq!(v("A_GOT"), sent, "the file arrived unchanged: {dump}");
    assert_eq!(v("B_SEND_STATUS"), "0", "{dump}");
    assert_eq!(v("DISCONNECT"), "0", "{dump}");
    assert_eq!(v("A_CARRIER"), "0", "the guest saw its link drop: {dump}");
    assert_eq!(
        v("TAPS_LEFT"),
        "0",
        "no TAP left after the VMs stopped: {dump}"
    );
    assert!(dump.contains("got address"), "the DHCP events: {dump}");
}
