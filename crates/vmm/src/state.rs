//! The lifecycle of a running VM, as the control loop and the control
//! socket see it, and the operations that move it (pause, resume, the power
//! button).
//!
//! ```text
//!                 pause                         power button (SIGTERM or API)
//!   Paused ◀──────────────── Running ───────────────────────────▶ ShuttingDown
//!     │      ──────────────▶   ▲  │                                     │
//!     │          resume        │  │ guest reset: rebuilt, Running again │
//!     │                        └──┘                                     │
//!     └─ power button: resumed first, then ──▶ ShuttingDown             │
//!                                                                       ▼
//!   Running, Paused, ShuttingDown ── guest power-off, crash, KVM failure,
//!       `stop`, second signal, shutdown timeout ──────────────────────▶ Ended
//! ```
//!
//! Ended is final: the control loop returns and the process exits with the
//! status of [`crate::Exit`]. A guest reset in ShuttingDown ends the VM too.

use std::time::{Duration, Instant};

use crate::config::VmConfig;
use crate::vm::Vm;

/// Where a VM is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    ShuttingDown,
    Ended,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting down",
            VmState::Ended => "ended",
        })
    }
}

/// A transition the lifecycle does not allow, or one that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("The VM is {from}; it cannot become {to}")]
    Invalid { from: VmState, to: VmState },
    #[error("A vCPU did not stop within {0:?}")]
    VcpuTimeout(Duration),
    #[error("A device did not {what}: {reason}")]
    Device { what: &'static str, reason: String },
}

/// Whether the lifecycle allows going from `from` to `to`.
pub fn valid_transition(from: VmState, to: VmState) -> Result<(), StateError> {
    use VmState::*;
    let ok = matches!(
        (from, to),
        (Running, Paused)
            | (Paused, Running)
            | (Running, ShuttingDown)
            | (Running | Paused | ShuttingDown, Ended)
    );
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid { from, to })
    }
}

/// How long a vCPU gets to leave `KVM_RUN` when pausing.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The control loop's view of the VM, kept across guest reboots.
#[derive(Debug)]
pub struct Control {
    pub state: VmState,
    /// When the VM is stopped hard if the guest has not powered off
    /// (set by the power button).
    pub deadline: Option<Instant>,
    pub started: Instant,
    /// Boots of the guest so far (1 + reboots).
    pub boots: u32,
}

impl Control {
    pub fn new() -> Self {
        Control {
            state: VmState::Running,
            deadline: None,
            started: Instant::now(),
            boots: 0,
        }
    }

    /// A new boot of the guest has started: it runs.
    pub fn booted(&mut self) {
        self.state = VmState::Running;
        self.deadline = None;
        self.boots = self.boots.saturating_add(1);
    }

    fn go(&mut self, to: VmState) -> Result<(), StateError> {
        valid_transition(self.state, to)?;
        self.state = to;
        Ok(())
    }

    /// Stops the vCPUs, then the device workers.
    pub fn pause(&mut self, vm: &Vm) -> Result<(), StateError> {
        valid_transition(self.state, VmState::Paused)?;
        vm.pause(PAUSE_TIMEOUT)?;
        self.go(VmState::Paused)
    }

    /// Restarts the device workers, then the vCPUs.
    pub fn resume(&mut self, vm: &Vm) -> Result<(), StateError> {
        valid_transition(self.state, VmState::Running)?;
        vm.resume()?;
        self.go(VmState::Running)
    }

    /// Presses the ACPI power button (resuming a paused VM first, so that
    /// the guest can react) and arms the shutdown deadline.
    pub fn press_power_button(&mut self, vm: &Vm, config: &VmConfig) -> Result<(), StateError> {
        if self.state == VmState::Paused {
            self.resume(vm)?;
        }
        valid_transition(self.state, VmState::ShuttingDown)?;
        vm.press_power_button();
        self.deadline = Some(Instant::now() + config.shutdown_timeout);
        self.go(VmState::ShuttingDown)
    }
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VmState::*;

    const ALL: [VmState; 4] = [Running, Paused, ShuttingDown, Ended];

    #[test]
    fn transitions_follow_the_diagram() {
        let allowed = [
            (Running, Paused),
            (Paused, Running),
            (Running, ShuttingDown),
            (Running, Ended),
            (Paused, Ended),
            (ShuttingDown, Ended),
        ];
        for from in ALL {
            for to in ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(
                    valid_transition(from, to).is_ok(),
                    want,
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_name_both_states() {
        let e = valid_transition(Paused, Paused).unwrap_err();
        assert_eq!(
            e,
            StateError::Invalid {
                from: Paused,
                to: Paused
            }
        );
        let m = e.to_string();
        assert_eq!(m, "The VM is paused; it cannot become paused");
    }

    #[test]
    fn ended_is_final_and_boots_count() {
        for to in ALL {
            assert!(valid_transition(Ended, to).is_err());
        }
        let mut c = Control::new();
        c.booted();
        c.state = ShuttingDown;
        c.deadline = Some(Instant::now());
        c.booted();
        assert_eq!((c.state, c.deadline, c.boots), (Running, None, 2));
    }

    /// Any sequence of requested transitions, applied only when valid,
    /// stays inside the diagram and never leaves Ended.
    #[test]
    fn random_walks_stay_in_the_diagram() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let mut state = Running;
            for _ in 0..50 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let to = ALL[(seed % 4) as usize];
                let was = state;
                if valid_transition(state, to).is_ok() {
                    state = to;
                }
                assert!(was != Ended || state == Ended);
            }
        }
    }
}
