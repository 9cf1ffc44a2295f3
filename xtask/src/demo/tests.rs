use super::l1::{ensure_state_image, l1_ended, Follow, STATE_IMAGE_BYTES};
use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-demo-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sh -n`: the text parses as a shell script.
fn assert_sh_syntax(script: &str) {
    let out = Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_listening_line_gives_url_and_fingerprint() {
    let line = "keeld: listening on https://0.0.0.0:8443 (certificate /var/lib/keel/tls/cert.pem, \
                SHA-256 AB:CD:01)";
    assert_eq!(
        parse_listening(line),
        Some(("https://0.0.0.0:8443".into(), Some("AB:CD:01".into())))
    );
    assert_eq!(
        parse_listening("keeld: listening on http://127.0.0.1:80 (plain HTTP: --insecure-http)"),
        Some(("http://127.0.0.1:80".into(), None))
    );
    assert_eq!(parse_listening("keeld: created the host state"), None);
}

#[test]
fn l1_lines_become_events() {
    assert_eq!(parse_l1_line("KEEL-RUN-BOOTED\r"), Some(L1Event::Booted));
    assert_eq!(
        parse_l1_line("keeld: listening on https://0.0.0.0:8443 (certificate c, SHA-256 AA:BB)"),
        Some(L1Event::Listening)
    );
    assert_eq!(
        parse_l1_line("KEEL-RUN-FINGERPRINT=AA:BB"),
        Some(L1Event::Fingerprint("AA:BB".into()))
    );
    assert_eq!(parse_l1_line("KEEL-RUN-FINGERPRINT="), None);
    assert_eq!(
        parse_l1_line("KEEL-RUN-PASSWORD=x y"),
        Some(L1Event::Password("x y".into()))
    );
    assert_eq!(
        parse_l1_line("KEEL-RUN-PASSWORD-UNKNOWN"),
        Some(L1Event::PasswordUnknown)
    );
    assert_eq!(
        parse_l1_line("KEEL-RUN-DEMO=created"),
        Some(L1Event::Demo("created".into()))
    );
    assert_eq!(parse_l1_line("KEEL-RUN-READY"), Some(L1Event::Ready));
    assert_eq!(
        parse_l1_line("KEEL-RUN-ERROR=keeld stopped (status 1)"),
        Some(L1Event::Error("keeld stopped (status 1)".into()))
    );
    assert_eq!(
        parse_l1_line("KEEL-RIG-NOKVM: /dev/kvm did not appear"),
        Some(L1Event::Error("/dev/kvm did not appear".into()))
    );
    assert_eq!(parse_l1_line("[    0.1] Linux version 6.1"), None);
}

#[test]
fn the_l1_script_parses_and_carries_the_demo_settings() {
    let script = l1_script(&L1Script {
        cpus: 2,
        memory: "300M".into(),
        admin_password: Some("it's secret".into()),
        ui_dir: Some("/usr/share/keel/ui".into()),
    });
    assert_sh_syntax(&script);
    assert!(
        script.contains("--listen 0.0.0.0:8443 --keel-vmm /usr/bin/keel-vmm --ui-dir"),
        "{script}"
    );
    assert!(script.contains("--cpus 2 --memory '300M'"), "{script}");
    assert!(
        script.contains(&format!("--cmdline '{DEMO_CMDLINE}'")),
        "{script}"
    );
    assert!(
        script.contains(r"export KEEL_ADMIN_PASSWORD='it'\''s secret'"),
        "{script}"
    );
    assert!(script.contains("mount -t ext4"), "{script}");
    // Without a password or UI.
    let plain = l1_script(&L1Script {
        cpus: 1,
        memory: "256M".into(),
        admin_password: None,
        ui_dir: None,
    });
    assert_sh_syntax(&plain);
    assert!(plain.contains("unset KEEL_ADMIN_PASSWORD"), "{plain}");
    assert!(!plain.contains("--ui-dir"), "{plain}");
}

/// The script's fingerprint extraction, on keeld's real line format.
#[test]
fn the_l1_script_extracts_the_fingerprint_with_sed() {
    let script = l1_script(&L1Script {
        cpus: 1,
        memory: "256M".into(),
        admin_password: None,
        ui_dir: None,
    });
    let sed = script
        .lines()
        .find(|l| l.starts_with("fp=$("))
        .unwrap()
        .trim_start_matches("fp=$(")
        .trim_end_matches(')')
        .replace("/tmp/keeld.log", "-");
    let out = Command::new("sh")
        .args(["-c", &format!("printf '%s\\n' \"$LINE\" | {sed}")])
        .env(
            "LINE",
            "keeld: listening on https://0.0.0.0:8443 (certificate /x/cert.pem, SHA-256 0A:FF:9c)",
        )
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0A:FF:9c");
}

#[test]
fn the_banner_tells_how_to_log_in() {
    let b = Banner {
        url: "https://127.0.0.1:9443".into(),
        fingerprint: Some("AA:BB".into()),
        password: Password::Known {
            password: "pw123".into(),
            source: "file".into(),
        },
        demo: "created".into(),
        keel: "/t/debug/keel".into(),
        web_ui: false,
        place: "here".into(),
        notes: vec!["Ctrl-C stops it.".into()],
    };
    let text = banner(&b);
    for want in [
        "https://127.0.0.1:9443/api/v1\n",
        "SHA-256 AA:BB",
        "admin",
        "pw123",
        "demo: created and powered on",
        "/t/debug/keel --host https://127.0.0.1:9443 --trust-fingerprint AA:BB login",
        "/t/debug/keel vm list",
        "/t/debug/keel vm console demo",
        "Ctrl-C stops it.",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("Web UI"), "{text}");
    let text = banner(&Banner {
        fingerprint: None,
        password: Password::Unknown,
        web_ui: true,
        demo: "error: boom".into(),
        ..b
    });
    assert!(text.contains("--insecure login"), "{text}");
    assert!(
        text.contains("Web UI       https://127.0.0.1:9443/"),
        "{text}"
    );
    assert!(text.contains("KEEL_ADMIN_PASSWORD"), "{text}");
    assert!(text.contains("demo: error: boom"), "{text}");
}

#[test]
fn follow_returns_only_complete_new_lines() {
    let dir = temp_dir("follow");
    let path = dir.join("log");
    let mut follow = Follow::new(&path);
    assert!(follow.lines().is_empty(), "a missing file has no lines");
    fs::write(&path, b"one\r\ntw").unwrap();
    assert_eq!(follow.lines(), vec!["one"]);
    assert!(follow.lines().is_empty());
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"o\nthree\n").unwrap();
    assert_eq!(follow.lines(), vec!["two", "three"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_port_in_use_is_named() {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = check_port_free(port).unwrap_err().to_string();
    assert!(err.contains(&format!("Port {port}")), "{err}");
    assert!(err.contains("--port"), "{err}");
    drop(listener);
    check_port_free(port).unwrap();
}

#[test]
fn the_state_image_is_sparse_and_kept() {
    let dir = temp_dir("image");
    let path = dir.join(STATE_IMAGE);
    assert!(ensure_state_image(&path).unwrap());
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), STATE_IMAGE_BYTES);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        meta.blocks()
    );
    fs::write(dir.join("marker"), b"").unwrap();
    assert!(
        !ensure_state_image(&path).unwrap(),
        "an existing image is kept"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vm_show_state_is_read() {
    let text = "Name:       demo\nState:      poweredOff\nvCPUs:      1\n";
    assert_eq!(shown_state(text).as_deref(), Some("poweredOff"));
    assert_eq!(shown_state("nothing"), None);
}

#[test]
fn the_native_password_comes_from_the_file_first() {
    let dir = temp_dir("password");
    fs::write(dir.join("admin-password"), "s3cret\n").unwrap();
    match native_password(&dir) {
        Password::Known { password, source } => {
            assert_eq!(password, "s3cret");
            assert!(source.contains("admin-password"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn l1_failures_are_explained() {
    let status = Command::new("sh").args(["-c", "exit 1"]).status().unwrap();
    let image = Path::new("/s/l1-state.img");
    let log = Path::new("/nonexistent/console.log");
    let err = l1_ended(
        status,
        "qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:8443-:8443'",
        log,
        8443,
        image,
    )
    .to_string();
    assert!(
        err.contains("127.0.0.1:8443") && err.contains("--port"),
        "{err}"
    );
    let err = l1_ended(
        status,
        "qemu-system-x86_64: Failed to get \"write\" lock\nIs another process using the image?",
        log,
        8443,
        image,
    )
    .to_string();
    assert!(err.contains("/s/l1-state.img is in use"), "{err}");
    let err = l1_ended(status, "boom", log, 8443, image).to_string();
    assert!(err.contains("QEMU said:\nboom"), "{err}");
}

#[test]
fn stripped_copies_are_made_once_and_smaller_or_equal() {
    if which("strip").is_none() {
        eprintln!("SKIPPED: no strip");
        return;
    }
    let dir = temp_dir("strip");
    let src = std::env::current_exe().unwrap();
    let out = stripped(&src, &dir).unwrap();
    assert_eq!(out, dir.join(src.file_name().unwrap()));
    assert!(fs::metadata(&out).unwrap().len() <= fs::metadata(&src).unwrap().len());
    let mtime = fs::metadata(&out).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(stripped(&src, &dir).unwrap(), out);
    assert_eq!(
        fs::metadata(&out).unwrap().modified().unwrap(),
        mtime,
        "a fresh copy is reused"
    );
    fs::remove_dir_all(&dir).unwrap();
}
