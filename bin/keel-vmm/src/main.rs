//! `keel-vmm`: runs one VM in the foreground.
//!
//! Exit status: 0 the guest powered off (or reset with --no-reboot);
//! 1 VMM failure; 2 bad input; 3 guest crash (triple fault); 4 KVM failure;
//! 5 the VM was stopped hard: the guest ignored the power button after SIGTERM
//! (or the control socket's `power-button`), or the control socket said `stop`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vmm::config::{self, SerialConfig, VmConfig};
use vmm::device_manager::balloon::BalloonOptions;
use vmm::device_manager::block::DiskConfig;
use vmm::device_manager::console::ConsolePortConfig;
use vmm::device_manager::net::NetConfig;
use vmm::device_manager::vsock::VsockConfig;
use vmm_api::ExitReport;

#[derive(Parser, Debug)]
#[command(
    name = "keel-vmm",
    version,
    about = "Run one Keel virtual machine in the foreground",
    after_help = "Exit status: 0 guest powered off (or reset with --no-reboot), 1 VMM failure, \
2 bad input, 3 guest crashed (triple fault), 4 KVM failure, 5 stopped hard (the guest ignored \
the power button, or `stop` on the control socket).\nSIGTERM or SIGINT press the ACPI power \
button; a second one stops the VM at once."
)]
struct Args {
    /// Kernel to boot: a bzImage (/boot/vmlinuz-*) or an ELF vmlinux (PVH or 64-bit entry).
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs (1 to 254, and at most what KVM allows).
    #[arg(long, value_name = "N", default_value = "1", value_parser = config::parse_cpus)]
    cpus: u8,
    /// Guest memory, like 512M or 4G.
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = config::parse_memory)]
    memory: u64,
    /// Serial console (COM1): stdio, file=PATH, socket=PATH[,log=FILE] or off.
    /// With log=FILE the socket's output is also appended to FILE (moved to
    /// FILE.1 at 2 MiB), whether or not a client is connected.
    #[arg(long, value_name = "MODE", default_value = "stdio")]
    serial: SerialConfig,
    /// Exit (status 0) when the guest reboots instead of restarting it.
    #[arg(long)]
    no_reboot: bool,
    /// Seconds the guest has to power off after SIGTERM pressed the power button.
    #[arg(long, value_name = "SECS", default_value = "10")]
    shutdown_timeout: u64,
    /// Add a virtio-rng device (entropy from the host's getrandom).
    #[arg(long)]
    rng: bool,
    /// Add a virtio-blk disk (repeatable):
    /// path=FILE[,format=raw|qcow2|auto][,readonly=on][,serial=ID][,cache=none|writeback].
    /// A raw or qcow2 image; format=auto (the default) tells them apart by the qcow2 magic.
    /// cache=none opens the image with O_DIRECT (no copy in the host's page cache, like
    /// QEMU's cache=none); writeback (the default) goes through the page cache.
    #[arg(long = "disk", value_name = "SPEC")]
    disks: Vec<DiskConfig>,
    /// Add a virtio-net NIC on a TAP (repeatable): tap[=NAME][,mac=MAC]
    /// [,forged-transmits=accept|reject][,mac-changes=accept|reject]
    /// [,promiscuous=accept|reject][,link=up|down]
    /// [,rx-rate=BITS/S][,rx-burst=BYTES][,rx-peak=BITS/S][,tx-rate=...,tx-burst=...,tx-peak=...].
    /// promiscuous=reject drops frames for other unicast MACs (counted as rx_filtered).
    /// Opens the TAP NAME, creating it if needed; plain `tap` creates keelN.
    /// The MAC defaults to 02:6b:65 plus a hash of the TAP's name. See docs/net.md.
    #[arg(long = "net", value_name = "SPEC")]
    nets: Vec<NetConfig>,
    /// Add a named virtio-console port on a Unix socket (repeatable):
    /// name=NAME,socket=PATH[,console=on]. The guest sees /dev/vportNpM named
    /// NAME (/dev/virtio-ports/NAME with udev); one host client at a time.
    #[arg(long = "console-port", value_name = "SPEC")]
    console_ports: Vec<ConsolePortConfig>,
    /// Add a virtio-vsock device: cid=N,socket=PATH (N >= 3). Host programs
    /// connect to PATH and send the line "CONNECT <port>"; the guest's connections
    /// to the host (CID 2) port P go to the Unix socket PATH_P.
    #[arg(long, value_name = "SPEC")]
    vsock: Option<VsockConfig>,
    /// Add a virtio-balloon device, driven over the control socket:
    /// [size=SIZE][,stats=on|off][,deflate_on_oom=on|off][,free_page_reporting=on|off]
    /// (defaults: size=0, stats=on, the others off).
    #[arg(long, value_name = "OPTIONS", num_args = 0..=1, default_missing_value = "")]
    balloon: Option<BalloonOptions>,
    /// Serve the control protocol (status, pause, resume, power-button, stop,
    /// reset, balloon) on this Unix socket; see docs/vmm-api.md.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// At exit, write {"status":N,"reason":"...","message":"..."} to this file
    /// (atomically; removed at start), for a supervisor that is not the parent.
    #[arg(long, value_name = "PATH")]
    exit_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors are
            // one line (clap's first) and status 2.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let summary: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let line = summary.join(" ");
            eprintln!("keel-vmm: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.exit_file {
        // A report left by an earlier run must not describe this one.
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "keel-vmm: cannot remove the old exit file {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        }
    }
    let exit_file = args.exit_file.clone();
    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        cpus: args.cpus,
        memory: args.memory,
        serial: args.serial,
        no_reboot: args.no_reboot,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        rng: args.rng,
        disks: args.disks,
        nets: args.nets,
        console_ports: args.console_ports,
        vsock: args.vsock,
        api_socket: args.api_socket,
        balloon: args.balloon,
    };
    let report = match vmm::run(&config) {
        Ok(exit) => ExitReport {
            status: exit.code(),
            reason: exit.cause(),
            message: exit.describe(),
        },
        Err(e) => ExitReport {
            status: e.code(),
            reason: e.cause(),
            message: chain(&e),
        },
    };
    eprintln!("keel-vmm: {}", report.message);
    if let Some(path) = exit_file {
        if let Err(e) = report.write(&path) {
            eprintln!(
                "keel-vmm: cannot write the exit file {}: {e}",
                path.display()
            );
        }
    }
    ExitCode::from(report.status as u8)
}

/// The error and its causes on one line: "A: B: C".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
