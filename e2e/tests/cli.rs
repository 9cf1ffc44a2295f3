//! Bad input: every mistake gets exit status 2 and one line on stderr that
//! names the problem — never a panic. No guest runs.

use std::fs;
use std::path::PathBuf;

use e2e::{run_keel_vmm, VmOutput};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-e2e-cli-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A file keel-vmm will accept as a kernel (the test guest's bzImage).
fn real_kernel() -> PathBuf {
    xtask::guest::build()
        .expect("building the test guest")
        .vmlinuz
}

fn assert_bad_input(out: &VmOutput, keyword: &str) {
    assert_eq!(out.status, Some(2), "{}", out.dump());
    let stderr = out.stderr.trim_end();
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line:\n{}",
        out.dump()
    );
    assert!(!stderr.contains("panicked"), "{}", out.dump());
    assert!(
        stderr.to_lowercase().contains(keyword),
        "the error should name {keyword:?}:\n{}",
        out.dump()
    );
}

#[test]
fn missing_kernel() {
    let out = run_keel_vmm(&["--kernel", "/nonexistent/keel/vmlinuz"]);
    assert_bad_input(&out, "kernel");
}

#[test]
fn unreadable_kernel() {
    // Root reads any file whatever its mode; a directory cannot be read.
    let path = scratch("unreadable-kernel");
    fs::create_dir_all(&path).unwrap();
    let out = run_keel_vmm(&["--kernel", path.to_str().unwrap()]);
    assert_bad_input(&out, "kernel");
}

#[test]
fn kernel_that_is_not_a_kernel() {
    let path = scratch("not-a-kernel.txt");
    fs::write(&path, "This is a text file, not a kernel.\n".repeat(200)).unwrap();
    let out = run_keel_vmm(&["--kernel", path.to_str().unwrap()]);
    assert_bad_input(&out, "kernel");
}

#[test]
fn missing_initrd() {
    let kernel = real_kernel();
    let out = run_keel_vmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        "/nonexistent/keel/initrd",
    ]);
    assert_bad_input(&out, "initrd");
}

#[test]
fn initrd_that_does_not_fit() {
    let kernel = real_kernel();
    let path = scratch("huge-initrd");
    let file = fs::File::create(&path).unwrap();
    file.set_len(600 << 20).unwrap(); // sparse: costs no disk
    let out = run_keel_vmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        path.to_str().unwrap(),
        "--memory",
        "256M",
    ]);
    fs::remove_file(&path).unwrap();
    assert_bad_input(&out, "initrd");
}

#[test]
fn zero_memory() {
    let out = run_keel_vmm(&["--kernel", real_kernel().to_str().unwrap(), "--memory", "0"]);
    assert_bad_input(&out, "memory");
}

#[test]
fn unparsable_memory() {
    let out = run_keel_vmm(&[
        "--kernel",
        real_kernel().to_str().unwrap(),
        "--memory",
        "12Q",
    ]);
    assert_bad_input(&out, "memory");
}

#[test]
fn zero_cpus() {
    let out = run_keel_vmm(&["--kernel", real_kernel().to_str().unwrap(), "--cpus", "0"]);
    assert_bad_input(&out, "cpus");
}

#[test]
fn too_many_cpus() {
    let out = run_keel_vmm(&[
        "--kernel",
        real_kernel().to_str().unwrap(),
        "--cpus",
        "1000",
    ]);
    assert_bad_input(&out, "cpus");
}

#[test]
fn unknown_flag() {
    let out = run_keel_vmm(&["--kernel", real_kernel().to_str().unwrap(), "--frobnicate"]);
    assert_eq!(out.status, Some(2), "{}", out.dump());
    assert!(!out.stderr.contains("panicked"), "{}", out.dump());
}

/// A kernel file anyone can read (the payload ELF), for the /dev/kvm cases
/// where keel-vmm runs without root's reach into root's cache.
fn world_readable_kernel() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let elf = xtask::payload::build(xtask::payload::Payload::Ok).expect("building the payload");
    let dir = std::env::temp_dir().join(format!("keel-e2e-kvm-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("payload.elf");
    fs::copy(&elf, &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// Runs `sh -c script` with `$KEEL_VMM` and `$KERNEL` set; returns keel-vmm's
/// result as a VmOutput (through `run_program`).
fn run_wrapped(script: &str) -> Option<VmOutput> {
    let sh = std::path::Path::new("/bin/sh");
    let args = vec![
        "-c".to_string(),
        script.to_string(),
        "sh".to_string(),
        e2e::keel_vmm().display().to_string(),
        world_readable_kernel().display().to_string(),
    ];
    Some(e2e::run_program(sh, &args, None, std::time::Duration::from_secs(60)).unwrap())
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn missing_dev_kvm() {
    // A private mount namespace whose /dev is an empty tmpfs.
    if !have("unshare") || !xtask::util::is_root() {
        e2e::skip("needs root and util-linux's unshare");
        return;
    }
    let out = run_wrapped("exec unshare -m sh -c 'mount -t tmpfs none /dev && exec \"$0\" --kernel \"$1\"' \"$1\" \"$2\"")
        .unwrap();
    assert_bad_input(&out, "/dev/kvm");
    assert!(out.stderr.contains("does not exist"), "{}", out.dump());
}

#[test]
fn no_permission_on_dev_kvm() {
    // /dev/kvm is 0600 root here, as on a host without a kvm group: an
    // unprivileged user may not open it.
    if !have("setpriv") || !xtask::util::is_root() {
        e2e::skip("needs root and util-linux's setpriv");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata("/dev/kvm").map(|m| m.permissions().mode() & 0o007);
    if mode.map_or(true, |m| m != 0) {
        e2e::skip("/dev/kvm is missing or open to everyone here");
        return;
    }
    let out = run_wrapped(
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$1\" --kernel \"$2\"",
    )
    .unwrap();
    assert_bad_input(&out, "permission");
}
