//! vCPU threads: each runs `KVM_RUN` in a loop, routes port and MMIO exits
//! to the buses, and reports the exits that end the VM to the control loop.
//!
//! A vCPU thread is driven by messages ([`VcpuMessage`]: pause, resume,
//! finish) and kicked out of `KVM_RUN` with [`kick_signal`] to read them. It
//! stops when the control loop sets the shared stop flag or sends `Finish`
//! (see [`VcpuHandle::stop`]); it pauses by waiting for `Resume` outside
//! `KVM_RUN` (see [`VcpuHandle::pause`]).
//!
//! ```text
//!   spawn ──▶ Running (KVM_RUN loop) ── Pause + kick ──▶ Paused (waits for a message)
//!               ▲  │                ◀──── Resume ───────────┘      │
//!               │  └─ stop flag / Finish / a VM-ending exit ──▶ Ended ◀── Finish
//! ```

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
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

/// What the control loop tells a vCPU thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuMessage {
    /// Leave `KVM_RUN` and wait (acknowledged once paused).
    Pause,
    /// Run the guest again.
    Resume,
    /// End the thread.
    Finish,
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
    messages: Sender<VcpuMessage>,
    /// One message per pause, once the thread is out of `KVM_RUN`.
    paused: Receiver<()>,
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
    let (messages, inbox) = mpsc::channel();
    let (paused_tx, paused) = mpsc::channel();
    let thread = thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || {
            let mut vcpu = Vcpu {
                id,
                fd,
                pio,
                mmio,
                inbox,
                paused: paused_tx,
            };
            if let Some(why) = vcpu.run(&stop) {
                let _ = events.send(Event::Vcpu(why));
            }
        })?;
    Ok(VcpuHandle {
        thread,
        messages,
        paused,
    })
}

impl VcpuHandle {
    fn kick(&self) {
        if self.thread.is_finished() {
            return;
        }
        // SAFETY: the thread has not been joined (we own its JoinHandle),
        // so the pthread_t is valid; the kick signal has a handler installed.
        unsafe { libc::pthread_kill(self.thread.as_pthread_t(), kick_signal()) };
    }

    /// Tells the thread to end and kicks it until it has left `KVM_RUN` and
    /// ended. Returns false if it did not end within `limit`.
    pub fn stop(self, limit: Duration) -> bool {
        let _ = self.messages.send(VcpuMessage::Finish);
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() {
            if Instant::now() > deadline {
                return false;
            }
            self.kick();
            thread::sleep(Duration::from_millis(2));
        }
        self.thread.join().is_ok()
    }

    /// Takes the vCPU out of `KVM_RUN` and leaves it waiting. Returns once
    /// it is, or false if it did not within `limit` (it pauses later) or has
    /// ended. A kick can land just before the thread enters `KVM_RUN`, so
    /// kicks repeat until the thread answers.
    pub fn pause(&self, limit: Duration) -> bool {
        while self.paused.try_recv().is_ok() {}
        if self.messages.send(VcpuMessage::Pause).is_err() {
            return false;
        }
        let deadline = Instant::now() + limit;
        loop {
            self.kick();
            match self.paused.recv_timeout(Duration::from_millis(2)) {
                Ok(()) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) if Instant::now() > deadline => return false,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Lets a paused vCPU run the guest again (harmless on a running one).
    pub fn resume(&self) -> bool {
        self.messages.send(VcpuMessage::Resume).is_ok()
    }
}

struct Vcpu {
    id: u8,
    fd: VcpuFd,
    pio: Bus,
    mmio: Bus,
    inbox: Receiver<VcpuMessage>,
    paused: Sender<()>,
}

impl Vcpu {
    /// Runs until the VM must stop; returns why, or None if told to stop.
    fn run(&mut self, stop: &AtomicBool) -> Option<VcpuStop> {
        while !stop.load(Ordering::Acquire) {
            if !self.read_messages() {
                return None;
            }
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

    /// Handles the control loop's messages between two `KVM_RUN`s; false
    /// when the thread must end.
    fn read_messages(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(VcpuMessage::Pause) => {
                    if !self.wait_paused() {
                        return false;
                    }
                }
                Ok(VcpuMessage::Resume) => {}
                Ok(VcpuMessage::Finish) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Paused: out of `KVM_RUN`, waits for `Resume` (true) or `Finish`.
    fn wait_paused(&mut self) -> bool {
        let _ = self.paused.send(());
        loop {
            match self.inbox.recv() {
                Ok(VcpuMessage::Resume) => return true,
                Ok(VcpuMessage::Pause) => {
                    let _ = self.paused.send(());
                }
                Ok(VcpuMessage::Finish) | Err(_) => return false,
            }
        }
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
