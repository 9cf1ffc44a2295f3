//! One boot of a VM: KVM VM → memory → kernel, initrd, ACPI → devices →
//! vCPUs → running. A guest reboot drops the whole `Vm` and builds a new one
//! from the same configuration; only the console and the CMOS (battery-backed
//! on a real PC) outlive it.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arch::boot::{self, BootError, InitrdLocation, LoadedKernel};
use arch::layout::{self, RamRange};
use devices::i8042::I8042;
use devices::pm::Pm;
use devices::rtc::Rtc;
use devices::serial::Serial;
use devices::{Bus, BusDevice, IrqLine, PowerHandler};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::config::VmConfig;
use crate::console::Console;
use crate::device_manager::{AttachContext, Backends, DeviceError, DeviceManager};
use crate::kvm::Hypervisor;
use crate::pci_bus::PciBus;
use crate::state::StateError;
use crate::vcpu::{self, VcpuHandle};
use crate::Event;

/// Errors from building a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Cannot open the {what} {path}")]
    OpenFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The {what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: String },
    #[error("Cannot load the kernel {path}")]
    Kernel {
        path: String,
        #[source]
        source: BootError,
    },
    #[error("Cannot load the initrd {path}")]
    Initrd {
        path: String,
        #[source]
        source: BootError,
    },
    #[error("Cannot write the boot information")]
    Boot(#[source] BootError),
    #[error("Cannot create the ACPI tables")]
    Acpi(#[source] arch::acpi::AcpiError),
    #[error("Cannot set up the boot page tables and GDT")]
    BootTables(#[source] arch::regs::RegsError),
    #[error("Cannot allocate {0} bytes of guest memory")]
    Memory(u64, #[source] vm_memory::mmap::FromRangesError),
    #[error("KVM refused to {what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("Cannot set up vCPU {id}")]
    Vcpu {
        id: u8,
        #[source]
        source: arch::regs::RegsError,
    },
    #[error("Cannot set up the CPUID of vCPU {id}")]
    Cpuid {
        id: u8,
        #[source]
        source: arch::cpuid::CpuidError,
    },
    #[error("Cannot place a device on the I/O bus")]
    Bus(#[source] devices::BusError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("Cannot start a thread")]
    Thread(#[source] std::io::Error),
}

impl VmError {
    /// True when the error is about what the user gave (exit status 2), not
    /// a failure of the host.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            VmError::OpenFile { .. }
                | VmError::NotAFile { .. }
                | VmError::Kernel { .. }
                | VmError::Initrd { .. }
                | VmError::Boot(_)
                | VmError::Memory(..)
        )
    }
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// An interrupt line (GSI) of the in-kernel PIC/IOAPIC.
pub(crate) struct KvmIrq {
    pub vm: Arc<VmFd>,
    pub gsi: u32,
}

impl IrqLine for KvmIrq {
    fn set_level(&self, high: bool) {
        // Fails only if the irqchip is gone, i.e. the VM is being torn down.
        let _ = self.vm.set_irq_line(self.gsi, high);
    }
}

/// A running VM (one boot).
pub struct Vm {
    // Declared first so the vCPU threads are stopped before the fds drop.
    vcpus: Vec<VcpuHandle>,
    stop: Arc<AtomicBool>,
    pm: Arc<Mutex<Pm>>,
    // Dropped after the vCPUs stop: resets the devices, ending their workers.
    devices: DeviceManager,
    _memory: GuestMemoryMmap,
    _vm_fd: Arc<VmFd>,
}

/// Opens a file the user named, with errors that say which and why.
fn open_input(what: &'static str, path: &Path) -> Result<(File, u64), VmError> {
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| VmError::OpenFile {
        what,
        path: shown(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| VmError::OpenFile {
        what,
        path: shown(),
        source,
    })?;
    if !meta.is_file() {
        return Err(VmError::NotAFile {
            what,
            path: shown(),
        });
    }
    Ok((file, meta.len()))
}

/// Checks that the kernel and initrd can be opened, before anything else is
/// set up.
pub fn check_inputs(config: &VmConfig) -> Result<(), VmError> {
    open_input("kernel", &config.kernel)?;
    if let Some(initrd) = &config.initrd {
        open_input("initrd", initrd)?;
    }
    Ok(())
}

impl Vm {
    /// Builds the VM for one boot and starts its vCPUs.
    pub fn boot(
        hv: &Hypervisor,
        config: &VmConfig,
        backends: &Backends,
        console: &Console,
        rtc: Arc<Mutex<Rtc>>,
        events: Sender<Event>,
    ) -> Result<Vm, VmError> {
        let vm_fd = Arc::new(create_vm(hv)?);
        let ram = layout::ram_ranges(config.memory);
        let memory = create_memory(&vm_fd, &ram, config.memory)?;

        let kernel = load_kernel(&memory, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(load_initrd(&memory, &kernel, &ram, path)?),
            None => None,
        };
        let acpi = arch::acpi::AcpiConfig {
            num_cpus: config.cpus,
        };
        let rsdp = arch::acpi::create_acpi_tables(&memory, &acpi).map_err(VmError::Acpi)?;
        boot::configure_boot(&memory, &kernel, &config.cmdline, initrd, rsdp, &ram)
            .map_err(VmError::Boot)?;
        arch::regs::write_boot_tables(&memory).map_err(VmError::BootTables)?;

        let power: PowerHandler = {
            let events = Mutex::new(events.clone());
            Arc::new(move |ev| {
                let _ = events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send(Event::Power(ev));
            })
        };
        let irq = |gsi| -> Arc<dyn IrqLine> {
            Arc::new(KvmIrq {
                vm: vm_fd.clone(),
                gsi,
            })
        };
        let serial = Arc::new(Mutex::new(Serial::new(
            irq(layout::COM1_IRQ),
            console.writer(),
        )));
        let pm = Arc::new(Mutex::new(Pm::new(irq(layout::SCI_IRQ), power.clone())));
        let i8042 = Arc::new(Mutex::new(I8042::new(power)));
        let mut pio = Bus::new();
        let mut insert = |base: u16, len: u64, dev: Arc<Mutex<dyn BusDevice>>| {
            pio.insert(u64::from(base), len, dev).map_err(VmError::Bus)
        };
        insert(layout::COM1_PORT, 8, serial.clone())?;
        insert(layout::RTC_PORT, 2, rtc)?;
        insert(layout::I8042_DATA_PORT, 5, i8042)?;
        insert(layout::PM1A_EVT_PORT, 12, pm.clone())?;
        let mut mmio = Bus::new();
        // PCI bus 0: host bridge at 00:00.0, CF8/CFC and the I/O BARs on the
        // port bus, ECAM and memory BARs on MMIO; then the virtio devices.
        let pci = PciBus::attach(vm_fd.clone(), &mut pio, &mut mmio).map_err(VmError::Bus)?;
        let mut devices = DeviceManager::new(pci);
        let ctx = AttachContext {
            mem: &memory,
            vm: &vm_fd,
            backends,
        };
        devices.attach_all(config, &ctx)?;

        let stop = Arc::new(AtomicBool::new(false));
        let mut vm = Vm {
            vcpus: Vec::new(),
            stop: stop.clone(),
            pm,
            devices,
            _memory: memory,
            _vm_fd: vm_fd.clone(),
        };
        for id in 0..config.cpus {
            let fd = create_vcpu(hv, &vm_fd, id, config.cpus, &kernel)?;
            let handle = vcpu::spawn(
                id,
                fd,
                pio.clone(),
                mmio.clone(),
                stop.clone(),
                events.clone(),
            )
            .map_err(VmError::Thread)?;
            vm.vcpus.push(handle);
        }
        console.attach(serial);
        Ok(vm)
    }

    /// Presses the ACPI power button.
    pub fn press_power_button(&self) {
        self.pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
    }

    /// Pauses the vCPUs (each within `limit`), then the device workers; on
    /// failure, what was paused runs again.
    pub fn pause(&self, limit: Duration) -> Result<(), StateError> {
        for (i, v) in self.vcpus.iter().enumerate() {
            if !v.pause(limit) {
                self.vcpus[..=i].iter().for_each(|v| {
                    v.resume();
                });
                return Err(StateError::VcpuTimeout(limit));
            }
        }
        if let Err(e) = self.devices.pause_all() {
            let _ = self.devices.resume_all();
            self.vcpus.iter().for_each(|v| {
                v.resume();
            });
            return Err(StateError::Device {
                what: "pause",
                reason: e,
            });
        }
        Ok(())
    }

    /// Resumes the device workers, then the vCPUs.
    pub fn resume(&self) -> Result<(), StateError> {
        let devices = self.devices.resume_all();
        self.vcpus.iter().for_each(|v| {
            v.resume();
        });
        devices.map_err(|reason| StateError::Device {
            what: "resume",
            reason,
        })
    }

    /// The balloon's control handle, when the VM has one.
    pub fn balloon(&self) -> Option<&virtio::balloon::BalloonHandle> {
        self.devices.balloon()
    }

    /// Stops every vCPU. Returns false if one would not leave KVM_RUN.
    pub fn stop(mut self) -> bool {
        self.stop.store(true, Ordering::Release);
        // Stop every vCPU even when one of them is stuck.
        let stopped: Vec<bool> = self
            .vcpus
            .drain(..)
            .map(|v| v.stop(Duration::from_secs(2)))
            .collect();
        stopped.into_iter().all(|ok| ok)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for v in self.vcpus.drain(..) {
            v.stop(Duration::from_secs(2));
        }
    }
}

/// A KVM VM with the in-kernel PIC, IOAPIC and PIT.
fn create_vm(hv: &Hypervisor) -> Result<VmFd, VmError> {
    let vm = hv.kvm.create_vm().map_err(kvm_err("create a VM"))?;
    vm.set_tss_address(layout::KVM_TSS_ADDRESS)
        .map_err(kvm_err("set the TSS address"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("create the interrupt controllers"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("create the PIT"))?;
    Ok(vm)
}

/// Allocates guest RAM around the MMIO hole and hands it to KVM.
fn create_memory(vm: &VmFd, ram: &[RamRange], total: u64) -> Result<GuestMemoryMmap, VmError> {
    let ranges: Vec<_> = ram
        .iter()
        .map(|r| (vm_memory::GuestAddress(r.start), r.size as usize))
        .collect();
    let memory = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory(total, e))?;
    for (slot, region) in memory.iter().enumerate() {
        let region_def = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of exactly `memory_size`
        // bytes owned by `memory`, which the `Vm` keeps until the VM fd and
        // every vCPU are gone.
        unsafe { vm.set_user_memory_region(region_def) }.map_err(kvm_err("map guest memory"))?;
    }
    Ok(memory)
}

fn load_kernel(memory: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, VmError> {
    let (mut file, _) = open_input("kernel", path)?;
    boot::load_kernel(memory, &mut file).map_err(|source| VmError::Kernel {
        path: path.display().to_string(),
        source,
    })
}

fn load_initrd(
    memory: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    ram: &[RamRange],
    path: &Path,
) -> Result<InitrdLocation, VmError> {
    let (mut file, size) = open_input("initrd", path)?;
    boot::load_initrd(memory, kernel, ram, &mut file, size).map_err(|source| VmError::Initrd {
        path: path.display().to_string(),
        source,
    })
}

/// Creates vCPU `id` with its CPUID, MSRs, FPU and LAPIC; the boot vCPU also
/// gets the registers its boot protocol needs. The others wait for INIT/SIPI
/// in the in-kernel LAPIC.
fn create_vcpu(
    hv: &Hypervisor,
    vm: &VmFd,
    id: u8,
    cpus: u8,
    kernel: &LoadedKernel,
) -> Result<kvm_ioctls::VcpuFd, VmError> {
    let fd = vm
        .create_vcpu(u64::from(id))
        .map_err(kvm_err("create a vCPU"))?;
    let mut cpuid = hv.supported_cpuid.clone();
    arch::cpuid::setup_cpuid(&mut cpuid, id, cpus)
        .map_err(|source| VmError::Cpuid { id, source })?;
    if hv.tsc_deadline {
        arch::cpuid::enable_tsc_deadline(&mut cpuid);
    }
    fd.set_cpuid2(&cpuid).map_err(kvm_err("set the CPUID"))?;
    let vcpu_err = |source| VmError::Vcpu { id, source };
    arch::regs::setup_msrs(&fd).map_err(vcpu_err)?;
    arch::regs::setup_fpu(&fd).map_err(vcpu_err)?;
    arch::regs::setup_lapic(&fd).map_err(vcpu_err)?;
    if id == 0 {
        arch::regs::setup_sregs(&fd, kernel.protocol).map_err(vcpu_err)?;
        arch::regs::setup_regs(&fd, kernel.protocol, kernel.entry.raw_value()).map_err(vcpu_err)?;
    }
    Ok(fd)
}
