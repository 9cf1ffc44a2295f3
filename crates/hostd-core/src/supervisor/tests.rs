//! The supervisor with the real keel-vmm and payload guests on the native
//! /dev/kvm (milliseconds per VM). Without a usable /dev/kvm each test
//! prints `SKIPPED (...)` and passes, unless `KEEL_REQUIRE_KVM=1`.

use std::io::Write as _;
use std::process::Command;
use std::sync::OnceLock;

use hostd_api::{BootConfig, GuestOs};
use tokio::sync::broadcast;
use xtask::payload::Payload;

use super::*;

/// Prints `SKIPPED (<reason>)`, or fails under `KEEL_REQUIRE_KVM=1`.
fn skip(reason: &str) {
    if std::env::var("KEEL_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KEEL_REQUIRE_KVM=1 and this test cannot run: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED ({reason})");
}

/// keel-vmm beside the test binary (`target/debug/`), built when missing.
fn keel_vmm() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("keel-vmm")))
            .filter(|p| p.exists())
            .unwrap_or_else(xtask::paths::keel_vmm_debug);
        if !path.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "keel-vmm"])
                .current_dir(xtask::paths::workspace_root())
                .status()
                .expect("running cargo build -p keel-vmm");
            assert!(status.success(), "cargo build -p keel-vmm failed");
        }
        path
    })
}

type Exits = Arc<Mutex<Vec<(VmExit, Instant)>>>;

/// A state directory with a supervisor that records every exit.
struct Host {
    dir: PathBuf,
    sup: Supervisor,
    exits: Exits,
}

impl Host {
    /// None (after `skip`) when payload guests cannot run here.
    fn new(name: &str) -> Option<Host> {
        if let xtask::host::Kvm::Unusable(why) = xtask::host::kvm() {
            skip(&why);
            return None;
        }
        // Short: Unix socket paths are limited to 108 bytes.
        let dir = std::env::temp_dir().join(format!("ksv-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (sup, exits) = supervisor(&dir);
        Some(Host { dir, sup, exits })
    }

    /// A VM folder holding `payload` as its kernel.
    fn vm(&self, name: &str, payload: Payload) -> (PathBuf, VmConfig) {
        let folder = self.dir.join("ds").join(name);
        fs::create_dir_all(&folder).unwrap();
        let elf = xtask::payload::build(payload).expect("building the payload");
        fs::copy(elf, folder.join("kernel.elf")).unwrap();
        let cfg = VmConfig {
            name: name.into(),
            vcpus: 1,
            memory_mib: 64,
            disks: vec![],
            nics: vec![],
            boot: BootConfig {
                kernel: "kernel.elf".into(),
                initrd: None,
                cmdline: String::new(),
            },
            guest_os: GuestOs::Other,
            notes: String::new(),
        };
        (folder, cfg)
    }

    /// Waits for the exit of VM `id`, at most `timeout`.
    fn exit_of(&self, id: i64, timeout: Duration) -> Option<(VmExit, Instant)> {
        wait_exit_in(&self.exits, id, timeout)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let ids: Vec<i64> = lock(&self.sup.shared.slots).keys().copied().collect();
        for id in ids {
            let _ = self.sup.stop(id);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn supervisor(state: &Path) -> (Supervisor, Exits) {
    let exits: Exits = Arc::new(Mutex::new(Vec::new()));
    let seen = exits.clone();
    let sup = Supervisor::new(
        keel_vmm().to_path_buf(),
        state.join("run"),
        Box::new(move |e| lock(&seen).push((e, Instant::now()))),
    );
    (sup, exits)
}

fn wait_exit_in(exits: &Exits, id: i64, timeout: Duration) -> Option<(VmExit, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = lock(exits).iter().find(|(e, _)| e.id == id) {
            return Some(e.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Collects a viewer's output (backlog first) until it holds `want`.
fn read_until(handle: &mut ConsoleHandle, seen: &mut Vec<u8>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(seen).contains(want) {
        match handle.output.try_recv() {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(broadcast::error::TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "no {want:?} on the console; saw {:?}",
                    String::from_utf8_lossy(seen)
                );
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("console: {e:?}; saw {:?}", String::from_utf8_lossy(seen)),
        }
    }
}

fn kill9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid}");
}

/// keel-vmm processes whose command line names `dir`.
fn vmms_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .filter(|pid| procfs::stat(*pid).is_ok_and(|s| s.state != 'Z'))
        .collect()
}

#[test]
fn console_fans_out_reset_reboots_and_stop_is_stopped() {
    let Some(host) = Host::new("echo") else {
        return;
    };
    let (folder, cfg) = host.vm("echo", Payload::Echo);
    let info = host.sup.start(1, &folder, &cfg).unwrap();
    assert_eq!(host.sup.running(1), Some(info));
    assert!(matches!(
        host.sup.start(1, &folder, &cfg),
        Err(SupervisorError::AlreadyRunning(1))
    ));
    let mut a = host.sup.console(1).unwrap();
    let mut b = host.sup.console(1).unwrap();
    let (mut seen_a, mut seen_b) = (a.backlog.clone(), b.backlog.clone());
    read_until(&mut a, &mut seen_a, Payload::Echo.marker());
    // Input from either viewer reaches the guest; its echo reaches both.
    b.input.send(b"ping-from-b\n".to_vec()).unwrap();
    read_until(&mut a, &mut seen_a, "ping-from-b");
    read_until(&mut b, &mut seen_b, "ping-from-b");
    // keel-vmm logs the console itself.
    let log = fs::read_to_string(folder.join(CONSOLE_LOG)).unwrap();
    assert!(log.contains(Payload::Echo.marker()), "{log}");

    let stats = host.sup.process_stats(1).unwrap();
    assert!(stats.rss_bytes > 1 << 20, "{stats:?}");
    match host.sup.request(1, Request::Status).unwrap() {
        Reply::Status(s) => assert_eq!((s.boots, s.vcpus), (1, 1)),
        other => panic!("{other:?}"),
    }
    // A refusal keeps the VMM's error code.
    match host.sup.request(1, Request::Resume) {
        Err(SupervisorError::Refused(e)) => {
            assert_eq!(e.code, vmm_api::ErrorCode::InvalidState)
        }
        other => panic!("{other:?}"),
    }
    // reset: the guest boots again in the same process.
    let before = seen_a.len();
    assert_eq!(host.sup.request(1, Request::Reset).unwrap(), Reply::Done);
    let mut after = seen_a.split_off(before);
    read_until(&mut a, &mut after, Payload::Echo.marker());
    match host.sup.request(1, Request::Status).unwrap() {
        Reply::Status(s) => assert_eq!(s.boots, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(host.sup.running(1).map(|r| r.pid), Some(info.pid));

    host.sup.stop(1).unwrap();
    let (exit, _) = host.exit_of(1, Duration::from_secs(1)).unwrap();
    assert_eq!(exit.reason, ExitReason::Stopped);
    assert!(
        exit.log_tail
            .iter()
            .any(|l| l.contains("stopped on request")),
        "{:?}",
        exit.log_tail
    );
    assert_eq!(host.sup.running(1), None);
    assert!(host.sup.wait_exit(1, Duration::ZERO));
    assert!(vmms_using(&host.dir).is_empty());
    // The viewers see the end.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match a.output.try_recv() {
            Err(broadcast::error::TryRecvError::Closed) => break,
            _ => {
                assert!(Instant::now() < deadline, "the console did not close");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    assert!(matches!(
        host.sup.stop(1),
        Err(SupervisorError::NotRunning(1))
    ));
    assert_eq!(lock(&host.exits).len(), 1, "on_exit once");
}

#[test]
fn kill_9_is_a_crash_seen_within_a_second() {
    let Some(host) = Host::new("kill") else {
        return;
    };
    let (folder, cfg) = host.vm("kill", Payload::Echo);
    let info = host.sup.start(2, &folder, &cfg).unwrap();
    let killed = Instant::now();
    kill9(info.pid);
    let (exit, seen) = host.exit_of(2, Duration::from_secs(5)).unwrap();
    assert!(
        seen.duration_since(killed) < Duration::from_secs(1),
        "seen after {:?}",
        seen.duration_since(killed)
    );
    assert_eq!(
        exit.reason,
        ExitReason::Crashed {
            status: None,
            signal: Some(libc::SIGKILL),
            message: "keel-vmm was killed by signal 9 (SIGKILL)".into()
        }
    );
    assert_eq!(host.sup.running(2), None);
    // It can be started again (stale sockets are replaced).
    host.sup.start(2, &folder, &cfg).unwrap();
    host.sup.stop(2).unwrap();
}

#[test]
fn a_new_supervisor_attaches_to_a_running_vmm_and_sees_its_end() {
    let Some(host) = Host::new("attach") else {
        return;
    };
    let (folder, cfg) = host.vm("attach", Payload::Echo);
    let info = host.sup.start(3, &folder, &cfg).unwrap();
    // keeld restarted: a second supervisor on the same state directory.
    let (again, exits) = supervisor(&host.dir);
    assert!(again.last_exit(3, &folder).is_none(), "it runs");
    assert_eq!(again.attach(3, &folder).unwrap(), Some(info));
    assert_eq!(again.attach(3, &folder).unwrap(), Some(info), "idempotent");
    assert!(again.process_stats(3).is_some());
    // Its console: the output from before the restart comes first (keel-vmm
    // replays it to the new connection: in the backlog or right after it).
    let mut view = again.console(3).unwrap();
    let mut seen = view.backlog.clone();
    read_until(&mut view, &mut seen, Payload::Echo.marker());
    view.input.send(b"after-restart\n".to_vec()).unwrap();
    read_until(&mut view, &mut seen, "after-restart");

    let killed = Instant::now();
    kill9(info.pid);
    let (exit, seen_at) = wait_exit_in(&exits, 3, Duration::from_secs(5)).unwrap();
    assert!(seen_at.duration_since(killed) < Duration::from_secs(1));
    match exit.reason {
        // Not its child: no status, but no report either.
        ExitReason::Crashed {
            status: None,
            signal: None,
            message,
        } => assert!(message.contains("without an exit report"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(again.running(3), None);
    // The first supervisor (the process's parent) saw it too.
    assert!(host.exit_of(3, Duration::from_secs(5)).is_some());

    // A third start of keeld finds the stale socket: a crash while away.
    let (third, third_exits) = supervisor(&host.dir);
    match third.last_exit(3, &folder).map(|e| e.reason) {
        Some(ExitReason::Crashed { message, .. }) => {
            assert!(message.contains("while keeld was not running"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(third.attach(3, &folder).unwrap(), None);
    assert!(
        !host.dir.join("run/3/api.sock").exists(),
        "stale socket removed"
    );
    assert!(third.last_exit(3, &folder).is_none());
    assert!(lock(&third_exits).is_empty());

    // A VMM that ended cleanly while keeld was away leaves its report.
    third.start(3, &folder, &cfg).unwrap();
    third.stop(3).unwrap();
    let (fourth, _) = supervisor(&host.dir);
    assert_eq!(
        fourth.last_exit(3, &folder).map(|e| e.reason),
        Some(ExitReason::Stopped)
    );
}

#[test]
fn guest_power_off_and_triple_fault_are_told_apart() {
    let Some(host) = Host::new("ends") else {
        return;
    };
    let (folder, cfg) = host.vm("ok", Payload::Ok);
    // The guest may power off before `start` even sees the socket answer:
    // either start fails with status 0 or the exit is PoweredOff.
    match host.sup.start(4, &folder, &cfg) {
        Ok(_) => {
            let (exit, _) = host.exit_of(4, Duration::from_secs(5)).unwrap();
            assert_eq!(exit.reason, ExitReason::PoweredOff);
        }
        Err(SupervisorError::StartFailed { message, .. }) => {
            assert!(message.contains("status 0"), "{message}")
        }
        Err(e) => panic!("{e}"),
    }
    let (folder, cfg) = host.vm("tf", Payload::TripleFault);
    if host.sup.start(5, &folder, &cfg).is_ok() {
        let (exit, _) = host.exit_of(5, Duration::from_secs(5)).unwrap();
        match exit.reason {
            ExitReason::Crashed {
                status: Some(3),
                signal: None,
                message,
            } => assert!(message.contains("crashed"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_missing_kernel_fails_clearly_and_leaves_no_process() {
    let Some(host) = Host::new("nokernel") else {
        return;
    };
    let (folder, mut cfg) = host.vm("nk", Payload::Echo);
    cfg.boot.kernel = "missing.elf".into();
    let started = Instant::now();
    let err = host.sup.start(6, &folder, &cfg).unwrap_err();
    assert!(started.elapsed() < START_TIMEOUT, "failed fast");
    let text = err.to_string();
    assert!(
        text.starts_with("keel-vmm failed to start: keel-vmm exited with status 2"),
        "{text}"
    );
    assert!(text.contains("missing.elf"), "{text}");
    assert!(
        err.log_tail().iter().any(|l| l.contains("missing.elf")),
        "{:?}",
        err.log_tail()
    );
    assert!(
        !err.log_tail().iter().any(|l| l.contains("KEEL")),
        "only this run's lines"
    );
    assert_eq!(host.sup.running(6), None);
    assert!(vmms_using(&host.dir).is_empty());
    assert!(
        lock(&host.exits).is_empty(),
        "no on_exit for a failed start"
    );
    // A bad file name is refused before anything runs.
    cfg.boot.kernel = "../escape".into();
    assert!(matches!(
        host.sup.start(6, &folder, &cfg),
        Err(SupervisorError::BadConfig(_))
    ));
    // The slot is free again.
    cfg.boot.kernel = "kernel.elf".into();
    host.sup.start(6, &folder, &cfg).unwrap();
    host.sup.stop(6).unwrap();
}

#[test]
fn a_keel_vmm_that_never_answers_is_killed_after_the_timeout() {
    // No KVM needed: `sleep` stands in for a keel-vmm that hangs.
    let dir = std::env::temp_dir().join(format!("ksv-{}-hang", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let folder = dir.join("vm");
    fs::create_dir_all(&folder).unwrap();
    let script = dir.join("fake-vmm");
    // A loop of short sleeps, so that nothing outlives the killed shell
    // for long; its command line names `dir`.
    fs::write(
        &script,
        "#!/bin/sh\necho \"keel-vmm: pretending\" >&2\nwhile :; do sleep 0.1; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let sup = Supervisor::new(script, dir.join("run"), Box::new(|_| {}));
    let cfg = VmConfig {
        name: "vm".into(),
        vcpus: 1,
        memory_mib: 64,
        disks: vec![],
        nics: vec![],
        boot: BootConfig {
            kernel: "k".into(),
            initrd: None,
            cmdline: String::new(),
        },
        guest_os: GuestOs::Other,
        notes: String::new(),
    };
    let err = sup.start(7, &folder, &cfg).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not answer"), "{text}");
    assert!(text.contains("pretending"), "{text}");
    assert!(vmms_using(&dir).is_empty(), "the hung process was killed");
    assert_eq!(sup.running(7), None);
    assert!(matches!(
        sup.request(7, Request::Status),
        Err(SupervisorError::NotRunning(7))
    ));
    let _ = fs::remove_dir_all(&dir);
}
