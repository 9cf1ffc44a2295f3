//! The x86_64 board Keel emulates: memory layout, boot protocols, ACPI tables,
//! CPUID and the initial register state of the vCPUs.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod regs;
