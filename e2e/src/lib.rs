//! End-to-end test harness: runs `keel-vmm` on real guests and reports what
//! happened (exit status, serial console, keel-vmm's messages).
//!
//! Where a guest runs:
//! - payload guests (tiny PVH ELFs) need only an openable `/dev/kvm`;
//! - Linux guests run natively on hardware KVM, else inside the KVM rig
//!   (an L1 VM under QEMU TCG with a real `kvm-amd`), else the test prints
//!   `SKIPPED (<reason>)` and passes — unless `KEEL_REQUIRE_KVM=1`, where a
//!   skip is a failure.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use xtask::host::{self, Kvm};
use xtask::proc::ChildGuard;
use xtask::rig::{self, shell_quote, RigOptions};

pub use xtask::guest::Then;
pub use xtask::payload::Payload;

/// The guest's boot marker, printed once per boot.
pub const BOOT_MARKER: &str = "KEEL-GUEST-BOOTED";
/// The command line every Linux test guest gets before its `keel.*` words.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";

/// Prints `SKIPPED (<reason>)` where `cargo test` shows it, or fails the
/// test when `KEEL_REQUIRE_KVM=1`.
pub fn skip(reason: &str) {
    if std::env::var("KEEL_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KEEL_REQUIRE_KVM=1 and this test cannot run: {reason}");
    }
    // Straight to the stream: the test harness captures println!.
    let _ = writeln!(std::io::stderr(), "SKIPPED ({reason})");
}

/// The `keel-vmm` binary beside the test executable (`target/debug/`),
/// built with `cargo build -p keel-vmm` when missing.
pub fn keel_vmm() -> &'static Path {
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
        assert!(path.exists(), "{} does not exist", path.display());
        path
    })
}

/// Where Linux guests run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// Hardware KVM: keel-vmm runs here.
    Native,
    /// In the KVM rig (QEMU TCG + nested SVM).
    Rig,
}

/// Where a Linux guest can run, or `None` after [`skip`].
pub fn linux_runner() -> Option<Runner> {
    match host::kvm() {
        Kvm::Hardware => Some(Runner::Native),
        kind => {
            if xtask::util::which(host::QEMU.program).is_some() {
                Some(Runner::Rig)
            } else {
                skip(&format!(
                    "no hardware KVM ({}) and no {} for the KVM rig",
                    describe(&kind),
                    host::QEMU.program
                ));
                None
            }
        }
    }
}

/// True when payload guests can run here (an openable `/dev/kvm`); else
/// [`skip`]s.
pub fn native_kvm() -> bool {
    match host::kvm() {
        Kvm::Hardware | Kvm::Pvm => true,
        Kvm::Unusable(why) => {
            skip(&why);
            false
        }
    }
}

fn describe(kind: &Kvm) -> String {
    match kind {
        Kvm::Hardware => "hardware KVM".into(),
        Kvm::Pvm => "/dev/kvm is PVM".into(),
        Kvm::Unusable(why) => why.clone(),
    }
}

/// What a keel-vmm run gave.
#[derive(Clone, Debug)]
pub struct VmOutput {
    /// keel-vmm's exit status (`None`: killed by a signal or by our timeout).
    pub status: Option<i32>,
    /// The serial console (keel-vmm's stdout), `\r\n` → `\n`.
    pub stdout: String,
    /// keel-vmm's own messages.
    pub stderr: String,
    /// The clock (Unix seconds) where keel-vmm ran — the host, or L1 in the
    /// rig — just before it started and just after it ended.
    pub started: u64,
    pub ended: u64,
    /// The test's timeout ended the run.
    pub timed_out: bool,
    /// What [`LinuxVm::l1_before`] and [`LinuxVm::l1_after`] printed, and
    /// their status (`None` when there was none).
    pub l1_before: Option<ShOutput>,
    pub l1_after: Option<ShOutput>,
}

impl VmOutput {
    /// How many lines of the console contain `marker`.
    pub fn count(&self, marker: &str) -> usize {
        self.stdout.lines().filter(|l| l.contains(marker)).count()
    }

    /// The value printed by the guest as `NAME=value` on a line of its own.
    pub fn value(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status {:?}{}\n--- console ---\n{}\n--- keel-vmm stderr ---\n{}",
            self.status,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
fn run_program_in(
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

fn pump(
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
fn rig_script(args: &[String], sigterm_after: Option<&str>, timeout: Duration) -> String {
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

fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("KEEL-VMM-{name}-BEGIN\n");
    let end = format!("\nKEEL-VMM-{name}-END");
    let start = text.find(&begin)? + begin.len();
    let len = text[start..].find(&end)?;
    Some(&text[start..start + len])
}

fn parse_rig_output(text: &str) -> Result<VmOutput> {
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
fn l1_part(name: &str, script: &str) -> String {
    let file = format!("/tmp/l1-{}.out", name.to_lowercase());
    format!(
        "{{\n{script}\n}} >{file} 2>&1 </dev/null\n\
         echo KEEL-L1-{name}-STATUS=$?\n\
         echo KEEL-L1-{name}-BEGIN; cat {file}; echo; echo KEEL-L1-{name}-END\n"
    )
}

fn l1_section(text: &str, name: &str) -> Option<ShOutput> {
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

/// Which image of the test guest's kernel to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The stock bzImage.
    BzImage,
    /// The ELF vmlinux extracted from it (PVH entry).
    Vmlinux,
}

/// A Linux test-guest run: `LinuxVm::new().cpus(2).cmd("nproc").run()`.
#[derive(Clone, Debug)]
pub struct LinuxVm {
    kernel: Kernel,
    cpus: Option<u32>,
    memory: Option<String>,
    cmd: String,
    then: Then,
    extra: Vec<String>,
    sigterm_after: Option<String>,
    timeout: Duration,
    rig_memory_mib: u32,
    rig_files: Vec<(PathBuf, String)>,
    l1_before: Option<String>,
    l1_after: Option<String>,
    bench_tools: bool,
    with_qemu: bool,
}

impl Default for LinuxVm {
    fn default() -> Self {
        LinuxVm {
            kernel: Kernel::BzImage,
            cpus: None,
            memory: None,
            cmd: "true".into(),
            then: Then::Poweroff,
            extra: Vec::new(),
            sigterm_after: None,
            timeout: Duration::from_secs(240),
            rig_memory_mib: 4096,
            rig_files: Vec::new(),
            l1_before: None,
            l1_after: None,
            bench_tools: false,
            with_qemu: false,
        }
    }
}

impl LinuxVm {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus);
        self
    }
    pub fn memory(mut self, memory: &str) -> Self {
        self.memory = Some(memory.into());
        self
    }
    /// The shell command the guest runs (`keel.cmd`).
    pub fn cmd(mut self, cmd: &str) -> Self {
        self.cmd = cmd.into();
        self
    }
    /// What the guest does after the command (`keel.then`).
    pub fn then(mut self, then: Then) -> Self {
        self.then = then;
        self
    }
    /// An extra keel-vmm argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.into());
        self
    }
    /// Send SIGTERM to keel-vmm once the console shows `marker`.
    pub fn sigterm_after(mut self, marker: &str) -> Self {
        self.sigterm_after = Some(marker.into());
        self
    }
    /// L1's memory when the guest runs in the rig.
    pub fn rig_memory_mib(mut self, mib: u32) -> Self {
        self.rig_memory_mib = mib;
        self
    }

    /// Brings the host file (or directory) `host` into L1 at `l1_path`
    /// (absolute), e.g. a test client built on the host: host binaries run
    /// in L1 unchanged. L1's initramfs lives in its RAM: keep files to tens
    /// of MiB. The VM then always runs in the rig.
    pub fn rig_file(mut self, host: impl AsRef<Path>, l1_path: &str) -> Self {
        assert!(
            l1_path.starts_with('/'),
            "L1 paths are absolute: {l1_path:?}"
        );
        self.rig_files
            .push((host.as_ref().to_path_buf(), l1_path.to_string()));
        self
    }
    /// A `sh` script L1 runs before keel-vmm starts, in the shell that then
    /// runs keel-vmm: background jobs it starts (`socat … &`) run beside
    /// keel-vmm, and variables it sets (`helper=$!`) are seen by
    /// [`l1_after`](Self::l1_after). L1 has iproute2's `ip` (`ip tuntap`,
    /// bridges, veth), `socat`, busybox (`nc`, `sha256sum`, …) and, with
    /// [`with_qemu`](Self::with_qemu), QEMU. Its output and status come back
    /// in [`VmOutput::l1_before`]; keel-vmm runs whatever the status. Give
    /// background jobs their own output files. The VM then always runs in
    /// the rig.
    pub fn l1_before(mut self, script: &str) -> Self {
        self.l1_before = Some(script.into());
        self
    }
    /// A `sh` script L1 runs after keel-vmm ended (e.g. `sha256sum` a disk
    /// image, stop a helper); output and status in [`VmOutput::l1_after`].
    /// The VM then always runs in the rig.
    pub fn l1_after(mut self, script: &str) -> Self {
        self.l1_after = Some(script.into());
        self
    }
    /// Boots the benchmark initramfs: the guest's tools plus fio (about
    /// 100 MB unpacked in guest RAM; the default 512M is enough).
    pub fn bench_tools(mut self) -> Self {
        self.bench_tools = true;
        self
    }
    /// Brings QEMU into L1 (`qemu-system-x86_64`, for side-by-side runs in
    /// the L1 scripts; about 60 MB). The VM then always runs in the rig.
    pub fn with_qemu(mut self) -> Self {
        self.with_qemu = true;
        self
    }

    /// True when the VM needs L1 (rig files, L1 scripts, QEMU).
    fn needs_rig(&self) -> bool {
        !self.rig_files.is_empty()
            || self.l1_before.is_some()
            || self.l1_after.is_some()
            || self.with_qemu
    }

    /// The rig options for this VM, with `timeout` for the whole L1 run.
    fn rig_options(&self, timeout: Duration) -> RigOptions {
        RigOptions {
            timeout,
            memory_mib: self.rig_memory_mib,
            keel_vmm: Some(keel_vmm().to_path_buf()),
            files: self.rig_files.clone(),
            guest_vmlinux: self.kernel == Kernel::Vmlinux,
            guest_bench: self.bench_tools,
            with_qemu: self.with_qemu,
            echo: std::env::var_os("KEEL_RIG_ECHO").is_some(),
            ..RigOptions::default()
        }
    }

    /// `inner` (the script that runs keel-vmm) between the L1 scripts.
    fn l1_wrap(&self, inner: &str) -> String {
        let mut s = String::new();
        if let Some(before) = &self.l1_before {
            s.push_str(&l1_part("BEFORE", before));
        }
        s.push_str(inner);
        if let Some(after) = &self.l1_after {
            s.push_str(&l1_part("AFTER", after));
        }
        s
    }

    /// Where this VM runs, or `None` after [`skip`].
    fn runner(&self) -> Option<Runner> {
        if self.needs_rig() {
            if xtask::util::which(host::QEMU.program).is_some() {
                return Some(Runner::Rig);
            }
            skip(&format!(
                "this test needs the KVM rig's L1 and there is no {}",
                host::QEMU.program
            ));
            return None;
        }
        linux_runner()
    }

    fn args(&self, guest_dir: &Path) -> Vec<String> {
        let kernel = match self.kernel {
            Kernel::BzImage => "vmlinuz",
            Kernel::Vmlinux => "vmlinux",
        };
        let initrd = if self.bench_tools {
            "initramfs-bench.cpio.gz"
        } else {
            "initramfs.cpio.gz"
        };
        let mut args = vec![
            "--kernel".to_string(),
            guest_dir.join(kernel).display().to_string(),
            "--initrd".to_string(),
            guest_dir.join(initrd).display().to_string(),
            "--cmdline".to_string(),
            format!(
                "{BASE_CMDLINE} {}",
                xtask::guest::cmdline_args(&self.cmd, self.then)
            ),
        ];
        if let Some(cpus) = self.cpus {
            args.extend(["--cpus".to_string(), cpus.to_string()]);
        }
        if let Some(memory) = &self.memory {
            args.extend(["--memory".to_string(), memory.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Boots the guest where this machine can (natively or in the rig);
    /// `None` when the test was skipped.
    pub fn run(&self) -> Option<VmOutput> {
        let runner = self.runner()?;
        let guest = xtask::guest::build().expect("building the test guest");
        if self.bench_tools {
            xtask::guest::bench_initramfs().expect("building the benchmark initramfs");
        }
        let sigterm = self.sigterm_after.as_deref();
        let out = match runner {
            Runner::Native => {
                let dir = guest.vmlinuz.parent().expect("guest dir").to_path_buf();
                run_native(&self.args(&dir), sigterm, self.timeout)
            }
            Runner::Rig => self.run_rig(),
        };
        Some(out.expect("running keel-vmm"))
    }

    fn run_rig(&self) -> Result<VmOutput> {
        // Booting L1 and unpacking its initramfs comes on top, and the L1
        // scripts get time of their own.
        let scripts = self.l1_before.iter().chain(&self.l1_after).count() as u64;
        let opts = self.rig_options(self.timeout + Duration::from_secs(180 + 120 * scripts));
        let inner = rig_script(
            &self.args(Path::new("/guest")),
            self.sigterm_after.as_deref(),
            self.timeout,
        );
        let out = rig::run(&opts, &self.l1_wrap(&inner))?;
        if out.status != 0 {
            bail!(
                "The rig's script failed ({}):\n{}",
                out.status,
                rig::tail(&out.output, 40)
            );
        }
        parse_rig_output(&out.output)
    }
}

/// One step of a [`Session`].
#[derive(Clone, Debug)]
enum Step {
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
    files: Vec<(PathBuf, String)>,
    steps: Vec<Step>,
    rig_memory_mib: u32,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            files: Vec::new(),
            steps: Vec::new(),
            rig_memory_mib: 4096,
        }
    }
}

/// Where a session's files are in L1.
const RIG_WORK_DIR: &str = "/work";

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
            Runner::Rig => self.run_rig(),
        };
        Some(out.expect("running the session"))
    }

    fn run_native(&self, guest_dir: &Path) -> Result<SessionOutput> {
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
    fn rig_script(&self) -> (String, Duration) {
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

    fn run_rig(&self) -> Result<SessionOutput> {
        let (script, timeout) = self.rig_script();
        let mut opts = RigOptions {
            timeout: timeout + Duration::from_secs(180),
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
fn parse_session_output(text: &str, steps: &[Step]) -> Result<SessionOutput> {
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
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<Self> {
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

/// What a [`LinuxVm::run_with_driver`] run gave: keel-vmm's output and the
/// driver's (stdout and stderr together).
#[derive(Clone, Debug)]
pub struct DrivenOutput {
    pub vm: VmOutput,
    pub driver: String,
}

impl DrivenOutput {
    /// The value the driver printed as `NAME=value` on a line of its own.
    pub fn value(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.driver
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!("{}\n--- driver ---\n{}", self.vm.dump(), self.driver)
    }
}

/// The `sh` script that runs keel-vmm and, beside it, `driver`; files go
/// in `$d` (set before). The driver sees `$pid` (keel-vmm's) and `$out`
/// (the console, as it arrives). When keel-vmm ends, the driver gets 5 s
/// to finish.
fn driven_script(args: &[String], timeout: Duration, driver: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!(
        "echo KEEL-L1-START=$(date +%s)\n\
         keel-vmm {args} >\"$d/vm.out\" 2>\"$d/vm.err\" &\n\
         pid=$!\n\
         out=\"$d/vm.out\"\n\
         ( sleep {secs}; : >\"$d/timed-out\"; kill -KILL $pid ) >/dev/null 2>&1 &\n\
         watchdog=$!\n\
         ( {driver}\n) >\"$d/driver.out\" 2>&1 </dev/null &\n\
         driver=$!\n\
         wait $pid\n\
         status=$?\n\
         kill $watchdog 2>/dev/null\n\
         [ -e \"$d/timed-out\" ] && echo KEEL-VMM-TIMEOUT\n\
         i=0; while kill -0 $driver 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n\
         kill $driver 2>/dev/null\n\
         echo KEEL-L1-END=$(date +%s)\n\
         echo KEEL-VMM-STDOUT-BEGIN; cat \"$d/vm.out\"; echo; echo KEEL-VMM-STDOUT-END\n\
         echo KEEL-VMM-STDERR-BEGIN; cat \"$d/vm.err\"; echo; echo KEEL-VMM-STDERR-END\n\
         echo KEEL-VMM-DRIVER-BEGIN; cat \"$d/driver.out\"; echo; echo KEEL-VMM-DRIVER-END\n\
         echo KEEL-VMM-STATUS=$status\n",
        args = args.join(" "),
        secs = timeout.as_secs(),
    )
}

fn parse_driven_output(text: &str) -> Result<DrivenOutput> {
    let vm = parse_rig_output(text)?;
    let driver = section(text, "DRIVER").unwrap_or_default().to_string();
    Ok(DrivenOutput { vm, driver })
}

impl LinuxVm {
    /// Boots the guest and runs the `sh` script `driver` beside keel-vmm
    /// while it runs (in L1 in the rig), e.g. to talk to its control socket
    /// or watch its memory. The driver sees `$pid` (keel-vmm's pid), `$out`
    /// (the console file, growing) and `$d` (a scratch directory, also
    /// keel-vmm's working directory in the rig: give it relative socket
    /// paths), and finds `tools` (host executables) on its `PATH` by their
    /// file names. `None` when the test was skipped.
    pub fn run_with_driver(&self, driver: &str, tools: &[&Path]) -> Option<DrivenOutput> {
        let runner = self.runner()?;
        let guest = xtask::guest::build().expect("building the test guest");
        if self.bench_tools {
            xtask::guest::bench_initramfs().expect("building the benchmark initramfs");
        }
        let out = match runner {
            Runner::Native => {
                let dir = guest.vmlinuz.parent().expect("guest dir").to_path_buf();
                self.run_driven_native(&dir, driver, tools)
            }
            Runner::Rig => self.run_driven_rig(driver, tools),
        };
        Some(out.expect("running keel-vmm with a driver"))
    }

    fn run_driven_rig(&self, driver: &str, tools: &[&Path]) -> Result<DrivenOutput> {
        let mut files = Vec::new();
        for tool in tools {
            let name = tool.file_name().context("a tool without a file name")?;
            files.push((
                tool.to_path_buf(),
                format!("/usr/bin/{}", name.to_string_lossy()),
            ));
        }
        let scripts = self.l1_before.iter().chain(&self.l1_after).count() as u64;
        let mut opts = self.rig_options(self.timeout + Duration::from_secs(180 + 120 * scripts));
        opts.files.extend(files);
        let script = format!(
            "d=/tmp/keel-driven; mkdir -p $d && cd $d || exit 1\n{}",
            self.l1_wrap(&driven_script(
                &self.args(Path::new("/guest")),
                self.timeout,
                driver
            ))
        );
        let out = rig::run(&opts, &script)?;
        if out.status != 0 {
            bail!(
                "The rig's script failed ({}):\n{}",
                out.status,
                rig::tail(&out.output, 40)
            );
        }
        parse_driven_output(&out.output)
    }

    fn run_driven_native(
        &self,
        guest_dir: &Path,
        driver: &str,
        tools: &[&Path],
    ) -> Result<DrivenOutput> {
        let dir = std::env::temp_dir().join(format!(
            "keel-driven-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        std::fs::create_dir_all(dir.join("bin"))
            .with_context(|| format!("Creating {}", dir.display()))?;
        let mut links: Vec<&Path> = tools.to_vec();
        links.push(keel_vmm());
        for tool in links {
            let name = tool.file_name().context("a tool without a file name")?;
            std::os::unix::fs::symlink(tool, dir.join("bin").join(name))
                .with_context(|| format!("Linking {}", tool.display()))?;
        }
        let script = driven_script(&self.args(guest_dir), self.timeout, driver);
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path)
            .env("d", &dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .context("Running sh")?;
        let _ = std::fs::remove_dir_all(&dir);
        parse_driven_output(&rig::normalize(&output.stdout))
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
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
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let vm = LinuxVm::new()
            .l1_before("echo preparing; (echo helper-ran >\"$D/helper.out\") & helper=$!; false")
            .l1_after("wait $helper; echo \"HELPER=$helper\"; echo SUM=$(cksum <\"$D/disk\" | cut -d' ' -f1)");
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
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
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
}
