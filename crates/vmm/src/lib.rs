//! One virtual machine: its configuration, its boot, its vCPU threads and
//! the control loop that decides when it ends.
//!
//! Threads (see ARCHITECTURE.md): the caller's thread runs the control loop;
//! `vcpu<N>` threads run KVM_RUN; `signals` turns SIGTERM/SIGINT into
//! control events; `serial-in` / `serial-sock` feed console input; `api`
//! and `api-conn` serve the control socket ([`api`]), whose requests reach
//! the loop as events too. The running VM's states (running, paused,
//! shutting down) and their transitions are in [`state`]; how a VM ends:
//!
//! ```text
//!            boot                guest S5 / power button (SIGTERM or API) + S5
//!  (start) ───────▶ Running ─────────────────────────────────▶ PoweredOff (0)
//!                    │  ▲  guest reset, or `reset` on the control socket
//!                    │  └──────── rebuild (unless --no-reboot → Reset (0))
//!                    ├── triple fault ──────────────────────▶ Crashed (3)
//!                    ├── KVM failure ───────────────────────▶ Failed (4)
//!                    ├── power button, no S5 in time / 2nd SIGTERM ▶ HardStopped (5)
//!                    └── `stop` on the control socket ──────▶ Stopped (5)
//! ```

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::rtc::Rtc;
use devices::PowerEvent;

pub mod api;
pub mod config;
pub mod console;
pub mod device_manager;
pub mod interrupts;
pub mod kvm;
pub mod pci_bus;
mod signals;
pub mod state;
pub mod vcpu;
pub mod vm;

pub use config::{SerialConfig, VmConfig};

use api::ApiServer;
use console::Console;
use kvm::Hypervisor;
use state::{Control, VmState};
use vcpu::VcpuStop;
use vm::Vm;

/// What the control loop hears about.
#[derive(Debug)]
pub enum Event {
    Vcpu(VcpuStop),
    Power(PowerEvent),
    Signal(i32),
    /// A request from the control socket.
    Api(api::ApiCall),
}

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off (on its own or after the power button).
    PoweredOff,
    /// The guest reset and `--no-reboot` was given.
    Reset,
    /// The guest reset instead of powering off after the power button.
    ResetWhileStopping,
    /// Triple fault or a guest-reported crash.
    Crashed { vcpu: u8, reason: String },
    /// KVM failed to run a vCPU.
    Failed { vcpu: u8, reason: String },
    /// The guest ignored the power button and was stopped hard.
    HardStopped,
    /// `stop` on the control socket stopped the VM hard.
    Stopped,
}

impl Exit {
    /// The process exit status for this ending.
    pub fn code(&self) -> i32 {
        match self {
            Exit::PoweredOff | Exit::Reset | Exit::ResetWhileStopping => 0,
            Exit::Crashed { .. } => 3,
            Exit::Failed { .. } => 4,
            Exit::HardStopped | Exit::Stopped => 5,
        }
    }

    /// The cause in the exit report (`--exit-file`).
    pub fn cause(&self) -> vmm_api::ExitCause {
        use vmm_api::ExitCause;
        match self {
            Exit::PoweredOff => ExitCause::PoweredOff,
            Exit::Reset | Exit::ResetWhileStopping => ExitCause::Reset,
            Exit::Crashed { .. } => ExitCause::TripleFault,
            Exit::Failed { .. } => ExitCause::KvmError,
            Exit::HardStopped => ExitCause::ShutdownTimeout,
            Exit::Stopped => ExitCause::Stopped,
        }
    }

    /// The line (or lines) to print about it.
    pub fn describe(&self) -> String {
        match self {
            Exit::PoweredOff => "guest powered off".into(),
            Exit::Reset => "guest reset; not rebooting (--no-reboot)".into(),
            Exit::ResetWhileStopping => "guest reset after the power button; not rebooting".into(),
            Exit::Crashed { vcpu, reason } => format!("guest crashed on vCPU {vcpu}: {reason}"),
            Exit::Failed { vcpu, reason } => format!("KVM failed to run vCPU {vcpu}: {reason}"),
            Exit::HardStopped => {
                "guest did not power off after the ACPI power button; stopped it".into()
            }
            Exit::Stopped => "stopped on request (control socket)".into(),
        }
    }
}

/// Errors that keep a VM from running.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Backend(#[from] device_manager::BackendError),
    #[error(transparent)]
    Api(#[from] api::ApiServerError),
    #[error(transparent)]
    Balloon(#[from] device_manager::balloon::BalloonOptionsError),
    #[error("Cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    #[error("A vCPU did not stop; cannot reboot the guest")]
    StuckVcpu,
    #[error("The control channel closed unexpectedly")]
    Channel,
}

impl VmmError {
    /// The process exit status for this error: 2 for bad input, else 1.
    pub fn code(&self) -> i32 {
        if self.is_bad_input() {
            2
        } else {
            1
        }
    }

    /// The cause in the exit report (`--exit-file`).
    pub fn cause(&self) -> vmm_api::ExitCause {
        match self {
            VmmError::Kvm(_) => vmm_api::ExitCause::KvmError,
            _ => vmm_api::ExitCause::VmmError,
        }
    }

    /// True when the error is the user's input (exit status 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            VmmError::Kvm(e) => !matches!(e, kvm::KvmError::Cpuid(_)),
            VmmError::Vm(e) => e.is_bad_input(),
            VmmError::Console(_) | VmmError::Backend(_) | VmmError::Balloon(_) => true,
            VmmError::Api(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

/// Runs the VM until it ends, rebooting it in place when the guest resets.
pub fn run(config: &VmConfig) -> Result<Exit, VmmError> {
    vm::check_inputs(config)?;
    let backends = device_manager::Backends::open(config)?;
    if let Some(b) = &config.balloon {
        b.check(config.memory)?;
    }
    let hv = Hypervisor::open(config.cpus)?;
    let (tx, rx) = mpsc::channel();
    // Before any other thread exists, so they all inherit the blocked mask.
    signals::start(tx.clone()).map_err(VmmError::Signals)?;
    vcpu::install_kick_handler()
        .map_err(|e| VmmError::Signals(std::io::Error::from_raw_os_error(e.errno())))?;
    let console = Console::open(&config.serial)?;
    let ram = arch::layout::ram_ranges(config.memory);
    let below_4g = ram.first().map_or(0, |r| r.size);
    let rtc = Arc::new(Mutex::new(Rtc::new(below_4g, config.memory - below_4g)));
    // Dropped when `run` returns: the socket file goes away with the VM.
    let _api = match &config.api_socket {
        Some(path) => Some(ApiServer::start(
            path,
            tx.clone(),
            backends.counters.clone(),
        )?),
        None => None,
    };
    let mut ctl = Control::new();

    loop {
        let vm = Vm::boot(&hv, config, &backends, &console, rtc.clone(), tx.clone())?;
        ctl.booted();
        let outcome = control_loop(&vm, &rx, config, &mut ctl)?;
        console.detach();
        let stopped = vm.stop();
        match outcome {
            Outcome::Reset if !config.no_reboot => {
                if !stopped {
                    return Err(VmmError::StuckVcpu);
                }
                eprintln!("keel-vmm: guest reset, rebooting");
                // Events from the old VM are stale; signals and control
                // requests are not.
                let pending: Vec<_> = rx.try_iter().collect();
                for ev in pending {
                    if let Event::Signal(_) | Event::Api(_) = ev {
                        let _ = tx.send(ev);
                    }
                }
            }
            Outcome::Reset => return Ok(Exit::Reset),
            Outcome::Exit(exit) => return Ok(exit),
        }
    }
}

/// How one boot of the guest ends.
pub(crate) enum Outcome {
    /// The guest resets (or `reset` on the control socket): boot again,
    /// unless `--no-reboot`.
    Reset,
    Exit(Exit),
}

/// Waits for the event that ends this boot.
fn control_loop(
    vm: &Vm,
    rx: &Receiver<Event>,
    config: &VmConfig,
    ctl: &mut Control,
) -> Result<Outcome, VmmError> {
    loop {
        let event = match ctl.deadline {
            None => rx.recv().map_err(|_| VmmError::Channel)?,
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => return Ok(Outcome::Exit(Exit::HardStopped)),
                Err(RecvTimeoutError::Disconnected) => return Err(VmmError::Channel),
            },
        };
        match event {
            Event::Power(PowerEvent::PowerOff) | Event::Vcpu(VcpuStop::PowerOff) => {
                return Ok(Outcome::Exit(Exit::PoweredOff))
            }
            Event::Power(PowerEvent::Reset) | Event::Vcpu(VcpuStop::Reset) => {
                // A reset while shutting down on request ends the VM.
                return Ok(match ctl.state {
                    VmState::ShuttingDown => Outcome::Exit(Exit::ResetWhileStopping),
                    _ => Outcome::Reset,
                });
            }
            Event::Vcpu(VcpuStop::Crashed { vcpu, reason }) => {
                return Ok(Outcome::Exit(Exit::Crashed { vcpu, reason }))
            }
            Event::Vcpu(VcpuStop::Failed { vcpu, reason }) => {
                return Ok(Outcome::Exit(Exit::Failed { vcpu, reason }))
            }
            Event::Signal(sig) => {
                if ctl.state == VmState::ShuttingDown {
                    eprintln!("keel-vmm: second signal {sig}; stopping the VM now");
                    return Ok(Outcome::Exit(Exit::HardStopped));
                }
                let secs = config.shutdown_timeout.as_secs_f64();
                if let Err(e) = ctl.press_power_button(vm, config) {
                    eprintln!("keel-vmm: signal {sig}: {e}; stopping the VM now");
                    return Ok(Outcome::Exit(Exit::HardStopped));
                }
                eprintln!(
                    "keel-vmm: signal {sig}: pressed the ACPI power button; stopping the VM in {secs}s if the guest does not power off"
                );
            }
            Event::Api(call) => {
                if let Some(outcome) = api::handler::serve(call, vm, ctl, config) {
                    return Ok(outcome);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_api::ExitCause;

    #[test]
    fn every_ending_has_its_status_and_report_cause() {
        let crash = || (0u8, String::from("r"));
        let cases = [
            (Exit::PoweredOff, 0, ExitCause::PoweredOff),
            (Exit::Reset, 0, ExitCause::Reset),
            (Exit::ResetWhileStopping, 0, ExitCause::Reset),
            (
                Exit::Crashed {
                    vcpu: crash().0,
                    reason: crash().1,
                },
                3,
                ExitCause::TripleFault,
            ),
            (
                Exit::Failed {
                    vcpu: crash().0,
                    reason: crash().1,
                },
                4,
                ExitCause::KvmError,
            ),
            (Exit::HardStopped, 5, ExitCause::ShutdownTimeout),
            (Exit::Stopped, 5, ExitCause::Stopped),
        ];
        for (exit, code, cause) in cases {
            assert_eq!((exit.code(), exit.cause()), (code, cause), "{exit:?}");
        }
        let e = VmmError::StuckVcpu;
        assert_eq!((e.code(), e.cause()), (1, ExitCause::VmmError));
        let e = VmmError::Console(console::ConsoleError::NotASocket("/x".into()));
        assert_eq!((e.code(), e.cause()), (2, ExitCause::VmmError));
    }
}
