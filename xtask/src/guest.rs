//! The Linux test guest: Debian's stock cloud kernel and a busybox initramfs
//! whose /init (`assets/guest-init.sh`) runs what the kernel command line
//! asks. Built from Debian packages only (`apt-get download` + `dpkg-deb
//! -x`), cached, and rebuilt only when an input changes.
//!
//! Output, in `<cache>/guest/`: `vmlinuz` (the stock bzImage), `vmlinux`
//! (the ELF inside it, with its PVH note), `initramfs.cpio.gz` and
//! `manifest.txt` (the inputs: package names, versions, sha256).
//!
//! Besides busybox, the initramfs carries programs from Debian packages
//! with their shared libraries ([`GUEST_TOOLS`]: mkfs.ext4, e2fsck, ip,
//! socat, iperf3; see [`crate::tools`]). Benchmark tools whose libraries
//! are big ([`BENCH_TOOLS`]: fio, about 90 MB with Ceph, Gluster and ICU)
//! go into a second archive, built on demand by [`bench_initramfs`] and
//! concatenated after the first one into `initramfs-bench.cpio.gz` (Linux
//! unpacks concatenated archives in order).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use base64::Engine;
use flate2::write::GzEncoder;

use crate::apt::{self, Spec, Unpacked};
use crate::cpio::CpioWriter;
use crate::host;
use crate::kernel;
use crate::paths;
use crate::tools::{self, Bundle, Root, ToolSet};
use crate::util::{run_captured, sha256_hex, write_atomic, FileLock};

/// Bump when the builder's output changes for the same inputs.
const BUILDER_VERSION: u32 = 2;

const GUEST_INIT: &str = include_str!("../assets/guest-init.sh");
const POWER_BUTTON: &str = include_str!("../assets/power-button.sh");
const PROFILE: &str = include_str!("../assets/guest-profile.sh");
/// busybox udhcpc's default hook: `udhcpc -i eth0` configures the NIC.
const UDHCPC_SCRIPT: &str = include_str!("../assets/udhcpc.script");
const CMOS_TOGGLE: &str = include_str!("../assets/cmos-toggle.S");

/// The Debian packages a guest is made of.
pub const KERNEL_SPEC: Spec = Spec::DependencyOf {
    meta: "linux-image-cloud-amd64",
    prefix: "linux-image-",
};
/// `/bin/busybox` and its applets: the static build (no loader to run for
/// each of the many commands the init scripts start, which counts under
/// nested virtualization). /init runs `busybox --install -s`, which leaves
/// the Debian programs in place.
pub const BUSYBOX_SPEC: Spec = Spec::Package("busybox-static");
/// The shell, `/bin/sh` → [`SHELL_PATH`]: Debian's dynamically linked
/// busybox, whose `sh` searches `$PATH` for commands. The static build's
/// `sh` runs its own applets first, so iproute2's `ip` would lose to
/// busybox's (which has no `ip tuntap`). Scripts that start a shell from a
/// busybox applet (`timeout 9 sh -c …`) get the static one: name it
/// `/bin/sh` there.
pub const SHELL: ToolSet = ToolSet {
    name: "shell",
    packages: &["busybox"],
    files: &["bin/busybox"],
};
/// Where [`SHELL`]'s busybox goes.
pub const SHELL_PATH: &str = "bin/busybox-sh";

/// The C runtime (the loader, libc, libm, libresolv, …) that every tool's
/// programs load.
pub const C_RUNTIME: ToolSet = ToolSet {
    name: "c-runtime",
    packages: &["libc6"],
    files: &[],
};
pub const E2FSPROGS: ToolSet = ToolSet {
    name: "e2fsprogs",
    packages: &[
        "e2fsprogs",
        "libext2fs2",
        "libcom-err2",
        "libblkid1",
        "libuuid1",
    ],
    files: &[
        "sbin/mkfs.ext4",
        "sbin/mke2fs",
        "sbin/e2fsck",
        "sbin/fsck.ext4",
        "sbin/tune2fs",
        "sbin/dumpe2fs",
        "etc/mke2fs.conf",
    ],
};
/// iproute2's `ip` (busybox's has no `ip tuntap`).
pub const IPROUTE2: ToolSet = ToolSet {
    name: "iproute2",
    packages: &[
        "iproute2", "libbpf1", "libelf1", "libmnl0", "libbsd0", "libmd0", "libcap2", "zlib1g",
    ],
    files: &["bin/ip", "sbin/ip", "sbin/bridge"],
};
/// socat, with AF_VSOCK support (`VSOCK-LISTEN:`, `VSOCK-CONNECT:`).
pub const SOCAT: ToolSet = ToolSet {
    name: "socat",
    packages: &[
        "socat",
        "libssl3",
        "libwrap0",
        "libnsl2",
        "libtirpc3",
        "libgssapi-krb5-2",
        "libkrb5-3",
        "libk5crypto3",
        "libkrb5support0",
        "libkeyutils1",
        "libcom-err2",
    ],
    files: &["usr/bin/socat"],
};
/// nftables' `nft`, for keeld's NAT rules in the rig's L1.
pub const NFTABLES: ToolSet = ToolSet {
    name: "nftables",
    packages: &[
        "nftables",
        "libnftables1",
        "libmnl0",
        "libnftnl11",
        "libxtables12",
        "libjansson4",
        "libgmp10",
        "libedit2",
        "libtinfo6",
        "libbsd0",
        "libmd0",
    ],
    files: &["usr/sbin/nft"],
};
pub const IPERF3: ToolSet = ToolSet {
    name: "iperf3",
    packages: &["iperf3", "libiperf0", "libsctp1", "libssl3"],
    files: &["usr/bin/iperf3"],
};
/// fio: Debian links it against every I/O engine's library (Ceph RBD and
/// RADOS, GlusterFS, RDMA, NBD, PMEM), so its closure is about 90 MB.
pub const FIO: ToolSet = ToolSet {
    name: "fio",
    packages: &[
        "fio",
        "libaio1",
        "libnuma1",
        "zlib1g",
        "libgfapi0",
        "libgfrpc0",
        "libgfxdr0",
        "libglusterfs0",
        "libnbd0",
        "libibverbs1",
        "librdmacm1",
        "librados2",
        "librbd1",
        "libpmem1",
        "libpmemblk1",
        "libndctl6",
        "libdaxctl1",
        "libkmod2",
        "libudev1",
        "libnl-3-200",
        "libnl-route-3-200",
        "libacl1",
        "libargon2-1",
        "libblkid1",
        "libuuid1",
        "libboost-iostreams1.74.0",
        "libboost-thread1.74.0",
        "libbz2-1.0",
        "liblzma5",
        "libzstd1",
        "libcryptsetup12",
        "libdevmapper1.02.1",
        "libselinux1",
        "libpcre2-8-0",
        "libffi8",
        "libfmt9",
        "libgcc-s1",
        "libstdc++6",
        "libgnutls30",
        "libgmp10",
        "libhogweed6",
        "libnettle8",
        "libidn2-0",
        "libunistring2",
        "libp11-kit0",
        "libtasn1-6",
        "libicu72",
        "libxml2",
        "libjson-c5",
        "libssl3",
        "libtirpc3",
        "libgssapi-krb5-2",
        "libkrb5-3",
        "libk5crypto3",
        "libkrb5support0",
        "libkeyutils1",
        "libcom-err2",
    ],
    files: &["usr/bin/fio"],
};

/// Programs in every test guest's initramfs.
pub const GUEST_TOOLS: &[ToolSet] = &[C_RUNTIME, SHELL, E2FSPROGS, IPROUTE2, SOCAT, IPERF3];
/// Programs in the benchmark archive ([`bench_initramfs`]).
pub const BENCH_TOOLS: &[ToolSet] = &[FIO];

/// Modules loaded by the guest's /init, in dependency order (the package
/// has no modules.dep). `button` + `evdev` give the ACPI power button as
/// KEY_POWER for busybox acpid.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio-rng",
    "virtio_console",
    "virtio_balloon",
    "failover",
    "net_failover",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "button",
    "evdev",
];

/// What the guest does after `keel.cmd` (the `keel.then=` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    Poweroff,
    Reboot,
    /// Reboot once (tracked in CMOS NVRAM), then power off.
    RebootOnce,
    /// Sleep forever: only the power button ends it.
    Wait,
    Shell,
}

impl Then {
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Poweroff => "poweroff",
            Then::Reboot => "reboot",
            Then::RebootOnce => "reboot-once",
            Then::Wait => "wait",
            Then::Shell => "shell",
        }
    }
}

/// The kernel command-line words that make the guest run `cmd` and then do
/// `then`: `keel.cmd=<base64> keel.then=<then>`.
pub fn cmdline_args(cmd: &str, then: Then) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cmd);
    format!("keel.cmd={b64} keel.then={}", then.as_str())
}

/// A built guest.
#[derive(Clone, Debug)]
pub struct Guest {
    pub vmlinuz: PathBuf,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    pub manifest: PathBuf,
    /// `uname -r` of the kernel.
    pub kernel_release: String,
    /// The unpacked kernel package (for its modules).
    pub kernel_root: PathBuf,
}

/// Builds (or reuses) the guest in the default cache.
pub fn build() -> Result<Guest> {
    build_in(&paths::cache_dir()?)
}

/// Builds (or reuses) the guest in `<cache>/guest/`.
pub fn build_in(cache: &Path) -> Result<Guest> {
    let _lock = FileLock::acquire(&cache.join(".guest.lock"))?;
    let mut specs = vec![KERNEL_SPEC, BUSYBOX_SPEC];
    specs.extend(tool_specs(GUEST_TOOLS));
    let unpacked = apt::fetch(cache, &specs)?;
    let (kernel_pkg, busybox_pkg) = (&unpacked[0], &unpacked[1]);
    let kernel_release = kernel_release(&kernel_pkg.root)?;
    let dir = cache.join("guest");
    let guest = Guest {
        vmlinuz: dir.join("vmlinuz"),
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio.gz"),
        manifest: dir.join("manifest.txt"),
        kernel_release: kernel_release.clone(),
        kernel_root: kernel_pkg.root.clone(),
    };
    let manifest = manifest_text(&unpacked, GUEST_TOOLS);
    let fresh = fs::read_to_string(&guest.manifest).ok().as_deref() == Some(manifest.as_str())
        && [&guest.vmlinuz, &guest.vmlinux, &guest.initramfs]
            .iter()
            .all(|p| p.exists());
    if fresh {
        return Ok(guest);
    }
    eprintln!("xtask: building the test guest ({kernel_release})");
    fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
    let _ = fs::remove_file(&guest.manifest);

    let bz_path = kernel_pkg
        .root
        .join("boot")
        .join(format!("vmlinuz-{kernel_release}"));
    let bz = fs::read(&bz_path).with_context(|| format!("Reading {}", bz_path.display()))?;
    let elf = kernel::extract_vmlinux(&bz).context("Extracting vmlinux from the bzImage")?;
    if kernel::pvh_entry(&elf)?.is_none() {
        bail!("The extracted vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
    }
    let cmos_toggle = assemble_static(&dir, "cmos-toggle", CMOS_TOGGLE)?;
    let tools = resolve_tools(GUEST_TOOLS, &roots(&unpacked[2..]), &BTreeSet::new())
        .context("Resolving the guest's tools")?;
    let initramfs = initramfs(
        &kernel_pkg.root,
        &kernel_release,
        &busybox_pkg.root,
        &cmos_toggle,
        &tools,
    )?;
    eprintln!(
        "xtask: guest initramfs {:.1} MiB ({:.1} MiB of tools unpacked)",
        initramfs.len() as f64 / MIB,
        tools.size()? as f64 / MIB
    );
    write_atomic(&guest.vmlinuz, &bz)?;
    write_atomic(&guest.vmlinux, &elf)?;
    write_atomic(&guest.initramfs, &initramfs)?;
    write_atomic(&guest.manifest, manifest.as_bytes())?;
    Ok(guest)
}

/// Builds (or reuses) the benchmark initramfs in the default cache.
pub fn bench_initramfs() -> Result<PathBuf> {
    bench_initramfs_in(&paths::cache_dir()?)
}

/// Builds (or reuses) `<cache>/guest/initramfs-bench.cpio.gz`: the test
/// guest's initramfs followed by a second archive with [`BENCH_TOOLS`] and
/// the libraries they need that the first one lacks. Boot it in place of
/// `initramfs.cpio.gz` (give the guest 1 GiB: it unpacks into RAM).
pub fn bench_initramfs_in(cache: &Path) -> Result<PathBuf> {
    let guest = build_in(cache)?;
    let _lock = FileLock::acquire(&cache.join(".guest.lock"))?;
    let all: Vec<ToolSet> = GUEST_TOOLS.iter().chain(BENCH_TOOLS).copied().collect();
    let unpacked = apt::fetch(cache, &tool_specs(&all))?;
    let dir = cache.join("guest");
    let path = dir.join("initramfs-bench.cpio.gz");
    let manifest_path = dir.join("manifest-bench.txt");
    let base_manifest = fs::read_to_string(&guest.manifest)
        .with_context(|| format!("Reading {}", guest.manifest.display()))?;
    let manifest = format!(
        "{base_manifest}# benchmark archive\n{}{}",
        package_lines(&unpacked),
        tools::manifest_lines(BENCH_TOOLS)
    );
    if path.exists() && fs::read_to_string(&manifest_path).ok().as_deref() == Some(&manifest) {
        return Ok(path);
    }
    eprintln!("xtask: building the benchmark initramfs");
    let _ = fs::remove_file(&manifest_path);
    let roots = roots(&unpacked);
    let none = BTreeSet::new();
    let base = resolve_tools(GUEST_TOOLS, &roots, &none)?;
    let extra = resolve_tools(&all, &roots, &none)
        .context("Resolving the benchmark tools")?
        .minus(&base);
    let mut out = fs::read(&guest.initramfs)
        .with_context(|| format!("Reading {}", guest.initramfs.display()))?;
    // The next archive starts 4-byte aligned; the kernel skips the zeros.
    out.resize(out.len().next_multiple_of(4), 0);
    let mut cpio = CpioWriter::new(GzEncoder::new(out, flate2::Compression::default()));
    extra.write(&mut cpio)?;
    let out = cpio.finish()?.finish()?;
    eprintln!(
        "xtask: benchmark initramfs {:.1} MiB ({:.1} MiB more unpacked)",
        out.len() as f64 / MIB,
        extra.size()? as f64 / MIB
    );
    write_atomic(&path, &out)?;
    write_atomic(&manifest_path, manifest.as_bytes())?;
    Ok(path)
}

const MIB: f64 = 1024.0 * 1024.0;

/// The packages of `sets` as apt specs.
fn tool_specs(sets: &[ToolSet]) -> Vec<Spec> {
    tools::packages(sets)
        .into_iter()
        .map(Spec::Package)
        .collect()
}

/// Unpacked packages as roots to search for tools and libraries.
fn roots(unpacked: &[Unpacked]) -> Vec<Root> {
    unpacked
        .iter()
        .map(|u| Root {
            name: u.package.name.clone(),
            dir: u.root.clone(),
        })
        .collect()
}

fn package_lines(unpacked: &[Unpacked]) -> String {
    unpacked
        .iter()
        .map(|u| {
            let p = &u.package;
            format!("package {} {} sha256:{}\n", p.name, p.version, p.sha256)
        })
        .collect()
}

fn manifest_text(unpacked: &[Unpacked], sets: &[ToolSet]) -> String {
    let mut text = format!("# Keel test guest; builder version {BUILDER_VERSION}\n");
    text.push_str(&package_lines(unpacked));
    text.push_str(&tools::manifest_lines(sets));
    let assets = [
        ("guest-init.sh", GUEST_INIT),
        ("power-button.sh", POWER_BUTTON),
        ("guest-profile.sh", PROFILE),
        ("udhcpc.script", UDHCPC_SCRIPT),
        ("cmos-toggle.S", CMOS_TOGGLE),
    ];
    for (name, text_of) in assets {
        text.push_str(&format!(
            "asset {name} sha256:{}\n",
            sha256_hex(text_of.as_bytes())
        ));
    }
    text.push_str(&format!("modules {}\n", GUEST_MODULES.join(" ")));
    text
}

/// The kernel release (`6.1.0-…-cloud-amd64`) of an unpacked kernel package.
pub fn kernel_release(kernel_root: &Path) -> Result<String> {
    let boot = kernel_root.join("boot");
    for entry in fs::read_dir(&boot).with_context(|| format!("Listing {}", boot.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok(release.to_string());
        }
    }
    bail!("No vmlinuz-* in {}", boot.display())
}

/// Every `*.ko` under the package's `lib/modules/<release>/kernel`, by name.
pub fn module_index(kernel_root: &Path, release: &str) -> Result<HashMap<String, PathBuf>> {
    fn walk(dir: &Path, out: &mut HashMap<String, PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("Listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if let Some(module) = name.strip_suffix(".ko") {
                    out.insert(module.to_string(), path.clone());
                }
            }
        }
        Ok(())
    }
    let mut index = HashMap::new();
    walk(
        &kernel_root.join("lib/modules").join(release).join("kernel"),
        &mut index,
    )?;
    Ok(index)
}

/// Adds the skeleton every initramfs of ours starts with: the directories,
/// /dev/console, the static /bin/busybox and /bin/sh → the [`SHELL`] (which
/// comes with its libraries among the tools: see [`resolve_tools`]).
pub fn add_busybox_base<W: Write>(cpio: &mut CpioWriter<W>, busybox_root: &Path) -> Result<()> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "root",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.host_path(&busybox_root.join("bin/busybox"), "bin/busybox")?;
    let shell = SHELL_PATH.rsplit('/').next().unwrap_or(SHELL_PATH);
    cpio.symlink("bin/sh", shell)?;
    Ok(())
}

/// [`tools::resolve`], with the [`SHELL`]'s busybox moved to
/// [`SHELL_PATH`] (`/bin/busybox` is the static one).
pub fn resolve_tools(
    sets: &[ToolSet],
    roots: &[Root],
    provided: &BTreeSet<String>,
) -> Result<Bundle> {
    let mut bundle = tools::resolve(sets, roots, provided)?;
    if sets.iter().any(|s| s.name == SHELL.name) && !bundle.rename("bin/busybox", SHELL_PATH) {
        bail!("The shell's busybox is missing from the resolved tools");
    }
    Ok(bundle)
}

/// Adds `modules` from the kernel package at `lib/modules/<release>/<name>.ko`
/// and lists the ones found, in order, in `list_path`. Returns the missing.
pub fn add_modules<W: Write>(
    cpio: &mut CpioWriter<W>,
    kernel_root: &Path,
    release: &str,
    modules: &[&str],
    list_path: &str,
) -> Result<Vec<String>> {
    let index = module_index(kernel_root, release)?;
    let mut list = String::new();
    let mut missing = Vec::new();
    for module in modules {
        list.push_str(module);
        list.push('\n');
        match index.get(*module) {
            Some(path) => cpio.host_path(path, &format!("lib/modules/{release}/{module}.ko"))?,
            None => missing.push((*module).to_string()),
        }
    }
    cpio.file(list_path, 0o644, list.as_bytes())?;
    Ok(missing)
}

/// Assembles a static, libc-free x86-64 Linux program (GNU as + ld).
fn assemble_static(work_dir: &Path, name: &str, source: &str) -> Result<Vec<u8>> {
    host::ensure(&[host::AS, host::LD])?;
    let work = work_dir.join(format!(".build-{name}-{}", std::process::id()));
    fs::create_dir_all(&work).with_context(|| format!("Creating {}", work.display()))?;
    let result = (|| -> Result<Vec<u8>> {
        let (src, obj, bin) = (work.join("p.S"), work.join("p.o"), work.join("p"));
        fs::write(&src, source)?;
        run_captured(Command::new("as").arg("--64").arg("-o").arg(&obj).arg(&src))?;
        run_captured(
            Command::new("ld")
                .args(["-static", "-s", "-o"])
                .arg(&bin)
                .arg(&obj),
        )?;
        Ok(fs::read(&bin)?)
    })();
    let _ = fs::remove_dir_all(&work);
    result.with_context(|| format!("Building {name}"))
}

fn initramfs(
    kernel_root: &Path,
    release: &str,
    busybox_root: &Path,
    cmos_toggle: &[u8],
    tools: &Bundle,
) -> Result<Vec<u8>> {
    let mut cpio = CpioWriter::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    add_busybox_base(&mut cpio, busybox_root)?;
    tools.write(&mut cpio)?;
    // e2fsck and mount look for mounted filesystems here.
    cpio.symlink("etc/mtab", "/proc/self/mounts")?;
    let missing = add_modules(
        &mut cpio,
        kernel_root,
        release,
        GUEST_MODULES,
        "etc/keel-modules",
    )?;
    if !missing.is_empty() {
        eprintln!(
            "xtask: warning: the kernel package lacks modules {}",
            missing.join(" ")
        );
    }
    cpio.file("etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON.as_bytes())?;
    cpio.file("bin/cmos-toggle", 0o755, cmos_toggle)?;
    cpio.file("etc/profile", 0o644, PROFILE.as_bytes())?;
    cpio.file(
        "usr/share/udhcpc/default.script",
        0o755,
        UDHCPC_SCRIPT.as_bytes(),
    )?;
    cpio.file("init", 0o755, GUEST_INIT.as_bytes())?;
    let gz = cpio.finish()?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_carries_the_command_in_base64() {
        let args = cmdline_args("echo hi; nproc", Then::RebootOnce);
        assert_eq!(args, "keel.cmd=ZWNobyBoaTsgbnByb2M= keel.then=reboot-once");
        assert!(!args.contains(' ') || args.split(' ').count() == 2);
    }

    #[test]
    fn init_script_handles_every_then() {
        for then in [
            Then::Poweroff,
            Then::Reboot,
            Then::RebootOnce,
            Then::Wait,
            Then::Shell,
        ] {
            assert!(GUEST_INIT.contains(&format!("{})", then.as_str())) || then == Then::Poweroff);
        }
        assert!(GUEST_INIT.contains("KEEL-GUEST-BOOTED"));
        assert!(GUEST_INIT.contains("KEEL-CMD-EXIT="));
    }

    #[test]
    fn the_shell_busybox_moves_aside_for_the_static_one() {
        let dir = std::env::temp_dir().join(format!("xtask-guest-shell-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::copy("/bin/sh", dir.join("bin/busybox")).unwrap();
        let roots = [Root {
            name: "busybox".into(),
            dir: dir.clone(),
        }];
        // The host's C library stands in for libc6's.
        let host = Root {
            name: "host".into(),
            dir: "/".into(),
        };
        let bundle = resolve_tools(&[SHELL], &[roots[0].clone(), host], &BTreeSet::new()).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(bundle.entries.contains_key(SHELL_PATH), "{bundle:?}");
        assert!(!bundle.entries.contains_key("bin/busybox"));
        assert!(bundle
            .entries
            .contains_key("lib/x86_64-linux-gnu/libc.so.6"));
        // Every tool set names its packages, and the C runtime is among them.
        let packages = tools::packages(GUEST_TOOLS);
        assert!(packages.contains(&"libc6") && packages.contains(&"busybox"));
        assert!(GUEST_TOOLS
            .iter()
            .chain(BENCH_TOOLS)
            .all(|t| !t.packages.is_empty()));
    }

    #[test]
    fn init_scripts_are_valid_sh() {
        for script in [GUEST_INIT, POWER_BUTTON, PROFILE, UDHCPC_SCRIPT] {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}
