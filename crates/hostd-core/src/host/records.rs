//! Tasks, events and datastore files through the facade.

use std::time::Duration;

use hostd_api::{Datastore, Event, FileEntry, Page, Privilege, Task};

use super::{Caller, Host};
use crate::datastores::{self, Upload};
use crate::error::{CoreError, Result};
use crate::events::{self, NewEvent};
use crate::names::{self, Entity};
use crate::tasks;

/// The longest a task wait blocks.
pub const MAX_TASK_WAIT: Duration = Duration::from_secs(600);

impl Host {
    fn sees_host(&self, caller: &Caller) -> Result<bool> {
        Ok(self.session_info(caller)?.contains(&Privilege::SystemView))
    }

    /// All tasks (System.View on the host), else the caller's own.
    pub fn task_list(
        &self,
        caller: &Caller,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page<Task>> {
        let user = if self.sees_host(caller)? {
            None
        } else {
            Some(caller.user.as_str())
        };
        tasks::list(self.store(), before, limit, user)
    }

    pub fn task_get(&self, caller: &Caller, id: u64) -> Result<Task> {
        let task = tasks::get(self.store(), id)?;
        if task.user != caller.user && !self.sees_host(caller)? {
            return Err(CoreError::forbidden(format!(
                "Permission denied: {} is needed on host to see other users' tasks",
                Privilege::SystemView.as_str()
            )));
        }
        Ok(task)
    }

    /// Returns when the task is done, or after `timeout` (at most 10 min)
    /// with the task as it is.
    pub fn task_wait(&self, caller: &Caller, id: u64, timeout: Duration) -> Result<Task> {
        self.task_get(caller, id)?;
        self.inner
            .tasks
            .wait(self.store(), id, timeout.min(MAX_TASK_WAIT))
    }

    /// Events, newest first. Without System.View on the host, only the
    /// events of a VM the caller may see (`target` = `vm:NAME`).
    pub fn event_list(
        &self,
        caller: &Caller,
        before: Option<u64>,
        limit: u32,
        target: Option<&str>,
    ) -> Result<Page<Event>> {
        if !self.sees_host(caller)? {
            let vm = match target.map(Entity::parse) {
                Some(Ok(Entity::Vm(vm))) => vm,
                _ => {
                    return Err(CoreError::forbidden(format!(
                        "Permission denied: {} is needed on host",
                        Privilege::SystemView.as_str()
                    )))
                }
            };
            self.require(caller, Some(&vm), Privilege::SystemView)?;
        }
        if let Some(t) = target {
            if t.len() > 200 || t.chars().any(char::is_control) {
                return Err(CoreError::bad_request("Event target is not valid"));
            }
        }
        events::list(self.store(), before, limit, target)
    }

    pub fn datastore_list(&self, caller: &Caller) -> Result<Vec<Datastore>> {
        self.require(caller, None, Privilege::SystemView)?;
        Ok(datastores::list(self.store())?
            .iter()
            .map(|d| d.info())
            .collect())
    }

    /// Adds a datastore (an existing directory).
    pub fn datastore_add(
        &self,
        caller: &Caller,
        name: &str,
        path: &std::path::Path,
    ) -> Result<Datastore> {
        self.require(caller, None, Privilege::HostConfig)?;
        names::validate("Datastore", name)?;
        let target = format!("datastore:{name}");
        self.store().tx(|tx| {
            datastores::insert(tx, name, path)?;
            events::insert(
                tx,
                &NewEvent::info(
                    "datastore.added",
                    &format!("Datastore {name} added at {}", path.display()),
                )
                .user(Some(&caller.user))
                .target(&target),
            )?;
            Ok(())
        })?;
        Ok(datastores::get(self.store(), name)?.info())
    }

    fn datastore_root(&self, ds: &str) -> Result<(datastores::DatastoreRow, std::path::PathBuf)> {
        names::validate("Datastore", ds)?;
        let row = datastores::get(self.store(), ds)?;
        let root = row.root()?;
        Ok((row, root))
    }

    pub fn datastore_browse(
        &self,
        caller: &Caller,
        ds: &str,
        path: &str,
    ) -> Result<Vec<FileEntry>> {
        self.require(caller, None, Privilege::DatastoreBrowse)?;
        let (_, root) = self.datastore_root(ds)?;
        datastores::browse(&root, path)
    }

    /// Opens a file for download: the file and its size.
    pub fn datastore_open(
        &self,
        caller: &Caller,
        ds: &str,
        path: &str,
    ) -> Result<(std::fs::File, u64)> {
        self.require(caller, None, Privilege::DatastoreBrowse)?;
        let (_, root) = self.datastore_root(ds)?;
        datastores::open(&root, path)
    }

    /// Starts an upload of a new file (Conflict when it exists,
    /// InsufficientSpace when `size` does not fit).
    pub fn datastore_upload(
        &self,
        caller: &Caller,
        ds: &str,
        path: &str,
        size: Option<u64>,
    ) -> Result<Upload> {
        self.require(caller, None, Privilege::DatastoreFiles)?;
        let (row, root) = self.datastore_root(ds)?;
        let up = datastores::upload(&root, path, size, row.free_bytes()?)?;
        let target = format!("datastore:{ds}");
        self.event(
            NewEvent::info(
                "datastore.upload",
                &format!("Upload of {path} to {ds} started"),
            )
            .user(Some(&caller.user))
            .target(&target),
        );
        Ok(up)
    }

    pub fn datastore_mkdir(&self, caller: &Caller, ds: &str, path: &str) -> Result<()> {
        self.require(caller, None, Privilege::DatastoreFiles)?;
        let (_, root) = self.datastore_root(ds)?;
        datastores::mkdir(&root, path)?;
        let target = format!("datastore:{ds}");
        self.event(
            NewEvent::info("datastore.mkdir", &format!("Folder {path} created in {ds}"))
                .user(Some(&caller.user))
                .target(&target),
        );
        Ok(())
    }

    /// Removes a file or folder; refuses the files of registered VMs.
    pub fn datastore_remove(&self, caller: &Caller, ds: &str, path: &str) -> Result<()> {
        self.require(caller, None, Privilege::DatastoreFiles)?;
        let (row, root) = self.datastore_root(ds)?;
        let protected = self.vm_folders_on(&row)?;
        datastores::remove(&root, path, &protected)?;
        let target = format!("datastore:{ds}");
        self.event(
            NewEvent::info("datastore.removed", &format!("{path} removed from {ds}"))
                .user(Some(&caller.user))
                .target(&target),
        );
        Ok(())
    }
}
