//! Power operations through the VMM supervisor, VMM exits, re-attaching at
//! start, and autostart.
//!
//! One operation at a time per VM (a second gets Conflict). A VM's state is
//! read from its VMM: poweredOn or paused while the process runs (per its
//! `status`), crashed when its last run ended in a crash, poweredOff
//! otherwise. Every exit is an event (a crash with Error severity, its
//! reason and the last lines of the VMM's log).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hostd_api::{PowerOp, PowerState, Privilege, Severity, Task};
use rusqlite::params;

use crate::backend::{ConsoleHandle, ExitReason, OnExit, VmExit, VmmBackend};
use crate::error::{CoreError, Result};
use crate::events::{self, NewEvent};
use crate::host::{lock, Caller, Host, SYSTEM_USER};
use crate::names;
use crate::supervisor::Supervisor;
use crate::vmconfig;
use crate::vms::{self, last_exit, VmRow};

/// How long a shutdown waits for the guest (keel-vmm itself stops the VM
/// hard after its own, shorter, shutdown timeout).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(120);
/// The default delay between two autostarted VMs.
pub const DEFAULT_AUTOSTART_DELAY: Duration = Duration::from_secs(2);
const AUTOSTART_DELAY_KEY: &str = "autostart_delay_ms";
/// Lines of the VMM's log kept in a crash event.
const CRASH_LOG_LINES: usize = 10;

/// The real supervisor.
pub(crate) fn real_backend(
    keel_vmm: PathBuf,
    run_dir: PathBuf,
    on_exit: OnExit,
) -> Arc<dyn VmmBackend> {
    Arc::new(Supervisor::new(keel_vmm, run_dir, on_exit))
}

fn op_kind(op: PowerOp) -> &'static str {
    match op {
        PowerOp::On => "power-on",
        PowerOp::Off => "power-off",
        PowerOp::Shutdown => "shutdown",
        PowerOp::Reset => "reset",
        PowerOp::Pause => "pause",
        PowerOp::Resume => "resume",
    }
}

impl Host {
    /// Starts a power operation; the task ends when it is done (a shutdown:
    /// when the guest powered off). Conflict when the VM's state does not
    /// allow it or another operation runs on the VM.
    pub fn vm_power(&self, caller: &Caller, name: &str, op: PowerOp) -> Result<Task> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmPower)?;
        let row = self.vm_row(name)?;
        self.power(row, op, &caller.user, Some(&caller.user))
    }

    fn power(&self, row: VmRow, op: PowerOp, task_user: &str, user: Option<&str>) -> Result<Task> {
        let what = op_kind(op);
        let guard = self.claim(row.id, &row.name, what)?;
        let (state, _) = self.vm_power_state(&row);
        let name = &row.name;
        let on = matches!(state, PowerState::PoweredOn | PowerState::Paused);
        let refuse = |why: &str| Err(CoreError::conflict(format!("VM {name} {why}")));
        match op {
            PowerOp::On if on => return refuse("is already powered on"),
            PowerOp::Off | PowerOp::Shutdown | PowerOp::Reset | PowerOp::Pause if !on => {
                return refuse("is powered off")
            }
            PowerOp::Pause if state == PowerState::Paused => return refuse("is already paused"),
            PowerOp::Resume if state != PowerState::Paused => return refuse("is not paused"),
            _ => {}
        }
        let target = format!("vm:{name}");
        let user = user.map(str::to_string);
        self.spawn_task(&format!("vm.{what}"), Some(target), task_user, move |ctx| {
            let _guard = guard;
            ctx.host.power_op(&row, op, user.as_deref())
        })
    }

    fn power_op(&self, row: &VmRow, op: PowerOp, user: Option<&str>) -> Result<()> {
        let name = &row.name;
        let target = format!("vm:{name}");
        let failed = |e: String| CoreError::internal(format!("VM {name}: {e}"));
        // The exit this operation causes is the user's doing.
        if let (PowerOp::Off | PowerOp::Shutdown, Some(user)) = (op, user) {
            lock(&self.inner.exit_by).insert(row.id, user.to_string());
        }
        let result = self.power_op_inner(row, op, user, &target, failed);
        if result.is_err() {
            lock(&self.inner.exit_by).remove(&row.id);
        }
        result
    }

    fn power_op_inner(
        &self,
        row: &VmRow,
        op: PowerOp,
        user: Option<&str>,
        target: &str,
        failed: impl Fn(String) -> CoreError,
    ) -> Result<()> {
        let name = &row.name;
        match op {
            PowerOp::On => self.power_on(row, user)?,
            PowerOp::Off => self.backend().stop(row.id).map_err(failed)?,
            PowerOp::Shutdown => {
                self.backend()
                    .request(row.id, vmm_api::Request::PowerButton)
                    .map_err(failed)?;
                self.event(
                    NewEvent::info(
                        "vm.shutdown-requested",
                        &format!("Power button pressed on VM {name}"),
                    )
                    .user(user)
                    .target(target),
                );
                if !self.backend().wait_exit(row.id, SHUTDOWN_WAIT) {
                    return Err(CoreError::internal(format!(
                        "VM {name} did not power off within {} s",
                        SHUTDOWN_WAIT.as_secs()
                    )));
                }
            }
            PowerOp::Reset => {
                // The VMM rebuilds the VM and boots it again, in the same
                // process.
                self.backend()
                    .request(row.id, vmm_api::Request::Reset)
                    .map_err(failed)?;
                self.event(
                    NewEvent::info("vm.reset", &format!("VM {name} reset"))
                        .user(user)
                        .target(target),
                );
            }
            PowerOp::Pause | PowerOp::Resume => {
                let (req, kind, msg) = if op == PowerOp::Pause {
                    (vmm_api::Request::Pause, "vm.paused", "paused")
                } else {
                    (vmm_api::Request::Resume, "vm.resumed", "resumed")
                };
                self.backend().request(row.id, req).map_err(failed)?;
                self.event(
                    NewEvent::info(kind, &format!("VM {name} {msg}"))
                        .user(user)
                        .target(target),
                );
            }
        }
        Ok(())
    }

    fn power_on(&self, row: &VmRow, user: Option<&str>) -> Result<()> {
        let name = &row.name;
        let target = format!("vm:{name}");
        let folder = self.vm_folder(row)?;
        let cfg = vmconfig::read(&vmconfig::path_in(&folder, &row.folder))?;
        vmconfig::check_files(&folder, &cfg)?;
        let nets = match self.prepare_nics(row, &cfg) {
            Ok(n) => n,
            Err(e) => {
                let msg = format!("Powering on VM {name} failed: {e}");
                self.event(
                    NewEvent::info("vm.power-on-failed", &msg)
                        .severity(Severity::Error)
                        .user(user)
                        .target(&target),
                );
                return Err(e.with_message(msg));
            }
        };
        self.set_last_exit(row.id, Some(last_exit::RUNNING), None)?;
        match self.backend().start(row.id, &folder, &cfg, &nets) {
            Ok(run) => {
                self.event(
                    NewEvent::info(
                        "vm.powered-on",
                        &format!("VM {name} powered on (pid {})", run.pid),
                    )
                    .user(user)
                    .target(&target),
                );
                Ok(())
            }
            Err(e) => {
                self.release_nics(row.id);
                let msg = format!("Powering on VM {name} failed: {e}");
                self.set_last_exit(
                    row.id,
                    row.last_exit
                        .as_deref()
                        .filter(|s| *s != last_exit::RUNNING),
                    None,
                )?;
                self.event(
                    NewEvent::info("vm.power-on-failed", &msg)
                        .severity(Severity::Error)
                        .user(user)
                        .target(&target),
                );
                Err(CoreError::internal(msg))
            }
        }
    }

    fn set_last_exit(&self, id: i64, value: Option<&str>, message: Option<&str>) -> Result<()> {
        self.store().with(|c| {
            c.execute(
                "UPDATE vms SET last_exit = ?2, last_exit_message = ?3 WHERE id = ?1",
                params![id, value, message],
            )
            .map(drop)
        })
    }

    /// The live serial console (VmConsole privilege); Conflict while off.
    pub fn vm_console(&self, caller: &Caller, name: &str) -> Result<ConsoleHandle> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConsole)?;
        let row = self.vm_row(name)?;
        if self.backend().running(row.id).is_none() {
            return Err(CoreError::conflict(format!("VM {name} is powered off")));
        }
        self.backend()
            .console(row.id)
            .map_err(|e| CoreError::conflict(format!("Console of VM {name}: {e}")))
    }

    /// Records how a VMM ended (called by the supervisor).
    pub(crate) fn on_vm_exit(&self, exit: VmExit) {
        self.release_nics(exit.id);
        let row = self
            .store()
            .with(|c| vms::row_by_id(c, exit.id))
            .ok()
            .flatten();
        let name = row
            .as_ref()
            .map_or_else(|| format!("#{}", exit.id), |r| r.name.clone());
        let target = format!("vm:{name}");
        let (value, kind, severity, message) = match &exit.reason {
            ExitReason::PoweredOff => (
                last_exit::POWERED_OFF,
                "vm.powered-off",
                Severity::Info,
                format!("VM {name} powered off"),
            ),
            ExitReason::Stopped => (
                last_exit::STOPPED,
                "vm.powered-off",
                Severity::Info,
                format!("VM {name} was stopped (powered off hard)"),
            ),
            ExitReason::Crashed {
                status,
                signal,
                message,
            } => {
                let how = match (status, signal) {
                    (_, Some(sig)) => format!("killed by signal {sig}"),
                    (Some(st), None) => format!("exit status {st}"),
                    (None, None) => "gone".to_string(),
                };
                let tail: Vec<&str> = exit
                    .log_tail
                    .iter()
                    .rev()
                    .take(CRASH_LOG_LINES)
                    .rev()
                    .map(String::as_str)
                    .collect();
                let mut text = format!("VM {name} crashed ({how}): {message}");
                if !tail.is_empty() {
                    text.push_str("\nLast log lines:\n");
                    text.push_str(&tail.join("\n"));
                }
                (last_exit::CRASHED, "vm.crashed", Severity::Error, text)
            }
        };
        let short = message.lines().next().unwrap_or_default().to_string();
        let by = lock(&self.inner.exit_by).remove(&exit.id);
        let result = self.store().tx(|tx| {
            if row.is_some() {
                tx.execute(
                    "UPDATE vms SET last_exit = ?2, last_exit_message = ?3 WHERE id = ?1",
                    params![exit.id, value, short],
                )?;
            }
            events::insert(
                tx,
                &NewEvent::info(kind, &message)
                    .severity(severity)
                    .user(by.as_deref())
                    .target(&target),
            )?;
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("keeld: recording the exit of VM {name}: {e}");
        }
    }

    /// At start: re-attaches to the VMMs still running; VMs that ran when
    /// keeld stopped and whose VMM is gone are recorded as crashed (unless
    /// the supervisor reported their exit).
    pub(crate) fn reattach_all(&self) {
        let Ok(rows) = self.store().with(vms::rows) else {
            return;
        };
        for row in rows {
            let target = format!("vm:{}", row.name);
            let folder = match self.vm_folder(&row) {
                Ok(f) => f,
                Err(_) => continue,
            };
            // How a VMM that ended while keeld was away ended: asked before
            // attach, which clears the traces it reads.
            let was_running = row.last_exit.as_deref() == Some(last_exit::RUNNING);
            let ended = if was_running {
                self.backend().last_exit(row.id, &folder)
            } else {
                None
            };
            match self.backend().attach(row.id, &folder) {
                Ok(Some(run)) => self.event(
                    NewEvent::info(
                        "vm.reattached",
                        &format!(
                            "VM {} is running (pid {}); keeld re-attached to it",
                            row.name, run.pid
                        ),
                    )
                    .target(&target),
                ),
                Ok(None) if was_running => {
                    self.on_vm_exit(ended.unwrap_or_else(|| VmExit {
                        id: row.id,
                        reason: ExitReason::Crashed {
                            status: None,
                            signal: None,
                            message: "its VMM ended while keeld was not running".into(),
                        },
                        log_tail: Vec::new(),
                    }));
                }
                Ok(None) => {}
                Err(e) => self.event(
                    NewEvent::info(
                        "vm.reattach-failed",
                        &format!("Re-attaching to VM {}: {e}", row.name),
                    )
                    .severity(Severity::Warning)
                    .target(&target),
                ),
            }
        }
    }

    /// The delay between two autostarted VMs.
    pub fn autostart_delay(&self, caller: &Caller) -> Result<Duration> {
        self.require(caller, None, Privilege::SystemView)?;
        self.autostart_delay_setting()
    }

    pub fn set_autostart_delay(&self, caller: &Caller, delay: Duration) -> Result<()> {
        self.require(caller, None, Privilege::HostConfig)?;
        if delay > Duration::from_secs(3600) {
            return Err(CoreError::bad_request(
                "The autostart delay is at most 3600 s",
            ));
        }
        self.store()
            .set_setting(AUTOSTART_DELAY_KEY, &delay.as_millis().to_string())?;
        self.event(
            NewEvent::info(
                "host.reconfigured",
                &format!("Autostart delay set to {} ms", delay.as_millis()),
            )
            .user(Some(&caller.user)),
        );
        Ok(())
    }

    fn autostart_delay_setting(&self) -> Result<Duration> {
        Ok(self
            .store()
            .setting(AUTOSTART_DELAY_KEY)?
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_AUTOSTART_DELAY, Duration::from_millis))
    }

    /// Starts the autostart VMs on a background thread, in name order, one
    /// at a time with the delay between them.
    pub(crate) fn start_autostart(&self) {
        let host = self.clone();
        let spawned = std::thread::Builder::new()
            .name("autostart".into())
            .spawn(move || host.autostart());
        if let Err(e) = spawned {
            eprintln!("keeld: starting the autostart thread: {e}");
        }
    }

    fn autostart(&self) {
        let Ok(rows) = self.store().with(vms::rows) else {
            return;
        };
        let delay = self
            .autostart_delay_setting()
            .unwrap_or(DEFAULT_AUTOSTART_DELAY);
        let mut first = true;
        for row in rows.into_iter().filter(|r| r.autostart) {
            if self.backend().running(row.id).is_some() {
                continue;
            }
            if !first {
                std::thread::sleep(delay);
            }
            first = false;
            let name = row.name.clone();
            match self.power(row, PowerOp::On, SYSTEM_USER, None) {
                Ok(task) => {
                    let _ = self
                        .inner
                        .tasks
                        .wait(self.store(), task.id, Duration::from_secs(60));
                }
                Err(e) => self.event(
                    NewEvent::info(
                        "vm.autostart-failed",
                        &format!("Autostart of VM {name}: {e}"),
                    )
                    .severity(Severity::Warning)
                    .target(&format!("vm:{name}")),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests;
