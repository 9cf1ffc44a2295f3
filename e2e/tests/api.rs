//! keel-vmm's control socket (`--api-socket`), end to end.
//!
//! On the native /dev/kvm with payload guests (milliseconds): status,
//! pause/resume (the guest stops echoing serial input while paused), the
//! power button, stop, bad input, bad socket paths. In the KVM rig with the
//! stock Linux guest: pause stops a running counter and resume restarts it,
//! and the power button over the socket powers the guest off.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{keel_vmm, native_kvm, Payload};
use vmm_api::{Client, ErrorCode, Reply, Request, VmState};
use xtask::proc::ChildGuard;

/// A keel-vmm running a payload natively, with its control socket.
struct Vmm {
    child: ChildGuard,
    dir: PathBuf,
    socket: PathBuf,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-api-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Vmm {
    /// Starts `payload` with `--api-socket` and `extra` arguments; `None`
    /// (after SKIPPED) without a usable /dev/kvm.
    fn start(name: &str, payload: Payload, extra: &[&str]) -> Option<Vmm> {
        if !native_kvm() {
            return None;
        }
        let elf = xtask::payload::build(payload).unwrap();
        let dir = temp_dir(name);
        let socket = dir.join("api.sock");
        let mut cmd = Command::new(keel_vmm());
        cmd.arg("--kernel")
            .arg(&elf)
            .arg("--api-socket")
            .arg(&socket)
            .args(["--memory", "64M"])
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout")).unwrap())
            .stderr(File::create(dir.join("stderr")).unwrap());
        let child = ChildGuard::spawn(&mut cmd, true).unwrap();
        let vmm = Vmm { child, dir, socket };
        vmm.wait_for_socket();
        Some(vmm)
    }

    fn wait_for_socket(&self) {
        let start = Instant::now();
        while Client::connect(&self.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no control socket: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn client(&self) -> Client {
        let c = Client::connect(&self.socket).unwrap();
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        self.file("stderr")
    }

    /// Waits for `marker` in the file `name` (the console).
    fn wait_for(&self, name: &str, marker: &str) {
        let start = Instant::now();
        while !self.file(name).contains(marker) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{marker} never appeared in {name}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for keel-vmm to end; its exit status.
    fn exit_status(&mut self) -> Option<i32> {
        let s = self
            .child
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
            .expect("keel-vmm did not end");
        s.code()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(c: &mut Client) -> vmm_api::VmStatus {
    match c.call(Request::Status).unwrap() {
        Reply::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

fn error_code(c: &mut Client, r: Request) -> ErrorCode {
    c.call(r).unwrap_err().api().expect("an error answer").code
}

#[test]
fn status_pause_resume_and_stop() {
    // A disk the payload never touches: its counters stay at 0.
    let disk = std::env::temp_dir().join(format!("keel-api-e2e-{}-disk.raw", std::process::id()));
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk_arg = format!("path={},format=raw,serial=KEEL-N", disk.display());
    let vmm = Vmm::start(
        "stop",
        Payload::Hang,
        &[
            "--cpus",
            "2",
            "--serial",
            "file=console",
            "--disk",
            &disk_arg,
        ],
    );
    let _ = std::fs::remove_file(&disk);
    let Some(mut vmm) = vmm else {
        return;
    };
    vmm.wait_for("console", Payload::Hang.marker());
    let mut c = vmm.client();
    let s = status(&mut c);
    assert_eq!(s.state, VmState::Running);
    assert_eq!((s.vcpus, s.memory_bytes, s.boots), (2, 64 << 20, 1));
    assert_eq!(s.balloon, None);
    assert_eq!(c.call(Request::Pause).unwrap(), Reply::Done);
    assert_eq!(status(&mut c).state, VmState::Paused);
    assert_eq!(
        c.call(Request::Counters).unwrap(),
        Reply::Counters(vmm_api::VmCounters {
            disks: vec![vmm_api::DiskCounters {
                id: "disk0".into(),
                serial: Some("KEEL-N".into()),
                ..Default::default()
            }],
            nics: Vec::new(),
        })
    );
    assert_eq!(error_code(&mut c, Request::Pause), ErrorCode::InvalidState);
    assert_eq!(c.call(Request::Resume).unwrap(), Reply::Done);
    assert_eq!(error_code(&mut c, Request::Resume), ErrorCode::InvalidState);
    assert_eq!(
        error_code(&mut c, Request::BalloonSet { target_bytes: 0 }),
        ErrorCode::NoDevice
    );
    assert_eq!(
        error_code(&mut c, Request::BalloonStats),
        ErrorCode::NoDevice
    );
    // Garbage on a second connection changes nothing.
    let mut raw = vmm.client();
    assert!(raw.call_raw("not json").unwrap().contains("bad-json"));
    assert!(raw
        .call_raw(&"x".repeat(vmm_api::MAX_REQUEST_LINE * 2))
        .unwrap()
        .contains("line-too-long"));
    assert_eq!(status(&mut c).state, VmState::Running);
    // Stop: answered, then keel-vmm exits 5 and removes its socket.
    assert_eq!(c.call(Request::Stop).unwrap(), Reply::Done);
    assert_eq!(vmm.exit_status(), Some(5), "{}", vmm.stderr());
    assert!(
        vmm.stderr().contains("stopped on request (control socket)"),
        "{}",
        vmm.stderr()
    );
    assert!(!vmm.socket.exists());
}

#[test]
fn power_button_over_the_socket_powers_the_guest_off() {
    let Some(mut vmm) = Vmm::start("button", Payload::Button, &["--serial", "file=console"]) else {
        return;
    };
    vmm.wait_for("console", Payload::Button.marker());
    let mut c = vmm.client();
    // Pressed while paused: the VM is resumed first so the guest can react.
    c.call(Request::Pause).unwrap();
    assert_eq!(c.call(Request::PowerButton).unwrap(), Reply::Done);
    assert_eq!(vmm.exit_status(), Some(0), "{}", vmm.stderr());
    assert!(vmm.file("console").contains("KEEL-PAYLOAD-BUTTON"));
    assert!(
        vmm.stderr().contains("guest powered off"),
        "{}",
        vmm.stderr()
    );
    assert!(!vmm.socket.exists(), "socket removed at exit");
}

#[test]
fn power_button_ignored_ends_in_a_hard_stop() {
    let Some(mut vmm) = Vmm::start(
        "ignored",
        Payload::Hang,
        &["--serial", "file=console", "--shutdown-timeout", "1"],
    ) else {
        return;
    };
    let mut c = vmm.client();
    c.call(Request::PowerButton).unwrap();
    assert_eq!(status(&mut c).state, VmState::ShuttingDown);
    assert_eq!(error_code(&mut c, Request::Pause), ErrorCode::InvalidState);
    assert_eq!(
        error_code(&mut c, Request::PowerButton),
        ErrorCode::InvalidState
    );
    assert_eq!(vmm.exit_status(), Some(5), "{}", vmm.stderr());
}

/// Reads what the serial socket sends within `wait`.
fn read_for(s: &mut UnixStream, wait: Duration) -> String {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + wait;
    let mut buf = [0u8; 256];
    while Instant::now() < end {
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_paused_guest_runs_no_code_until_resumed() {
    let Some(vmm) = Vmm::start("echo", Payload::Echo, &["--serial", "socket=serial.sock"]) else {
        return;
    };
    let mut serial = UnixStream::connect(vmm.dir.join("serial.sock")).unwrap();
    // The marker may have gone out before we connected: wait for the
    // payload to echo instead.
    let start = Instant::now();
    loop {
        serial.write_all(b"a").unwrap();
        if read_for(&mut serial, Duration::from_millis(100)).contains('a') {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no echo");
    }
    // Drain echoes of the extra a's still on their way.
    read_for(&mut serial, Duration::from_millis(300));
    let mut c = vmm.client();
    c.call(Request::Pause).unwrap();
    serial.write_all(b"b").unwrap();
    let while_paused = read_for(&mut serial, Duration::from_millis(700));
    assert!(!while_paused.contains('b'), "echoed while paused");
    c.call(Request::Resume).unwrap();
    assert!(read_for(&mut serial, Duration::from_millis(1000)).contains('b'));
    c.call(Request::Stop).unwrap();
}

#[test]
fn bad_socket_paths_are_bad_input() {
    if !native_kvm() {
        return;
    }
    let elf = xtask::payload::build(Payload::Ok).unwrap();
    let dir = temp_dir("paths");
    let file = dir.join("plain");
    std::fs::write(&file, "x").unwrap();
    for (path, needle) in [
        (file.clone(), "exists and is not a socket"),
        (
            dir.join("missing/api.sock"),
            "Cannot create the control socket",
        ),
    ] {
        let out = e2e::run_keel_vmm(&[
            "--kernel",
            elf.to_str().unwrap(),
            "--api-socket",
            path.to_str().unwrap(),
        ]);
        assert_eq!(out.status, Some(2), "{}", out.dump());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.dump());
        assert!(out.stderr.contains(needle), "{}", out.dump());
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The command-line client, brought into L1 for the rig tests.
fn api_client() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_keel-api-client"))
}

/// The guest prints a counter; the driver pauses it, checks the counter
/// stands still, resumes it, checks it moves, and powers it off.
const COUNTER: &str = "i=0; while :; do echo TICK=$i; i=$((i+1)); sleep 0.2; done";

const PAUSE_DRIVER: &str = r#"
c=keel-api-client; s=api.sock
ticks() { grep -c '^TICK=' "$out"; }
$c $s wait || exit 1
n=0; until grep -q '^TICK=5' "$out"; do sleep 0.2; n=$((n+1)); [ $n -lt 600 ] || { echo NO_TICKS; exit 1; }; done
echo STATUS_RUNNING=$($c $s status)
$c $s pause && echo PAUSED=1
sleep 1
echo TICKS_A=$(ticks)
sleep 4
echo TICKS_B=$(ticks)
echo STATUS_PAUSED=$($c $s status)
echo COUNTERS=$($c $s counters)
$c $s resume && echo RESUMED=1
sleep 4
echo TICKS_C=$(ticks)
echo BUTTON=$($c $s power-button)
"#;

#[test]
fn paused_linux_guest_stops_and_resumes_and_the_power_button_powers_it_off() {
    let Some(out) = e2e::LinuxVm::new()
        .cpus(2)
        .cmd(COUNTER)
        .arg("--api-socket")
        .arg("api.sock")
        // A disk the guest's kernel reads (its partition table) as it boots.
        .l1_before("dd if=/dev/zero of=disk.raw bs=1M count=1")
        .arg("--disk")
        .arg("path=disk.raw,format=raw,serial=KEEL-CNT")
        .run_with_driver(PAUSE_DRIVER, &[api_client()])
    else {
        return;
    };
    let num = |name: &str| -> u64 {
        out.value(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {}", out.dump()))
    };
    assert_eq!(out.value("PAUSED").as_deref(), Some("1"), "{}", out.dump());
    let (a, b, c) = (num("TICKS_A"), num("TICKS_B"), num("TICKS_C"));
    assert!(a >= 6, "{}", out.dump());
    assert_eq!(a, b, "the counter moved while paused: {}", out.dump());
    assert!(
        c > b,
        "the counter did not move after resume: {}",
        out.dump()
    );
    let running = out.value("STATUS_RUNNING").unwrap_or_default();
    assert!(
        running.contains("\"state\":\"running\"") && running.contains("\"vcpus\":2"),
        "{}",
        out.dump()
    );
    let paused = out.value("STATUS_PAUSED").unwrap_or_default();
    assert!(paused.contains("\"state\":\"paused\""), "{}", out.dump());
    // The disk's counters, answered while paused: the boot read it.
    let counters = out.value("COUNTERS").unwrap_or_default();
    let Ok(Reply::Counters(c)) = serde_json::from_str(&counters) else {
        panic!("no counters: {}", out.dump());
    };
    assert_eq!(c.disks.len(), 1, "{}", out.dump());
    let disk = &c.disks[0];
    assert_eq!(disk.serial.as_deref(), Some("KEEL-CNT"), "{}", out.dump());
    assert!(
        disk.read_ops > 0 && disk.read_bytes >= 512 * disk.read_ops,
        "{counters}"
    );
    assert_eq!(disk.errors, 0, "{counters}");
    assert_eq!(
        out.value("BUTTON").as_deref(),
        Some("\"done\""),
        "{}",
        out.dump()
    );
    assert_eq!(out.vm.status, Some(0), "{}", out.dump());
    assert!(
        out.vm.stderr.contains("guest powered off"),
        "{}",
        out.dump()
    );
}
