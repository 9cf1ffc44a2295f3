//! Project tasks for Keel: test guests, the KVM rig, payload guests, and the
//! `test`/`run` commands. The `xtask` binary is a thin CLI over this library;
//! the end-to-end tests (`e2e`) link it to build guests and drive the rig.

pub mod apt;
pub mod bench;
pub mod cpio;
pub mod demo;
pub mod elf;
pub mod fuzz;
pub mod guest;
pub mod host;
pub mod kernel;
pub mod paths;
pub mod payload;
pub mod proc;
pub mod rig;
pub mod tasks;
pub mod tools;
pub mod ui;
pub mod util;
