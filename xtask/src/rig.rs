//! The KVM rig: an L1 Linux VM under QEMU TCG with an emulated AMD SVM, whose
//! `kvm-amd` gives a hardware-style `/dev/kvm` on which stock kernels boot
//! (see shared/RIG.md). The host's binaries and the test guest go into L1
//! through its initramfs: a cached base archive (busybox, the KVM modules,
//! the host's C libraries, iproute2's `ip`, socat, e2fsprogs and iperf3
//! from Debian packages, /init), with [`RigOptions::with_qemu`] a cached
//! archive with the host's QEMU, and a per-run archive, concatenated.
//!
//! ```text
//! host ── QEMU TCG (-cpu EPYC,+svm) ── L1: /init → insmod kvm-amd → sh /rig/cmd
//!   ▲ console (ttyS0) streamed back          └─ keel-vmm → L2 guest
//!   └─ "KEEL-RIG-EXIT=<status>" → the rig's result
//! ```
//!
//! [`run`] waits for the script's status; [`spawn`] leaves L1 running in
//! the background with its console in a file (`cargo xtask run` boots a
//! whole Keel host that way). With [`RigOptions::disks`] or
//! [`RigOptions::host_forward`], L1 also loads the virtio drivers
//! ([`VIRTIO_MODULES`]) and gets virtio-blk disks and a user-mode NIC.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;

use crate::apt::{self, Spec};
use crate::cpio::CpioWriter;
use crate::guest::{self, Guest};
use crate::host;
use crate::paths;
use crate::proc::ChildGuard;
use crate::tools::{self, Bundle, Entry, Root, ToolSet};
use crate::util::{sha256_file, sha256_hex, write_atomic, FileLock};

const RIG_INIT: &str = include_str!("../assets/rig-init.sh");
const BASE_VERSION: u32 = 2;
const QEMU_VERSION: u32 = 1;

/// Programs from Debian packages in L1 (busybox brings `nc`, `sha256sum`,
/// `brctl`, `losetup`, …): iproute2's `ip`, socat, e2fsprogs (`mkfs.ext4`
/// for scratch filesystems, e.g. the block benchmark's images), iperf3
/// (the network benchmark's L1 end) and nftables' `nft` (keeld's NAT). Their C library is the host's (below),
/// so `libc6` is not among the packages: the guest builder checks these
/// sets with it.
pub const RIG_TOOLS: &[ToolSet] = &[
    guest::SHELL,
    guest::IPROUTE2,
    guest::SOCAT,
    guest::E2FSPROGS,
    guest::IPERF3,
    guest::NFTABLES,
];

/// QEMU in L1 ([`RigOptions::with_qemu`]): the host's own installed files,
/// since it is the VMM we compare with, not a test guest.
const QEMU_BINARY: ToolSet = ToolSet {
    name: "qemu",
    packages: &[],
    files: &["usr/bin/qemu-system-x86_64"],
};
/// QEMU's firmware and data, found relative to its binary.
const QEMU_DATA_DIRS: &[&str] = &["usr/share/qemu", "usr/share/seabios"];

/// Modules L1 loads, in order: KVM, then TAP devices, bridges and veth
/// pairs for network tests, then nftables with connection tracking and NAT
/// for keeld's NAT networks (the package ships no modules.dep).
pub const RIG_MODULES: &[&str] = &[
    "irqbypass",
    "kvm",
    "kvm-amd",
    "tun",
    "llc",
    "stp",
    "bridge",
    "veth",
    "libcrc32c",
    "nfnetlink",
    "nf_tables",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_masq",
    "nft_ct",
];

/// Host libraries copied into L1 so host-built binaries run unchanged.
const HOST_LIBS: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libgcc_s.so.1",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];
const HOST_LIB_DIRS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"];

mod devices;
use devices::{check_programs, device_args, prelude};
pub use devices::{disk_device, L1_ADDRESS, L1_GATEWAY, VIRTIO_MODULES};

/// How to run the rig.
#[derive(Clone, Debug)]
pub struct RigOptions {
    /// Kill L1 after this long.
    pub timeout: Duration,
    /// L1's vCPUs.
    pub cpus: u32,
    /// L1's memory in MiB.
    pub memory_mib: u32,
    /// Extra host files or directories and where they go in L1.
    pub files: Vec<(PathBuf, String)>,
    /// The keel-vmm binary to bring to `/usr/bin/keel-vmm` (skipped when
    /// it does not exist); by default `target/debug/keel-vmm`.
    pub keel_vmm: Option<PathBuf>,
    /// Bring the test guest to `/guest/{vmlinuz,initramfs.cpio.gz}`.
    pub guest: bool,
    /// Also bring `/guest/vmlinux` (the ELF kernel, 50 MB that L1 unpacks
    /// on every run: only when a test boots it).
    pub guest_vmlinux: bool,
    /// Also bring `/guest/initramfs-bench.cpio.gz` (the guest's initramfs
    /// plus fio; see [`guest::bench_initramfs`]).
    pub guest_bench: bool,
    /// Bring the host's QEMU (`/usr/bin/qemu-system-x86_64` with
    /// `/usr/share/qemu`, `/usr/share/seabios` and its libraries, about
    /// 60 MB) for side-by-side runs.
    pub with_qemu: bool,
    /// Copy L1's console to our stdout as it arrives.
    pub echo: bool,
    /// Give L1's console to the terminal (stdin too); no output is captured.
    pub interactive: bool,
    /// Host-built programs and where they go in L1 (e.g. `target/debug/keeld`
    /// → `/usr/bin/keeld`). ELF programs may need only the host libraries L1
    /// has (its copies of the host's C libraries): anything else is an error
    /// before L1 boots.
    pub programs: Vec<(PathBuf, String)>,
    /// Raw disk images for L1, as virtio-blk disks `/dev/vda`, `/dev/vdb`, …
    /// in order (present before the script starts).
    pub disks: Vec<PathBuf>,
    /// `(host port, L1 port)`: a QEMU user-mode NIC whose `hostfwd` forwards
    /// TCP `127.0.0.1:<host port>` to L1's `<L1 port>`. L1 configures it
    /// before the script starts ([`L1_ADDRESS`], default route via
    /// [`L1_GATEWAY`]).
    pub host_forward: Option<(u16, u16)>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            timeout: Duration::from_secs(300),
            cpus: 2,
            memory_mib: 4096,
            files: Vec::new(),
            keel_vmm: Some(paths::keel_vmm_debug()),
            guest: true,
            guest_vmlinux: false,
            guest_bench: false,
            with_qemu: false,
            echo: false,
            interactive: false,
            programs: Vec::new(),
            disks: Vec::new(),
            host_forward: None,
        }
    }
}

impl RigOptions {
    /// L1 has virtio devices (and so loads [`VIRTIO_MODULES`]).
    fn has_virtio(&self) -> bool {
        !self.disks.is_empty() || self.host_forward.is_some()
    }
}

/// What a rig run gave.
#[derive(Clone, Debug)]
pub struct RigOutput {
    /// The command's exit status inside L1.
    pub status: i32,
    /// L1's console output (the command's stdout and stderr), `\r\n` → `\n`.
    pub output: String,
}

/// The cached L1 image.
#[derive(Clone, Debug)]
pub struct RigImage {
    pub kernel: PathBuf,
    pub base_initramfs: PathBuf,
    pub guest: Guest,
}

/// Builds (or reuses) the L1 image in the default cache.
pub fn image() -> Result<RigImage> {
    image_in(&paths::cache_dir()?)
}

/// Builds (or reuses) the L1 image in `<cache>/rig/`.
pub fn image_in(cache: &Path) -> Result<RigImage> {
    let guest = guest::build_in(cache)?;
    let _lock = FileLock::acquire(&cache.join(".rig.lock"))?;
    let dir = cache.join("rig");
    let base = dir.join("base.cpio.gz");
    let manifest_path = dir.join("manifest.txt");
    let libs = host_libs()?;
    let mut specs = vec![guest::BUSYBOX_SPEC];
    specs.extend(tools::packages(RIG_TOOLS).into_iter().map(Spec::Package));
    let mut unpacked = apt::fetch(cache, &specs)?;
    let busybox = unpacked.remove(0);
    let tools = rig_tools(&unpacked, &libs)?;
    let mut manifest = format!("# Keel rig L1 base; version {BASE_VERSION}\n");
    manifest.push_str(&fs::read_to_string(&guest.manifest).unwrap_or_default());
    manifest.push_str(&format!(
        "asset rig-init.sh sha256:{}\n",
        sha256_hex(RIG_INIT.as_bytes())
    ));
    for (name, path) in &libs {
        manifest.push_str(&format!("hostlib {name} sha256:{}\n", sha256_file(path)?));
    }
    for u in &unpacked {
        let p = &u.package;
        manifest.push_str(&format!(
            "package {} {} sha256:{}\n",
            p.name, p.version, p.sha256
        ));
    }
    manifest.push_str(&tools::manifest_lines(RIG_TOOLS));
    manifest.push_str(&host_file_lines(&tools, cache)?);
    let image = RigImage {
        kernel: guest.vmlinuz.clone(),
        base_initramfs: base.clone(),
        guest: guest.clone(),
    };
    if base.exists() && fs::read_to_string(&manifest_path).ok().as_deref() == Some(&manifest) {
        return Ok(image);
    }
    eprintln!("xtask: building the rig's L1 image");
    fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    let mut cpio = CpioWriter::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    guest::add_busybox_base(&mut cpio, &busybox.root)?;
    let missing = guest::add_modules(
        &mut cpio,
        &guest.kernel_root,
        &guest.kernel_release,
        RIG_MODULES,
        "etc/keel-modules",
    )?;
    if !missing.is_empty() {
        bail!(
            "The kernel package lacks the KVM modules {}",
            missing.join(" ")
        );
    }
    for (name, path) in &libs {
        cpio.host_path(path, &format!("lib/x86_64-linux-gnu/{name}"))?;
    }
    cpio.symlink(
        "lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    )?;
    tools.write(&mut cpio)?;
    cpio.file("init", 0o755, RIG_INIT.as_bytes())?;
    let gz = cpio.finish()?.finish()?;
    write_atomic(&base, &gz)?;
    write_atomic(&manifest_path, manifest.as_bytes())?;
    Ok(image)
}

/// [`RIG_TOOLS`] from their packages; the C library's other parts
/// (libresolv, …) come from the host, like libc itself.
fn rig_tools(unpacked: &[apt::Unpacked], libs: &[(String, PathBuf)]) -> Result<Bundle> {
    let mut roots: Vec<Root> = unpacked
        .iter()
        .map(|u| Root {
            name: u.package.name.clone(),
            dir: u.root.clone(),
        })
        .collect();
    roots.push(Root {
        name: "the host's C library".into(),
        dir: "/".into(),
    });
    let provided = libs.iter().map(|(name, _)| name.clone()).collect();
    guest::resolve_tools(RIG_TOOLS, &roots, &provided).context("Resolving L1's tools")
}

/// `hostfile <path> sha256:<sum>` for the bundle's files outside `cache`.
fn host_file_lines(bundle: &Bundle, cache: &Path) -> Result<String> {
    let mut text = String::new();
    for entry in bundle.entries.values() {
        if let Entry::File(path) = entry {
            if !path.starts_with(cache) {
                text.push_str(&format!(
                    "hostfile {} sha256:{}\n",
                    path.display(),
                    sha256_file(path)?
                ));
            }
        }
    }
    Ok(text)
}

/// Builds (or reuses) `<cache>/rig/qemu.cpio`: the host's QEMU for L1.
/// Uncompressed: L1's kernel unpacks it under TCG, where inflating costs
/// more than reading the bigger file.
pub fn qemu_archive_in(cache: &Path) -> Result<PathBuf> {
    host::ensure(&[host::QEMU])?;
    let _lock = FileLock::acquire(&cache.join(".rig.lock"))?;
    let dir = cache.join("rig");
    let path = dir.join("qemu.cpio");
    let manifest_path = dir.join("qemu-manifest.txt");
    let provided = host_libs()?.into_iter().map(|(name, _)| name).collect();
    let host = [Root {
        name: "the host".into(),
        dir: "/".into(),
    }];
    let bundle = tools::resolve(&[QEMU_BINARY], &host, &provided)
        .context("Resolving QEMU's libraries on the host")?;
    let mut manifest = format!("# QEMU for the rig's L1; version {QEMU_VERSION}\n");
    manifest.push_str(&host_file_lines(&bundle, cache)?);
    for data in QEMU_DATA_DIRS {
        manifest.push_str(&format!(
            "data /{data} {}\n",
            tree_summary(&Path::new("/").join(data))?
        ));
    }
    if path.exists() && fs::read_to_string(&manifest_path).ok().as_deref() == Some(&manifest) {
        return Ok(path);
    }
    eprintln!("xtask: building the QEMU archive for the rig");
    fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    let mut cpio = CpioWriter::new(Vec::new());
    bundle.write(&mut cpio)?;
    for data in QEMU_DATA_DIRS {
        cpio.host_path(&Path::new("/").join(data), data)?;
    }
    write_atomic(&path, &cpio.finish()?)?;
    write_atomic(&manifest_path, manifest.as_bytes())?;
    Ok(path)
}

/// Number of files, total size and newest mtime under `dir`.
fn tree_summary(dir: &Path) -> Result<String> {
    fn walk(dir: &Path, acc: &mut (u64, u64, u64)) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("Listing {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                walk(&entry.path(), acc)?;
            } else {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                *acc = (acc.0 + 1, acc.1 + meta.len(), acc.2.max(mtime));
            }
        }
        Ok(())
    }
    let mut acc = (0, 0, 0);
    walk(dir, &mut acc)?;
    Ok(format!("files={} bytes={} mtime={}", acc.0, acc.1, acc.2))
}

fn host_libs() -> Result<Vec<(String, PathBuf)>> {
    let mut libs = Vec::new();
    for name in HOST_LIBS {
        let found = HOST_LIB_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists());
        match found {
            Some(path) => libs.push((name.to_string(), path)),
            None if ["ld-linux-x86-64.so.2", "libc.so.6"].contains(name) => {
                bail!("The host has no {name} in {}", HOST_LIB_DIRS.join(" or "))
            }
            None => {}
        }
    }
    Ok(libs)
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Removes per-run files left by rig processes that died (e.g. SIGKILL).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("keel-rig-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only probes whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn per_run_initramfs(image: &RigImage, opts: &RigOptions, script: &str) -> Result<TempFile> {
    static COUNTER: Mutex<u32> = Mutex::new(0);
    let n = {
        let mut c = COUNTER.lock().unwrap_or_else(|p| p.into_inner());
        *c += 1;
        *c
    };
    let tmp_dir = std::env::temp_dir();
    remove_stale_temp_files(&tmp_dir);
    let path = tmp_dir.join(format!("keel-rig-{}-{n}.cpio", std::process::id()));
    let temp = TempFile(path.clone());
    // Private: the script may carry secrets (e.g. a password for L1).
    let mut out = BufWriter::new(
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("Creating {}", path.display()))?,
    );
    let mut archives = vec![image.base_initramfs.clone()];
    if opts.with_qemu {
        archives.push(qemu_archive_in(&paths::cache_dir()?)?);
    }
    for archive in archives {
        let data = fs::read(&archive).with_context(|| format!("Reading {}", archive.display()))?;
        out.write_all(&data)?;
        // The next archive must start 4-byte aligned; the kernel skips zeros.
        out.write_all(&[0u8; 4][..(4 - data.len() % 4) % 4])?;
    }
    let mut cpio = CpioWriter::new(out);
    if let Some(vmm) = &opts.keel_vmm {
        if vmm.exists() {
            cpio.host_path(vmm, "usr/bin/keel-vmm")?;
        } else if opts.echo {
            eprintln!("xtask: {} is not built; L1 has no keel-vmm", vmm.display());
        }
    }
    if opts.guest {
        cpio.host_path(&image.guest.vmlinuz, "guest/vmlinuz")?;
        cpio.host_path(&image.guest.initramfs, "guest/initramfs.cpio.gz")?;
    }
    if opts.guest && opts.guest_vmlinux {
        cpio.host_path(&image.guest.vmlinux, "guest/vmlinux")?;
    }
    if opts.guest_bench {
        cpio.host_path(&guest::bench_initramfs()?, "guest/initramfs-bench.cpio.gz")?;
    }
    for (host_path, l1_path) in &opts.files {
        cpio.host_path(host_path, l1_path.trim_start_matches('/'))
            .with_context(|| format!("Adding {} to L1", host_path.display()))?;
    }
    for (host_path, l1_path) in &opts.programs {
        cpio.host_path(host_path, l1_path.trim_start_matches('/'))
            .with_context(|| format!("Adding {} to L1", host_path.display()))?;
    }
    if opts.has_virtio() {
        let missing = guest::add_modules(
            &mut cpio,
            &image.guest.kernel_root,
            &image.guest.kernel_release,
            VIRTIO_MODULES,
            "etc/keel-virtio-modules",
        )?;
        if !missing.is_empty() {
            bail!("The kernel package lacks the modules {}", missing.join(" "));
        }
    }
    if opts.interactive {
        cpio.file("rig/interactive", 0o644, b"")?;
    }
    let script = format!("{}{script}", prelude(opts));
    cpio.file("rig/cmd", 0o755, script.as_bytes())?;
    cpio.finish()?.flush()?;
    Ok(temp)
}

/// QEMU's arguments for L1.
fn qemu_args(image: &RigImage, initrd: &Path, opts: &RigOptions) -> Vec<String> {
    let mut args: Vec<String> = [
        "-accel",
        "tcg,thread=multi",
        "-M",
        "q35",
        "-cpu",
        "EPYC,+svm",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-smp".into(),
        opts.cpus.to_string(),
        "-m".into(),
        opts.memory_mib.to_string(),
    ]);
    if opts.interactive {
        args.extend(["-nographic".into(), "-serial".into(), "mon:stdio".into()]);
    } else {
        args.extend([
            "-display".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
        ]);
    }
    args.extend([
        "-kernel".into(),
        image.kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0 quiet loglevel=1 panic=-1".into(),
    ]);
    args.extend(device_args(opts));
    args
}

/// Runs `script` (a `sh` script) in L1 and returns its status and output.
/// Errors when QEMU is missing, L1 has no `/dev/kvm`, L1 ends without
/// reporting a status, or the timeout passes (QEMU is then killed).
pub fn run(opts: &RigOptions, script: &str) -> Result<RigOutput> {
    host::ensure(&[host::QEMU])?;
    check_programs(opts)?;
    let image = image()?;
    let initrd = per_run_initramfs(&image, opts, script)?;
    let mut cmd = Command::new(host::QEMU.program);
    cmd.args(qemu_args(&image, &initrd.0, opts));
    if opts.interactive {
        let mut qemu = ChildGuard::spawn(&mut cmd, false)?;
        let status = qemu.wait()?;
        return Ok(RigOutput {
            status: status.code().unwrap_or(1),
            output: String::new(),
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut qemu = ChildGuard::spawn(&mut cmd, true)?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let stdout = qemu.child_mut().stdout.take().context("QEMU's stdout")?;
    let stderr = qemu.child_mut().stderr.take().context("QEMU's stderr")?;
    let echo = opts.echo;
    let out_reader = {
        let output = Arc::clone(&output);
        std::thread::spawn(move || pump(stdout, &output, echo))
    };
    let err_buf = Arc::new(Mutex::new(Vec::new()));
    let err_reader = {
        let err_buf = Arc::clone(&err_buf);
        std::thread::spawn(move || pump(stderr, &err_buf, false))
    };
    let status = qemu.wait_timeout(opts.timeout)?;
    if status.is_none() {
        qemu.kill();
    }
    let _ = out_reader.join();
    let _ = err_reader.join();
    let text = normalize(&output.lock().unwrap_or_else(|p| p.into_inner()));
    let qemu_err =
        String::from_utf8_lossy(&err_buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let Some(status) = status else {
        bail!(
            "The rig timed out after {} s; L1's console ended with:\n{}",
            opts.timeout.as_secs(),
            tail(&text, 40)
        );
    };
    parse_result(&text, &qemu_err, status.code())
}

/// An L1 running in the background ([`spawn`]); QEMU is killed when this
/// drops (or when our process dies).
pub struct RigProcess {
    qemu: ChildGuard,
    _initrd: TempFile,
    /// L1's console (ttyS0), as QEMU writes it.
    pub console_log: PathBuf,
    /// QEMU's own stderr.
    pub qemu_log: PathBuf,
}

impl RigProcess {
    /// QEMU's exit status once it has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.qemu.wait_timeout(Duration::ZERO)
    }

    /// Kills QEMU (L1 and everything in it).
    pub fn stop(&mut self) {
        self.qemu.kill();
    }

    /// What QEMU said on stderr, without TCG's feature warnings.
    pub fn qemu_errors(&self) -> String {
        let text = fs::read_to_string(&self.qemu_log).unwrap_or_default();
        qemu_errors(&text)
    }
}

/// Boots L1 running `script` and returns at once: L1's console goes to
/// `console_log` (created or truncated, mode 0600), QEMU's stderr beside
/// it (`<console_log>.qemu`). No timeout: L1 runs until the script ends
/// or the [`RigProcess`] is stopped or dropped. `opts.echo`,
/// `opts.interactive` and `opts.timeout` do not apply.
pub fn spawn(opts: &RigOptions, script: &str, console_log: &Path) -> Result<RigProcess> {
    host::ensure(&[host::QEMU])?;
    check_programs(opts)?;
    let image = image()?;
    let opts = RigOptions {
        interactive: false,
        echo: false,
        ..opts.clone()
    };
    let initrd = per_run_initramfs(&image, &opts, script)?;
    let qemu_log = PathBuf::from(format!("{}.qemu", console_log.display()));
    let private = |path: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("Creating {}", path.display()))
    };
    let mut cmd = Command::new(host::QEMU.program);
    cmd.args(qemu_args(&image, &initrd.0, &opts))
        .stdin(Stdio::null())
        .stdout(private(console_log)?)
        .stderr(private(&qemu_log)?);
    let qemu = ChildGuard::spawn(&mut cmd, true)?;
    Ok(RigProcess {
        qemu,
        _initrd: initrd,
        console_log: console_log.to_path_buf(),
        qemu_log,
    })
}

fn qemu_errors(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("warning: TCG doesn't support requested feature"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_result(text: &str, qemu_err: &str, qemu_status: Option<i32>) -> Result<RigOutput> {
    if let Some(line) = text.lines().find(|l| l.contains("KEEL-RIG-NOKVM")) {
        bail!(
            "KVM is not available in the rig's L1 ({}):\n{}",
            line.trim(),
            tail(text, 20)
        );
    }
    let status = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("KEEL-RIG-EXIT="))
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(status) = status else {
        let qemu_err = qemu_errors(qemu_err);
        bail!(
            "The rig's L1 ended without reporting a status (QEMU exit {qemu_status:?}){}{}\nL1's console ended with:\n{}",
            if qemu_err.is_empty() { "" } else { "; QEMU said:\n" },
            qemu_err,
            tail(text, 40)
        );
    };
    let end = text.rfind("KEEL-RIG-EXIT=").unwrap_or(text.len());
    Ok(RigOutput {
        status,
        output: text[..end].to_string(),
    })
}

fn pump(mut from: impl Read, into: &Mutex<Vec<u8>>, echo: bool) {
    let mut buf = [0u8; 8192];
    let mut stdout = std::io::stdout();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if echo {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
                into.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// Console text with `\r\n` turned into `\n` and stray `\r` dropped.
pub fn normalize(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\r', "")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quotes `s` for `sh` (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests;
