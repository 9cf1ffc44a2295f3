//! virtio-vsock: the guest's stock vsock transport; the guest connects to
//! the host (CID 2, port 1234 → the Unix socket `v.sock_1234`) and they
//! exchange lines; a host program connects to the guest's listener on port
//! 5000 through `v.sock` (`CONNECT 5000`) and gets its answer; then 4 MiB
//! go each way (far past the per-connection credit) with checksums.

use std::path::Path;

use e2e::LinuxVm;

fn keel_sock() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keel-sock"))
}

const GUEST: &str = r#"
socat -T 120 VSOCK-LISTEN:5000 SYSTEM:'read l; echo "ECHO:$l"' &
echo_listener=$!
socat -u -T 120 VSOCK-LISTEN:5001 CREATE:/tmp/from-host &
sink=$!
reply=$(echo "ping from the guest" | socat -t 10 -T 60 - VSOCK-CONNECT:2:1234)
echo "GUEST_GOT=$reply"
# 4 MiB each way, far past the 256 KiB credit, with checksums.
dd if=/dev/urandom of=/tmp/blob bs=1M count=4 2>/dev/null
echo "G2H_SUM=$(sha256sum /tmp/blob | cut -d' ' -f1)"
socat -u OPEN:/tmp/blob VSOCK-CONNECT:2:1235 && echo G2H_SENT=1
# Wait for the host's connections to the listeners.
i=0
while { kill -0 $echo_listener || kill -0 $sink; } 2>/dev/null && [ $i -lt 1800 ]; do
    sleep 0.1
    i=$((i + 1))
done
echo "H2G_GOT_SUM=$(sha256sum /tmp/from-host | cut -d' ' -f1)"
echo "H2G_GOT_SIZE=$(wc -c </tmp/from-host)"
"#;

const DRIVER: &str = r#"
keel-sock listen v.sock_1234 --send 'pong from the host\n' --lines 1 --timeout 250 >g2h.txt &
g2h=$!
keel-sock listen v.sock_1235 --timeout 250 >g2h.bin &
g2h_big=$!
dd if=/dev/urandom of=h2g.bin bs=1M count=4 2>/dev/null
echo "H2G_SUM=$(sha256sum h2g.bin | cut -d' ' -f1)"
# The guest's listener comes up after boot: until then CONNECT is refused.
i=0
while [ $i -lt 400 ]; do
    keel-sock connect v.sock --send 'CONNECT 5000\nhello guest\n' --lines 2 --timeout 20 >h2g.txt 2>h2g.err
    grep -q ECHO: h2g.txt && break
    sleep 0.5
    i=$((i + 1))
done
sed 's/^/H2G: /' h2g.txt
keel-sock connect v.sock --send 'CONNECT 5001\n' --send-file h2g.bin --shut --timeout 200 >h2g-big.txt
echo H2G_BIG_STATUS=$?
sed 's/^/H2G_BIG: /' h2g-big.txt
wait $g2h
echo G2H_STATUS=$?
echo "HOST_GOT=$(cat g2h.txt)"
wait $g2h_big
echo G2H_BIG_STATUS=$?
echo "G2H_GOT_SUM=$(sha256sum g2h.bin | cut -d' ' -f1)"
"#;

#[test]
fn guest_and_host_connect_to_each_other() {
    let Some(out) = LinuxVm::new()
        .arg("--vsock")
        .arg("cid=42,socket=v.sock")
        .cmd(GUEST)
        .run_with_driver(DRIVER, &[keel_sock()])
    else {
        return;
    };
    let vm = &out.vm;
    assert_eq!(vm.status, Some(0), "{}", out.dump());
    // Guest → host.
    assert_eq!(
        vm.value("GUEST_GOT").as_deref(),
        Some("pong from the host"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.value("G2H_STATUS").as_deref(),
        Some("0"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.value("HOST_GOT").as_deref(),
        Some("ping from the guest"),
        "{}",
        out.dump()
    );
    // Host → guest.
    let ok = out
        .driver
        .lines()
        .find_map(|l| l.strip_prefix("H2G: OK "))
        .and_then(|p| p.trim().parse::<u32>().ok());
    assert!(ok.is_some_and(|p| p >= 1 << 30), "{}", out.dump());
    assert!(
        out.driver.lines().any(|l| l == "H2G: ECHO:hello guest"),
        "{}",
        out.dump()
    );
    // 4 MiB each way under flow control, unchanged.
    let g2h = vm.value("G2H_SUM").unwrap_or_default();
    assert_eq!(g2h.len(), 64, "{}", out.dump());
    assert_eq!(out.value("G2H_GOT_SUM"), Some(g2h), "{}", out.dump());
    assert_eq!(
        out.value("G2H_BIG_STATUS").as_deref(),
        Some("0"),
        "{}",
        out.dump()
    );
    let h2g = out.value("H2G_SUM").unwrap_or_default();
    assert_eq!(h2g.len(), 64, "{}", out.dump());
    assert_eq!(
        out.value("H2G_BIG_STATUS").as_deref(),
        Some("0"),
        "{}",
        out.dump()
    );
    assert_eq!(
        vm.value("H2G_GOT_SIZE").as_deref(),
        Some("4194304"),
        "{}",
        out.dump()
    );
    assert_eq!(vm.value("H2G_GOT_SUM"), Some(h2g), "{}", out.dump());
}

#[test]
fn bad_vsock_values_exit_2_with_one_line() {
    let kernel = e2e::keel_vmm().display().to_string();
    for (spec, needle) in [
        ("cid=2,socket=v.sock", "invalid cid '2'"),
        ("cid=3", "key 'socket' is required"),
        ("socket=v.sock", "key 'cid' is required"),
        (
            "cid=3,socket=/nonexistent/dir/v.sock",
            "Cannot listen on /nonexistent/dir/v.sock",
        ),
    ] {
        let out = e2e::run_keel_vmm(&["--kernel", &kernel, "--vsock", spec]);
        assert_eq!(out.status, Some(2), "{spec}: {}", out.dump());
        assert_eq!(out.stderr.lines().count(), 1, "{spec}: {}", out.dump());
        assert!(out.stderr.contains(needle), "{spec}: {}", out.dump());
    }
}
