//! virtio-net in a real guest, on a TAP. In the rig, the "host side" is L1:
//! it makes the TAP (or lets keel-vmm make it), gives its end an address,
//! and talks to the guest while keel-vmm runs; with hardware KVM the same
//! script runs here inside a private network namespace (`unshare --net`).
//!
//! Each test checks ping both ways and TCP transfers with checksums both
//! ways (busybox `nc` and `sha256sum` on both sides), and prints what the
//! guest's driver negotiated. The transfer loops and waits are all bounded;
//! the TAPs and bridges live and die with L1 (or the namespace).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{linux_runner, Runner, BASE_CMDLINE};
use xtask::guest::{self, Then};
use xtask::rig::{self, shell_quote, RigOptions};

/// keel-vmm is killed after this long.
const VM_TIMEOUT_S: u64 = 900;
/// Modules the host side needs (L1 may load them at boot already).
const MODULES: &[&str] = &["tun", "llc", "stp", "bridge"];

/// What a run gave: keel-vmm's status and streams, and the host side's
/// own output.
struct NetOutput {
    status: Option<i32>,
    console: String,
    stderr: String,
    host: String,
    all: String,
}

impl NetOutput {
    fn value(text: &str, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        text.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }
    /// `NAME=value` printed by the guest.
    fn guest(&self, name: &str) -> Option<String> {
        Self::value(&self.console, name)
    }
    /// `NAME=value` printed by the host side.
    fn host(&self, name: &str) -> Option<String> {
        Self::value(&self.host, name)
    }
    fn dump(&self) -> String {
        format!(
            "status {:?}\n--- guest console ---\n{}\n--- keel-vmm stderr ---\n{}\n--- host side ---\n{}\n--- tail ---\n{}",
            self.status,
            self.console,
            self.stderr,
            self.host,
            rig::tail(&self.all, 15)
        )
    }
}

fn section<'a>(text: &'a str, name: &str) -> &'a str {
    let begin = format!("KEEL-{name}-BEGIN\n");
    let end = format!("\nKEEL-{name}-END");
    let Some(start) = text.find(&begin).map(|i| i + begin.len()) else {
        return "";
    };
    let len = text[start..].find(&end).unwrap_or(text.len() - start);
    &text[start..start + len]
}

/// The start of the script for the machine that runs the VMM: the modules,
/// a scratch directory, then `before` (which sets the network up).
fn prelude(modules: &str, before: &str) -> String {
    format!(
        r#"set -u
for m in {MODULES}; do
    [ -d /sys/module/$m ] || insmod {modules}/$m.ko 2>/dev/null || modprobe $m 2>/dev/null
done
work=$(mktemp -d)
cd "$work"
{before}
"#,
        MODULES = MODULES.join(" "),
    )
}

/// The end of the script: the scratch directory goes.
const EPILOGUE: &str = "cd /; rm -rf \"$work\"\n";

/// One VMM run in its own directory, reported under `tag`: `argv` (quoted here) starts in the
/// background, `during` runs alongside it (it may use `$pid`), then the
/// reports: `KEEL-<tag>-{STDOUT,STDERR,HOST}` sections and the status.
fn vm_run(tag: &str, argv: &[String], during: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!(
        r#"mkdir {tag}; cd {tag}
timeout -s KILL {VM_TIMEOUT_S} {argv} >vm.out 2>vm.err &
pid=$!
( {during} ) >host.out 2>&1 </dev/null
wait $pid
status=$?
[ $status -eq 137 ] && echo KEEL-{tag}-TIMEOUT
echo KEEL-{tag}-STDOUT-BEGIN; cat vm.out; echo; echo KEEL-{tag}-STDOUT-END
echo KEEL-{tag}-STDERR-BEGIN; cat vm.err; echo; echo KEEL-{tag}-STDERR-END
echo KEEL-{tag}-HOST-BEGIN; cat host.out; echo; echo KEEL-{tag}-HOST-END
echo KEEL-{tag}-STATUS=$status
cd ..
"#,
        argv = argv.join(" "),
    )
}

/// The run reported under `tag` in `text`.
fn parse_run(text: &str, tag: &str) -> NetOutput {
    let timed_out = text
        .lines()
        .any(|l| l.trim() == format!("KEEL-{tag}-TIMEOUT"));
    let status =
        NetOutput::value(text, &format!("KEEL-{tag}-STATUS")).and_then(|s| s.parse::<i32>().ok());
    NetOutput {
        status: status.filter(|&s| !timed_out && s < 128),
        console: section(text, &format!("{tag}-STDOUT")).to_string(),
        stderr: section(text, &format!("{tag}-STDERR")).to_string(),
        host: section(text, &format!("{tag}-HOST")).to_string(),
        all: text.to_string(),
    }
}

/// keel-vmm's arguments for the test guest in `dir` running `guest_cmd`.
fn keel_args(dir: &Path, guest_cmd: &str, net_arg: &str) -> Vec<String> {
    vec![
        "--kernel".into(),
        dir.join("vmlinuz").display().to_string(),
        "--initrd".into(),
        dir.join("initramfs.cpio.gz").display().to_string(),
        "--cmdline".into(),
        format!(
            "{BASE_CMDLINE} {}",
            guest::cmdline_args(guest_cmd, Then::Poweroff)
        ),
        "--memory".into(),
        "512M".into(),
        "--serial".into(),
        "stdio".into(),
        "--net".into(),
        net_arg.into(),
    ]
}

/// The rig's options, with the host-side modules brought along.
fn rig_options(g: &guest::Guest, keel_vmm: PathBuf, with_qemu: bool) -> RigOptions {
    let index = guest::module_index(&g.kernel_root, &g.kernel_release)
        .expect("the kernel package's modules");
    let files: Vec<(PathBuf, String)> = MODULES
        .iter()
        .filter_map(|m| Some((index.get(*m)?.clone(), format!("rig-net/{m}.ko"))))
        .collect();
    RigOptions {
        timeout: Duration::from_secs(VM_TIMEOUT_S * 4 + 240),
        keel_vmm: Some(keel_vmm),
        files,
        with_qemu,
        echo: std::env::var_os("KEEL_RIG_ECHO").is_some(),
        ..RigOptions::default()
    }
}

/// Boots the guest with `net_arg` and `guest_cmd`, the host side running
/// `before` and `during`; `None` when skipped.
fn run(net_arg: &str, guest_cmd: &str, before: &str, during: &str) -> Option<NetOutput> {
    let runner = linux_runner()?;
    let g = guest::build().expect("building the test guest");
    let text = match runner {
        Runner::Rig => {
            let mut argv = vec!["keel-vmm".to_string()];
            argv.extend(keel_args(Path::new("/guest"), guest_cmd, net_arg));
            let s = prelude("/rig-net", before) + &vm_run("VM", &argv, during) + EPILOGUE;
            let opts = rig_options(&g, e2e::keel_vmm().to_path_buf(), false);
            let out = rig::run(&opts, &s).expect("running the rig");
            assert_eq!(out.status, 0, "{}", rig::tail(&out.output, 40));
            out.output
        }
        Runner::Native => {
            let dir = g.vmlinuz.parent().expect("guest dir").to_path_buf();
            let mut argv = vec![e2e::keel_vmm().display().to_string()];
            argv.extend(keel_args(&dir, guest_cmd, net_arg));
            let s = prelude("/nonexistent", before) + &vm_run("VM", &argv, during) + EPILOGUE;
            let out = Command::new("unshare")
                .args(["--net", "sh", "-c", &s])
                .output()
                .expect("running unshare --net");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.contains("KEEL-VM-STATUS=") {
                e2e::skip(&format!(
                    "cannot run the host side in a network namespace: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                return None;
            }
            text
        }
    };
    Some(parse_run(&text, "VM"))
}

/// Shell helpers for both sides: a stdin that stays open (busybox nc
/// closes its sending side when its stdin ends), and bounded retries.
const SH_COMMON: &str = r#"
mkfifo hold-in 2>/dev/null; sleep 1200 >hold-in 2>/dev/null & holder=$!
# retry N CMD...: runs CMD until it succeeds, at most N times, 1 s apart.
retry() { n=$1; shift; i=0; until "$@"; do i=$((i+1)); [ $i -ge $n ] && return 1; sleep 1; done; }
"#;

/// The guest: listen for the host's file (and start `listeners`), come up
/// at `ip`, ping the host, then send a file of its own. Terse: it travels
/// base64-encoded on the kernel command line (at most 2046 bytes).
fn guest_checksum_cmd(ip: &str, host_ip: &str, listeners: &str) -> String {
    format!(
        r#"cd /tmp;mkfifo h;sleep 1200 >h&
r(){{ n=$1;shift;i=0;until "$@";do i=$((i+1));[ $i -ge $n ]&&return 1;sleep 1;done;}}
s(){{ echo $(sha256sum <$1|cut -d' ' -f1):$(wc -c <$1);}}
echo GUEST_MAC=$(cat /sys/class/net/eth0/address)
echo GUEST_FEATURES=$(cat /sys/class/net/eth0/device/features)
(timeout 600 nc -l -p 5001 <h >in;touch in.done)&
{listeners}
ip link set lo up;ip link set eth0 up;ip addr add {ip}/24 dev eth0
r 120 ping -c1 -W1 {host_ip} >/dev/null
echo GUEST_PING=$(ping -c3 -W2 {host_ip}|grep -o '[0-9]* packets received'|cut -d' ' -f1)
echo GUEST_OPERSTATE=$(cat /sys/class/net/eth0/operstate)
i=0;while [ ! -e in.done ]&&[ $i -lt 600 ];do sleep 1;i=$((i+1));done
echo GUEST_GOT=$(s in)
dd if=/dev/urandom of=out bs=1024 count=4096 2>/dev/null
echo GUEST_SENT=$(s out)
r 60 timeout 600 nc {host_ip} 5002 <out
echo GUEST_SEND_STATUS=$?
"#
    )
}

/// The host side of the checksum exchange with the guest at `guest_ip`.
fn host_checksum_side(guest_ip: &str) -> String {
    format!(
        r#"{SH_COMMON}
( timeout 700 nc -l -p 5002 <hold-in >from-guest; echo done >rx-done ) &
dd if=/dev/urandom of=to-guest bs=1024 count=4096 2>/dev/null
echo HOST_SENT=$(sha256sum <to-guest | cut -d' ' -f1):$(wc -c <to-guest)
alive() {{ kill -0 $pid 2>/dev/null; }}
i=0; until ping -c 1 -W 1 {guest_ip} >/dev/null 2>&1; do
    i=$((i+1))
    if [ $i -ge 300 ] || ! alive; then echo HOST_GAVE_UP=ping; kill $holder; exit 1; fi
done
echo HOST_PING=$(ping -c 3 -W 2 {guest_ip} | grep -o '[0-9]* packets received' | cut -d' ' -f1)
retry 60 timeout 600 nc {guest_ip} 5001 <to-guest
echo HOST_SEND_STATUS=$?
i=0; while [ ! -e rx-done ] && [ $i -lt 700 ] && alive; do sleep 1; i=$((i+1)); done
echo HOST_GOT=$(sha256sum <from-guest | cut -d' ' -f1):$(wc -c <from-guest)
kill $holder
"#
    )
}

/// Names of the feature bits Linux accepted, from the `features` file
/// (one 0/1 character per bit).
fn negotiated(features: &str) -> Vec<&'static str> {
    const NAMES: &[(usize, &str)] = &[
        (0, "CSUM"),
        (1, "GUEST_CSUM"),
        (5, "MAC"),
        (7, "GUEST_TSO4"),
        (8, "GUEST_TSO6"),
        (9, "GUEST_ECN"),
        (10, "GUEST_UFO"),
        (11, "HOST_TSO4"),
        (12, "HOST_TSO6"),
        (13, "HOST_ECN"),
        (14, "HOST_UFO"),
        (15, "MRG_RXBUF"),
        (16, "STATUS"),
        (17, "CTRL_VQ"),
        (28, "RING_INDIRECT_DESC"),
        (29, "RING_EVENT_IDX"),
        (32, "VERSION_1"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| features.as_bytes().get(*bit) == Some(&b'1'))
        .map(|(_, n)| *n)
        .collect()
}

fn assert_talked(out: &NetOutput) {
    assert_eq!(out.status, Some(0), "{}", out.dump());
    assert_eq!(
        out.guest("GUEST_PING").as_deref(),
        Some("3"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.host("HOST_PING").as_deref(),
        Some("3"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.guest("GUEST_OPERSTATE").as_deref(),
        Some("up"),
        "{}",
        out.dump()
    );
    let host_sent = out.host("HOST_SENT").unwrap_or_default();
    let guest_sent = out.guest("GUEST_SENT").unwrap_or_default();
    assert!(host_sent.ends_with(":4194304"), "{}", out.dump());
    assert!(guest_sent.ends_with(":4194304"), "{}", out.dump());
    assert_eq!(
        out.guest("GUEST_GOT"),
        Some(host_sent),
        "host → guest: {}",
        out.dump()
    );
    assert_eq!(
        out.host("HOST_GOT"),
        Some(guest_sent),
        "guest → host: {}",
        out.dump()
    );
    let features = out.guest("GUEST_FEATURES").unwrap_or_default();
    let got = negotiated(&features);
    eprintln!("virtio-net features Linux negotiated: {}", got.join(" "));
    for want in [
        "CSUM",
        "GUEST_CSUM",
        "MAC",
        "GUEST_TSO4",
        "GUEST_TSO6",
        "HOST_TSO4",
        "HOST_TSO6",
        "MRG_RXBUF",
        "STATUS",
        "VERSION_1",
    ] {
        assert!(got.contains(&want), "{want} not negotiated: {}", out.dump());
    }
}

#[test]
fn guest_and_host_talk_through_a_bridged_tap() {
    // A persistent TAP made beforehand (as an admin would), in a bridge
    // that carries the host's address; keel-vmm opens the TAP.
    // iproute2 where there is one, else busybox.
    let before = "\
ip tuntap add dev ktap0 mode tap 2>/dev/null || tunctl -t ktap0 >/dev/null
ip link add name br0 type bridge 2>/dev/null || brctl addbr br0
ip link set ktap0 master br0 2>/dev/null || brctl addif br0 ktap0
ip link set ktap0 up
ip link set br0 up
ip addr add 10.0.2.1/24 dev br0
";
    let Some(out) = run(
        "tap=ktap0,mac=02:6b:65:00:00:02",
        &guest_checksum_cmd("10.0.2.2", "10.0.2.1", ""),
        before,
        &host_checksum_side("10.0.2.2"),
    ) else {
        return;
    };
    assert_talked(&out);
    assert_eq!(
        out.guest("GUEST_MAC").as_deref(),
        Some("02:6b:65:00:00:02"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.is_empty() || !out.stderr.contains("dropped"),
        "{}",
        out.dump()
    );
}

/// Throughput: 64 MiB each way with the host side timing it.
const GUEST_BULK: &str = "\
(timeout 900 nc -l -p 5003 <h|wc -c >bulk;touch bulk.done)&
(dd if=/dev/zero bs=64k count=1024 2>/dev/null|timeout 900 nc -l -p 5004 >/dev/null;touch tx.done)&";

const HOST_BULK: &str = r#"
now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
send_zeroes() { dd if=/dev/zero bs=65536 count=1024 2>/dev/null | timeout 900 nc $guest 5003; }
retry 30 send_zeroes
t1=$(now)
echo HOST_TO_GUEST_SECS=$(awk "BEGIN {print $t1 - $t0}")
t0=$(now)
echo HOST_BULK_RX=$(timeout 900 nc $guest 5004 <hold-in | wc -c)
t1=$(now)
echo GUEST_TO_HOST_SECS=$(awk "BEGIN {print $t1 - $t0}")
kill $holder
"#;

fn bulk_guest_cmd() -> String {
    format!(
        "{}i=0;while [ ! -e bulk.done -o ! -e tx.done ]&&[ $i -lt 900 ];do sleep 1;i=$((i+1));done\n\
         echo GUEST_BULK_RX=$(cat bulk)\n",
        guest_checksum_cmd("10.0.3.2", "10.0.3.1", GUEST_BULK)
    )
}

#[test]
fn keel_vmm_creates_the_tap_and_moves_64_mib_each_way() {
    // keel-vmm makes the TAP (keel0) and brings it up; the host side waits
    // for it and gives it an address.
    let guest = bulk_guest_cmd();
    let during = format!(
        r#"i=0; while [ ! -e /sys/class/net/keel0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo HOST_TAP_FLAGS=$(cat /sys/class/net/keel0/flags)
ip addr add 10.0.3.1/24 dev keel0
{}
guest=10.0.3.2
{HOST_BULK}
"#,
        host_checksum_side("10.0.3.2").replace("kill $holder\n", "")
    );
    let Some(out) = run("tap", &guest, "", &during) else {
        return;
    };
    assert_talked(&out);
    let flags = out.host("HOST_TAP_FLAGS").unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
    assert_eq!(flags & 1, 1, "keel-vmm brought keel0 up: {}", out.dump());
    let mac = out.guest("GUEST_MAC").unwrap_or_default();
    assert!(
        mac.starts_with("02:6b:65:"),
        "Keel's default MAC: {}",
        out.dump()
    );
    let mib = 64 << 20;
    assert_eq!(
        out.guest("GUEST_BULK_RX"),
        Some(mib.to_string()),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.host("HOST_BULK_RX"),
        Some(mib.to_string()),
        "{}",
        out.dump()
    );
    let rate = |secs: Option<String>| {
        let s: f64 = secs.and_then(|s| s.parse().ok()).unwrap_or(0.0);
        (s, if s > 0.0 { 64.0 / s } else { 0.0 })
    };
    let (up, up_rate) = rate(out.host("GUEST_TO_HOST_SECS"));
    let (down, down_rate) = rate(out.host("HOST_TO_GUEST_SECS"));
    eprintln!(
        "virtio-net 64 MiB over nc in this run: guest → host {up:.2} s ({up_rate:.1} MiB/s), \
         host → guest {down:.2} s ({down_rate:.1} MiB/s)"
    );
}

#[test]
fn guest_commands_fit_the_kernel_command_line() {
    for cmd in [
        guest_checksum_cmd("10.0.2.2", "10.0.2.1", ""),
        bulk_guest_cmd(),
    ] {
        let line = format!(
            "{BASE_CMDLINE} {}",
            guest::cmdline_args(&cmd, Then::Poweroff)
        );
        assert!(line.len() <= 2046, "{} bytes", line.len());
    }
}

#[test]
fn negotiated_feature_names() {
    let mut bits = vec![b'0'; 64];
    for b in [0, 1, 5, 15, 32] {
        bits[b] = b'1';
    }
    let s = String::from_utf8(bits).unwrap();
    assert_eq!(
        negotiated(&s),
        vec!["CSUM", "GUEST_CSUM", "MAC", "MRG_RXBUF", "VERSION_1"]
    );
    assert!(negotiated("").is_empty());
}

/// A benchmark, not a check: run by hand, its numbers go to
/// docs/benchmarks.md. 64 MiB each way over busybox `nc` between the guest
/// and L1 through one TAP, L1 timing it: keel-vmm (the release build when
/// there is one) against QEMU's userspace virtio-net (`-M q35`,
/// `-netdev tap,vhost=off`, `virtio-net-pci`) on the same TAP in the same
/// L1, rounds interleaved.
///
/// `cargo test -p e2e --test net -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run by hand"]
fn bench_64_mib_each_way_keel_vs_qemu() {
    if linux_runner() != Some(Runner::Rig) {
        e2e::skip("the benchmark runs in the rig only");
        return;
    }
    let rounds = 3;
    let g = guest::build().expect("building the test guest");
    let release = xtask::paths::target_dir().join("release/keel-vmm");
    let vmm = if release.exists() {
        release
    } else {
        e2e::keel_vmm().to_path_buf()
    };
    let cmd = bulk_guest_cmd();
    let mac = "02:6b:65:00:00:03";
    let before = "\
ip tuntap add dev ktap0 mode tap 2>/dev/null || tunctl -t ktap0 >/dev/null
ip link set ktap0 up
ip addr add 10.0.3.1/24 dev ktap0
";
    let during = format!(
        "{}\nguest=10.0.3.2\n{HOST_BULK}",
        host_checksum_side("10.0.3.2").replace("kill $holder\n", "")
    );
    let mut keel = vec!["keel-vmm".to_string()];
    keel.extend(keel_args(
        Path::new("/guest"),
        &cmd,
        &format!("tap=ktap0,mac={mac}"),
    ));
    let cmdline = format!(
        "{BASE_CMDLINE} {}",
        guest::cmdline_args(&cmd, Then::Poweroff)
    );
    let qemu: Vec<String> = [
        "qemu-system-x86_64",
        "-M",
        "q35",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        "1",
        "-m",
        "512",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        "/guest/vmlinuz",
        "-initrd",
        "/guest/initramfs.cpio.gz",
        "-append",
        &cmdline,
        "-netdev",
        "tap,id=n0,ifname=ktap0,script=no,downscript=no,vhost=off",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let vms = [("KEEL", keel), ("QEMU", qemu)];
    let mut script = prelude("/rig-net", before);
    for r in 0..rounds {
        for (name, argv) in &vms {
            script += &vm_run(&format!("{name}{r}"), argv, &during);
        }
    }
    script += EPILOGUE;
    let out = rig::run(&rig_options(&g, vmm.clone(), true), &script).expect("running the rig");
    assert_eq!(out.status, 0, "{}", rig::tail(&out.output, 40));
    eprintln!("keel-vmm: {}", vmm.display());
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    for (name, _) in &vms {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let run = parse_run(&out.output, &format!("{name}{r}"));
            let secs = |k: &str| run.host(k).and_then(|v| v.parse::<f64>().ok());
            let ok = run.status == Some(0)
                && run.host("HOST_BULK_RX") == Some((64u64 << 20).to_string())
                && run.guest("GUEST_BULK_RX") == Some((64u64 << 20).to_string());
            assert!(ok, "{name} round {r}: {}", run.dump());
            let (u, d) = (secs("GUEST_TO_HOST_SECS"), secs("HOST_TO_GUEST_SECS"));
            eprintln!("{name} round {r}: guest → L1 {u:?} s, L1 → guest {d:?} s");
            up.extend(u);
            down.extend(d);
        }
        let (u, d) = (median(up), median(down));
        eprintln!(
            "{name} median: guest → L1 {u:.2} s ({:.1} MiB/s), L1 → guest {d:.2} s ({:.1} MiB/s)",
            64.0 / u,
            64.0 / d
        );
    }
}

/// Bad `--net` values and TAPs that cannot be opened: status 2 and one line
/// naming the problem, before any VM exists (runs here, no KVM needed; the
/// only TAP it touches is `lo`, which is not one, so nothing is created).
#[test]
fn bad_net_flags_exit_2_with_one_line() {
    let kernel = guest::build().expect("building the test guest").vmlinuz;
    let kernel = kernel.display().to_string();
    for (net, keyword) in [
        ("tap=averyveryverylongname", "too long"),
        ("tap=a/b", "not valid"),
        ("tap=x,mac=01:00:5e:00:00:01", "multicast"),
        ("tap=x,mac=02:6b:65", "invalid mac"),
        ("tap=x,bridge=br0", "unknown key 'bridge'"),
        ("mac=02:6b:65:00:00:01", "'tap' is required"),
        ("tap=lo", "tap lo"),
    ] {
        let out = e2e::run_keel_vmm(&["--kernel", &kernel, "--serial", "off", "--net", net]);
        assert_eq!(out.status, Some(2), "{net}: {}", out.dump());
        let err = out.stderr.trim_end();
        assert_eq!(err.lines().count(), 1, "{net}: {}", out.dump());
        assert!(
            err.to_lowercase().contains(keyword),
            "{net}: {}",
            out.dump()
        );
    }
    // The same TAP twice is refused before either is opened.
    let out = e2e::run_keel_vmm(&[
        "--kernel", &kernel, "--serial", "off", "--net", "tap=lo", "--net", "tap=lo",
    ]);
    assert_eq!(out.status, Some(2), "{}", out.dump());
    assert!(out.stderr.contains("more than one --net"), "{}", out.dump());
}
