//! The facade with the real supervisor: keel-vmm running payload guests on
//! the native /dev/kvm. Without a usable /dev/kvm the test prints
//! `SKIPPED (...)` and passes, unless `KEEL_REQUIRE_KVM=1`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hostd_api::{BootCreate, PowerOp, PowerState, Severity, TaskState, VmCreate};
use xtask::payload::Payload;

use crate::fsutil::TestDir;
use crate::{Caller, ConsoleHandle, ErrorKind, Host, HostOptions};

fn skip(reason: &str) {
    if std::env::var("KEEL_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KEEL_REQUIRE_KVM=1 and this test cannot run: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED ({reason})");
}

/// keel-vmm beside the test binary (`target/debug/`), built when missing.
fn keel_vmm() -> PathBuf {
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
}

fn open(opts: &HostOptions) -> Host {
    Host::open(opts.clone()).unwrap().host
}

fn wait_task(host: &Host, admin: &Caller, task: hostd_api::Task) -> hostd_api::Task {
    let done = host
        .task_wait(admin, task.id, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        done.state,
        TaskState::Success,
        "{}: {:?}",
        done.kind,
        done.error
    );
    done
}

fn create(host: &Host, admin: &Caller, name: &str, payload: Payload) {
    let elf = xtask::payload::build(payload).expect("building the payload");
    let spec = VmCreate {
        name: name.into(),
        datastore: None,
        vcpus: 1,
        memory_mib: 64,
        disks: vec![],
        nics: vec![],
        boot: BootCreate {
            kernel: elf.display().to_string(),
            initrd: None,
            cmdline: String::new(),
        },
        guest_os: Default::default(),
        notes: String::new(),
        autostart: false,
    };
    let task = host.vm_create(admin, spec).unwrap();
    wait_task(host, admin, task);
}

fn power(host: &Host, admin: &Caller, name: &str, op: PowerOp) {
    let task = host.vm_power(admin, name, op).unwrap();
    wait_task(host, admin, task);
}

/// Reads the console until `needle` shows up (10 s at most).
fn read_until(console: &mut ConsoleHandle, seen: &mut String, needle: &str) {
    seen.push_str(&String::from_utf8_lossy(&std::mem::take(
        &mut console.backlog,
    )));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the console: {seen:?}"
        );
        match console.output.try_recv() {
            Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("console: {e}"),
        }
    }
}

fn state(host: &Host, admin: &Caller, name: &str) -> PowerState {
    host.vm_get(admin, name).unwrap().power_state
}

fn wait_state(host: &Host, admin: &Caller, name: &str, want: PowerState, within: Duration) {
    let deadline = Instant::now() + within;
    while state(host, admin, name) != want {
        assert!(Instant::now() < deadline, "VM {name} never became {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn payload_vms_run_through_their_lifecycle_with_keel_vmm() {
    if let xtask::host::Kvm::Unusable(why) = xtask::host::kvm() {
        skip(&why);
        return;
    }
    let dir = TestDir::new("real");
    let opts = HostOptions {
        state_dir: dir.path().join("s"),
        keel_vmm: keel_vmm(),
        admin_password: Some("admin-password-1".into()),
        vm_network_subnet: None,
        host_network: false,
    };
    let admin = Caller {
        user: "admin".into(),
    };
    let host = open(&opts);
    create(&host, &admin, "echo", Payload::Echo);
    create(&host, &admin, "button", Payload::Button);

    // On, the console, pause and resume.
    power(&host, &admin, "echo", PowerOp::On);
    let vm = host.vm_get(&admin, "echo").unwrap();
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    let pid = vm.runtime.unwrap().pid;
    assert!(pid > 0);
    let mut console = host.vm_console(&admin, "echo").unwrap();
    let mut seen = String::new();
    read_until(&mut console, &mut seen, Payload::Echo.marker());
    console.input.send(b"ping-42".to_vec()).unwrap();
    read_until(&mut console, &mut seen, "ping-42");
    let err = host.vm_power(&admin, "echo", PowerOp::On).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(
        host.vm_delete(&admin, "echo").unwrap_err().kind,
        ErrorKind::Conflict
    );
    power(&host, &admin, "echo", PowerOp::Pause);
    assert_eq!(state(&host, &admin, "echo"), PowerState::Paused);
    power(&host, &admin, "echo", PowerOp::Resume);
    assert_eq!(state(&host, &admin, "echo"), PowerState::PoweredOn);
    let metrics = host.metrics(&admin).unwrap();
    assert!(metrics.contains("keel_vm_power_state{vm=\"echo\",state=\"poweredOn\"} 1"));
    assert!(metrics.contains("keel_vm_memory_rss_bytes{vm=\"echo\"}"));
    drop(console);

    // keeld restarts: the VM keeps running and is found again.
    drop(host);
    let host = open(&opts);
    let vm = host.vm_get(&admin, "echo").unwrap();
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    assert_eq!(vm.runtime.unwrap().pid, pid);
    let kinds: Vec<String> = host
        .event_list(&admin, None, 100, Some("vm:echo"))
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"vm.reattached".to_string()), "{kinds:?}");

    // kill -9 of the VMM is a crash, seen at once.
    let killed = Instant::now();
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_state(
        &host,
        &admin,
        "echo",
        PowerState::Crashed,
        Duration::from_secs(3),
    );
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    let crash = host
        .event_list(&admin, None, 10, Some("vm:echo"))
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.kind == "vm.crashed")
        .expect("a vm.crashed event");
    assert_eq!(crash.severity, Severity::Error);

    // On again, then off hard.
    power(&host, &admin, "echo", PowerOp::On);
    let mut console = host.vm_console(&admin, "echo").unwrap();
    let mut seen = String::new();
    read_until(&mut console, &mut seen, Payload::Echo.marker());
    power(&host, &admin, "echo", PowerOp::Reset);
    // The guest boots again in the same process.
    seen.clear();
    read_until(&mut console, &mut seen, Payload::Echo.marker());
    let vm = host.vm_get(&admin, "echo").unwrap();
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    assert_eq!(vm.runtime.unwrap().boots, 2);
    drop(console);
    power(&host, &admin, "echo", PowerOp::Off);
    assert_eq!(state(&host, &admin, "echo"), PowerState::PoweredOff);
    assert!(host
        .vm_log(&admin, "echo", 0)
        .unwrap()
        .contains(Payload::Echo.marker()));

    // Shutdown: the guest honours the power button and powers off.
    power(&host, &admin, "button", PowerOp::On);
    let mut console = host.vm_console(&admin, "button").unwrap();
    let mut seen = String::new();
    read_until(&mut console, &mut seen, Payload::Button.marker());
    power(&host, &admin, "button", PowerOp::Shutdown);
    assert_eq!(state(&host, &admin, "button"), PowerState::PoweredOff);
    let off = host
        .event_list(&admin, None, 10, Some("vm:button"))
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.kind == "vm.powered-off")
        .expect("a vm.powered-off event");
    assert!(off.message.ends_with("powered off"), "{}", off.message);

    host.vm_delete(&admin, "echo").unwrap();
    host.vm_delete(&admin, "button").unwrap();
}
