//! Unit tests of the harness's parsers and scripts.

use std::time::Duration;

use xtask::rig;

use super::*;

#[test]
fn rig_report_is_parsed() {
    let text = "KEEL-L1-START=100\n[ 1.0] kvm: noise\nKEEL-L1-END=105\n\
        KEEL-VMM-STDOUT-BEGIN\nKEEL-GUEST-BOOTED\nNPROC=4\n\nKEEL-VMM-STDOUT-END\n\
        KEEL-VMM-STDERR-BEGIN\nkeel-vmm: guest powered off\n\nKEEL-VMM-STDERR-END\n\
        KEEL-VMM-STATUS=0\n";
    let out = parse_rig_output(text).unwrap();
    assert_eq!(out.status, Some(0));
    assert_eq!(out.count(BOOT_MARKER), 1);
    assert_eq!(out.value("NPROC").as_deref(), Some("4"));
    assert!(out.stderr.contains("powered off"));
    assert_eq!((out.started, out.ended), (100, 105));
    assert!(!out.timed_out);
}

#[test]
fn killed_vmm_has_no_status() {
    let text = "KEEL-VMM-TIMEOUT\nKEEL-VMM-STDOUT-BEGIN\n\nKEEL-VMM-STDOUT-END\n\
        KEEL-VMM-STDERR-BEGIN\n\nKEEL-VMM-STDERR-END\nKEEL-VMM-STATUS=137\n";
    let out = parse_rig_output(text).unwrap();
    assert_eq!(out.status, None);
    assert!(out.timed_out);
    assert!(parse_rig_output("Kernel panic").is_err());
}

#[test]
fn rig_script_is_valid_sh_and_quotes_arguments() {
    let args = vec![
        "--cmdline".to_string(),
        "console=ttyS0 keel.cmd=it's".to_string(),
    ];
    let script = rig_script(&args, Some("KEEL-CMD-EXIT="), Duration::from_secs(5));
    assert!(
        script.contains(r"'console=ttyS0 keel.cmd=it'\''s'"),
        "{script}"
    );
    let status = Command::new("sh")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn native_run_reports_status_streams_and_signals() {
    // A stand-in for keel-vmm: the harness's process handling, not KVM.
    let script = "echo READY; echo oops >&2; trap 'exit 42' TERM; while :; do sleep 0.05; done";
    let args = vec!["-c".to_string(), script.to_string()];
    let out = run_program(
        Path::new("sh"),
        &args,
        Some("READY"),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(out.status, Some(42), "{}", out.dump());
    assert_eq!(out.stdout, "READY\n");
    assert_eq!(out.stderr, "oops\n");
    assert!(!out.timed_out);
}

#[test]
fn session_output_is_split_by_step() {
    let steps = vec![
        Step::Sh("true".into()),
        Step::Vm(LinuxVm::new()),
        Step::Sh("true".into()),
    ];
    let text = "KEEL-STEP-0-BEGIN\nKEEL-SH-STATUS=0\nKEEL-SH-STDOUT-BEGIN\nSUM=abc\n\n\
        KEEL-SH-STDOUT-END\nKEEL-STEP-0-END\nKEEL-STEP-1-BEGIN\nKEEL-L1-START=1\n\
        KEEL-L1-END=2\nKEEL-VMM-STDOUT-BEGIN\nX=1\n\nKEEL-VMM-STDOUT-END\n\
        KEEL-VMM-STDERR-BEGIN\n\nKEEL-VMM-STDERR-END\nKEEL-VMM-STATUS=0\nKEEL-STEP-1-END\n\
        KEEL-STEP-2-BEGIN\nKEEL-SH-STATUS=3\nKEEL-SH-STDOUT-BEGIN\n\nKEEL-SH-STDOUT-END\n\
        KEEL-STEP-2-END\n";
    let out = parse_session_output(text, &steps).unwrap();
    assert_eq!(out.sh.len(), 2);
    assert_eq!(out.sh[0].value("SUM").as_deref(), Some("abc"));
    assert_eq!(out.sh[1].status, 3);
    assert_eq!(out.vms.len(), 1);
    assert_eq!(out.vms[0].value("X").as_deref(), Some("1"));
    assert!(parse_session_output("KEEL-STEP-0-BEGIN\n", &steps).is_err());
}

#[test]
fn native_session_steps_share_the_working_directory() {
    let work = WorkDir::new().unwrap();
    let src = work.0.join("src.txt");
    std::fs::write(&src, "hello").unwrap();
    let session = Session::new()
        .file(&src, "a.txt")
        .sh("cat a.txt > b.txt; echo OK=1")
        .sh("echo B=$(cat b.txt); exit 4");
    let out = session.run_native(Path::new("/nonexistent")).unwrap();
    assert_eq!(out.sh[0].value("OK").as_deref(), Some("1"));
    assert_eq!(out.sh[1].value("B").as_deref(), Some("hello"));
    assert_eq!(out.sh[1].status, 4);
    let (script, _) = Session::new()
        .sh("echo 'it''s'")
        .vm(LinuxVm::new().arg("--disk").arg("path=a.txt"))
        .rig_script();
    let status = Command::new("sh")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn native_run_times_out_and_kills() {
    let args = vec!["-c".to_string(), "sleep 30".to_string()];
    let out = run_program(Path::new("sh"), &args, None, Duration::from_millis(300)).unwrap();
    assert!(out.timed_out);
    assert_eq!(out.status, None);
}

#[test]
fn l1_scripts_run_around_keel_vmm_in_one_shell() {
    // A stand-in keel-vmm on PATH that reads what the helper wrote.
    let dir = std::env::temp_dir().join(format!("keel-l1-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("keel-vmm");
    std::fs::write(
        &fake,
        "#!/bin/sh\nsleep 0.3; echo \"SEEN=$(cat \"$D/helper.out\")\"; echo data >\"$D/disk\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let vm = LinuxVm::new()
        .l1_before("echo preparing; (echo helper-ran >\"$D/helper.out\") & helper=$!; false")
        .l1_after(
            "wait $helper; echo \"HELPER=$helper\"; echo SUM=$(cksum <\"$D/disk\" | cut -d' ' -f1)",
        );
    assert!(vm.needs_rig());
    // rig_script's watchdog (a sleep) keeps stdout open until it ends.
    let script = vm.l1_wrap(&rig_script(
        &["x".to_string()],
        None,
        Duration::from_secs(2),
    ));
    let output = Command::new("sh")
        .args(["-c", &script])
        .env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("D", &dir)
        .output()
        .unwrap();
    let text = rig::normalize(&output.stdout);
    let out = parse_rig_output(&text).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.value("SEEN").as_deref(), Some("helper-ran"), "{text}");
    let before = out.l1_before.expect("before's report");
    assert_eq!(before.status, 1);
    assert_eq!(before.stdout, "preparing\n");
    let after = out.l1_after.expect("after's report");
    assert_eq!(after.status, 0, "{text}");
    assert!(
        after.value("HELPER").is_some_and(|p| !p.is_empty()),
        "{text}"
    );
    assert!(after.value("SUM").is_some_and(|s| !s.is_empty()), "{text}");
    // Without L1 scripts there are no reports.
    assert!(LinuxVm::new().l1_wrap("true\n") == "true\n");
    assert!(parse_rig_output(&text.replace("KEEL-L1-", "X-"))
        .unwrap()
        .l1_before
        .is_none());
}

#[test]
fn rig_only_options_select_the_rig_and_the_bench_initrd() {
    let vm = LinuxVm::new().rig_file("/bin/sh", "/usr/bin/client");
    assert!(vm.needs_rig());
    let opts = vm.rig_options(Duration::from_secs(1));
    assert_eq!(
        opts.files,
        vec![(PathBuf::from("/bin/sh"), "/usr/bin/client".to_string())]
    );
    assert!(!opts.guest_bench && !opts.with_qemu);
    let vm = LinuxVm::new().bench_tools().with_qemu();
    let opts = vm.rig_options(Duration::from_secs(1));
    assert!(opts.guest_bench && opts.with_qemu);
    let args = vm.args(Path::new("/guest")).join(" ");
    assert!(
        args.contains("--initrd /guest/initramfs-bench.cpio.gz"),
        "{args}"
    );
    assert!(!LinuxVm::new().bench_tools().needs_rig());
}

#[test]
fn driver_runs_beside_keel_vmm_and_sees_its_console() {
    // A stand-in keel-vmm on PATH: the script's process handling.
    let dir = std::env::temp_dir().join(format!("keel-driven-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("keel-vmm");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"ARGS=$*\"; echo CONSOLE-READY; sleep 1; echo oops >&2; exit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let driver = "while ! grep -q CONSOLE-READY \"$out\"; do sleep 0.05; done\n\
                  kill -0 $pid && echo ALIVE=1\necho \"IT'S=ok\"";
    let args = vec!["--api-socket".to_string(), "it's.sock".to_string()];
    let script = driven_script(&args, Duration::from_secs(20), driver);
    let output = Command::new("sh")
        .args(["-c", &script])
        .env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("d", &dir)
        .output()
        .unwrap();
    let out = parse_driven_output(&rig::normalize(&output.stdout)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.vm.status, Some(7), "{}", out.dump());
    assert_eq!(
        out.vm.value("ARGS").as_deref(),
        Some("--api-socket it's.sock")
    );
    assert_eq!(out.vm.stderr, "oops\n");
    assert_eq!(out.value("ALIVE").as_deref(), Some("1"), "{}", out.dump());
    assert_eq!(out.value("IT'S").as_deref(), Some("ok"), "{}", out.dump());
}

#[test]
fn only_an_l1_kernel_panic_is_retried() {
    use crate::session::l1_kernel_panicked;
    let panic = "The rig's L1 ended without reporting a status (QEMU exit Some(0))\n\
                 L1's console ended with:\n[ 55.9] Kernel panic - not syncing: corrupted stack";
    assert!(l1_kernel_panicked(panic));
    assert!(!l1_kernel_panicked(
        "The rig's script failed (1): assertion"
    ));
    assert!(!l1_kernel_panicked(
        "The rig's L1 ended without reporting a status (QEMU exit Some(0))"
    ));
}
