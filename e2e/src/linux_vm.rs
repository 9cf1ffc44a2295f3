//! `LinuxVm`: one Linux test-guest run, natively or in the rig, optionally
//! with a driver script beside keel-vmm.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use xtask::host::{self};
use xtask::rig::{self, shell_quote, RigOptions};

pub use xtask::guest::Then;

use crate::*;

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
    pub(crate) kernel: Kernel,
    pub(crate) cpus: Option<u32>,
    pub(crate) memory: Option<String>,
    pub(crate) cmd: String,
    pub(crate) then: Then,
    pub(crate) extra: Vec<String>,
    pub(crate) sigterm_after: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) rig_memory_mib: u32,
    pub(crate) rig_files: Vec<(PathBuf, String)>,
    pub(crate) l1_before: Option<String>,
    pub(crate) l1_after: Option<String>,
    pub(crate) bench_tools: bool,
    pub(crate) with_qemu: bool,
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
    pub(crate) fn needs_rig(&self) -> bool {
        !self.rig_files.is_empty()
            || self.l1_before.is_some()
            || self.l1_after.is_some()
            || self.with_qemu
    }

    /// The rig options for this VM, with `timeout` for the whole L1 run.
    pub(crate) fn rig_options(&self, timeout: Duration) -> RigOptions {
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
    pub(crate) fn l1_wrap(&self, inner: &str) -> String {
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
    pub(crate) fn runner(&self) -> Option<Runner> {
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

    pub(crate) fn args(&self, guest_dir: &Path) -> Vec<String> {
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

    pub(crate) fn run_rig(&self) -> Result<VmOutput> {
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
pub(crate) fn driven_script(args: &[String], timeout: Duration, driver: &str) -> String {
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

pub(crate) fn parse_driven_output(text: &str) -> Result<DrivenOutput> {
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

    pub(crate) fn run_driven_rig(&self, driver: &str, tools: &[&Path]) -> Result<DrivenOutput> {
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

    pub(crate) fn run_driven_native(
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

pub(crate) fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
