//! One virtual machine.
