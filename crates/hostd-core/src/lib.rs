//! The host daemon's core: inventory, datastores, VM supervisor, tasks,
//! events, users and roles. Synchronous Rust, no HTTP: keeld calls the
//! [`Host`] facade from blocking threads.

// Unsafe code only in the small modules that call libc (each allows it
// with `// SAFETY:` comments); everything else is safe Rust.
#![deny(unsafe_code)]

mod auth;
mod backend;
mod datastores;
mod error;
mod events;
mod fsutil;
mod host;
mod hostinfo;
mod metrics;
mod names;
mod network;
mod power;
mod store;
pub mod supervisor;
mod sys;
mod tasks;
mod vmconfig;
mod vms;

pub use backend::{ConsoleHandle, ExitReason, ProcStats, RunInfo, VmExit};
pub use datastores::Upload;
pub use error::{CoreError, ErrorKind, Result};
pub use host::{Caller, Host, HostOptions, Opened, ADMIN_USER, SYSTEM_USER};
pub use hostd_api;

/// The checks of client input that come before anything touches the disk
/// (public for the fuzz targets).
pub mod input {
    pub use crate::datastores::{parse_path, PathError};
    pub use crate::names::{validate, Entity, NameError};
}
