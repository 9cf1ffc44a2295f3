//! The VM inventory: rows in SQLite, each pointing at a folder on a
//! datastore that holds `NAME.toml` and the VM's files. Listing and
//! showing VMs, and the recovery of what a killed keeld left half-done.
//!
//! Crash safety: a VM folder is built under `.NAME.creating` and renamed
//! into place after its row is inserted; a deleted VM's folder is first
//! renamed to `.NAME.deleting`. [`Host::open`] removes both kinds of
//! leftovers, and the rows that point at them.

mod create;
mod manage;

use std::fs;
use std::path::{Path, PathBuf};

use hostd_api::{PowerState, Privilege, Severity, VmConfig, VmInfo, VmRuntime};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::datastores::{self, DatastoreRow};
use crate::error::{CoreError, Result};
use crate::events::NewEvent;
use crate::host::{Caller, Host};
use crate::names;
use crate::vmconfig;

/// Suffixes of the temporary folder names.
pub const CREATING: &str = ".creating";
pub const DELETING: &str = ".deleting";

/// A VM's row.
#[derive(Clone, Debug)]
pub struct VmRow {
    pub id: i64,
    pub name: String,
    pub datastore: String,
    pub folder: String,
    pub autostart: bool,
    pub config_json: String,
    pub last_exit: Option<String>,
}

/// `last_exit` values.
pub mod last_exit {
    /// Set at power-on; still there at keeld start, the VM ran when keeld
    /// stopped.
    pub const RUNNING: &str = "running";
    pub const POWERED_OFF: &str = "poweredOff";
    pub const STOPPED: &str = "stopped";
    pub const CRASHED: &str = "crashed";
}

const COLUMNS: &str = "id, name, datastore, folder, autostart, config_json, last_exit";

fn from_row(r: &Row<'_>) -> rusqlite::Result<VmRow> {
    Ok(VmRow {
        id: r.get(0)?,
        name: r.get(1)?,
        datastore: r.get(2)?,
        folder: r.get(3)?,
        autostart: r.get::<_, i64>(4)? != 0,
        config_json: r.get(5)?,
        last_exit: r.get(6)?,
    })
}

pub fn rows(conn: &Connection) -> rusqlite::Result<Vec<VmRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM vms ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

pub fn row_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<VmRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM vms WHERE name = ?1"),
        [name],
        from_row,
    )
    .optional()
}

pub fn row_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<VmRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM vms WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()
}

pub fn row_by_folder(conn: &Connection, ds: &str, folder: &str) -> rusqlite::Result<Option<VmRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM vms WHERE datastore = ?1 AND folder = ?2"),
        [ds, folder],
        from_row,
    )
    .optional()
}

/// Inserts a VM's row; Conflict when the name or folder is taken.
pub fn insert_row(
    conn: &Connection,
    cfg: &VmConfig,
    ds: &str,
    folder: &str,
    autostart: bool,
    now: u64,
) -> Result<i64> {
    if row_by_name(conn, &cfg.name)?.is_some() {
        return Err(CoreError::conflict(format!(
            "VM {} already exists",
            cfg.name
        )));
    }
    if let Some(other) = row_by_folder(conn, ds, folder)? {
        return Err(CoreError::conflict(format!(
            "Folder {folder} of {ds} is already registered as VM {}",
            other.name
        )));
    }
    let json = serde_json::to_string(cfg).map_err(|e| CoreError::internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO vms (name, datastore, folder, autostart, config_json, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![cfg.name, ds, folder, autostart as i64, json, now as i64],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Removes a VM's row and its permissions.
pub fn delete_row(conn: &Connection, row: &VmRow) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM vms WHERE id = ?1", [row.id])?;
    conn.execute(
        "DELETE FROM permissions WHERE entity = ?1",
        [format!("vm:{}", row.name)],
    )?;
    Ok(())
}

impl Host {
    pub(crate) fn vm_row(&self, name: &str) -> Result<VmRow> {
        names::validate("VM", name)?;
        self.store()
            .with(|c| row_by_name(c, name))?
            .ok_or_else(|| CoreError::not_found(format!("No VM {name}")))
    }

    /// The VM's folder on the host.
    pub(crate) fn vm_folder(&self, row: &VmRow) -> Result<PathBuf> {
        let ds = datastores::get(self.store(), &row.datastore)?;
        Ok(ds.path.join(&row.folder))
    }

    /// The VM's config: its TOML file, else the inventory's last copy.
    pub(crate) fn vm_config(&self, row: &VmRow) -> (VmConfig, Option<CoreError>) {
        let from_file = self
            .vm_folder(row)
            .and_then(|folder| vmconfig::read(&vmconfig::path_in(&folder, &row.folder)));
        match from_file {
            Ok(cfg) => (cfg, None),
            Err(e) => match serde_json::from_str::<VmConfig>(&row.config_json) {
                Ok(cfg) => (cfg, Some(e)),
                Err(_) => (placeholder_config(&row.name), Some(e)),
            },
        }
    }

    /// The power state, always derived from the VMM process.
    pub(crate) fn vm_power_state(&self, row: &VmRow) -> (PowerState, Option<VmRuntime>) {
        let Some(run) = self.backend().running(row.id) else {
            let state = if row.last_exit.as_deref() == Some(last_exit::CRASHED) {
                PowerState::Crashed
            } else {
                PowerState::PoweredOff
            };
            return (state, None);
        };
        let status = match self.backend().request(row.id, vmm_api::Request::Status) {
            Ok(vmm_api::Reply::Status(s)) => Some(s),
            _ => None,
        };
        let paused = status
            .as_ref()
            .is_some_and(|s| s.state == vmm_api::VmState::Paused);
        let stats = self.backend().process_stats(row.id).unwrap_or_default();
        let runtime = VmRuntime {
            pid: run.pid,
            uptime_ms: status
                .as_ref()
                .map_or(self.now().saturating_sub(run.started_ms), |s| s.uptime_ms),
            boots: status.as_ref().map_or(1, |s| s.boots),
            cpu_ms: stats.cpu_ms,
            rss_bytes: stats.rss_bytes,
        };
        let state = if paused {
            PowerState::Paused
        } else {
            PowerState::PoweredOn
        };
        (state, Some(runtime))
    }

    /// The VM as `caller` sees it (with what the caller may do on it).
    pub(crate) fn vm_info(&self, caller: &Caller, row: &VmRow) -> VmInfo {
        let (config, _) = self.vm_config(row);
        let privileges = crate::auth::privileges(self.store(), &caller.user, Some(&row.name))
            .unwrap_or_default();
        let (power_state, runtime) = self.vm_power_state(row);
        let path = self
            .vm_folder(row)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let nics = self.nic_infos(row, &config);
        VmInfo {
            ip: nics.iter().find_map(|n| n.ip.clone()),
            nics,
            name: row.name.clone(),
            datastore: row.datastore.clone(),
            path,
            power_state,
            config,
            autostart: row.autostart,
            runtime,
            privileges,
        }
    }

    pub(crate) fn can_see_vm(&self, caller: &Caller, vm: &str) -> Result<bool> {
        Ok(
            crate::auth::privileges(self.store(), &caller.user, Some(vm))?
                .contains(&Privilege::SystemView),
        )
    }

    /// The VMs the caller may see, by name.
    pub fn vm_list(&self, caller: &Caller) -> Result<Vec<VmInfo>> {
        let rows = self.store().with(rows)?;
        let mut out = Vec::new();
        for row in rows {
            if self.can_see_vm(caller, &row.name)? {
                out.push(self.vm_info(caller, &row));
            }
        }
        Ok(out)
    }

    pub fn vm_get(&self, caller: &Caller, name: &str) -> Result<VmInfo> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::SystemView)?;
        let row = self.vm_row(name)?;
        Ok(self.vm_info(caller, &row))
    }

    /// The tail of the VM's console log (`console.log` in its folder);
    /// empty when there is none yet. `max_bytes` 0 means 64 KiB.
    pub fn vm_log(&self, caller: &Caller, name: &str, max_bytes: u64) -> Result<String> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConsole)?;
        let row = self.vm_row(name)?;
        let max = match max_bytes {
            0 => 64 * 1024,
            n => n.min(16 << 20),
        };
        let folder = self.vm_folder(&row)?;
        let bytes = crate::supervisor::Supervisor::console_log_tail(&folder, max as usize);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The canonical folders of all registered VMs on a datastore (for
    /// removal protection).
    pub(crate) fn vm_folders_on(&self, ds: &DatastoreRow) -> Result<Vec<(String, PathBuf)>> {
        let rows = self.store().with(rows)?;
        let root = ds.root()?;
        Ok(rows
            .into_iter()
            .filter(|r| r.datastore == ds.name)
            .map(|r| {
                let folder = root.join(&r.folder);
                (r.name, fs::canonicalize(&folder).unwrap_or(folder))
            })
            .collect())
    }

    /// Removes the `.NAME.creating` and `.NAME.deleting` folders a killed
    /// keeld left, and the rows pointing at them; removes stale uploads.
    pub(crate) fn recover_leftovers(&self) {
        let Ok(stores) = datastores::list(self.store()) else {
            return;
        };
        for ds in stores {
            let Ok(root) = ds.root() else { continue };
            let n = datastores::remove_stale_uploads(&root);
            if n > 0 {
                self.event(
                    NewEvent::info(
                        "datastore.cleaned",
                        &format!("Removed {n} unfinished upload(s) from {}", ds.name),
                    )
                    .severity(Severity::Warning),
                );
            }
            let Ok(read) = fs::read_dir(&root) else {
                continue;
            };
            for entry in read.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(inner) = name.strip_prefix('.') else {
                    continue;
                };
                let (vm, creating) = if let Some(vm) = inner.strip_suffix(CREATING) {
                    (vm, true)
                } else if let Some(vm) = inner.strip_suffix(DELETING) {
                    (vm, false)
                } else {
                    continue;
                };
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                self.recover_folder(&ds, &root, &entry.path(), vm, creating);
            }
        }
    }

    fn recover_folder(
        &self,
        ds: &DatastoreRow,
        root: &Path,
        path: &Path,
        vm: &str,
        creating: bool,
    ) {
        let removed = fs::remove_dir_all(path);
        // A row for the VM whose real folder does not exist was inserted by
        // the interrupted operation (create) or not yet deleted (delete).
        let dropped = if !root.join(vm).exists() {
            self.store()
                .tx(|tx| {
                    Ok(match row_by_folder(tx, &ds.name, vm)? {
                        Some(row) => {
                            delete_row(tx, &row)?;
                            true
                        }
                        None => false,
                    })
                })
                .unwrap_or(false)
        } else {
            false
        };
        let target = format!("vm:{vm}");
        let (kind, what) = if creating {
            ("vm.create-interrupted", "The creation of VM")
        } else {
            ("vm.delete-completed", "The deletion of VM")
        };
        let msg = match removed {
            Ok(()) => format!(
                "{what} {vm} on {} was interrupted when keeld stopped; its unfinished folder was removed{}",
                ds.name,
                if dropped { " and it was taken out of the inventory" } else { "" }
            ),
            Err(e) => format!(
                "{what} {vm} on {} was interrupted when keeld stopped; removing {} failed: {e}",
                ds.name,
                path.display()
            ),
        };
        self.event(
            NewEvent::info(kind, &msg)
                .severity(Severity::Warning)
                .target(&target),
        );
    }
}

/// What a VM whose config cannot be read at all shows.
fn placeholder_config(name: &str) -> VmConfig {
    VmConfig {
        name: name.to_string(),
        vcpus: 1,
        memory_mib: 0,
        disks: Vec::new(),
        nics: Vec::new(),
        boot: Default::default(),
        guest_os: Default::default(),
        notes: String::new(),
    }
}

#[cfg(test)]
mod tests;
