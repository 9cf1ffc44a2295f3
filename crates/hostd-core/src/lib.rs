//! The host daemon's core: inventory, datastores, VM supervisor, tasks,
//! events, users and roles. Synchronous Rust, no HTTP: keeld calls the
//! [`Host`] facade from blocking threads.

// Unsafe code only in the small modules that call libc (each allows it
// with `// SAFETY:` comments); everything else is safe Rust.
#![deny(unsafe_code)]

mod auth;
mod datastores;
mod error;
mod events;
mod fsutil;
mod names;
mod store;
mod sys;
mod tasks;
mod vmconfig;

pub use error::{CoreError, ErrorKind, Result};
