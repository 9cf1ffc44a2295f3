//! What keel-vmm offers a supervisor (keeld), end to end on the native
//! /dev/kvm with payload guests: `reset` on the control socket, the exit
//! report (`--exit-file`) for every way a VM ends, and the console logged
//! by keel-vmm itself (`--serial socket=PATH,log=FILE`) with the replay a
//! new console client gets.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{keel_vmm, native_kvm, Payload};
use vmm_api::{Client, ExitCause, ExitReport, Reply, Request};
use xtask::proc::ChildGuard;

/// A keel-vmm running a payload with a control socket, a logged socket
/// console and an exit file, all in its own directory.
struct Vmm {
    child: ChildGuard,
    dir: PathBuf,
}

impl Vmm {
    fn start(name: &str, payload: Payload, extra: &[&str]) -> Option<Vmm> {
        if !native_kvm() {
            return None;
        }
        let elf = xtask::payload::build(payload).unwrap();
        let dir = std::env::temp_dir().join(format!("keel-sv-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A stale report from an earlier run is removed at start.
        std::fs::write(dir.join("exit.json"), "stale").unwrap();
        let mut cmd = Command::new(keel_vmm());
        cmd.arg("--kernel")
            .arg(&elf)
            .args(["--memory", "64M", "--api-socket", "api.sock"])
            .args(["--serial", "socket=console.sock,log=console.log"])
            .args(["--exit-file", "exit.json"])
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout")).unwrap())
            .stderr(File::create(dir.join("stderr")).unwrap());
        let child = ChildGuard::spawn(&mut cmd, true).unwrap();
        let vmm = Vmm { child, dir };
        let start = Instant::now();
        while Client::connect(vmm.path("api.sock")).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no control socket: {}",
                vmm.file("stderr")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !vmm.path("exit.json").exists(),
            "the stale exit file was not removed"
        );
        Some(vmm)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn client(&self) -> Client {
        let c = Client::connect(self.path("api.sock")).unwrap();
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    /// Waits until console.log holds `marker` `count` times.
    fn wait_log(&self, marker: &str, count: usize) {
        let start = Instant::now();
        while self.file("console.log").matches(marker).count() < count {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{marker} x{count} never appeared in console.log: {:?} / {}",
                self.file("console.log"),
                self.file("stderr")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn exit_status(&mut self) -> Option<i32> {
        self.child
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
            .expect("keel-vmm did not end")
            .code()
    }

    fn report(&self) -> ExitReport {
        ExitReport::read(&self.path("exit.json"))
            .unwrap()
            .expect("no exit report")
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `stream` into `got` until `want` has been seen after byte `from`
/// of it (or fails after 20 s).
fn read_until(stream: &mut UnixStream, got: &mut Vec<u8>, from: usize, want: &str) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got[from.min(got.len())..]).contains(want) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{want:?} never came; got {:?}",
            String::from_utf8_lossy(got)
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("console closed; got {:?}", String::from_utf8_lossy(got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

fn boots(c: &mut Client) -> u32 {
    match c.call(Request::Status).unwrap() {
        Reply::Status(s) => s.boots,
        other => panic!("{other:?}"),
    }
}

#[test]
fn reset_reboots_the_guest_and_the_console_is_logged_and_replayed() {
    let Some(mut vmm) = Vmm::start("reset", Payload::Echo, &[]) else {
        return;
    };
    // No client yet: keel-vmm logs the console by itself.
    vmm.wait_log(Payload::Echo.marker(), 1);
    // A client connecting late gets the output it missed, then live output.
    let mut console = UnixStream::connect(vmm.path("console.sock")).unwrap();
    let mut got = Vec::new();
    read_until(&mut console, &mut got, 0, Payload::Echo.marker());
    console.write_all(b"typed-1\n").unwrap();
    read_until(&mut console, &mut got, 0, "typed-1");
    vmm.wait_log("typed-1", 1);

    let mut c = vmm.client();
    assert_eq!(boots(&mut c), 1);
    let before_reset = got.len();
    assert_eq!(c.call(Request::Reset).unwrap(), Reply::Done);
    vmm.wait_log(Payload::Echo.marker(), 2);
    assert_eq!(boots(&mut c), 2);
    // Same process, same console connection: the new boot's output and
    // echo come through it.
    read_until(&mut console, &mut got, before_reset, Payload::Echo.marker());
    console.write_all(b"typed-2\n").unwrap();
    read_until(&mut console, &mut got, before_reset, "typed-2");
    // Reset while paused also boots the guest again, running.
    c.call(Request::Pause).unwrap();
    c.call(Request::Reset).unwrap();
    vmm.wait_log(Payload::Echo.marker(), 3);
    match c.call(Request::Status).unwrap() {
        Reply::Status(s) => {
            assert_eq!((s.boots, s.state), (3, vmm_api::VmState::Running))
        }
        other => panic!("{other:?}"),
    }
    assert!(vmm.file("stderr").contains("reset (control socket)"));

    c.call(Request::Stop).unwrap();
    assert_eq!(vmm.exit_status(), Some(5));
    let r = vmm.report();
    assert_eq!((r.status, r.reason), (5, ExitCause::Stopped));
    assert_eq!(r.message, "stopped on request (control socket)");
    // The log outlives the process; its sockets do not.
    assert_eq!(
        vmm.file("console.log")
            .matches(Payload::Echo.marker())
            .count(),
        3
    );
    assert!(!vmm.path("console.sock").exists());
    assert!(!vmm.path("api.sock").exists());
}

#[test]
fn reset_with_no_reboot_ends_with_a_reset_report() {
    let Some(mut vmm) = Vmm::start("noreboot", Payload::Echo, &["--no-reboot"]) else {
        return;
    };
    vmm.wait_log(Payload::Echo.marker(), 1);
    vmm.client().call(Request::Reset).unwrap();
    assert_eq!(vmm.exit_status(), Some(0));
    let r = vmm.report();
    assert_eq!((r.status, r.reason), (0, ExitCause::Reset));
}

#[test]
fn every_ending_leaves_its_report() {
    // Guest power-off.
    if let Some(mut vmm) = Vmm::start("ok", Payload::Ok, &[]) {
        assert_eq!(vmm.exit_status(), Some(0));
        let r = vmm.report();
        assert_eq!((r.status, r.reason), (0, ExitCause::PoweredOff), "{r:?}");
        assert_eq!(r.message, "guest powered off");
        vmm.wait_log(Payload::Ok.marker(), 1);
    } else {
        return;
    }
    // Triple fault.
    if let Some(mut vmm) = Vmm::start("tf", Payload::TripleFault, &[]) {
        assert_eq!(vmm.exit_status(), Some(3));
        let r = vmm.report();
        assert_eq!((r.status, r.reason), (3, ExitCause::TripleFault), "{r:?}");
        assert!(r.message.contains("crashed"), "{r:?}");
    }
    // The guest ignores the power button: stopped after the timeout.
    if let Some(mut vmm) = Vmm::start("hang", Payload::Hang, &["--shutdown-timeout", "1"]) {
        vmm.wait_log(Payload::Hang.marker(), 1);
        vmm.client().call(Request::PowerButton).unwrap();
        assert_eq!(vmm.exit_status(), Some(5));
        let r = vmm.report();
        assert_eq!(
            (r.status, r.reason),
            (5, ExitCause::ShutdownTimeout),
            "{r:?}"
        );
    }
    // kill -9: no report.
    if let Some(mut vmm) = Vmm::start("kill", Payload::Echo, &[]) {
        vmm.child.signal(libc::SIGKILL).unwrap();
        assert_eq!(vmm.exit_status(), None);
        assert!(ExitReport::read(&vmm.path("exit.json")).unwrap().is_none());
    }
}

#[test]
fn bad_input_leaves_a_vmm_error_report() {
    if !native_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("keel-sv-e2e-{}-bad", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(keel_vmm())
        .args(["--kernel", "missing.elf", "--exit-file", "exit.json"])
        .args(["--serial", "socket=c.sock,log=console.log"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let r = ExitReport::read(&dir.join("exit.json")).unwrap().unwrap();
    assert_eq!((r.status, r.reason), (2, ExitCause::VmmError));
    assert!(r.message.contains("missing.elf"), "{r:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // An unopenable console log is bad input too, naming the file.
    let elf = xtask::payload::build(Payload::Ok).unwrap();
    let out = Command::new(keel_vmm())
        .arg("--kernel")
        .arg(&elf)
        .args(["--exit-file", "exit.json"])
        .args(["--serial", "socket=c.sock,log=no-such-dir/console.log"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let r = ExitReport::read(&dir.join("exit.json")).unwrap().unwrap();
    assert!(r.message.contains("no-such-dir/console.log"), "{r:?}");
    assert!(!dir.join("c.sock").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
