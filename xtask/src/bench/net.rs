//! `net-rig`: iperf3 between the guest and L1 over one TAP, inside one L1
//! of the KVM rig: keel-vmm (`--net tap=…`) against QEMU's userspace
//! virtio-net (`-netdev tap,…,vhost=off -device virtio-net-pci`).
//!
//! L1 makes a persistent TAP, `ktap0`, gives it 10.0.3.1/24 (routed: no
//! bridge, as the hand-run benchmark in e2e/tests/net.rs does) and runs
//! `iperf3 -s`. Each VMM in turn opens that TAP with the same MAC; the
//! guest (10.0.3.2, the standard test initramfs, which has iperf3) runs
//! `iperf3 -c` for [`IPERF_SECONDS`] s each way and prints the receiver's
//! rate: `NET up <Mbit/s>` (guest → L1) and `NET down <Mbit/s>` (L1 →
//! guest, `-R`).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    bench_lines, keel_argv, qemu_argv, release_keel_vmm, rig_echo, rounds_sh, Grid, Row, IRQ_SH,
    RUN_VM_SH,
};
use crate::rig::{self, RigOptions};

/// Seconds of each iperf3 run.
pub const IPERF_SECONDS: u32 = 5;
const TAP: &str = "ktap0";
const MAC: &str = "02:6b:65:00:00:03";
const L1_IP: &str = "10.0.3.1";
const GUEST_IP: &str = "10.0.3.2";
const INITRD: &str = "/guest/initramfs.cpio.gz";
/// A run (boot, then iperf3 both ways) is killed after this long; normally
/// it takes about 20 s.
const RUN_LIMIT_S: u32 = 180;
const MIB: f64 = 1024.0 * 1024.0;

/// The directions, as the guest reports them: (key, label, iperf3 flag).
const DIRECTIONS: &[(&str, &str, &str)] =
    &[("up", "guest → L1", ""), ("down", "L1 → guest", " -R")];

/// The guest's command: its address, wait for L1, then both directions.
fn guest_cmd() -> String {
    let mut s = format!(
        "ip link set lo up;ip link set eth0 up;ip addr add {GUEST_IP}/24 dev eth0\n\
         i=0;until ping -c1 -W1 {L1_IP} >/dev/null 2>&1;do i=$((i+1));[ $i -ge 60 ]&&break;sleep 1;done\n\
         echo INFO features $(cat /sys/class/net/eth0/device/features)\n\
         m(){{ awk '/receiver/{{for(i=1;i<=NF;i++)if($i==\"Mbits/sec\")print $(i-1)}}';}}\n{IRQ_SH}"
    );
    for (key, _, flag) in DIRECTIONS {
        s.push_str(&format!(
            "a=$(q);r=$(timeout 120 iperf3 -c {L1_IP} -t {IPERF_SECONDS} -f m{flag}|m)\n\
             if [ -n \"$r\" ];then echo NET {key} $r;else echo iperf3 {key} gave no rate;fi\n\
             echo INFO irq {key} $(($(q)-a))\n"
        ));
    }
    s
}

/// The VMMs compared (keel-vmm first).
fn vmms() -> Vec<(String, Vec<String>)> {
    let cmd = guest_cmd();
    let keel = ["--net".to_string(), format!("tap={TAP},mac={MAC}")];
    let qemu = [
        "-netdev".to_string(),
        format!("tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off"),
        "-device".to_string(),
        format!("virtio-net-pci,netdev=n0,mac={MAC},romfile="),
    ];
    vec![
        ("keel-vmm".to_string(), keel_argv(INITRD, &cmd, &keel)),
        (
            "QEMU virtio-net-pci, vhost=off".to_string(),
            qemu_argv(INITRD, &cmd, &qemu),
        ),
    ]
}

fn l1_script(runs: usize) -> String {
    format!(
        r#"set -u
ip tuntap add dev {TAP} mode tap || exit 1
ip link set {TAP} up
ip addr add {L1_IP}/24 dev {TAP}
server=
# A fresh server for every run: one whose client vanished mid-test (a run
# killed at its limit) stays busy, and every later run would fail.
fresh_server() {{
    [ -n "$server" ] && kill $server 2>/dev/null && wait $server 2>/dev/null
    iperf3 -s >>/tmp/iperf3-server.log 2>&1 &
    server=$!
}}
mkdir -p /tmp/bench
cd /tmp/bench
{RUN_VM_SH}
{rounds}kill $server
"#,
        rounds = rounds_sh(&vmms(), runs, "NET", DIRECTIONS.len(), RUN_LIMIT_S)
            .lines()
            .map(|run| format!("fresh_server\n{run}\n"))
            .collect::<String>(),
    )
}

fn rows() -> Vec<Row> {
    DIRECTIONS
        .iter()
        .map(|(key, label, _)| Row {
            key: key.to_string(),
            label: format!("iperf3 TCP {label}"),
            unit: "Gbit/s",
            decimals: 2,
        })
        .collect()
}

/// The grid from the rig's `BENCH <vmm> <direction> <Mbit/s>` lines.
fn parse(output: &str) -> Result<Grid> {
    let names = vmms().into_iter().map(|(n, _)| n).collect();
    let mut grid = Grid::new(names, rows());
    for (vmm, f) in bench_lines(output) {
        let [dir, mbits] = f[..] else {
            bail!("iperf3 gave no rate (VMM {vmm}): {f:?}");
        };
        let mbits: f64 = mbits
            .parse()
            .with_context(|| format!("iperf3 rate {mbits:?}"))?;
        if !grid.push(dir, vmm, mbits / 1000.0) {
            bail!("Unexpected iperf3 result for VMM {vmm}: {f:?}");
        }
    }
    Ok(grid)
}

/// The virtio-net features the guest's driver accepted, by name, from its
/// `features` file (one 0/1 character per bit).
fn offloads(features: &str) -> Vec<&'static str> {
    const NAMES: &[(usize, &str)] = &[
        (0, "CSUM"),
        (1, "GUEST_CSUM"),
        (7, "GUEST_TSO4"),
        (8, "GUEST_TSO6"),
        (11, "HOST_TSO4"),
        (12, "HOST_TSO6"),
        (15, "MRG_RXBUF"),
        (28, "INDIRECT_DESC"),
        (29, "EVENT_IDX"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| features.as_bytes().get(*bit) == Some(&b'1'))
        .map(|(_, n)| *n)
        .collect()
}

/// One line per VMM: the features its guest negotiated (first boot).
fn features_note(output: &str, names: &[String]) -> String {
    let mut note = String::from("\nFeatures the guest's virtio-net driver negotiated:");
    for (i, name) in names.iter().enumerate() {
        let got = super::tagged_lines(output, "INFO")
            .find(|(vmm, f)| *vmm == i && f.first() == Some(&"features"))
            .and_then(|(_, f)| f.get(1).map(|s| offloads(s).join(" ")))
            .unwrap_or_else(|| "?".into());
        note.push_str(&format!(" {name}: {got};"));
    }
    note.pop();
    note.push_str(".\n");
    note
}

/// Runs the benchmark: `runs` rounds of every VMM in one L1; returns the
/// table and the negotiated features.
pub fn run(runs: usize) -> Result<String> {
    let vmm = release_keel_vmm()?;
    let opts = RigOptions {
        timeout: Duration::from_secs(300 + runs as u64 * 2 * u64::from(RUN_LIMIT_S)),
        keel_vmm: Some(vmm),
        with_qemu: true,
        echo: rig_echo(),
        ..RigOptions::default()
    };
    let out = rig::run(&opts, &l1_script(runs))?;
    if out.status != 0 {
        bail!(
            "The benchmark failed in the rig:\n{}",
            rig::tail(&out.output, 80)
        );
    }
    let mut grid = parse(&out.output)?;
    grid.add_failures(&out.output);
    grid.add_irqs(&out.output);
    grid.check(runs)
        .with_context(|| format!("The rig's output:\n{}", rig::tail(&out.output, 80)))?;
    let what = format!("boot, then {IPERF_SECONDS} s of iperf3 each way");
    // Gbit/s over the run → MiB moved.
    let mib = |_: &Row, gbit: f64| gbit * 1e9 / 8.0 * f64::from(IPERF_SECONDS) / MIB;
    Ok(grid.table()
        + &grid.failures_note(runs)
        + "\n"
        + &grid.irq_table("per MiB moved", mib)
        + &features_note(&out.output, &grid.vmms)
        + &super::cpu_note(&out.output, &grid.vmms, &what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn guest_command_fits_and_is_valid_sh() {
        let cmd = guest_cmd();
        assert!(super::super::guest_cmdline(&cmd).len() <= 2046);
        let status = Command::new("sh")
            .args(["-n", "-c", &cmd])
            .status()
            .unwrap();
        assert!(status.success(), "{cmd}");
        assert!(cmd.contains("iperf3 -c 10.0.3.1 -t 5 -f m|m"));
        assert!(cmd.contains("iperf3 -c 10.0.3.1 -t 5 -f m -R|m"));
    }

    /// The rate comes from iperf3's receiver summary line.
    #[test]
    fn the_receiver_rate_is_picked() {
        let cmd = guest_cmd();
        let m = cmd.lines().find(|l| l.starts_with("m()")).unwrap();
        let sample = "\
[  5]   0.00-5.00   sec   600 MBytes  1006 Mbits/sec    0             sender
[  5]   0.00-5.04   sec   598 MBytes  995 Mbits/sec                  receiver
";
        let out = Command::new("sh")
            .args(["-c", &format!("{m}\nprintf '%s' '{sample}' | m")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "995");
    }

    #[test]
    fn both_vmms_use_the_same_tap_and_mac() {
        let v = vmms();
        let keel = v[0].1.join(" ");
        assert!(keel.contains("--net tap=ktap0,mac=02:6b:65:00:00:03"));
        let qemu = v[1].1.join(" ");
        assert!(qemu.contains("tap,id=n0,ifname=ktap0,script=no,downscript=no,vhost=off"));
        assert!(qemu.contains("virtio-net-pci,netdev=n0,mac=02:6b:65:00:00:03"));
        let s = l1_script(3);
        assert!(s.contains("ip tuntap add dev ktap0 mode tap"));
        assert!(s.contains("iperf3 -s"));
        // Every run gets a fresh server, started just before it.
        let lines: Vec<&str> = s.lines().collect();
        let runs: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("run_vm "))
            .collect();
        assert_eq!(runs.len(), 6);
        assert!(runs.iter().all(|&i| lines[i - 1] == "fresh_server"));
        for script in [s.as_str(), &guest_cmd()] {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
    }

    #[test]
    fn negotiated_features_are_named_per_vmm() {
        let mut bits = vec![b'0'; 64];
        for b in [0, 1, 7, 11, 15] {
            bits[b] = b'1';
        }
        let bits = String::from_utf8(bits).unwrap();
        let out = format!("INFO 1 features {bits}\nINFO 0 features 1\n");
        let names = ["keel".to_string(), "qemu".to_string()];
        assert_eq!(
            features_note(&out, &names),
            "\nFeatures the guest's virtio-net driver negotiated: keel: CSUM; \
             qemu: CSUM GUEST_CSUM GUEST_TSO4 HOST_TSO4 MRG_RXBUF.\n"
        );
    }

    #[test]
    fn results_parse_into_gbit_per_second() {
        let g = parse("BENCH 1 down 2500\nBENCH 0 up 990\n").unwrap();
        assert_eq!(g.samples("down", 1), &[2.5]);
        assert_eq!(g.samples("up", 0), &[0.99]);
        let err = parse("BENCH 0 up\n").unwrap_err().to_string();
        assert!(err.contains("no rate"), "{err}");
        assert!(parse("BENCH 0 sideways 1\n").is_err());
    }
}
