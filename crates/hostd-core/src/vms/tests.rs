use std::fs;
use std::time::Duration;

use hostd_api::{
    DiskCreate, NicConfig, PowerOp, PowerState, Role, Severity, TaskState, VmClone, VmEdit,
    VmRegister,
};

use crate::host::testutil::*;
use crate::{Caller, ErrorKind};

#[test]
fn create_builds_folder_config_and_inventory() {
    let t = test_host("vm-create");
    let mut spec = t.spec("web1");
    spec.disks.push(DiskCreate {
        import: Some(t.kernel()),
        serial: Some("data".into()),
        readonly: true,
        ..Default::default()
    });
    spec.nics.push(NicConfig::default());
    spec.autostart = true;
    let task = t.host.vm_create(&t.admin, spec).unwrap();
    assert_eq!(task.kind, "vm.create");
    assert_eq!(task.target.as_deref(), Some("vm:web1"));
    let done = t
        .host
        .task_wait(&t.admin, task.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.state, TaskState::Success, "{:?}", done.error);
    assert_eq!(done.progress, 100);

    let folder = t.ds_root().join("web1");
    let mut files: Vec<_> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["disk0.qcow2", "disk1.raw", "vmlinuz", "web1.toml"]);
    let qcow = fs::read(folder.join("disk0.qcow2")).unwrap();
    assert_eq!(&qcow[..4], b"QFI\xfb");
    assert_eq!(fs::read(folder.join("disk1.raw")).unwrap().len(), 4096);
    let toml = fs::read_to_string(folder.join("web1.toml")).unwrap();
    assert!(toml.contains("name = \"web1\""), "{toml}");

    let vm = t.host.vm_get(&t.admin, "web1").unwrap();
    assert_eq!(vm.power_state, PowerState::PoweredOff);
    assert!(vm.autostart);
    assert_eq!(vm.datastore, "datastore1");
    assert_eq!(vm.config.disks[1].serial, "data");
    assert!(vm.config.disks[1].readonly);
    let mac = vm.config.nics[0].mac.clone().unwrap();
    assert!(mac.starts_with("02:4b:"), "{mac}");
    assert_eq!(t.host.vm_list(&t.admin).unwrap().len(), 1);
    assert!(t.event_kinds().contains(&"vm.created".to_string()));
    // No temporary folder is left.
    let names: Vec<_> = fs::read_dir(t.ds_root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn bad_create_requests_fail_before_any_task() {
    let t = test_host("vm-create-bad");
    t.create("web1");
    let check = |spec: hostd_api::VmCreate, kind: ErrorKind, needle: &str| {
        let err = t.host.vm_create(&t.admin, spec).unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(needle), "{needle}: {err}");
    };
    check(t.spec("web1"), ErrorKind::Conflict, "already exists");
    for bad in ["a/b", "..", "", "x\0y", &"n".repeat(81)] {
        check(t.spec(bad), ErrorKind::BadRequest, "VM name");
    }
    let mut s = t.spec("x");
    s.disks[0].size_bytes = Some(0);
    check(s, ErrorKind::BadRequest, "more than 0");
    let mut s = t.spec("x");
    s.disks[0].size_bytes = Some(1 << 60);
    check(s, ErrorKind::InsufficientSpace, "free");
    let mut s = t.spec("x");
    s.disks[0].size_bytes = Some(1000);
    check(s, ErrorKind::BadRequest, "multiple of 512");
    let mut s = t.spec("x");
    s.disks[0].import = Some(t.kernel());
    check(s, ErrorKind::BadRequest, "either");
    let mut s = t.spec("x");
    s.vcpus = 0;
    check(s, ErrorKind::BadRequest, "vCPUs");
    let mut s = t.spec("x");
    s.memory_mib = 8;
    check(s, ErrorKind::BadRequest, "Memory");
    let mut s = t.spec("x");
    s.boot.kernel = "/nonexistent/vmlinuz".into();
    check(s, ErrorKind::NotFound, "Kernel");
    let mut s = t.spec("x");
    s.boot.kernel = "relative/vmlinuz".into();
    check(s, ErrorKind::BadRequest, "Kernel");
    let mut s = t.spec("x");
    s.boot.kernel = "[datastore1] ../../inventory.db".into();
    check(s, ErrorKind::BadRequest, "..");
    let mut s = t.spec("x");
    s.datastore = Some("nope".into());
    check(s, ErrorKind::NotFound, "datastore");
    let mut s = t.spec("x");
    s.nics.push(NicConfig {
        mac: Some("01:00:00:00:00:01".into()),
        ..NicConfig::default()
    });
    check(s, ErrorKind::BadRequest, "multicast");
    // A folder with the name on the datastore (not registered) blocks it too.
    fs::create_dir(t.ds_root().join("taken")).unwrap();
    check(t.spec("taken"), ErrorKind::Conflict, "folder");
    // Only web1 exists; no stray folders.
    assert_eq!(t.host.vm_list(&t.admin).unwrap().len(), 1);
    assert!(!t.ds_root().join("x").exists());
}

#[test]
fn a_failed_copy_leaves_nothing() {
    let t = test_host("vm-create-fail");
    let mut spec = t.spec("web1");
    // A regular file that cannot be read: the copy fails inside the task.
    spec.boot.kernel = "/proc/self/mem".into();
    let task = t.host.vm_create(&t.admin, spec).unwrap();
    let done = t
        .host
        .task_wait(&t.admin, task.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.state, TaskState::Error);
    assert!(done.error.unwrap().message.contains("Copying"));
    assert_eq!(
        t.host.vm_get(&t.admin, "web1").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(fs::read_dir(t.ds_root()).unwrap().count(), 0);
    assert!(t.event_kinds().contains(&"vm.create-failed".to_string()));
    // The name is free again.
    t.create("web1");
}

#[test]
fn an_interrupted_create_is_cleaned_up_at_the_next_open() {
    let t = test_host("vm-killed");
    t.create("keep");
    let root = t.ds_root();
    // keeld killed while copying: only the temporary folder.
    fs::create_dir(root.join(".half.creating")).unwrap();
    fs::write(root.join(".half.creating/disk0.qcow2"), b"partial").unwrap();
    // keeld killed between the row insert and the rename.
    fs::create_dir(root.join(".rowonly.creating")).unwrap();
    let opts = options(t.dir.path());
    let spec_cfg = t.host.vm_get(&t.admin, "keep").unwrap().config;
    let mut cfg = spec_cfg.clone();
    cfg.name = "rowonly".into();
    t.host
        .store()
        .tx(|tx| crate::vms::insert_row(tx, &cfg, "datastore1", "rowonly", false, 0))
        .unwrap();
    // keeld killed in the middle of a delete.
    fs::create_dir(root.join(".gone.deleting")).unwrap();
    // An unfinished upload.
    fs::write(root.join(".keel-upload-abc-x.iso"), b"x").unwrap();
    let TestHost {
        host, fake, dir, ..
    } = t;
    drop(host);
    drop(fake);
    std::thread::sleep(Duration::from_millis(50));

    let (opened, _) = open_fake(opts).unwrap();
    let host = opened.host;
    let admin = Caller {
        user: "admin".into(),
    };
    let mut left: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["keep"]);
    let names: Vec<_> = host
        .vm_list(&admin)
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["keep"]);
    let events = host.event_list(&admin, None, 100, None).unwrap().items;
    let interrupted: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "vm.create-interrupted")
        .collect();
    assert_eq!(interrupted.len(), 2);
    assert!(interrupted.iter().all(|e| e.severity == Severity::Warning));
    assert!(interrupted
        .iter()
        .any(|e| e.message.contains("taken out of the inventory")));
    assert!(events.iter().any(|e| e.kind == "vm.delete-completed"));
    assert!(events.iter().any(|e| e.kind == "datastore.cleaned"));
    drop(dir);
}

#[test]
fn power_operations_follow_the_state() {
    let t = test_host("vm-power");
    t.create("web1");
    let a = &t.admin;
    assert_eq!(
        t.power(a, "web1", PowerOp::Off).unwrap_err().kind,
        ErrorKind::Conflict
    );
    t.power(a, "web1", PowerOp::On).unwrap();
    let vm = t.host.vm_get(a, "web1").unwrap();
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    let rt = vm.runtime.unwrap();
    assert_eq!((rt.boots, rt.cpu_ms, rt.rss_bytes), (1, 1500, 64 << 20));
    let err = t.power(a, "web1", PowerOp::On).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("already powered on"), "{err}");
    assert_eq!(
        t.power(a, "web1", PowerOp::Resume).unwrap_err().kind,
        ErrorKind::Conflict
    );
    t.power(a, "web1", PowerOp::Pause).unwrap();
    assert_eq!(
        t.host.vm_get(a, "web1").unwrap().power_state,
        PowerState::Paused
    );
    assert_eq!(
        t.power(a, "web1", PowerOp::Pause).unwrap_err().kind,
        ErrorKind::Conflict
    );
    t.power(a, "web1", PowerOp::Resume).unwrap();
    t.power(a, "web1", PowerOp::Reset).unwrap();
    let vm = t.host.vm_get(a, "web1").unwrap();
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    assert_eq!(vm.runtime.unwrap().boots, 2);
    t.power(a, "web1", PowerOp::Shutdown).unwrap();
    assert_eq!(
        t.host.vm_get(a, "web1").unwrap().power_state,
        PowerState::PoweredOff
    );
    t.power(a, "web1", PowerOp::On).unwrap();
    t.power(a, "web1", PowerOp::Off).unwrap();
    assert_eq!(
        t.host.vm_get(a, "web1").unwrap().power_state,
        PowerState::PoweredOff
    );
    let off = t
        .host
        .event_list(a, None, 100, Some("vm:web1"))
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.kind == "vm.powered-off")
        .unwrap();
    assert_eq!(
        off.user.as_deref(),
        Some("admin"),
        "the exit names who asked"
    );
    let kinds = t.event_kinds();
    for k in [
        "vm.powered-on",
        "vm.powered-off",
        "vm.paused",
        "vm.resumed",
        "vm.reset",
        "vm.shutdown-requested",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k}: {kinds:?}");
    }
    assert_eq!(t.fake.start_names(), ["web1", "web1"]);
}

#[test]
fn a_second_power_operation_gets_a_conflict() {
    let t = test_host("vm-power-race");
    t.create("web1");
    t.fake
        .start_delay_ms
        .store(300, std::sync::atomic::Ordering::Relaxed);
    let first = t.host.vm_power(&t.admin, "web1", PowerOp::On).unwrap();
    let err = t.host.vm_power(&t.admin, "web1", PowerOp::On).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("power-on"), "{err}");
    // Delete and edit wait their turn too.
    assert_eq!(
        t.host.vm_delete(&t.admin, "web1").unwrap_err().kind,
        ErrorKind::Conflict
    );
    let done = t
        .host
        .task_wait(&t.admin, first.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.state, TaskState::Success);
}

#[test]
fn a_crash_is_an_error_event_and_a_state() {
    let t = test_host("vm-crash");
    t.create("web1");
    t.power(&t.admin, "web1", PowerOp::On).unwrap();
    let id = t.host.vm_row("web1").unwrap().id;
    t.fake.crash(id);
    let vm = t.host.vm_get(&t.admin, "web1").unwrap();
    assert_eq!(vm.power_state, PowerState::Crashed);
    let ev = t
        .host
        .event_list(&t.admin, None, 10, Some("vm:web1"))
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.kind == "vm.crashed")
        .unwrap();
    assert_eq!(ev.severity, Severity::Error);
    assert!(ev.message.contains("triple fault"), "{}", ev.message);
    assert!(
        ev.message.contains("keel-vmm: triple fault\n")
            || ev.message.ends_with("keel-vmm: triple fault")
    );
    assert!(ev.message.contains("exit status 3"));
    // A crashed VM powers on again, and is then on.
    t.power(&t.admin, "web1", PowerOp::On).unwrap();
    assert_eq!(
        t.host.vm_get(&t.admin, "web1").unwrap().power_state,
        PowerState::PoweredOn
    );
}

#[test]
fn changes_while_on_are_refused() {
    let t = test_host("vm-on");
    t.create("web1");
    t.power(&t.admin, "web1", PowerOp::On).unwrap();
    let err = t.host.vm_delete(&t.admin, "web1").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("powered on"), "{err}");
    assert_eq!(
        t.host.vm_unregister(&t.admin, "web1").unwrap_err().kind,
        ErrorKind::Conflict
    );
    let clone = VmClone {
        name: "web2".into(),
        datastore: None,
    };
    assert_eq!(
        t.host.vm_clone(&t.admin, "web1", clone).unwrap_err().kind,
        ErrorKind::Conflict
    );
    let edit = VmEdit {
        vcpus: Some(2),
        ..Default::default()
    };
    let err = t.host.vm_edit(&t.admin, "web1", edit).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("vCPUs or memory"), "{err}");
    // Notes and autostart may change while on.
    let edit = VmEdit {
        notes: Some("hello".into()),
        autostart: Some(true),
        ..Default::default()
    };
    let vm = t.host.vm_edit(&t.admin, "web1", edit).unwrap();
    assert_eq!((vm.config.notes.as_str(), vm.autostart), ("hello", true));
    assert!(t.ds_root().join("web1").exists());
    t.power(&t.admin, "web1", PowerOp::Off).unwrap();
    let edit = VmEdit {
        vcpus: Some(4),
        memory_mib: Some(128),
        ..Default::default()
    };
    let vm = t.host.vm_edit(&t.admin, "web1", edit).unwrap();
    assert_eq!((vm.config.vcpus, vm.config.memory_mib), (4, 128));
    let toml = fs::read_to_string(t.ds_root().join("web1/web1.toml")).unwrap();
    assert!(toml.contains("vcpus = 4"));
    let bad = VmEdit {
        vcpus: Some(1000),
        ..Default::default()
    };
    assert_eq!(
        t.host.vm_edit(&t.admin, "web1", bad).unwrap_err().kind,
        ErrorKind::BadRequest
    );
    t.host.vm_delete(&t.admin, "web1").unwrap();
    assert!(!t.ds_root().join("web1").exists());
    assert_eq!(
        t.host.vm_get(&t.admin, "web1").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(fs::read_dir(t.ds_root()).unwrap().count(), 0);
}

#[test]
fn clone_copies_everything_with_new_identity() {
    let t = test_host("vm-clone");
    let mut spec = t.spec("web1");
    spec.nics.push(NicConfig {
        tap: Some("tapweb1".into()),
        ..NicConfig::default()
    });
    let task = t.host.vm_create(&t.admin, spec).unwrap();
    t.host
        .task_wait(&t.admin, task.id, Duration::from_secs(30))
        .unwrap();
    let task = t
        .host
        .vm_clone(
            &t.admin,
            "web1",
            VmClone {
                name: "web2".into(),
                datastore: None,
            },
        )
        .unwrap();
    assert_eq!(task.kind, "vm.clone");
    let done = t
        .host
        .task_wait(&t.admin, task.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.state, TaskState::Success, "{:?}", done.error);
    let (a, b) = (
        t.host.vm_get(&t.admin, "web1").unwrap(),
        t.host.vm_get(&t.admin, "web2").unwrap(),
    );
    assert_eq!(b.config.name, "web2");
    assert_eq!(b.config.disks, a.config.disks);
    assert_ne!(b.config.nics[0].mac, a.config.nics[0].mac);
    assert_eq!(b.config.nics[0].tap, None);
    let folder = t.ds_root().join("web2");
    assert!(folder.join("web2.toml").exists() && folder.join("disk0.qcow2").exists());
    assert_eq!(
        fs::read(folder.join("disk0.qcow2")).unwrap(),
        fs::read(t.ds_root().join("web1/disk0.qcow2")).unwrap()
    );
    assert!(t.event_kinds().contains(&"vm.cloned".to_string()));
    let again = t.host.vm_clone(
        &t.admin,
        "web1",
        VmClone {
            name: "web2".into(),
            datastore: None,
        },
    );
    assert_eq!(again.unwrap_err().kind, ErrorKind::Conflict);
}

#[test]
fn unregister_then_register_keeps_the_files() {
    let t = test_host("vm-register");
    t.create("web1");
    t.host.vm_unregister(&t.admin, "web1").unwrap();
    assert!(t.host.vm_list(&t.admin).unwrap().is_empty());
    assert!(t.ds_root().join("web1/web1.toml").exists());
    let req = VmRegister {
        datastore: "datastore1".into(),
        folder: "web1".into(),
    };
    let vm = t.host.vm_register(&t.admin, req.clone()).unwrap();
    assert_eq!(vm.name, "web1");
    assert_eq!(
        t.host.vm_register(&t.admin, req).unwrap_err().kind,
        ErrorKind::Conflict
    );
    // A folder copied by hand takes its folder's name.
    fs::create_dir(t.ds_root().join("copy")).unwrap();
    for f in ["disk0.qcow2", "vmlinuz"] {
        fs::copy(
            t.ds_root().join("web1").join(f),
            t.ds_root().join("copy").join(f),
        )
        .unwrap();
    }
    fs::copy(
        t.ds_root().join("web1/web1.toml"),
        t.ds_root().join("copy/copy.toml"),
    )
    .unwrap();
    let vm = t
        .host
        .vm_register(
            &t.admin,
            VmRegister {
                datastore: "datastore1".into(),
                folder: "copy".into(),
            },
        )
        .unwrap();
    assert_eq!(vm.config.name, "copy");
    // Bad folders.
    for (folder, kind) in [
        ("../x", ErrorKind::BadRequest),
        ("missing", ErrorKind::NotFound),
    ] {
        let req = VmRegister {
            datastore: "datastore1".into(),
            folder: folder.into(),
        };
        assert_eq!(
            t.host.vm_register(&t.admin, req).unwrap_err().kind,
            kind,
            "{folder}"
        );
    }
    fs::create_dir(t.ds_root().join("junk")).unwrap();
    fs::write(t.ds_root().join("junk/junk.toml"), "vcpus = \"many\"").unwrap();
    let req = VmRegister {
        datastore: "datastore1".into(),
        folder: "junk".into(),
    };
    assert_eq!(
        t.host.vm_register(&t.admin, req).unwrap_err().kind,
        ErrorKind::BadRequest
    );
    let kinds = t.event_kinds();
    assert!(
        kinds.contains(&"vm.unregistered".to_string())
            && kinds.contains(&"vm.registered".to_string())
    );
}

#[test]
fn datastore_files_of_vms_are_protected() {
    let t = test_host("vm-ds");
    t.create("web1");
    for p in ["web1", "web1/disk0.qcow2"] {
        let err = t
            .host
            .datastore_remove(&t.admin, "datastore1", p)
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict, "{p}");
    }
    let list = t
        .host
        .datastore_browse(&t.admin, "datastore1", "web1")
        .unwrap();
    assert_eq!(list.len(), 3);
    let (_, len) = t
        .host
        .datastore_open(&t.admin, "datastore1", "web1/vmlinuz")
        .unwrap();
    assert_eq!(len, 4096);
    t.host
        .datastore_mkdir(&t.admin, "datastore1", "iso")
        .unwrap();
    let mut up = t
        .host
        .datastore_upload(&t.admin, "datastore1", "iso/a.iso", Some(3))
        .unwrap();
    up.write_chunk(b"abc").unwrap();
    up.commit().unwrap();
    t.host
        .datastore_remove(&t.admin, "datastore1", "iso")
        .unwrap();
    let ro = t.user("rob", Some(Role::ReadOnly));
    t.host.datastore_browse(&ro, "datastore1", "").unwrap();
    let err = t.host.datastore_mkdir(&ro, "datastore1", "x").unwrap_err();
    assert!(err.message.contains("Datastore.FileManagement"), "{err}");
    assert_eq!(
        t.host
            .datastore_upload(&ro, "datastore1", "x", None)
            .unwrap_err()
            .kind,
        ErrorKind::Forbidden
    );
}

#[test]
fn roles_decide_what_each_user_may_do_with_vms() {
    let t = test_host("vm-roles");
    t.create("web1");
    t.create("db1");
    let op = t.user("olga", Some(Role::Operator));
    let ro = t.user("rob", Some(Role::ReadOnly));
    let none = t.user("nick", Some(Role::NoAccess));
    let vmonly = t.user("vera", None);
    t.grant("vera", Role::Operator, "vm:web1");
    t.grant("rob", Role::NoAccess, "vm:db1");

    // Seeing.
    let names = |c: &Caller| -> Vec<String> {
        t.host
            .vm_list(c)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect()
    };
    assert_eq!(names(&t.admin), ["db1", "web1"]);
    assert_eq!(names(&op), ["db1", "web1"]);
    assert_eq!(
        names(&ro),
        ["web1"],
        "the VM permission overrides the host one"
    );
    assert!(names(&none).is_empty());
    assert_eq!(names(&vmonly), ["web1"]);
    assert_eq!(
        t.host.vm_get(&ro, "db1").unwrap_err().kind,
        ErrorKind::Forbidden
    );

    // Power.
    t.power(&op, "web1", PowerOp::On).unwrap();
    let err = t.host.vm_power(&ro, "web1", PowerOp::Off).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert!(
        err.message.contains("VirtualMachine.Interact.Power"),
        "{err}"
    );
    t.power(&vmonly, "web1", PowerOp::Off).unwrap();
    assert_eq!(
        t.host
            .vm_power(&vmonly, "db1", PowerOp::On)
            .unwrap_err()
            .kind,
        ErrorKind::Forbidden
    );

    // Configuration: administrators only.
    for c in [&op, &ro, &none, &vmonly] {
        let e = t.host.vm_create(c, t.spec("x")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(e.message.contains("VirtualMachine.Config"));
        assert_eq!(
            t.host.vm_delete(c, "web1").unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert_eq!(
            t.host
                .vm_edit(c, "web1", VmEdit::default())
                .unwrap_err()
                .kind,
            ErrorKind::Forbidden
        );
    }
    // Console: operators.
    assert_eq!(t.host.vm_log(&op, "web1", 0).unwrap(), "");
    assert_eq!(
        t.host.vm_log(&ro, "web1", 0).unwrap_err().kind,
        ErrorKind::Forbidden
    );
    assert_eq!(
        t.host.vm_console(&ro, "web1").err().unwrap().kind,
        ErrorKind::Forbidden
    );
    assert_eq!(
        t.host.vm_console(&op, "web1").err().unwrap().kind,
        ErrorKind::Conflict
    );
    // Privileges as a UI sees them.
    assert_eq!(t.host.vm_privileges(&vmonly, "web1").unwrap().len(), 4);
    assert!(t.host.vm_privileges(&vmonly, "db1").unwrap().is_empty());

    // Tasks: the users' own, unless they see the host.
    let own = t.host.task_list(&vmonly, None, 100).unwrap().items;
    assert!(own.iter().all(|task| task.user == "vera") && !own.is_empty());
    let all = t.host.task_list(&ro, None, 100).unwrap().items;
    assert!(all.iter().any(|task| task.user == "admin"));
    let admins = all.iter().find(|task| task.user == "admin").unwrap().id;
    assert_eq!(
        t.host.task_get(&vmonly, admins).unwrap_err().kind,
        ErrorKind::Forbidden
    );
    // Events: a VM the user sees, or nothing.
    assert!(t
        .host
        .event_list(&vmonly, None, 10, Some("vm:web1"))
        .is_ok());
    assert_eq!(
        t.host
            .event_list(&vmonly, None, 10, Some("vm:db1"))
            .unwrap_err()
            .kind,
        ErrorKind::Forbidden
    );
    // Deleting a VM drops its permissions.
    t.host.vm_delete(&t.admin, "web1").unwrap();
    assert!(t
        .host
        .permission_list(&t.admin)
        .unwrap()
        .iter()
        .all(|p| p.entity != "vm:web1"));
}

#[test]
fn autostart_starts_vms_in_name_order_at_open() {
    let t = test_host("vm-autostart");
    for name in ["c", "a", "b"] {
        let mut spec = t.spec(name);
        spec.autostart = name != "b";
        let task = t.host.vm_create(&t.admin, spec).unwrap();
        t.host
            .task_wait(&t.admin, task.id, Duration::from_secs(30))
            .unwrap();
    }
    t.host
        .set_autostart_delay(&t.admin, Duration::from_millis(10))
        .unwrap();
    let opts = options(t.dir.path());
    let TestHost {
        host, fake, dir, ..
    } = t;
    drop(host);
    drop(fake);
    std::thread::sleep(Duration::from_millis(50));
    let (opened, fake) = open_fake(opts).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.start_names().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fake.start_names(), ["a", "c"]);
    let admin = Caller {
        user: "admin".into(),
    };
    let tasks = opened.host.task_list(&admin, None, 10).unwrap().items;
    assert!(tasks
        .iter()
        .filter(|t| t.kind == "vm.power-on")
        .all(|t| t.user == "system"));
    drop(opened);
    drop(dir);
}

#[test]
fn metrics_show_each_vm() {
    let t = test_host("vm-metrics");
    t.create("web1");
    t.create("db\"1");
    t.power(&t.admin, "web1", PowerOp::On).unwrap();
    let m = t.host.metrics(&t.admin).unwrap();
    assert!(
        m.contains("keel_vm_power_state{vm=\"web1\",state=\"poweredOn\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("keel_vm_power_state{vm=\"db\\\"1\",state=\"poweredOff\"} 1"),
        "{m}"
    );
    assert!(m.contains("keel_vm_cpu_seconds_total{vm=\"web1\"} 1.5"));
    assert!(m.contains("keel_vm_memory_rss_bytes{vm=\"web1\"} 67108864"));
    assert!(m.contains("keel_vm_boots{vm=\"web1\"} 1"));
    assert!(m.contains("keel_vms{state=\"poweredOn\"} 1"));
    assert!(m.contains("keel_host_cpu_seconds_total{mode=\"user\"}"));
}
