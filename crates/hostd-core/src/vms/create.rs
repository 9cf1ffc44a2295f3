//! Creating and cloning VMs: everything is checked before the task starts;
//! the task builds the folder under `.NAME.creating`, writes `NAME.toml`,
//! inserts the row (with its event) in one transaction and renames the
//! folder into place.

use std::fs;
use std::path::{Path, PathBuf};

use hostd_api::{BootConfig, DiskConfig, Privilege, Severity, Task, VmClone, VmConfig, VmCreate};

use super::{delete_row, insert_row, row_by_name, CREATING};
use crate::datastores::{self, DatastoreRow};
use crate::error::{CoreError, ErrorKind, Result};
use crate::events::{self, NewEvent};
use crate::fsutil::{self, fsync_dir};
use crate::host::{lock, BusyGuard, Caller, Host, TaskCtx};
use crate::names;
use crate::vmconfig;

pub const MAX_DISKS: usize = 16;
/// What creating one qcow2 counts for in the progress, in bytes.
const QCOW2_WEIGHT: u64 = 1 << 20;

/// A VM folder to build.
pub(crate) struct Build {
    pub cfg: VmConfig,
    pub ds: DatastoreRow,
    pub root: PathBuf,
    pub autostart: bool,
    /// Files to copy into the folder: source, name in the folder.
    pub copies: Vec<(PathBuf, String)>,
    /// New qcow2 disks: name in the folder, size.
    pub new_disks: Vec<(String, u64)>,
    /// The event's kind and message.
    pub event_kind: &'static str,
    pub event_message: String,
}

/// Holds a VM name for a create or clone in progress.
pub(crate) struct Reservation {
    host: Host,
    name: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.host.inner.reserved).remove(&self.name);
    }
}

impl Host {
    /// Conflict when the name is taken in the inventory, by a folder on
    /// the datastore, or by a create in progress; else reserves it.
    fn reserve_name(&self, name: &str, root: &Path) -> Result<Reservation> {
        let mut reserved = lock(&self.inner.reserved);
        if reserved.contains(name) {
            return Err(CoreError::conflict(format!("VM {name} is being created")));
        }
        if self.store().with(|c| row_by_name(c, name))?.is_some() {
            return Err(CoreError::conflict(format!("VM {name} already exists")));
        }
        for folder in [name.to_string(), format!(".{name}{CREATING}")] {
            if fs::symlink_metadata(root.join(&folder)).is_ok() {
                return Err(CoreError::conflict(format!(
                    "The datastore already has a folder {folder}"
                )));
            }
        }
        reserved.insert(name.to_string());
        Ok(Reservation {
            host: self.clone(),
            name: name.to_string(),
        })
    }

    /// Creates a VM: checks everything now (name, sizes, files, space),
    /// then copies and creates its files in a task.
    pub fn vm_create(&self, caller: &Caller, spec: VmCreate) -> Result<Task> {
        self.require(caller, None, Privilege::VmConfig)?;
        names::validate("VM", &spec.name)?;
        vmconfig::check_vcpus(spec.vcpus)?;
        vmconfig::check_memory(spec.memory_mib)?;
        vmconfig::check_cmdline(&spec.boot.cmdline)?;
        vmconfig::check_notes(&spec.notes)?;
        if spec.disks.len() > MAX_DISKS {
            return Err(CoreError::bad_request(format!(
                "A VM has at most {MAX_DISKS} disks"
            )));
        }
        let ds = datastores::get(
            self.store(),
            spec.datastore.as_deref().unwrap_or(datastores::DEFAULT),
        )?;
        let root = ds.root()?;
        let free = ds.free_bytes()?;

        let mut copies = Vec::new();
        let kernel = datastores::resolve_source(self.store(), &spec.boot.kernel)
            .map_err(|e| e.context("Kernel"))?;
        copies.push((kernel, "vmlinuz".to_string()));
        let initrd = match &spec.boot.initrd {
            Some(src) => {
                let path = datastores::resolve_source(self.store(), src)
                    .map_err(|e| e.context("Initrd"))?;
                copies.push((path, "initrd.img".to_string()));
                Some("initrd.img".to_string())
            }
            None => None,
        };

        let mut disks = Vec::new();
        let mut new_disks = Vec::new();
        let mut serials = std::collections::HashSet::new();
        for (i, d) in spec.disks.iter().enumerate() {
            let serial = d.serial.clone().unwrap_or_else(|| format!("disk{i}"));
            vmconfig::check_serial(&serial)?;
            if !serials.insert(serial.clone()) {
                return Err(CoreError::bad_request(format!(
                    "Two disks have the serial {serial}"
                )));
            }
            let (file, format) = match (d.size_bytes, &d.import) {
                (Some(size), None) => {
                    if size == 0 {
                        return Err(CoreError::bad_request(format!(
                            "Disk {i}: the size must be more than 0 bytes"
                        )));
                    }
                    if size % 512 != 0 {
                        return Err(CoreError::bad_request(format!(
                            "Disk {i}: the size {size} is not a multiple of 512 bytes"
                        )));
                    }
                    if size > free {
                        return Err(CoreError::new(
                            ErrorKind::InsufficientSpace,
                            format!(
                                "Disk {i}: {size} bytes is more than the {free} bytes free on {}",
                                ds.name
                            ),
                        ));
                    }
                    let file = format!("disk{i}.qcow2");
                    new_disks.push((file.clone(), size));
                    (file, "qcow2")
                }
                (None, Some(src)) => {
                    let path = datastores::resolve_source(self.store(), src)
                        .map_err(|e| e.context(format!("Disk {i}")))?;
                    let format = match storage::probe(&path) {
                        Ok(storage::Format::Qcow2) => "qcow2",
                        Ok(_) => "raw",
                        Err(e) => {
                            return Err(CoreError::bad_request(format!("Disk {i}: {e}")));
                        }
                    };
                    let file = format!("disk{i}.{format}");
                    copies.push((path, file.clone()));
                    (file, format)
                }
                _ => {
                    return Err(CoreError::bad_request(format!(
                        "Disk {i}: give either size_bytes or import"
                    )))
                }
            };
            disks.push(DiskConfig {
                file,
                format: format.to_string(),
                readonly: d.readonly,
                serial,
            });
        }

        let nics = self.new_nics(&spec.nics, None)?;

        let mut to_copy = 0u64;
        for (src, _) in &copies {
            let meta = fs::metadata(src).map_err(|e| CoreError::io(src.display(), &e))?;
            to_copy += fsutil::allocated(&meta);
        }
        if to_copy > free {
            return Err(CoreError::new(
                ErrorKind::InsufficientSpace,
                format!(
                    "The files to copy take {to_copy} bytes; {} has {free} bytes free",
                    ds.name
                ),
            ));
        }

        let cfg = VmConfig {
            name: spec.name.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            disks,
            nics,
            boot: BootConfig {
                kernel: "vmlinuz".into(),
                initrd,
                cmdline: spec.boot.cmdline.clone(),
            },
            guest_os: spec.guest_os,
            notes: spec.notes.clone(),
        };
        vmconfig::validate(&cfg)?;
        let reservation = self.reserve_name(&spec.name, &root)?;
        let build = Build {
            event_kind: "vm.created",
            event_message: format!(
                "VM {} created on {} ({} vCPU, {} MiB)",
                cfg.name, ds.name, cfg.vcpus, cfg.memory_mib
            ),
            cfg,
            ds,
            root,
            autostart: spec.autostart,
            copies,
            new_disks,
        };
        self.spawn_build("vm.create", caller, build, reservation, None)
    }

    /// A full copy of a powered-off VM, as a new VM.
    pub fn vm_clone(&self, caller: &Caller, name: &str, req: VmClone) -> Result<Task> {
        self.require(caller, None, Privilege::VmConfig)?;
        names::validate("VM", name)?;
        self.require(caller, Some(name), Privilege::VmConfig)?;
        names::validate("VM", &req.name)?;
        let row = self.vm_row(name)?;
        let guard = self.claim(row.id, name, "clone")?;
        if self.backend().running(row.id).is_some() {
            return Err(CoreError::conflict(format!(
                "VM {name} is powered on; power it off to clone it"
            )));
        }
        let src_folder = self.vm_folder(&row)?;
        let mut cfg = vmconfig::read(&vmconfig::path_in(&src_folder, &row.folder))?;
        vmconfig::check_files(&src_folder, &cfg)?;
        let ds = datastores::get(
            self.store(),
            req.datastore.as_deref().unwrap_or(&row.datastore),
        )?;
        let root = ds.root()?;
        let free = ds.free_bytes()?;
        let mut copies = Vec::new();
        let mut to_copy = 0;
        for f in vmconfig::files(&cfg) {
            let src = src_folder.join(f);
            let meta = fs::metadata(&src).map_err(|e| CoreError::io(src.display(), &e))?;
            to_copy += fsutil::allocated(&meta);
            copies.push((src, f.to_string()));
        }
        if to_copy > free {
            return Err(CoreError::new(
                ErrorKind::InsufficientSpace,
                format!(
                    "VM {name}'s files take {to_copy} bytes; {} has {free} bytes free",
                    ds.name
                ),
            ));
        }
        cfg.name = req.name.clone();
        // A clone gets its own MACs; a NIC on its own TAP goes on VM
        // Network (two VMs cannot share a TAP).
        for nic in &mut cfg.nics {
            nic.mac = None;
            nic.tap = None;
        }
        cfg.nics = self.new_nics(&cfg.nics, None)?;
        let reservation = self.reserve_name(&req.name, &root)?;
        let build = Build {
            event_kind: "vm.cloned",
            event_message: format!(
                "VM {} created on {} as a clone of {name}",
                req.name, ds.name
            ),
            cfg,
            ds,
            root,
            autostart: false,
            copies,
            new_disks: Vec::new(),
        };
        self.spawn_build("vm.clone", caller, build, reservation, Some(guard))
    }

    fn spawn_build(
        &self,
        kind: &str,
        caller: &Caller,
        build: Build,
        reservation: Reservation,
        guard: Option<BusyGuard>,
    ) -> Result<Task> {
        let target = format!("vm:{}", build.cfg.name);
        let user = caller.user.clone();
        self.spawn_task(kind, Some(target.clone()), &caller.user, move |ctx| {
            let _reservation = reservation;
            let _guard = guard;
            let result = build_vm(ctx, &build, &user);
            if let Err(e) = &result {
                ctx.host.event(
                    NewEvent::info(
                        "vm.create-failed",
                        &format!("Creating VM {} failed: {e}", build.cfg.name),
                    )
                    .severity(Severity::Error)
                    .user(Some(&user))
                    .target(&target),
                );
            }
            result
        })
    }
}

/// Copies files into `dir` with progress from `base` to 99 percent of
/// `total` bytes (`done` counts what was done before).
pub(crate) fn copy_files(
    ctx: &TaskCtx,
    copies: &[(PathBuf, String)],
    dir: &Path,
    done: &mut u64,
    total: u64,
) -> Result<()> {
    let total = total.max(1);
    for (src, name) in copies {
        let base = *done;
        let mut last_pct = 255u8;
        let n = fsutil::copy_with_progress(src, &dir.join(name), &mut |copied| {
            let pct = ((base + copied).min(total) * 99 / total) as u8;
            if pct != last_pct {
                last_pct = pct;
                ctx.progress(pct);
            }
        })
        .map_err(|e| CoreError::io(format!("Copying {} to {name}", src.display()), &e))?;
        *done += n;
    }
    Ok(())
}

fn build_vm(ctx: &TaskCtx, b: &Build, user: &str) -> Result<()> {
    let name = &b.cfg.name;
    let tmp = b.root.join(format!(".{name}{CREATING}"));
    fs::create_dir(&tmp).map_err(|e| CoreError::io(format!("Creating {}", tmp.display()), &e))?;
    let files = (|| {
        let mut total: u64 = b.new_disks.len() as u64 * QCOW2_WEIGHT;
        for (src, _) in &b.copies {
            total += fs::metadata(src).map(|m| m.len()).unwrap_or(0);
        }
        let mut done = 0;
        copy_files(ctx, &b.copies, &tmp, &mut done, total)?;
        for (file, size) in &b.new_disks {
            storage::create_qcow2(&tmp.join(file), *size, None)
                .map_err(|e| CoreError::internal(format!("Creating {file}: {e}")))?;
            done += QCOW2_WEIGHT;
            ctx.progress((done.min(total) * 99 / total.max(1)) as u8);
        }
        vmconfig::write(&vmconfig::path_in(&tmp, name), &b.cfg)?;
        fsync_dir(&tmp).map_err(|e| CoreError::io(tmp.display(), &e))
    })();
    if let Err(e) = files {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let target = format!("vm:{name}");
    let now = ctx.host.now();
    let inserted = ctx.host.store().tx(|tx| {
        let id = insert_row(tx, &b.cfg, &b.ds.name, name, b.autostart, now)?;
        events::insert(
            tx,
            &NewEvent::info(b.event_kind, &b.event_message)
                .user(Some(user))
                .target(&target),
        )?;
        Ok(id)
    });
    let id = match inserted {
        Ok(id) => id,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, b.root.join(name)) {
        let _ = ctx.host.store().tx(|tx| {
            if let Some(row) = super::row_by_id(tx, id)? {
                delete_row(tx, &row)?;
            }
            Ok(())
        });
        let _ = fs::remove_dir_all(&tmp);
        return Err(CoreError::io(
            format!("Moving the folder of {name} into place"),
            &e,
        ));
    }
    let _ = fsync_dir(&b.root);
    Ok(())
}
