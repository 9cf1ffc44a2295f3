//! COM1: a 16550A UART built on `vm_superio::Serial`.
//!
//! The device is inserted at the COM1 base (8 ports). Offset 0..8 are the
//! usual 16550 registers (RBR/THR, IER, IIR, LCR, MCR, LSR, MSR, SCR, with
//! the divisor latch behind LCR.DLAB). Output bytes go to a host writer;
//! input bytes are pushed by the VMM into a 64-byte receive FIFO.
//!
//! The interrupt is the edge-triggered ISA IRQ 4: every time vm-superio
//! raises an interrupt condition (THR empty, received data) the line is
//! pulsed.

use std::io::Write;
use std::sync::Arc;

use vm_superio::serial::{Error as SuperioError, NoEvents};
use vm_superio::Trigger;

use crate::{BusDevice, IrqLine};

/// The number of ports the UART occupies.
pub const SERIAL_PORT_COUNT: u64 = 8;

/// Pulses an [`IrqLine`] for vm-superio.
struct IrqTrigger(Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.pulse();
        Ok(())
    }
}

type Uart = vm_superio::Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>;

/// A 16550A UART whose output goes to a host writer.
pub struct Serial {
    uart: Uart,
    /// Output bytes the writer refused (closed pipe, socket gone, ...).
    lost_bytes: u64,
}

impl Serial {
    /// A UART that pulses `irq` on interrupts and writes guest output to
    /// `out` (flushed after every byte).
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Serial {
        Serial {
            uart: vm_superio::Serial::new(IrqTrigger(irq), out),
            lost_bytes: 0,
        }
    }

    /// Pushes guest-bound input into the receive FIFO and returns how many
    /// bytes fitted (0 when the FIFO is full or the UART is in loopback).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.uart.fifo_capacity());
        if n == 0 {
            return 0;
        }
        // The trigger is infallible and we never offer more than fits, so
        // the only error left (a full FIFO) cannot happen; count 0 anyway.
        self.uart.enqueue_raw_bytes(&bytes[..n]).unwrap_or(0)
    }

    /// How many bytes the receive FIFO can take now.
    pub fn input_space(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// How many output bytes were dropped because the writer failed.
    pub fn lost_output_bytes(&self) -> u64 {
        self.lost_bytes
    }

    /// The writer guest output goes to.
    pub fn writer_mut(&mut self) -> &mut (dyn Write + Send) {
        self.uart.writer_mut().as_mut()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let off = offset.saturating_add(i as u64);
            *byte = match u8::try_from(off) {
                Ok(reg) if off < SERIAL_PORT_COUNT => self.uart.read(reg),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let off = offset.saturating_add(i as u64);
            let Ok(reg) = u8::try_from(off) else { continue };
            if off >= SERIAL_PORT_COUNT {
                continue;
            }
            match self.uart.write(reg, value) {
                Ok(()) => {}
                // The host side of the console went away: the guest keeps
                // running and its output is dropped.
                Err(SuperioError::IOError(_)) => self.lost_bytes += 1,
                Err(SuperioError::Trigger(never)) => match never {},
                Err(SuperioError::FullFifo) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const RBR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    #[derive(Default)]
    struct CountingIrq {
        pulses: AtomicUsize,
    }
    impl IrqLine for CountingIrq {
        fn set_level(&self, _high: bool) {}
        fn pulse(&self) {
            self.pulses.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct BrokenPipe;
    impl Write for BrokenPipe {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn serial() -> (Serial, Arc<CountingIrq>, SharedBuf) {
        let irq = Arc::new(CountingIrq::default());
        let out = SharedBuf::default();
        let s = Serial::new(irq.clone(), Box::new(out.clone()));
        (s, irq, out)
    }

    fn read8(s: &mut Serial, off: u64) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut s, _, out) = serial();
        for &b in b"hi\n" {
            s.write(RBR, &[b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hi\n");
        // THR is empty again right away.
        assert_ne!(read8(&mut s, LSR) & 0x20, 0);
    }

    #[test]
    fn input_is_read_back_with_data_ready() {
        let (mut s, _, _) = serial();
        assert_eq!(read8(&mut s, LSR) & 0x01, 0);
        assert_eq!(s.enqueue_input(b"ab"), 2);
        assert_eq!(read8(&mut s, LSR) & 0x01, 1);
        assert_eq!(read8(&mut s, RBR), b'a');
        assert_eq!(read8(&mut s, LSR) & 0x01, 1);
        assert_eq!(read8(&mut s, RBR), b'b');
        assert_eq!(read8(&mut s, LSR) & 0x01, 0);
    }

    #[test]
    fn interrupts_pulse_only_when_enabled() {
        let (mut s, irq, _) = serial();
        s.enqueue_input(b"x");
        s.write(RBR, b"y");
        assert_eq!(irq.pulses.load(Ordering::SeqCst), 0);

        // Enabling "received data available" with data pending interrupts
        // at once; IIR names the cause.
        s.write(IER, &[0x01]);
        assert_eq!(irq.pulses.load(Ordering::SeqCst), 1);
        assert_eq!(read8(&mut s, IIR) & 0x0f, 0x04);
        read8(&mut s, RBR);

        // New input pulses again.
        s.enqueue_input(b"z");
        assert_eq!(irq.pulses.load(Ordering::SeqCst), 2);
        read8(&mut s, RBR);

        // THR-empty interrupts on enable and after each output byte.
        s.write(IER, &[0x02]);
        assert_eq!(irq.pulses.load(Ordering::SeqCst), 3);
        assert_eq!(read8(&mut s, IIR) & 0x0f, 0x02);
        s.write(RBR, b"!");
        assert_eq!(irq.pulses.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn full_fifo_accepts_partially() {
        let (mut s, _, _) = serial();
        assert_eq!(s.input_space(), 64);
        assert_eq!(s.enqueue_input(&[b'a'; 60]), 60);
        assert_eq!(s.input_space(), 4);
        assert_eq!(s.enqueue_input(&[b'b'; 10]), 4);
        assert_eq!(s.input_space(), 0);
        assert_eq!(s.enqueue_input(b"c"), 0);
        assert_eq!(s.enqueue_input(b""), 0);
        read8(&mut s, RBR);
        assert_eq!(s.input_space(), 1);
    }

    #[test]
    fn writer_errors_are_swallowed() {
        let irq = Arc::new(CountingIrq::default());
        let mut s = Serial::new(irq.clone(), Box::new(BrokenPipe));
        s.write(IER, &[0x02]);
        read8(&mut s, IIR);
        let before = irq.pulses.load(Ordering::SeqCst);
        for &b in b"lost" {
            s.write(RBR, &[b]);
        }
        assert_eq!(s.lost_output_bytes(), 4);
        // The UART keeps working: THR empty, interrupts still flow.
        assert_ne!(read8(&mut s, LSR) & 0x20, 0);
        assert!(irq.pulses.load(Ordering::SeqCst) > before);
    }

    #[test]
    fn registers_and_divisor_latch() {
        let (mut s, _, out) = serial();
        s.write(SCR, &[0x5a]);
        assert_eq!(read8(&mut s, SCR), 0x5a);
        s.write(LCR, &[0x83]);
        s.write(RBR, &[0x01]); // divisor low, not output
        assert_eq!(read8(&mut s, RBR), 0x01);
        s.write(LCR, &[0x03]);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn hostile_accesses_do_not_panic() {
        let (mut s, _, _) = serial();
        for off in (0..20).chain([u64::MAX - 3, u64::MAX, 0x100]) {
            for len in 0..=8 {
                let mut buf = vec![0xa5u8; len];
                s.read(off, &mut buf);
                if off >= SERIAL_PORT_COUNT {
                    assert!(buf.iter().all(|&b| b == 0xff));
                }
                s.write(off, &buf);
            }
        }
        s.enqueue_input(&[0; 1000]);
    }
}
