//! vCPU threads: each runs `KVM_RUN` in a loop, routes port and MMIO exits
//! to the buses, and reports the exits that end the VM to the control loop.
//!
//! A vCPU thread stops when the control loop sets the shared stop flag and
//! kicks it out of `KVM_RUN` with [`KICK_SIGNAL`] (see [`VcpuHandle::stop`]).

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use devices::Bus;
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::Event;

/// KVM_SYSTEM_EVENT types (linux/kvm.h).
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// Why a vCPU stopped the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked for power off.
    PowerOff,
    /// The guest asked for a reset.
    Reset,
    /// Triple fault (KVM_EXIT_SHUTDOWN) or a guest-reported crash.
    Crashed { vcpu: u8, reason: String },
    /// KVM could not run the vCPU (internal error, entry failure, emulation
    /// failure) or an exit Keel does not handle.
    Failed { vcpu: u8, reason: String },
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Installs the no-op handler for the kick signal once per process: its only
/// job is to make `KVM_RUN` return EINTR.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), noop);
    });
    result
}

/// A running vCPU thread.
pub struct VcpuHandle {
    thread: JoinHandle<()>,
}

/// Starts vCPU `id` on its own thread (`vcpu<id>`).
pub fn spawn(
    id: u8,
    fd: VcpuFd,
    pio: Bus,
    mmio: Bus,
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
) -> std::io::Result<VcpuHandle> {
    let thread = thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            let mut vcpu = Vcpu { id, fd, pio, mmio };
            if let Some(why) = vcpu.run(&stop) {
                let _ = events.send(Event::Vcpu(why));
            }
        })?;
    Ok(VcpuHandle { thread })
}

impl VcpuHandle {
    /// Kicks the thread until it has left `KVM_RUN` and ended (the stop flag
    /// must already be set). Returns false if it did not end within `limit`.
    pub fn stop(self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let tid = self.thread.as_pthread_t();
        while !self.thread.is_finished() {
            if Instant::now() > deadline {
                return false;
            }
            // SAFETY: the thread has not been joined, so `tid` is valid;
            // the kick signal has a handler installed.
            unsafe { libc::pthread_kill(tid, kick_signal()) };
            thread::sleep(Duration::from_millis(2));
        }
        self.thread.join().is_ok()
    }
}

struct Vcpu {
    id: u8,
    fd: VcpuFd,
    pio: Bus,
    mmio: Bus,
}

impl Vcpu {
    /// Runs until the VM must stop; returns why, or None if told to stop.
    fn run(&mut self, stop: &AtomicBool) -> Option<VcpuStop> {
        while !stop.load(Ordering::Acquire) {
            let exit = match self.fd.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(e) => return Some(self.failed(format!("KVM_RUN failed: {e}"))),
            };
            match exit {
                VcpuExit::IoIn(port, data) => {
                    if !self.pio.read(u64::from(port), data) {
                        data.fill(0xff);
                    }
                }
                VcpuExit::IoOut(port, data) => {
                    self.pio.write(u64::from(port), data);
                }
                VcpuExit::MmioRead(addr, data) => {
                    if !self.mmio.read(addr, data) {
                        data.fill(0xff);
                    }
                }
                VcpuExit::MmioWrite(addr, data) => {
                    self.mmio.write(addr, data);
                }
                // With the in-kernel LAPIC a halted vCPU waits in KVM; an
                // exit here is spurious.
                VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
                VcpuExit::Shutdown => {
                    let reason = format!("triple fault\n{}", self.dump());
                    return Some(VcpuStop::Crashed {
                        vcpu: self.id,
                        reason,
                    });
                }
                VcpuExit::SystemEvent(kind, _) => match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => return Some(VcpuStop::PowerOff),
                    KVM_SYSTEM_EVENT_RESET => return Some(VcpuStop::Reset),
                    KVM_SYSTEM_EVENT_CRASH => {
                        let reason = format!("guest reported a crash\n{}", self.dump());
                        return Some(VcpuStop::Crashed {
                            vcpu: self.id,
                            reason,
                        });
                    }
                    other => return Some(self.failed(format!("unknown system event {other}"))),
                },
                VcpuExit::FailEntry(reason, cpu) => {
                    return Some(self.failed(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x} on host CPU {cpu})"
                )))
                }
                VcpuExit::InternalError => {
                    let sub = self.fd.get_kvm_run();
                    // SAFETY: for KVM_EXIT_INTERNAL_ERROR the `internal`
                    // member of the exit union is the one KVM filled in.
                    let suberror = unsafe { sub.__bindgen_anon_1.internal.suberror };
                    let what = match suberror {
                        1 => "emulation failure",
                        2 => "simultaneous exceptions",
                        3 => "delivery event failure",
                        _ => "internal error",
                    };
                    return Some(self.failed(format!("KVM internal error {suberror} ({what})")));
                }
                other => {
                    let name = format!("{other:?}");
                    return Some(self.failed(format!("unexpected exit {name}")));
                }
            }
        }
        None
    }

    fn failed(&self, what: String) -> VcpuStop {
        VcpuStop::Failed {
            vcpu: self.id,
            reason: format!("{what}\n{}", self.dump()),
        }
    }

    /// The registers, for crash reports.
    fn dump(&self) -> String {
        let mut out = String::new();
        match self.fd.get_regs() {
            Ok(r) => out.push_str(&format!(
                "  rip={:#018x} rsp={:#018x} rflags={:#x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rbp={:#018x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
            )),
            Err(e) => out.push_str(&format!("  (registers unavailable: {e})")),
        }
        if let Ok(s) = self.fd.get_sregs() {
            out.push_str(&format!(
                "\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}\n  cs={:#x} (base {:#x}, l={} db={}) idt={:#x}+{:#x} gdt={:#x}+{:#x}",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.base, s.cs.l, s.cs.db,
                s.idt.base, s.idt.limit, s.gdt.base, s.gdt.limit
            ));
        }
        out
    }
}
