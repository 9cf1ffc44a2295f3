//! `keel vm …`

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use client::Client;
use hostd_api::{
    BootCreate, DiskCreate, GuestOs, NicConfig, PowerOp, Task, TaskState, VmClone, VmCreate,
    VmEdit, VmInfo, VmRegister,
};

use super::{connect, print_json, usage};
use crate::table;
use crate::Global;

/// The longest a command waits for its task unless told otherwise.
const TASK_WAIT: Duration = Duration::from_secs(600);

#[derive(Subcommand)]
pub enum VmCmd {
    /// The VMs, their state, size and address.
    List,
    /// One VM in detail.
    Show {
        name: String,
    },
    /// Creates a VM: a folder on a datastore with its disks and kernel.
    Create(CreateArgs),
    /// Changes a VM's settings (vCPUs and memory only while it is off).
    Edit(EditArgs),
    /// A VM's network adapters.
    #[command(subcommand)]
    Nic(super::network::NicCmd),
    /// Powers a VM on.
    Start(PowerArgs),
    /// Powers a VM off at once (pulls the plug).
    Stop(PowerArgs),
    /// Asks the guest to shut down (ACPI power button) and waits.
    Shutdown(PowerArgs),
    /// Restarts the guest at once.
    Reset(PowerArgs),
    Pause(PowerArgs),
    Resume(PowerArgs),
    /// A full copy of a powered-off VM.
    Clone {
        name: String,
        new_name: String,
        #[arg(long)]
        datastore: Option<String>,
    },
    /// Deletes a powered-off VM and its files.
    Delete {
        name: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Adds an existing VM folder of a datastore to the inventory.
    Register {
        datastore: String,
        folder: String,
    },
    /// Removes a VM from the inventory, keeping its files.
    Unregister {
        name: String,
    },
    /// Attaches the terminal to the VM's serial console.
    Console {
        name: String,
    },
    /// Prints the tail of the VM's console log.
    Log {
        name: String,
        #[arg(long, default_value_t = 64 * 1024)]
        bytes: u64,
    },
}

#[derive(clap::Args)]
pub struct PowerArgs {
    /// One or more VMs.
    #[arg(required = true)]
    names: Vec<String>,
    /// Return once the task started instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    name: String,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Memory, like 512M or 2G.
    #[arg(long, default_value = "512M")]
    memory: String,
    /// A new disk of this size (like 8G); repeat for several.
    #[arg(long = "disk-size", value_name = "SIZE")]
    disk_sizes: Vec<String>,
    /// An existing disk image to copy in (host path or `[datastore] path`).
    #[arg(long = "import-disk", value_name = "PATH")]
    imports: Vec<String>,
    /// The kernel to boot (host path or `[datastore] path`).
    #[arg(long)]
    kernel: String,
    #[arg(long)]
    initrd: Option<String>,
    #[arg(long, default_value = "")]
    cmdline: String,
    /// A network adapter (repeatable): a port group's name (`VM Network`),
    /// or `portgroup=NAME`, or `tap[=NAME]` for a host TAP outside keeld's
    /// switches; then optionally `,mac=MAC` and `,connected=no`.
    #[arg(long = "nic", value_name = "SPEC")]
    nics: Vec<String>,
    #[arg(long)]
    datastore: Option<String>,
    #[arg(long, value_enum, default_value = "linux")]
    guest_os: GuestOsArg,
    #[arg(long, default_value = "")]
    notes: String,
    /// Start the VM when the host starts.
    #[arg(long)]
    autostart: bool,
    /// Power the VM on once created.
    #[arg(long)]
    start: bool,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum GuestOsArg {
    Linux,
    Other,
}

#[derive(clap::Args)]
pub struct EditArgs {
    name: String,
    #[arg(long)]
    cpus: Option<u32>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    #[arg(long)]
    autostart: Option<bool>,
}

/// `512M`, `2G`, `1024` (bytes) → bytes.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => {
                    return Err(usage(format!(
                        "'{s}' is not a size: expected like 512M or 8G"
                    )))
                }
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| usage(format!("'{s}' is not a size: expected like 512M or 8G")))?;
    n.checked_mul(mult)
        .ok_or_else(|| usage(format!("'{s}' is too large")))
}

fn parse_nic(spec: &str) -> anyhow::Result<NicConfig> {
    let mut nic = NicConfig::default();
    let bad = || {
        usage(format!(
            "'{spec}' is not a NIC: expected PORTGROUP, portgroup=NAME or tap[=NAME], \
             then [,mac=MAC][,connected=yes|no]"
        ))
    };
    for (i, part) in spec.split(',').enumerate() {
        match part.split_once('=') {
            None if i == 0 && part == "tap" => nic.tap = Some(String::new()),
            None if i == 0 && !part.is_empty() => nic.port_group = Some(part.to_string()),
            Some(("tap", name)) if i == 0 => nic.tap = Some(name.to_string()),
            Some(("portgroup" | "pg", name)) if i == 0 => nic.port_group = Some(name.to_string()),
            Some(("mac", mac)) if i > 0 => nic.mac = Some(mac.to_string()),
            Some(("connected", v)) if i > 0 => {
                nic.connected = match v {
                    "yes" | "on" | "true" => true,
                    "no" | "off" | "false" => false,
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
    }
    // `tap` alone: keel-vmm makes a TAP for the run (no name).
    if nic.tap.as_deref() == Some("") {
        nic.tap = None;
        if nic.port_group.is_none() {
            return Err(usage(format!(
                "'{spec}': a TAP outside keeld's switches needs a name (tap=NAME); \
                 for keeld's networking give a port group"
            )));
        }
    }
    Ok(nic)
}

pub fn run(cmd: VmCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    match cmd {
        VmCmd::List => {
            let vms = c.vm_list()?;
            if g.json {
                return print_json(&vms);
            }
            let rows = vms
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        state(v),
                        v.config.vcpus.to_string(),
                        table::bytes(v.config.memory_mib << 20),
                        v.ip.clone().unwrap_or_else(|| "-".into()),
                        v.datastore.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(
                &["NAME", "STATE", "CPUS", "MEMORY", "IP", "DATASTORE"],
                &rows,
            );
            Ok(())
        }
        VmCmd::Show { name } => show(&c.vm_get(&name)?, g),
        VmCmd::Create(a) => create(&c, a, g),
        VmCmd::Nic(cmd) => super::network::nic(&c, cmd, g),
        VmCmd::Edit(a) => {
            let edit = VmEdit {
                vcpus: a.cpus,
                memory_mib: a
                    .memory
                    .as_deref()
                    .map(parse_size)
                    .transpose()?
                    .map(|b| b >> 20),
                cmdline: a.cmdline,
                guest_os: None,
                notes: a.notes,
                autostart: a.autostart,
            };
            show(&c.vm_edit(&a.name, &edit)?, g)
        }
        VmCmd::Start(a) => power(&c, a, PowerOp::On, g),
        VmCmd::Stop(a) => power(&c, a, PowerOp::Off, g),
        VmCmd::Shutdown(a) => power(&c, a, PowerOp::Shutdown, g),
        VmCmd::Reset(a) => power(&c, a, PowerOp::Reset, g),
        VmCmd::Pause(a) => power(&c, a, PowerOp::Pause, g),
        VmCmd::Resume(a) => power(&c, a, PowerOp::Resume, g),
        VmCmd::Clone {
            name,
            new_name,
            datastore,
        } => {
            let t = c.vm_clone(
                &name,
                &VmClone {
                    name: new_name,
                    datastore,
                },
            )?;
            finish(&c, t, g)
        }
        VmCmd::Delete { name, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("Deleting {name} removes its files: pass --yes to confirm");
                }
                eprint!("Delete VM {name} and all its files? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("Not deleted");
                }
            }
            c.vm_delete(&name)?;
            if !g.json {
                println!("Deleted {name}");
            }
            Ok(())
        }
        VmCmd::Register { datastore, folder } => {
            show(&c.vm_register(&VmRegister { datastore, folder })?, g)
        }
        VmCmd::Unregister { name } => {
            c.vm_unregister(&name)?;
            if !g.json {
                println!("Unregistered {name} (its files stay on the datastore)");
            }
            Ok(())
        }
        VmCmd::Console { name } => console(&c, &name),
        VmCmd::Log { name, bytes } => {
            print!("{}", c.vm_log(&name, bytes)?);
            Ok(())
        }
    }
}

fn state(v: &VmInfo) -> String {
    serde_json::to_value(v.power_state)
        .ok()
        .and_then(|s| s.as_str().map(String::from))
        .unwrap_or_default()
}

fn show(v: &VmInfo, g: &Global) -> anyhow::Result<()> {
    if g.json {
        return print_json(v);
    }
    println!("Name:       {}", v.name);
    println!("State:      {}", state(v));
    println!("vCPUs:      {}", v.config.vcpus);
    println!("Memory:     {}", table::bytes(v.config.memory_mib << 20));
    println!("Datastore:  {} ({})", v.datastore, v.path);
    println!("Guest OS:   {:?}", v.config.guest_os);
    println!("Autostart:  {}", if v.autostart { "yes" } else { "no" });
    if let Some(ip) = &v.ip {
        println!("IP:         {ip}");
    }
    println!("Kernel:     {}", v.config.boot.kernel);
    if let Some(i) = &v.config.boot.initrd {
        println!("Initrd:     {i}");
    }
    println!("Cmdline:    {}", v.config.boot.cmdline);
    for (i, d) in v.config.disks.iter().enumerate() {
        println!(
            "Disk {i}:     {} ({}{}, serial {})",
            d.file,
            d.format,
            if d.readonly { ", read-only" } else { "" },
            d.serial
        );
    }
    for n in &v.nics {
        println!(
            "NIC {}:      {} mac {}, {}{}{}",
            n.index,
            n.port_group.as_deref().unwrap_or("(own TAP)"),
            n.mac,
            if n.connected {
                "connected"
            } else {
                "disconnected"
            },
            n.tap
                .as_ref()
                .map(|t| format!(", TAP {t}"))
                .unwrap_or_default(),
            n.ip.as_ref()
                .map(|ip| format!(", IP {ip}"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = &v.runtime {
        println!(
            "Process:    pid {}, up {} s, {} boot(s), CPU {} ms, RSS {}",
            r.pid,
            r.uptime_ms / 1000,
            r.boots,
            r.cpu_ms,
            table::bytes(r.rss_bytes)
        );
    }
    if !v.config.notes.is_empty() {
        println!("Notes:      {}", v.config.notes);
    }
    Ok(())
}

fn create(c: &Client, a: CreateArgs, g: &Global) -> anyhow::Result<()> {
    let mut disks = Vec::new();
    for s in &a.disk_sizes {
        disks.push(DiskCreate {
            size_bytes: Some(parse_size(s)?),
            ..Default::default()
        });
    }
    for path in &a.imports {
        disks.push(DiskCreate {
            import: Some(path.clone()),
            ..Default::default()
        });
    }
    let spec = VmCreate {
        name: a.name.clone(),
        datastore: a.datastore,
        vcpus: a.cpus,
        memory_mib: parse_size(&a.memory)? >> 20,
        disks,
        nics: a
            .nics
            .iter()
            .map(|n| parse_nic(n))
            .collect::<Result<_, _>>()?,
        boot: BootCreate {
            kernel: a.kernel,
            initrd: a.initrd,
            cmdline: a.cmdline,
        },
        guest_os: match a.guest_os {
            GuestOsArg::Linux => GuestOs::Linux,
            GuestOsArg::Other => GuestOs::Other,
        },
        notes: a.notes,
        autostart: a.autostart,
    };
    let t = c.vm_create(&spec)?;
    finish(c, t, g)?;
    if a.start {
        let t = c.vm_power(&a.name, PowerOp::On)?;
        finish(c, t, g)?;
    }
    Ok(())
}

fn power(c: &Client, a: PowerArgs, op: PowerOp, g: &Global) -> anyhow::Result<()> {
    // Start every VM's task first, then wait for them all.
    let mut tasks = Vec::new();
    let mut failed = 0;
    for name in &a.names {
        match c.vm_power(name, op) {
            Ok(t) => tasks.push(t),
            Err(e) => {
                eprintln!("keel: {name}: {e}");
                failed += 1;
            }
        }
    }
    for t in tasks {
        let t = if a.no_wait {
            t
        } else {
            c.task_wait(t.id, TASK_WAIT)?
        };
        report(&t, g)?;
        if t.state == TaskState::Error {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} operation(s) failed", a.names.len());
    }
    Ok(())
}

/// Waits for a task, showing its progress on a terminal.
pub fn finish(c: &Client, t: Task, g: &Global) -> anyhow::Result<()> {
    let mut t = t;
    let tty = std::io::stderr().is_terminal() && !g.json;
    let end = std::time::Instant::now() + TASK_WAIT;
    while !matches!(t.state, TaskState::Success | TaskState::Error) {
        if std::time::Instant::now() > end {
            bail!(
                "Task {} is still running; see `keel task wait {}`",
                t.id,
                t.id
            );
        }
        if tty {
            eprint!(
                "\r{} {}: {:>3}%",
                t.kind,
                t.target.as_deref().unwrap_or(""),
                t.progress
            );
        }
        t = c.task_wait(t.id, Duration::from_millis(500))?;
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    report(&t, g)?;
    if t.state == TaskState::Error {
        bail!("Task {} failed", t.id);
    }
    Ok(())
}

fn report(t: &Task, g: &Global) -> anyhow::Result<()> {
    if g.json {
        return print_json(t);
    }
    let target = t.target.as_deref().unwrap_or("");
    match (&t.state, &t.error) {
        (TaskState::Error, Some(e)) => eprintln!("{} {target}: failed: {}", t.kind, e.message),
        (state, _) => println!(
            "{} {target}: {}",
            t.kind,
            format!("{state:?}").to_lowercase()
        ),
    }
    Ok(())
}

/// The key that detaches from a console: Ctrl-].
const DETACH: u8 = 0x1d;

fn console(c: &Client, name: &str) -> anyhow::Result<()> {
    let mut con = c.console(name).context("Cannot open the console")?;
    eprintln!("Attached to {name}'s console. Detach with Ctrl-]");
    let raw = RawMode::enter();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut out = std::io::stdout();
    let result = loop {
        match rx.try_recv() {
            Ok(bytes) => {
                if let Some(i) = bytes.iter().position(|b| *b == DETACH) {
                    if i > 0 {
                        con.send(&bytes[..i])?;
                    }
                    break Ok(());
                }
                con.send(&bytes)?;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) if raw.is_none() => break Ok(()),
            Err(_) => {}
        }
        match con.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(bytes)) => {
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Ok(None) => {}
            Err(e) => break Err(anyhow::Error::new(e)),
        }
    };
    drop(raw);
    con.close();
    eprintln!("\r\nDetached from {name}'s console");
    result
}

/// The terminal in raw mode while attached (restored on drop), through
/// `stty` so that this crate needs no unsafe code.
struct RawMode(String);

impl RawMode {
    fn enter() -> Option<Self> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()?;
        let saved = String::from_utf8(saved.stdout).ok()?.trim().to_string();
        let ok = std::process::Command::new("stty")
            .arg("raw")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .status()
            .ok()?
            .success();
        ok.then_some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = std::process::Command::new("stty")
            .arg(&self.0)
            .stdin(std::process::Stdio::inherit())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "M", "12X", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nics_parse() {
        let n = parse_nic("tap=t0,mac=52:54:00:00:00:01").unwrap();
        assert_eq!(n.tap.as_deref(), Some("t0"));
        assert_eq!(n.mac.as_deref(), Some("52:54:00:00:00:01"));
        let n = parse_nic("VM Network,connected=no").unwrap();
        assert_eq!(n.port_group.as_deref(), Some("VM Network"));
        assert!(!n.connected);
        let n = parse_nic("portgroup=v10").unwrap();
        assert_eq!((n.port_group.as_deref(), n.connected), (Some("v10"), true));
        for bad in ["", "tap", "mac=x", "tap,foo=1", "pg,connected=maybe"] {
            assert!(parse_nic(bad).is_err(), "{bad}");
        }
    }
}
