//! Running keel-vmm here or once inside the rig, and payload guests.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xtask::proc::ChildGuard;
use xtask::rig::{self, shell_quote, RigOptions};

pub use xtask::payload::Payload;

use crate::*;

/// Runs keel-vmm here with `args`. With `sigterm_after`, sends SIGTERM once
/// the console shows that marker. Kills it after `timeout`.
pub fn run_native(
    args: &[String],
    sigterm_after: Option<&str>,
    timeout: Duration,
) -> Result<VmOutput> {
    run_program(keel_vmm(), args, sigterm_after, timeout)
}

/// [`run_native`] with any program.
pub fn run_program(
    program: &Path,
    args: &[String],
    sigterm_after: Option<&str>,
    timeout: Duration,
) -> Result<VmOutput> {
    run_program_in(program, args, None, sigterm_after, timeout)
}

/// [`run_program`] in the working directory `cwd`.
pub(crate) fn run_program_in(
    program: &Path,
    args: &[String],
    cwd: Option<&Path>,
    sigterm_after: Option<&str>,
    timeout: Duration,
) -> Result<VmOutput> {
    let mut cmd = Command::new(program);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = now();
    let mut vmm = ChildGuard::spawn(&mut cmd, true)?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        pump(
            vmm.child_mut().stdout.take().context("keel-vmm's stdout")?,
            &out,
        ),
        pump(
            vmm.child_mut().stderr.take().context("keel-vmm's stderr")?,
            &err,
        ),
    ];
    let deadline = Instant::now() + timeout;
    let mut signalled = sigterm_after.is_none();
    let mut status = None;
    while Instant::now() < deadline {
        if let Some(s) = vmm.wait_timeout(Duration::from_millis(20))? {
            status = Some(s);
            break;
        }
        if !signalled {
            let seen = sigterm_after.is_some_and(|m| {
                rig::normalize(&out.lock().unwrap_or_else(|p| p.into_inner())).contains(m)
            });
            if seen {
                vmm.signal(libc::SIGTERM)?;
                signalled = true;
            }
        }
    }
    let timed_out = status.is_none();
    if timed_out {
        vmm.kill();
    }
    for reader in readers {
        let _ = reader.join();
    }
    let text =
        |buf: &Arc<Mutex<Vec<u8>>>| rig::normalize(&buf.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(VmOutput {
        status: status.and_then(|s| s.code()),
        stdout: text(&out),
        stderr: text(&err),
        started,
        ended: now(),
        timed_out,
        l1_before: None,
        l1_after: None,
    })
}

pub(crate) fn pump(
    mut from: impl Read + Send + 'static,
    into: &Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    })
}

/// The L1 script that runs keel-vmm once and reports like [`run_native`].
pub(crate) fn rig_script(
    args: &[String],
    sigterm_after: Option<&str>,
    timeout: Duration,
) -> String {
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let mut s = String::new();
    s.push_str("echo KEEL-L1-START=$(date +%s)\n");
    s.push_str(&format!(
        "keel-vmm {} >/tmp/vm.out 2>/tmp/vm.err &\npid=$!\n",
        args.join(" ")
    ));
    s.push_str(&format!(
        "( sleep {}; echo KEEL-VMM-TIMEOUT; kill -KILL $pid ) 2>/dev/null &\nwatchdog=$!\n",
        timeout.as_secs()
    ));
    if let Some(marker) = sigterm_after {
        s.push_str(&format!(
            "while kill -0 $pid 2>/dev/null && ! grep -q {} /tmp/vm.out; do sleep 0.1; done\n\
             kill -TERM $pid 2>/dev/null\n",
            shell_quote(marker)
        ));
    }
    s.push_str("wait $pid\nstatus=$?\nkill $watchdog 2>/dev/null\n");
    s.push_str("echo KEEL-L1-END=$(date +%s)\n");
    s.push_str("echo KEEL-VMM-STDOUT-BEGIN; cat /tmp/vm.out; echo; echo KEEL-VMM-STDOUT-END\n");
    s.push_str("echo KEEL-VMM-STDERR-BEGIN; cat /tmp/vm.err; echo; echo KEEL-VMM-STDERR-END\n");
    s.push_str("echo KEEL-VMM-STATUS=$status\n");
    s
}

pub(crate) fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("KEEL-VMM-{name}-BEGIN\n");
    let end = format!("\nKEEL-VMM-{name}-END");
    let start = text.find(&begin)? + begin.len();
    let len = text[start..].find(&end)?;
    Some(&text[start..start + len])
}

pub(crate) fn parse_rig_output(text: &str) -> Result<VmOutput> {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    let (Some(stdout), Some(stderr), Some(status)) = (
        section(text, "STDOUT"),
        section(text, "STDERR"),
        value("KEEL-VMM-STATUS="),
    ) else {
        bail!(
            "The rig's output lacks keel-vmm's report:\n{}",
            rig::tail(text, 40)
        );
    };
    let timed_out = text.lines().any(|l| l.trim() == "KEEL-VMM-TIMEOUT");
    Ok(VmOutput {
        // As sh reports it: 128 + n for a signal.
        status: (!timed_out && status < 128).then_some(status as i32),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        started: value("KEEL-L1-START=").unwrap_or(0),
        ended: value("KEEL-L1-END=").unwrap_or(0),
        timed_out,
        l1_before: l1_section(text, "BEFORE"),
        l1_after: l1_section(text, "AFTER"),
    })
}

/// A script run in L1 around keel-vmm, in the same shell, with its output
/// and status reported between markers (see [`LinuxVm::l1_before`]).
pub(crate) fn l1_part(name: &str, script: &str) -> String {
    let file = format!("/tmp/l1-{}.out", name.to_lowercase());
    format!(
        "{{\n{script}\n}} >{file} 2>&1 </dev/null\n\
         echo KEEL-L1-{name}-STATUS=$?\n\
         echo KEEL-L1-{name}-BEGIN; cat {file}; echo; echo KEEL-L1-{name}-END\n"
    )
}

pub(crate) fn l1_section(text: &str, name: &str) -> Option<ShOutput> {
    let status = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("KEEL-L1-{name}-STATUS=")))?
        .trim()
        .parse()
        .unwrap_or(-1);
    let begin = format!("KEEL-L1-{name}-BEGIN\n");
    let end = format!("\nKEEL-L1-{name}-END");
    let start = text.find(&begin)? + begin.len();
    let len = text[start..].find(&end)?;
    Some(ShOutput {
        status,
        stdout: text[start..start + len].to_string(),
    })
}

/// Runs keel-vmm once inside the rig, with the test guest at `/guest/`.
pub fn run_in_rig(
    args: &[String],
    sigterm_after: Option<&str>,
    timeout: Duration,
    rig_memory_mib: u32,
) -> Result<VmOutput> {
    let opts = RigOptions {
        // Booting L1 and unpacking its initramfs comes on top.
        timeout: timeout + Duration::from_secs(180),
        memory_mib: rig_memory_mib,
        keel_vmm: Some(keel_vmm().to_path_buf()),
        // `args` may name either kernel.
        guest_vmlinux: true,
        echo: std::env::var_os("KEEL_RIG_ECHO").is_some(),
        ..RigOptions::default()
    };
    let out = rig::run(&opts, &rig_script(args, sigterm_after, timeout))?;
    if out.status != 0 {
        bail!(
            "The rig's script failed ({}):\n{}",
            out.status,
            rig::tail(&out.output, 40)
        );
    }
    parse_rig_output(&out.output)
}

/// Boots a payload guest natively with extra keel-vmm `args`; `None` when
/// skipped.
pub fn run_payload(
    payload: Payload,
    args: &[&str],
    sigterm_after: Option<&str>,
) -> Option<VmOutput> {
    if !native_kvm() {
        return None;
    }
    let elf = xtask::payload::build(payload).expect("building the payload");
    let mut all = vec!["--kernel".to_string(), elf.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    Some(run_native(&all, sigterm_after, Duration::from_secs(60)).expect("running keel-vmm"))
}

/// Runs keel-vmm here with `args` (for bad-input tests: no guest runs).
pub fn run_keel_vmm(args: &[&str]) -> VmOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_native(&args, None, Duration::from_secs(60)).expect("running keel-vmm")
}
