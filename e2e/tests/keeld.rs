//! keeld end to end: a real keeld on a loopback port with a temporary state
//! directory, driven through the `client` crate and the `keel` CLI; VMs are
//! tiny payload guests on the native /dev/kvm (the echo payload prints its
//! marker, then echoes its serial input).

use std::time::{Duration, Instant};

use client::{Client, ClientError};
use e2e::{native_kvm, Keeld, Payload, ADMIN_PASSWORD};
use hostd_api::*;

const WAIT: Duration = Duration::from_secs(60);

fn payload(p: Payload) -> String {
    xtask::payload::build(p)
        .expect("building the payload")
        .display()
        .to_string()
}

fn spec(name: &str, p: Payload) -> VmCreate {
    VmCreate {
        name: name.into(),
        datastore: None,
        vcpus: 1,
        memory_mib: 32,
        disks: vec![],
        nics: vec![],
        boot: BootCreate {
            kernel: payload(p),
            initrd: None,
            cmdline: String::new(),
        },
        guest_os: GuestOs::Other,
        notes: String::new(),
        autostart: false,
    }
}

fn done(c: &Client, t: Task) -> Task {
    let t = c.task_wait(t.id, WAIT).expect("waiting for the task");
    assert!(
        matches!(t.state, TaskState::Success | TaskState::Error),
        "task still running: {t:?}"
    );
    t
}

fn ok(c: &Client, t: Task) {
    let t = done(c, t);
    assert_eq!(t.state, TaskState::Success, "{t:?}");
}

fn create(c: &Client, name: &str, p: Payload) {
    ok(c, c.vm_create(&spec(name, p)).expect("create"));
}

fn power(c: &Client, name: &str, op: PowerOp) {
    ok(c, c.vm_power(name, op).expect("power"));
}

fn state(c: &Client, name: &str) -> PowerState {
    c.vm_get(name).expect("vm").power_state
}

/// Polls until the VM is in `want` (bounded).
fn wait_state(c: &Client, name: &str, want: PowerState, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = state(c, name);
        if s == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{name} is {s:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(e: ClientError) -> u16 {
    e.status()
        .unwrap_or_else(|| panic!("not an API error: {e}"))
}

fn code(e: &ClientError) -> &str {
    match e {
        ClientError::Api { code, .. } => code,
        other => panic!("not an API error: {other}"),
    }
}

#[test]
fn first_start_makes_the_host_and_admin_logs_in() {
    let k = Keeld::start("first");
    assert!(k.url.starts_with("https://127.0.0.1:"), "{}", k.url);
    assert_eq!(k.fingerprint.len(), 95, "{:?}", k.log);
    assert!(k.state.join("datastores/datastore1").is_dir());
    let mut c = k.anonymous();
    // Nothing without a login.
    assert_eq!(status(c.vm_list().unwrap_err()), 401);
    let err = c.login("admin", "wrong").unwrap_err();
    assert_eq!(status(err), 401);
    let session = c.login("admin", ADMIN_PASSWORD).expect("login");
    assert_eq!(session.user, "admin");
    assert!(session.host_privileges.contains(&Privilege::VmConfig));
    let ds = c.datastore_list().unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].name, "datastore1");
    assert!(ds[0].capacity_bytes > 0 && ds[0].free_bytes <= ds[0].capacity_bytes);
    let host = c.host_info().unwrap();
    assert!(
        host.cpu.threads >= 1 && host.memory_total_bytes > 0,
        "{host:?}"
    );
    assert!(!host.compatibility.is_empty());
    // The audit trail has the failed and the good login.
    let events = c.event_list(None, 50, None).unwrap();
    let kinds: Vec<&str> = events.items.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.iter().any(|k| k.contains("login-failed")),
        "{kinds:?}"
    );
    // The OpenAPI document needs no login.
    let doc: serde_json::Value = k
        .anonymous()
        .call::<_, ()>("GET", "/openapi.json", None)
        .unwrap();
    assert!(doc["paths"]["/api/v1/vms"].is_object());
}

#[test]
fn a_generated_admin_password_is_written_for_root_only() {
    // Without KEEL_ADMIN_PASSWORD keeld generates one. An address no
    // interface has (TEST-NET-1) makes keeld stop right after it set up
    // its state, so the test need not stop it.
    let state = std::env::temp_dir().join(format!("keel-e2e-genpw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let out = std::process::Command::new(e2e::workspace_bin("keeld"))
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", "192.0.2.1:8443", "--keel-vmm"])
        .arg(e2e::keel_vmm())
        .env_remove("KEEL_ADMIN_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin-password"), "says where: {stderr}");
    assert!(
        stderr.contains("Cannot listen on 192.0.2.1:8443"),
        "{stderr}"
    );
    let file = state.join("admin-password");
    let meta = std::fs::metadata(&file).expect("admin-password written");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o077, 0);
    let pw = std::fs::read_to_string(&file).unwrap();
    assert!(pw.trim().len() >= 16, "a strong password");
    e2e::cleanup_state(&state);
}

#[test]
fn the_cli_creates_starts_watches_and_stops_a_vm() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("cli");
    let kernel = payload(Payload::Echo);
    k.keel_ok(&[
        "vm",
        "create",
        "demo",
        "--kernel",
        &kernel,
        "--memory",
        "32M",
        "--guest-os",
        "other",
    ]);
    let list = k.keel_ok(&["vm", "list"]);
    assert!(
        list.contains("demo") && list.contains("poweredOff"),
        "{list}"
    );
    k.keel_ok(&["vm", "start", "demo"]);
    let c = k.admin();
    assert_eq!(state(&c, "demo"), PowerState::PoweredOn);
    // The console: the boot marker, then what we type comes back.
    let mut con = c.console("demo").expect("console");
    let seen = con.read_until(Payload::Echo.marker(), WAIT).unwrap();
    assert!(seen.contains(Payload::Echo.marker()), "{seen:?}");
    con.send(b"ping-42").unwrap();
    let seen = con.read_until("ping-42", WAIT).unwrap();
    assert!(seen.contains("ping-42"), "{seen:?}");
    // A second viewer sees the same stream, recent output first.
    let mut con2 = c.console("demo").expect("second console");
    let seen = con2.read_until(Payload::Echo.marker(), WAIT).unwrap();
    assert!(seen.contains(Payload::Echo.marker()), "backlog: {seen:?}");
    con2.send(b"from-two").unwrap();
    assert!(con
        .read_until("from-two", WAIT)
        .unwrap()
        .contains("from-two"));
    // The console log in the VM's folder has it too.
    let log = k.keel_ok(&["vm", "log", "demo"]);
    assert!(log.contains(Payload::Echo.marker()), "{log}");
    let json = k.keel_ok(&["--json", "vm", "show", "demo"]);
    let v: VmInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(v.power_state, PowerState::PoweredOn);
    assert!(v.runtime.is_some_and(|r| r.pid > 0));
    k.keel_ok(&["vm", "pause", "demo"]);
    assert_eq!(state(&c, "demo"), PowerState::Paused);
    k.keel_ok(&["vm", "resume", "demo"]);
    k.keel_ok(&["vm", "stop", "demo"]);
    assert_eq!(state(&c, "demo"), PowerState::PoweredOff);
    let tasks = k.keel_ok(&["task", "list"]);
    assert!(
        tasks.contains("vm.create") || tasks.contains("create"),
        "{tasks}"
    );
    let events = c.event_list(None, 100, Some("vm:demo")).unwrap();
    assert!(events.items.len() >= 3, "{:?}", events.items);
    assert!(events
        .items
        .iter()
        .all(|e| e.target.as_deref() == Some("vm:demo")));
    // Power on twice: a conflict.
    k.keel_ok(&["vm", "start", "demo"]);
    let err = c.vm_power("demo", PowerOp::On).unwrap_err();
    assert_eq!(status(err), 409);
    let err = c.vm_delete("demo").unwrap_err();
    assert_eq!(status(err), 409, "deleting a running VM");
    k.keel_ok(&["vm", "stop", "demo"]);
    k.keel_ok(&["vm", "delete", "demo", "--yes"]);
    assert_eq!(status(c.vm_get("demo").unwrap_err()), 404);
    assert!(!k.state.join("datastores/datastore1/demo").exists());
}

#[test]
fn restarting_keeld_keeps_running_vms_and_reattaches() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("restart");
    let c = k.admin();
    create(&c, "keep", Payload::Echo);
    create(&c, "off", Payload::Echo);
    power(&c, "keep", PowerOp::On);
    let pid = c.vm_get("keep").unwrap().runtime.unwrap().pid;
    // keeld dies hard: the VM does not notice.
    let state_dir = k.stop_with(libc::SIGKILL);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM survived"
    );
    let k = Keeld::start_in(state_dir);
    let c = k.admin();
    let v = c.vm_get("keep").unwrap();
    assert_eq!(v.power_state, PowerState::PoweredOn);
    assert_eq!(v.runtime.unwrap().pid, pid, "the same VMM, re-attached");
    assert_eq!(state(&c, "off"), PowerState::PoweredOff);
    let mut con = c.console("keep").unwrap();
    con.send(b"still-here").unwrap();
    assert!(con
        .read_until("still-here", WAIT)
        .unwrap()
        .contains("still-here"));
    // A re-attached VMM that dies is still seen.
    // SAFETY: kill(2) on the VMM this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let took = wait_state(&c, "keep", PowerState::Crashed, Duration::from_secs(10));
    eprintln!("crash of a re-attached VMM seen after {took:?}");
    // A graceful keeld stop leaves VMs running too.
    power(&c, "off", PowerOp::On);
    let pid = c.vm_get("off").unwrap().runtime.unwrap().pid;
    let state_dir = k.stop_with(libc::SIGTERM);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let k = Keeld::start_in(state_dir);
    assert_eq!(state(&k.admin(), "off"), PowerState::PoweredOn);
}

#[test]
fn a_killed_vmm_is_a_crash_with_an_event() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("crash");
    let c = k.admin();
    create(&c, "victim", Payload::Echo);
    power(&c, "victim", PowerOp::On);
    let pid = c.vm_get("victim").unwrap().runtime.unwrap().pid;
    // SAFETY: kill(2) on the VMM this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let took = wait_state(&c, "victim", PowerState::Crashed, Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "seen after {took:?}");
    let events = c.event_list(None, 20, Some("vm:victim")).unwrap();
    assert!(
        events.items.iter().any(|e| e.severity == Severity::Error),
        "{:?}",
        events.items
    );
    // A crashed VM powers on again.
    power(&c, "victim", PowerOp::On);
    assert_eq!(state(&c, "victim"), PowerState::PoweredOn);
    power(&c, "victim", PowerOp::Off);
}

#[test]
fn shutdown_presses_the_power_button_and_the_guest_powers_off() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("shutdown");
    let c = k.admin();
    create(&c, "polite", Payload::Button);
    power(&c, "polite", PowerOp::On);
    let mut con = c.console("polite").unwrap();
    assert!(con
        .read_until("KEEL-PAYLOAD-READY", WAIT)
        .unwrap()
        .contains("READY"));
    power(&c, "polite", PowerOp::Shutdown);
    assert_eq!(state(&c, "polite"), PowerState::PoweredOff);
    let log = c.vm_log("polite", 4096).unwrap();
    assert!(log.contains("KEEL-PAYLOAD-BUTTON"), "{log}");
}

#[test]
fn roles_limit_what_users_may_do() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("roles");
    let admin = k.admin();
    create(&admin, "vm1", Payload::Echo);
    for (user, role) in [
        ("ro", Role::ReadOnly),
        ("op", Role::Operator),
        ("none", Role::NoAccess),
    ] {
        admin
            .user_create(&UserCreate {
                name: user.into(),
                password: format!("{user}-password"),
            })
            .unwrap();
        admin
            .permission_set(&Permission {
                user: user.into(),
                role,
                entity: "host".into(),
            })
            .unwrap();
    }
    let ro = k.client_as("ro", "ro-password");
    assert_eq!(ro.vm_list().unwrap().len(), 1);
    let err = ro.vm_power("vm1", PowerOp::On).unwrap_err();
    let msg = err.to_string();
    assert_eq!(status(err), 403);
    assert!(msg.contains("VirtualMachine.Interact.Power"), "{msg}");
    assert_eq!(status(ro.vm_delete("vm1").unwrap_err()), 403);
    // The CLI shows the refusal and fails.
    let out = k.keel("ro", "ro-password", &["vm", "start", "vm1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("VirtualMachine.Interact.Power"));
    let op = k.client_as("op", "op-password");
    ok(&op, op.vm_power("vm1", PowerOp::On).unwrap());
    assert!(op.console("vm1").is_ok());
    let err = op.vm_create(&spec("vm2", Payload::Echo)).unwrap_err();
    assert_eq!(status(err), 403);
    ok(&op, op.vm_power("vm1", PowerOp::Off).unwrap());
    let none = k.client_as("none", "none-password");
    assert!(none.vm_list().map(|l| l.is_empty()).unwrap_or(true));
    // A VM permission overrides the host one: ro becomes Operator of vm1,
    // and the VM says so to ro (for a client's buttons).
    assert!(!ro
        .vm_get("vm1")
        .unwrap()
        .privileges
        .contains(&Privilege::VmPower));
    admin
        .permission_set(&Permission {
            user: "ro".into(),
            role: Role::Operator,
            entity: "vm:vm1".into(),
        })
        .unwrap();
    assert!(ro
        .vm_get("vm1")
        .unwrap()
        .privileges
        .contains(&Privilege::VmPower));
    assert!(!ro
        .vm_get("vm1")
        .unwrap()
        .privileges
        .contains(&Privilege::VmConfig));
    ok(&ro, ro.vm_power("vm1", PowerOp::On).unwrap());
    ok(&ro, ro.vm_power("vm1", PowerOp::Off).unwrap());
    // Users and permissions are for administrators.
    assert_eq!(status(op.user_list().unwrap_err()), 403);
    let wrong = k.client_as("ro", "nope");
    assert_eq!(status(wrong.vm_list().unwrap_err()), 401);
}

#[test]
fn bad_requests_get_clear_4xx_answers() {
    let k = Keeld::start("bad");
    let c = k.admin();
    // Malformed bodies.
    for body in [
        serde_json::json!({"name": "x"}),
        serde_json::json!({"name": "x", "boot": {"kernel": "/k"}, "colour": "red"}),
        serde_json::json!({"name": 5, "boot": {"kernel": "/k"}}),
    ] {
        let err = c.call::<Task, _>("POST", "/vms", Some(&body)).unwrap_err();
        assert_eq!(code(&err), "bad-request", "{body}: {err}");
    }
    // Bad names.
    let long = "n".repeat(81);
    for name in ["a/b", "..", ".", "a\0b", long.as_str(), ""] {
        let mut s = spec(name, Payload::Echo);
        s.boot.kernel = "/bin/true".into();
        let err = c.vm_create(&s).unwrap_err();
        assert_eq!(status(err), 400, "name {name:?}");
    }
    // Disk sizes.
    let mut s = spec("disky", Payload::Echo);
    s.boot.kernel = "/bin/true".into();
    s.disks = vec![DiskCreate {
        size_bytes: Some(0),
        ..Default::default()
    }];
    assert_eq!(status(c.vm_create(&s).unwrap_err()), 400);
    s.disks[0].size_bytes = Some(1 << 60);
    let err = c.vm_create(&s).unwrap_err();
    assert!(matches!(status(err), 400 | 507));
    // A missing kernel.
    let mut s = spec("nokernel", Payload::Echo);
    s.boot.kernel = "/nonexistent/vmlinuz".into();
    let err = c.vm_create(&s).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(status(err), 400 | 404), "{msg}");
    assert!(
        msg.contains("/nonexistent/vmlinuz"),
        "names the file: {msg}"
    );
    // Path traversal in the datastore.
    for path in ["../..", "/etc", "a/../../x"] {
        let err = c.datastore_browse("datastore1", path).unwrap_err();
        assert!(matches!(status(err), 400 | 404), "{path}");
    }
    let err = c
        .upload(
            "datastore1",
            "../escape.txt",
            std::io::Cursor::new(b"x".to_vec()),
            1,
        )
        .unwrap_err();
    assert!(matches!(status(err), 400 | 404));
    assert!(!k.state.join("datastores/escape.txt").exists());
    let mut sink = Vec::new();
    let err = c
        .download("datastore1", "../../inventory.db", &mut sink)
        .unwrap_err();
    assert!(matches!(status(err), 400 | 404));
    // An upload and download round trip.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.upload(
        "datastore1",
        "iso/test.bin",
        std::io::Cursor::new(data.clone()),
        data.len() as u64,
    )
    .unwrap_or_else(|e| {
        // The folder may have to exist first.
        assert_eq!(status(e), 404);
    });
    let _ = c.call_text::<()>("POST", "/datastores/datastore1/mkdir?path=iso", None);
    c.upload(
        "datastore1",
        "iso/test2.bin",
        std::io::Cursor::new(data.clone()),
        data.len() as u64,
    )
    .unwrap();
    let mut back = Vec::new();
    c.download("datastore1", "iso/test2.bin", &mut back)
        .unwrap();
    assert_eq!(back, data);
    // Uploading over an existing file is a conflict.
    let err = c
        .upload(
            "datastore1",
            "iso/test2.bin",
            std::io::Cursor::new(vec![1]),
            1,
        )
        .unwrap_err();
    assert_eq!(status(err), 409);
    // Unknown things.
    assert_eq!(status(c.vm_get("ghost").unwrap_err()), 404);
    assert_eq!(status(c.vm_power("ghost", PowerOp::On).unwrap_err()), 404);
    let err = c
        .call_text::<()>("POST", "/vms/ghost/power/explode", None)
        .unwrap_err();
    assert_eq!(status(err), 400);
    assert_eq!(status(c.task_get(999_999).unwrap_err()), 404);
    let err = c.call_text::<()>("GET", "/nothing-here", None).unwrap_err();
    assert_eq!(status(err), 404);
    // A body over the limit.
    let huge = serde_json::json!({"name": "x".repeat(2 * 1024 * 1024), "boot": {"kernel": "/k"}});
    // keeld answers 413 as soon as the headers show the size and closes
    // the connection; a client still sending may see that as a broken pipe
    // instead of reading the answer (the 413 itself is checked without
    // sockets in keeld's own tests).
    match c.call::<Task, _>("POST", "/vms", Some(&huge)) {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 413),
        Err(ClientError::Transport(m)) => assert!(
            m.contains("Broken pipe") || m.contains("reset") || m.contains("closed"),
            "{m}"
        ),
        other => panic!("a body over the limit was taken: {other:?}"),
    }
    // Repeated wrong passwords are rate limited.
    let mut last = 0;
    for _ in 0..12 {
        last = status(k.client_as("admin", "bad").vm_list().unwrap_err());
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "failed logins are rate limited");
}

#[test]
fn concurrent_power_operations_on_one_vm_conflict() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("race");
    let c = k.admin();
    create(&c, "racer", Payload::Button);
    power(&c, "racer", PowerOp::On);
    let mut con = c.console("racer").unwrap();
    con.read_until("KEEL-PAYLOAD-READY", WAIT).unwrap();
    // The shutdown task runs until the guest is off; a second operation
    // meanwhile is refused.
    let t = c.vm_power("racer", PowerOp::Shutdown).unwrap();
    let second = c.vm_power("racer", PowerOp::Off);
    let t = done(&c, t);
    assert_eq!(t.state, TaskState::Success, "{t:?}");
    match second {
        Err(e) => assert_eq!(status(e), 409),
        // The shutdown may already have finished: then off is refused as
        // the VM is off, or succeeds as a no-op task ending in error.
        Ok(t2) => assert_eq!(done(&c, t2).state, TaskState::Error),
    }
}

#[test]
fn clone_register_and_unregister_keep_the_files_straight() {
    let k = Keeld::start("clone");
    let c = k.admin();
    let mut s = spec("orig", Payload::Echo);
    s.disks = vec![DiskCreate {
        size_bytes: Some(64 << 20),
        serial: Some("data0".into()),
        ..Default::default()
    }];
    ok(&c, c.vm_create(&s).unwrap());
    let folder = k.state.join("datastores/datastore1/orig");
    assert!(folder.join("orig.toml").is_file());
    let t = c
        .vm_clone(
            "orig",
            &VmClone {
                name: "copy".into(),
                datastore: None,
            },
        )
        .unwrap();
    ok(&c, t);
    let copy = c.vm_get("copy").unwrap();
    assert_eq!(copy.config.disks.len(), 1);
    assert_eq!(copy.config.name, "copy");
    // Unregister keeps the folder; register brings it back.
    c.vm_unregister("copy").unwrap();
    assert!(k
        .state
        .join("datastores/datastore1/copy/copy.toml")
        .is_file());
    assert_eq!(status(c.vm_get("copy").unwrap_err()), 404);
    let v = c
        .vm_register(&VmRegister {
            datastore: "datastore1".into(),
            folder: "copy".into(),
        })
        .unwrap();
    assert_eq!(v.name, "copy");
    let err = c
        .vm_register(&VmRegister {
            datastore: "datastore1".into(),
            folder: "copy".into(),
        })
        .unwrap_err();
    assert_eq!(status(err), 409, "registered twice");
    // Editing while off.
    let v = c
        .vm_edit(
            "copy",
            &VmEdit {
                vcpus: Some(2),
                memory_mib: Some(64),
                notes: Some("edited".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((v.config.vcpus, v.config.memory_mib), (2, 64));
    let text =
        std::fs::read_to_string(k.state.join("datastores/datastore1/copy/copy.toml")).unwrap();
    assert!(text.contains("edited"), "{text}");
}

#[test]
fn killing_keeld_while_it_creates_a_vm_leaves_nothing_half_done() {
    let k = Keeld::start("killcreate");
    let c = k.admin();
    // A big image to import: the copy takes long enough to be caught.
    let image = k.state.join("big.img");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&image).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..384 {
            f.write_all(&chunk).unwrap();
        }
    }
    let mut s = spec("halfway", Payload::Echo);
    s.disks = vec![DiskCreate {
        import: Some(image.display().to_string()),
        ..Default::default()
    }];
    let t = c.vm_create(&s).unwrap();
    // Wait until the copy is under way, then kill keeld hard.
    let end = Instant::now() + WAIT;
    loop {
        let t = c.task_get(t.id).unwrap();
        assert_ne!(
            t.state,
            TaskState::Success,
            "the copy finished before the kill"
        );
        if t.progress > 0
            || k.state
                .join("datastores/datastore1/.halfway.creating")
                .exists()
        {
            break;
        }
        assert!(Instant::now() < end, "the create never started: {t:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = k.stop_with(libc::SIGKILL);
    let ds = state.join("datastores/datastore1");
    let k = Keeld::start_in(state);
    let c = k.admin();
    assert_eq!(
        status(c.vm_get("halfway").unwrap_err()),
        404,
        "not registered"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&ds)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leftovers.is_empty(), "orphan files: {leftovers:?}");
    let task = c.task_get(t.id).unwrap();
    assert_eq!(task.state, TaskState::Error, "{task:?}");
    let events = c.event_list(None, 50, None).unwrap();
    assert!(
        events.items.iter().any(|e| e.message.contains("halfway")),
        "the cleanup is reported: {:?}",
        events.items
    );
    // The name is free again.
    ok(&c, c.vm_create(&spec("halfway", Payload::Echo)).unwrap());
}

#[test]
fn autostart_vms_start_with_keeld() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("autostart");
    let c = k.admin();
    let mut s = spec("auto1", Payload::Echo);
    s.autostart = true;
    ok(&c, c.vm_create(&s).unwrap());
    create(&c, "manual", Payload::Echo);
    assert!(c.vm_get("auto1").unwrap().autostart);
    assert_eq!(
        state(&c, "auto1"),
        PowerState::PoweredOff,
        "creating does not start it"
    );
    let k = Keeld::start_in(k.stop_with(libc::SIGTERM));
    let c = k.admin();
    wait_state(&c, "auto1", PowerState::PoweredOn, Duration::from_secs(30));
    assert_eq!(state(&c, "manual"), PowerState::PoweredOff);
    let tasks = c.task_list(None, 20).unwrap();
    assert!(
        tasks
            .items
            .iter()
            .any(|t| t.target.as_deref() == Some("vm:auto1") && t.user == "system"),
        "{:?}",
        tasks.items
    );
}

#[test]
fn keeld_stops_promptly_on_sigterm_with_a_console_open() {
    if !native_kvm() {
        return;
    }
    let k = Keeld::start("sigterm");
    let c = k.admin();
    create(&c, "watched", Payload::Echo);
    power(&c, "watched", PowerOp::On);
    let mut con = c.console("watched").unwrap();
    assert!(con
        .read_until(Payload::Echo.marker(), WAIT)
        .unwrap()
        .contains("ECHO"));
    let pid = k.pid();
    // SAFETY: kill(2) on the keeld this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    // The open WebSocket does not hold keeld up for long (a bound far
    // above keeld's grace period, not a measurement).
    let end = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
    {
        assert!(Instant::now() < end, "keeld still runs 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(con);
    // The VM kept running.
    let vmm = k.state.join("run");
    assert!(vmm.is_dir());
    let k = Keeld::start_in(k.stop_with(libc::SIGKILL));
    assert_eq!(state(&k.admin(), "watched"), PowerState::PoweredOn);
}
