//! `Session`: several keel-vmm boots and shell steps in one working
//! directory (one L1 session in the rig).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xtask::rig::{self, shell_quote, RigOptions};

use crate::*;

/// One step of a [`Session`].
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Vm(LinuxVm),
    Sh(String),
}

/// What a [`Session`]'s shell step gave.
#[derive(Clone, Debug)]
pub struct ShOutput {
    pub status: i32,
    pub stdout: String,
}

impl ShOutput {
    /// The value printed as `NAME=value` on a line of its own.
    pub fn value(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }
}

/// What a [`Session`] gave: one output per step, in order, by kind.
#[derive(Clone, Debug, Default)]
pub struct SessionOutput {
    pub vms: Vec<VmOutput>,
    pub sh: Vec<ShOutput>,
}

/// Several steps on the machine that runs keel-vmm (this host with
/// hardware KVM, or L1 in the rig), in one working directory that starts
/// with the session's files: keel-vmm runs (relative paths in their
/// arguments name the files) and `sh` scripts around them (e.g. a checksum
/// of a disk image). In the rig it is one L1 session, so what a step
/// writes, the next one sees.
///
/// ```ignore
/// let out = Session::new()
///     .file(&image, "disk.raw")
///     .vm(LinuxVm::new().arg("--disk").arg("path=disk.raw").cmd("..."))
///     .sh("echo SUM=$(sha256sum disk.raw)")
///     .run()?;
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    pub(crate) files: Vec<(PathBuf, String)>,
    pub(crate) steps: Vec<Step>,
    pub(crate) rig_memory_mib: u32,
    /// Added to the rig's time limit (each `sh` step has 60 s).
    pub(crate) extra_time: Duration,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            files: Vec::new(),
            steps: Vec::new(),
            rig_memory_mib: 4096,
            extra_time: Duration::ZERO,
        }
    }
}

/// Where a session's files are in L1.
pub(crate) const RIG_WORK_DIR: &str = "/work";

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a copy of the host file `host` in the working directory as
    /// `name` (a plain file name). In the rig it travels in L1's
    /// initramfs, which lives in L1's RAM: keep files to tens of MiB.
    pub fn file(mut self, host: &Path, name: &str) -> Self {
        assert!(
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "session file names are plain names: {name:?}"
        );
        self.files.push((host.to_path_buf(), name.to_string()));
        self
    }

    /// Runs keel-vmm with this guest.
    pub fn vm(mut self, vm: LinuxVm) -> Self {
        self.steps.push(Step::Vm(vm));
        self
    }

    /// Runs a `sh` script in the working directory.
    pub fn sh(mut self, script: &str) -> Self {
        self.steps.push(Step::Sh(script.to_string()));
        self
    }

    /// More time for the steps than their defaults (a long `sh` step).
    pub fn extra_time(mut self, t: Duration) -> Self {
        self.extra_time += t;
        self
    }

    /// L1's memory when the session runs in the rig.
    pub fn rig_memory_mib(mut self, mib: u32) -> Self {
        self.rig_memory_mib = mib;
        self
    }

    /// Runs every step where this machine can; `None` when skipped.
    pub fn run(&self) -> Option<SessionOutput> {
        let vm_needs_rig = self.steps.iter().find_map(|s| match s {
            Step::Vm(vm) if vm.needs_rig() => Some(vm),
            _ => None,
        });
        let runner = match vm_needs_rig {
            Some(vm) => vm.runner()?,
            None => linux_runner()?,
        };
        let guest = xtask::guest::build().expect("building the test guest");
        if self
            .steps
            .iter()
            .any(|s| matches!(s, Step::Vm(vm) if vm.bench_tools))
        {
            xtask::guest::bench_initramfs().expect("building the benchmark initramfs");
        }
        let out = match runner {
            Runner::Native => {
                let dir = guest.vmlinuz.parent().expect("guest dir").to_path_buf();
                self.run_native(&dir)
            }
            Runner::Rig => match self.run_rig() {
                // The rig's own L1 kernel crashing (nested SVM under TCG
                // has panicked L1 in KVM_RUN, rarely) is the test bench
                // failing, not the code under test: one more try, said
                // out loud.
                Err(e) if l1_kernel_panicked(&format!("{e:#}")) => {
                    println!(
                        "RIG-RETRY: the rig's L1 kernel panicked; running the session once more:\n{e:#}"
                    );
                    self.run_rig()
                }
                other => other,
            },
        };
        Some(out.expect("running the session"))
    }

    pub(crate) fn run_native(&self, guest_dir: &Path) -> Result<SessionOutput> {
        let work = WorkDir::new()?;
        for (host, name) in &self.files {
            std::fs::copy(host, work.0.join(name))
                .with_context(|| format!("Copying {} to {}", host.display(), work.0.display()))?;
        }
        let mut out = SessionOutput::default();
        for step in &self.steps {
            match step {
                Step::Vm(vm) => out.vms.push(run_program_in(
                    keel_vmm(),
                    &vm.args(guest_dir),
                    Some(&work.0),
                    vm.sigterm_after.as_deref(),
                    vm.timeout,
                )?),
                Step::Sh(script) => {
                    let o = Command::new("sh")
                        .args(["-c", script])
                        .current_dir(&work.0)
                        .stdin(Stdio::null())
                        .output()
                        .context("Running sh")?;
                    out.sh.push(ShOutput {
                        status: o.status.code().unwrap_or(-1),
                        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The L1 script and how long its steps may take.
    pub(crate) fn rig_script(&self) -> (String, Duration) {
        let mut script = format!("mkdir -p {RIG_WORK_DIR} && cd {RIG_WORK_DIR} || exit 1\n");
        let mut timeout = Duration::ZERO;
        for (i, step) in self.steps.iter().enumerate() {
            script.push_str(&format!("echo KEEL-STEP-{i}-BEGIN\n"));
            match step {
                Step::Vm(vm) => {
                    let args = vm.args(Path::new("/guest"));
                    script.push_str(&vm.l1_wrap(&rig_script(
                        &args,
                        vm.sigterm_after.as_deref(),
                        vm.timeout,
                    )));
                    timeout += vm.timeout;
                }
                Step::Sh(s) => {
                    script.push_str(&format!(
                        "sh -c {} </dev/null >/tmp/step.out 2>&1\necho KEEL-SH-STATUS=$?\n\
                         echo KEEL-SH-STDOUT-BEGIN; cat /tmp/step.out; echo; echo KEEL-SH-STDOUT-END\n",
                        shell_quote(s)
                    ));
                    timeout += Duration::from_secs(60);
                }
            }
            script.push_str(&format!("echo KEEL-STEP-{i}-END\n"));
        }
        (script, timeout)
    }

    pub(crate) fn run_rig(&self) -> Result<SessionOutput> {
        let (script, timeout) = self.rig_script();
        let mut opts = RigOptions {
            timeout: timeout + Duration::from_secs(180) + self.extra_time,
            memory_mib: self.rig_memory_mib,
            keel_vmm: Some(keel_vmm().to_path_buf()),
            files: self
                .files
                .iter()
                .map(|(host, name)| (host.clone(), format!("{RIG_WORK_DIR}/{name}")))
                .collect(),
            echo: std::env::var_os("KEEL_RIG_ECHO").is_some(),
            ..RigOptions::default()
        };
        for step in &self.steps {
            if let Step::Vm(vm) = step {
                opts.files.extend(vm.rig_files.iter().cloned());
                opts.guest_bench |= vm.bench_tools;
                opts.guest_vmlinux |= vm.kernel == Kernel::Vmlinux;
                opts.with_qemu |= vm.with_qemu;
                let scripts = vm.l1_before.iter().chain(&vm.l1_after).count() as u64;
                opts.timeout += Duration::from_secs(120 * scripts);
            }
        }
        let out = rig::run(&opts, &script)?;
        if out.status != 0 {
            bail!(
                "The rig's script failed ({}):\n{}",
                out.status,
                rig::tail(&out.output, 40)
            );
        }
        parse_session_output(&out.output, &self.steps)
    }
}

/// Splits the rig's console into the steps' reports.
pub(crate) fn parse_session_output(text: &str, steps: &[Step]) -> Result<SessionOutput> {
    let mut out = SessionOutput::default();
    for (i, step) in steps.iter().enumerate() {
        let begin = format!("KEEL-STEP-{i}-BEGIN\n");
        let end = format!("KEEL-STEP-{i}-END");
        let part = text
            .find(&begin)
            .map(|at| &text[at + begin.len()..])
            .and_then(|rest| rest.find(&end).map(|len| &rest[..len]));
        let Some(part) = part else {
            bail!(
                "The rig's output lacks step {i}'s report:\n{}",
                rig::tail(text, 40)
            );
        };
        match step {
            Step::Vm(_) => out.vms.push(parse_rig_output(part)?),
            Step::Sh(_) => {
                let status = part
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("KEEL-SH-STATUS="))
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(-1);
                let stdout = part
                    .split_once("KEEL-SH-STDOUT-BEGIN\n")
                    .and_then(|(_, rest)| rest.split_once("\nKEEL-SH-STDOUT-END"))
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_default();
                out.sh.push(ShOutput { status, stdout });
            }
        }
    }
    Ok(out)
}

/// A temporary working directory, removed on drop.
pub(crate) struct WorkDir(pub(crate) PathBuf);

impl WorkDir {
    pub(crate) fn new() -> Result<Self> {
        static N: Mutex<u32> = Mutex::new(0);
        let n = {
            let mut n = N.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let dir = std::env::temp_dir().join(format!("keel-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a failed rig run ended with L1's own kernel panicking.
pub(crate) fn l1_kernel_panicked(err: &str) -> bool {
    err.contains("L1 ended without reporting a status")
        && err.contains("Kernel panic - not syncing")
}
