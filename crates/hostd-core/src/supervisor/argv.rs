//! keel-vmm's command line for a VM: `hostd_api::VmConfig` and the VM's run
//! directory → arguments. keel-vmm runs in the VM's folder, so the folder's
//! files are named relative to it (a folder name may hold commas, which
//! keel-vmm's `key=value,…` flags could not carry).

use std::ffi::OsString;
use std::path::{Component, Path};

use hostd_api::VmConfig;

/// Where the VMM's sockets and exit report go (`STATE/run/<id>/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: std::path::PathBuf,
    pub api: std::path::PathBuf,
    pub console: std::path::PathBuf,
    pub exit: std::path::PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path, id: i64) -> Self {
        let dir = run_dir.join(id.to_string());
        RunPaths {
            api: dir.join("api.sock"),
            console: dir.join("console.sock"),
            exit: dir.join("exit.json"),
            dir,
        }
    }
}

/// The console log and keel-vmm's own log, in the VM's folder.
pub const CONSOLE_LOG: &str = "console.log";
pub const VMM_LOG: &str = "vmm.log";

/// The longest Unix socket path (sun_path holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A file of the VM's folder, as keel-vmm gets it: a plain relative path
/// that stays inside the folder and fits a `key=value,…` option.
fn folder_file<'a>(what: &str, name: &'a str) -> Result<&'a str, String> {
    let path = Path::new(name);
    let inside = !name.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(format!(
            "{what} '{name}' must be a file in the VM's folder (a relative path without '..')"
        ));
    }
    option_value(what, name)
}

/// A value inside keel-vmm's `key=value,…` flags: no comma, no control
/// characters.
fn option_value<'a>(what: &str, value: &'a str) -> Result<&'a str, String> {
    if value.contains(',') || value.chars().any(char::is_control) {
        return Err(format!(
            "{what} '{}' must not contain commas or control characters",
            value.escape_debug()
        ));
    }
    Ok(value)
}

/// keel-vmm's arguments for `cfg`, to run in the VM's folder. `nets` are
/// the `--net` specs the host's network made (TAPs on its switches); without
/// them the NICs of `cfg` become plain TAP specs.
pub fn vmm_args(
    cfg: &VmConfig,
    nets: Option<&[String]>,
    paths: &RunPaths,
) -> Result<Vec<OsString>, String> {
    for p in [&paths.api, &paths.console] {
        if p.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "The socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter state directory",
                p.display()
            ));
        }
    }
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |flag: &str, value: OsString| {
        args.push(flag.into());
        args.push(value);
    };
    push("--kernel", folder_file("Kernel", &cfg.boot.kernel)?.into());
    if let Some(initrd) = &cfg.boot.initrd {
        push("--initrd", folder_file("Initrd", initrd)?.into());
    }
    if !cfg.boot.cmdline.is_empty() {
        push("--cmdline", cfg.boot.cmdline.clone().into());
    }
    push("--cpus", cfg.vcpus.to_string().into());
    push("--memory", format!("{}M", cfg.memory_mib).into());
    push("--api-socket", paths.api.clone().into());
    let mut serial = OsString::from("socket=");
    serial.push(&paths.console);
    serial.push(format!(",log={CONSOLE_LOG}"));
    push("--serial", serial);
    push("--exit-file", paths.exit.clone().into());
    for (i, d) in cfg.disks.iter().enumerate() {
        let what = format!("Disk {i}");
        let mut spec = format!(
            "path={},format={}",
            folder_file(&what, &d.file)?,
            option_value(&format!("{what} format"), &d.format)?
        );
        if d.readonly {
            spec.push_str(",readonly=on");
        }
        if !d.serial.is_empty() {
            spec.push_str(",serial=");
            spec.push_str(option_value(&format!("{what} serial"), &d.serial)?);
        }
        push("--disk", spec.into());
    }
    if let Some(nets) = nets {
        for (i, spec) in nets.iter().enumerate() {
            if spec.chars().any(char::is_control) {
                return Err(format!("NIC {i}'s spec has control characters"));
            }
            push("--net", spec.into());
        }
        return Ok(args);
    }
    for (i, n) in cfg.nics.iter().enumerate() {
        let mut spec = String::from("tap");
        if let Some(tap) = &n.tap {
            spec.push('=');
            spec.push_str(option_value(&format!("NIC {i} tap"), tap)?);
        }
        if let Some(mac) = &n.mac {
            spec.push_str(",mac=");
            spec.push_str(option_value(&format!("NIC {i} MAC"), mac)?);
        }
        push("--net", spec.into());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_api::{BootConfig, DiskConfig, GuestOs, NicConfig};

    fn config() -> VmConfig {
        VmConfig {
            name: "web, 1".into(),
            vcpus: 2,
            memory_mib: 256,
            disks: vec![
                DiskConfig {
                    file: "disk0.qcow2".into(),
                    format: "qcow2".into(),
                    readonly: false,
                    serial: "disk0".into(),
                },
                DiskConfig {
                    file: "iso/seed.img".into(),
                    format: "raw".into(),
                    readonly: true,
                    serial: String::new(),
                },
            ],
            nics: vec![
                NicConfig::default(),
                NicConfig {
                    tap: Some("tap-web".into()),
                    mac: Some("52:54:00:12:34:56".into()),
                    ..NicConfig::default()
                },
            ],
            boot: BootConfig {
                kernel: "vmlinuz".into(),
                initrd: Some("initrd.img".into()),
                cmdline: "console=ttyS0 quiet".into(),
            },
            guest_os: GuestOs::Linux,
            notes: String::new(),
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_full_config_becomes_these_flags() {
        let paths = RunPaths::new(Path::new("/var/lib/keel/run"), 7);
        assert_eq!(paths.exit, Path::new("/var/lib/keel/run/7/exit.json"));
        let args = strings(vmm_args(&config(), None, &paths).unwrap());
        let want = [
            "--kernel",
            "vmlinuz",
            "--initrd",
            "initrd.img",
            "--cmdline",
            "console=ttyS0 quiet",
            "--cpus",
            "2",
            "--memory",
            "256M",
            "--api-socket",
            "/var/lib/keel/run/7/api.sock",
            "--serial",
            "socket=/var/lib/keel/run/7/console.sock,log=console.log",
            "--exit-file",
            "/var/lib/keel/run/7/exit.json",
            "--disk",
            "path=disk0.qcow2,format=qcow2,serial=disk0",
            "--disk",
            "path=iso/seed.img,format=raw,readonly=on",
            "--net",
            "tap",
            "--net",
            "tap=tap-web,mac=52:54:00:12:34:56",
        ];
        assert_eq!(args, want);
    }

    #[test]
    fn an_empty_cmdline_and_no_initrd_are_left_to_keel_vmm() {
        let mut cfg = config();
        cfg.boot.cmdline.clear();
        cfg.boot.initrd = None;
        cfg.disks.clear();
        cfg.nics.clear();
        let args = strings(vmm_args(&cfg, None, &RunPaths::new(Path::new("/r"), 1)).unwrap());
        assert!(!args.iter().any(|a| a == "--cmdline" || a == "--initrd"));
        assert!(!args.iter().any(|a| a == "--disk" || a == "--net"));
    }

    #[test]
    fn files_outside_the_folder_and_commas_are_refused() {
        let paths = RunPaths::new(Path::new("/r"), 1);
        type Edit = fn(&mut VmConfig);
        let cases: [(Edit, &str); 10] = [
            (|c| c.boot.kernel = "/boot/vmlinuz".into(), "Kernel"),
            (|c| c.boot.kernel = "../other/vmlinuz".into(), "Kernel"),
            (|c| c.boot.kernel = String::new(), "Kernel"),
            (|c| c.boot.kernel = ".".into(), "Kernel"),
            (|c| c.boot.initrd = Some("a/../../x".into()), "Initrd"),
            (|c| c.disks[0].file = "a,b.qcow2".into(), "Disk 0"),
            (|c| c.disks[1].serial = "x,readonly=off".into(), "serial"),
            (
                |c| c.disks[0].format = "raw,path=/etc/shadow".into(),
                "format",
            ),
            (|c| c.nics[1].mac = Some("x\ny".into()), "MAC"),
            (|c| c.nics[1].tap = Some("t,mac=1".into()), "tap"),
        ];
        for (edit, needle) in cases {
            let mut cfg = config();
            edit(&mut cfg);
            let e = vmm_args(&cfg, None, &paths).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let long = RunPaths::new(&Path::new("/").join("x".repeat(100)), 1);
        let e = vmm_args(&config(), None, &long).unwrap_err();
        assert!(e.contains("shorter state directory"), "{e}");
    }
}
