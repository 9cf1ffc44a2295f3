//! `cargo xtask`: project tasks (a thin CLI over the `xtask` library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xtask::payload::Payload;
use xtask::rig::RigOptions;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Keel project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (or reuse) the Linux test guest from Debian packages.
    Guest {
        /// Also build the benchmark initramfs (the guest's plus fio).
        #[arg(long)]
        bench: bool,
    },
    /// Build (or reuse) the PVH payload guests; print their paths.
    Payload {
        /// Variants to build (ok, triple-fault, reset, hang, button, echo); all by default.
        variants: Vec<String>,
    },
    /// Run a shell command inside the KVM rig (an L1 VM with a real /dev/kvm).
    Rig {
        /// Kill the rig after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// L1's vCPUs.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// L1's memory in MiB.
        #[arg(long, default_value_t = 4096)]
        memory: u32,
        /// Bring a host file or directory into L1: HOST:L1PATH.
        #[arg(long = "file", value_name = "HOST:L1PATH")]
        files: Vec<String>,
        /// Give L1's console to this terminal (stdin included).
        #[arg(long)]
        interactive: bool,
        /// Bring the host's QEMU into L1 (/usr/bin/qemu-system-x86_64).
        #[arg(long)]
        with_qemu: bool,
        /// Bring /guest/initramfs-bench.cpio.gz (the guest's plus fio).
        #[arg(long)]
        guest_bench: bool,
        /// Bring /guest/vmlinux (the ELF kernel) besides /guest/vmlinuz.
        #[arg(long)]
        guest_vmlinux: bool,
        /// The shell command to run in L1.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run every cargo-fuzz target in fuzz/fuzz_targets for a bounded time
    /// (installs cargo-fuzz when missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run; all by default.
        targets: Vec<String>,
    },
    /// Install what is needed, build everything and run all tests.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmark keel-vmm side by side with QEMU (docs/benchmarks.md).
    Bench {
        /// Which benchmark: boot-native, boot-rig, blk-rig, net-rig or
        /// devices-native (see docs/benchmarks.md); all by default.
        which: Vec<String>,
        /// Measured runs per VMM (after one warm-up).
        #[arg(long, default_value_t = 15)]
        runs: usize,
        /// Write the tables into docs/benchmarks.md.
        #[arg(long)]
        write: bool,
    },
    /// Runs inside the rig for `bench boot-rig` (not for direct use).
    #[command(hide = true)]
    BenchInner {
        #[arg(long)]
        runs: usize,
        #[arg(long)]
        cpus: u32,
        #[arg(long)]
        memory: u32,
    },
    /// The web Host Client (ui/): `build` builds ui/dist (keeld serves it);
    /// `test` also runs its unit tests and the browser tests.
    Ui {
        #[command(subcommand)]
        action: UiAction,
    },
    /// Run a whole Keel host (keeld) with a demo VM running the test guest,
    /// until Ctrl-C; where the local KVM cannot boot Linux, inside the
    /// rig's L1 with its port forwarded to 127.0.0.1.
    Run {
        /// The port on 127.0.0.1 where the API listens (or is forwarded).
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// The host's state (default ~/.local/share/keel-demo); with the
        /// rig, where L1's state disk lives.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The demo VM's vCPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// The demo VM's memory.
        #[arg(long, default_value = "256M")]
        memory: String,
        /// Boot the rig's L1 even where the local KVM boots Linux.
        #[arg(long)]
        rig: bool,
    },
}

#[derive(Subcommand)]
enum UiAction {
    /// npm ci (when the lock file changed) and the Vite build into ui/dist.
    Build,
    /// Build, the Vitest unit tests, then the browser tests against a real
    /// keeld (screenshots in target/ui-screenshots/).
    Test,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Cmd::Guest { bench } => {
            let started = std::time::Instant::now();
            let guest = xtask::guest::build()?;
            println!("{}", guest.vmlinuz.display());
            println!("{}", guest.vmlinux.display());
            println!("{}", guest.initramfs.display());
            if bench {
                println!("{}", xtask::guest::bench_initramfs()?.display());
            }
            eprintln!(
                "xtask: guest {} ready in {:.2} s ({})",
                guest.kernel_release,
                started.elapsed().as_secs_f64(),
                guest.manifest.display()
            );
            Ok(0)
        }
        Cmd::Payload { variants } => {
            let selected = if variants.is_empty() {
                Payload::ALL.to_vec()
            } else {
                variants
                    .iter()
                    .map(|v| {
                        Payload::from_name(v).with_context(|| format!("Unknown payload {v:?}"))
                    })
                    .collect::<Result<_>>()?
            };
            for variant in selected {
                println!(
                    "{} {}",
                    variant.name(),
                    xtask::payload::build(variant)?.display()
                );
            }
            Ok(0)
        }
        Cmd::Rig {
            timeout,
            cpus,
            memory,
            files,
            interactive,
            with_qemu,
            guest_bench,
            guest_vmlinux,
            command,
        } => {
            let files = files
                .iter()
                .map(|f| match f.rsplit_once(':') {
                    Some((host, l1)) if !host.is_empty() && l1.starts_with('/') => {
                        Ok((PathBuf::from(host), l1.to_string()))
                    }
                    _ => bail!("--file {f:?}: expected HOST:L1PATH with an absolute L1PATH"),
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = RigOptions {
                timeout: Duration::from_secs(timeout),
                cpus,
                memory_mib: memory,
                files,
                echo: true,
                interactive,
                with_qemu,
                guest_bench,
                guest_vmlinux,
                ..RigOptions::default()
            };
            let started = std::time::Instant::now();
            let out = xtask::rig::run(&opts, &command.join(" "))?;
            eprintln!(
                "xtask: rig exit status {} after {:.1} s",
                out.status,
                started.elapsed().as_secs_f64()
            );
            Ok(u8::try_from(out.status).unwrap_or(1))
        }
        Cmd::Fuzz { seconds, targets } => {
            xtask::fuzz::run(seconds, &targets)?;
            Ok(0)
        }
        Cmd::Ui { action } => {
            match action {
                UiAction::Build => {
                    xtask::ui::build()?;
                }
                UiAction::Test => xtask::ui::test()?,
            }
            Ok(0)
        }
        Cmd::Test { args } => {
            xtask::tasks::test(&args)?;
            Ok(0)
        }
        Cmd::Bench { which, runs, write } => {
            xtask::tasks::bench(&which, runs, write)?;
            Ok(0)
        }
        Cmd::BenchInner { runs, cpus, memory } => {
            xtask::bench::inner(runs, cpus, memory)?;
            Ok(0)
        }
        Cmd::Run {
            port,
            state_dir,
            cpus,
            memory,
            rig,
        } => {
            let opts = xtask::demo::RunOptions {
                port,
                state_dir,
                cpus,
                memory,
                place: if rig {
                    xtask::demo::Place::Rig
                } else {
                    xtask::demo::Place::Auto
                },
            };
            Ok(u8::try_from(xtask::tasks::run(&opts)?).unwrap_or(1))
        }
    }
}
