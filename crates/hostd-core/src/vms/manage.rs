//! Editing, deleting, registering and unregistering VMs.

use std::fs;

use hostd_api::{Privilege, VmEdit, VmInfo, VmRegister};
use rusqlite::params;

use super::{delete_row, insert_row, DELETING};
use crate::datastores;
use crate::error::{CoreError, Result};
use crate::events::{self, NewEvent};
use crate::fsutil::fsync_dir;
use crate::host::{Caller, Host};
use crate::names;
use crate::vmconfig;

impl Host {
    /// Changes a VM's settings. vCPUs and memory only while it is off
    /// (Conflict otherwise); the rest applies at the next power-on.
    pub fn vm_edit(&self, caller: &Caller, name: &str, edit: VmEdit) -> Result<VmInfo> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConfig)?;
        let row = self.vm_row(name)?;
        let _guard = self.claim(row.id, name, "edit")?;
        let sizing = edit.vcpus.is_some() || edit.memory_mib.is_some();
        if sizing && self.backend().running(row.id).is_some() {
            return Err(CoreError::conflict(format!(
                "VM {name} is powered on; power it off to change its vCPUs or memory"
            )));
        }
        let mut changes = Vec::new();
        let touches_config =
            sizing || edit.cmdline.is_some() || edit.guest_os.is_some() || edit.notes.is_some();
        let folder = self.vm_folder(&row)?;
        let cfg_path = vmconfig::path_in(&folder, &row.folder);
        let mut cfg = vmconfig::read(&cfg_path)?;
        if let Some(v) = edit.vcpus {
            vmconfig::check_vcpus(v)?;
            changes.push(format!("vCPUs {} → {v}", cfg.vcpus));
            cfg.vcpus = v;
        }
        if let Some(m) = edit.memory_mib {
            vmconfig::check_memory(m)?;
            changes.push(format!("memory {} → {m} MiB", cfg.memory_mib));
            cfg.memory_mib = m;
        }
        if let Some(c) = &edit.cmdline {
            vmconfig::check_cmdline(c)?;
            changes.push("kernel command line".into());
            cfg.boot.cmdline = c.clone();
        }
        if let Some(g) = edit.guest_os {
            changes.push("guest OS".into());
            cfg.guest_os = g;
        }
        if let Some(n) = &edit.notes {
            vmconfig::check_notes(n)?;
            changes.push("notes".into());
            cfg.notes = n.clone();
        }
        if let Some(a) = edit.autostart {
            changes.push(format!("autostart {}", if a { "on" } else { "off" }));
        }
        if changes.is_empty() {
            return Ok(self.vm_info(caller, &row));
        }
        vmconfig::validate(&cfg)?;
        if touches_config {
            vmconfig::write(&cfg_path, &cfg)?;
        }
        let json = serde_json::to_string(&cfg).map_err(|e| CoreError::internal(e.to_string()))?;
        let autostart = edit.autostart.unwrap_or(row.autostart);
        let target = format!("vm:{name}");
        let msg = format!("VM {name} reconfigured: {}", changes.join(", "));
        self.store().tx(|tx| {
            tx.execute(
                "UPDATE vms SET config_json = ?2, autostart = ?3 WHERE id = ?1",
                params![row.id, json, autostart as i64],
            )?;
            events::insert(
                tx,
                &NewEvent::info("vm.reconfigured", &msg)
                    .user(Some(&caller.user))
                    .target(&target),
            )?;
            Ok(())
        })?;
        Ok(self.vm_info(caller, &self.vm_row(name)?))
    }

    /// Deletes a powered-off VM: its row and its folder.
    pub fn vm_delete(&self, caller: &Caller, name: &str) -> Result<()> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConfig)?;
        let row = self.vm_row(name)?;
        let _guard = self.claim(row.id, name, "delete")?;
        if self.backend().running(row.id).is_some() {
            return Err(CoreError::conflict(format!(
                "VM {name} is powered on; power it off to delete it"
            )));
        }
        let ds = datastores::get(self.store(), &row.datastore)?;
        let folder = ds.path.join(&row.folder);
        let doomed = ds.path.join(format!(".{}{DELETING}", row.folder));
        let moved = match fs::rename(&folder, &doomed) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(CoreError::io(format!("Deleting {}", folder.display()), &e)),
        };
        let target = format!("vm:{name}");
        let deleted = self.store().tx(|tx| {
            delete_row(tx, &row)?;
            events::insert(
                tx,
                &NewEvent::info("vm.deleted", &format!("VM {name} deleted with its files"))
                    .user(Some(&caller.user))
                    .target(&target),
            )?;
            Ok(())
        });
        if let Err(e) = deleted {
            if moved {
                let _ = fs::rename(&doomed, &folder);
            }
            return Err(e);
        }
        let _ = fsync_dir(&ds.path);
        if moved {
            fs::remove_dir_all(&doomed)
                .map_err(|e| CoreError::io(format!("Removing {}", doomed.display()), &e))?;
        }
        Ok(())
    }

    /// Adds an existing VM folder (holding `FOLDER.toml`) to the inventory,
    /// named after the folder.
    pub fn vm_register(&self, caller: &Caller, req: VmRegister) -> Result<VmInfo> {
        self.require(caller, None, Privilege::VmConfig)?;
        names::validate("VM", &req.folder)?;
        let ds = datastores::get(self.store(), &req.datastore)?;
        let root = ds.root()?;
        let folder = datastores::resolve_existing(&root, &req.folder)?;
        if folder != root.join(&req.folder) || !folder.is_dir() {
            return Err(CoreError::bad_request(format!(
                "{} is not a folder of {}",
                req.folder, ds.name
            )));
        }
        let cfg_path = vmconfig::path_in(&folder, &req.folder);
        let mut cfg = vmconfig::read(&cfg_path)?;
        vmconfig::check_files(&folder, &cfg)?;
        let _net = crate::host::lock(&self.inner.net_lock);
        let macs = self.dedupe_macs(&mut cfg)?;
        if cfg.name != req.folder || !macs.is_empty() {
            // A folder copied or renamed by hand: the VM takes its name,
            // and new MACs where another VM has its ones.
            cfg.name = req.folder.clone();
            vmconfig::write(&cfg_path, &cfg)?;
        }
        let target = format!("vm:{}", cfg.name);
        let now = self.now();
        self.store().tx(|tx| {
            insert_row(tx, &cfg, &ds.name, &req.folder, false, now)?;
            events::insert(
                tx,
                &NewEvent::info(
                    "vm.registered",
                    &format!(
                        "VM {} registered from {} of {}{}",
                        cfg.name,
                        req.folder,
                        ds.name,
                        if macs.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", macs.join(", "))
                        }
                    ),
                )
                .user(Some(&caller.user))
                .target(&target),
            )?;
            Ok(())
        })?;
        let row = self.vm_row(&cfg.name)?;
        Ok(self.vm_info(caller, &row))
    }

    /// Removes a powered-off VM from the inventory, keeping its files.
    pub fn vm_unregister(&self, caller: &Caller, name: &str) -> Result<()> {
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConfig)?;
        let row = self.vm_row(name)?;
        let _guard = self.claim(row.id, name, "unregister")?;
        if self.backend().running(row.id).is_some() {
            return Err(CoreError::conflict(format!(
                "VM {name} is powered on; power it off to unregister it"
            )));
        }
        let target = format!("vm:{name}");
        self.store().tx(|tx| {
            delete_row(tx, &row)?;
            events::insert(
                tx,
                &NewEvent::info(
                    "vm.unregistered",
                    &format!(
                        "VM {name} unregistered; its files stay in {} of {}",
                        row.folder, row.datastore
                    ),
                )
                .user(Some(&caller.user))
                .target(&target),
            )?;
            Ok(())
        })
    }
}
