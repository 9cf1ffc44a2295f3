//! A minimal i8042 keyboard controller, there for the reset line.
//!
//! Inserted at the i8042 data port with five ports: offset 0 is the data
//! port, offset 4 the status (read) and command (write) port; offsets 1..4
//! read 0xff and ignore writes.
//!
//! `vm_superio::I8042Device` only implements the reset command and reads 0
//! everywhere, so Linux's i8042 probe would wait half a second for every
//! reply that never comes. This controller answers the commands Linux sends
//! at boot (self-test, read/write the command byte, disable/enable ports,
//! interface tests) right away, has no keyboard or mouse behind it and
//! raises no interrupts. Linux ends up with a keyboard port whose device
//! never answers, and no AUX port. Command 0xFE (pulse the reset line), or
//! any write of the output port that drops its reset bit, reports
//! [`PowerEvent::Reset`].

use crate::{BusDevice, PowerEvent, PowerHandler};

/// The number of ports the controller occupies (0x60..=0x64).
pub const I8042_PORT_COUNT: u64 = 5;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

// Status register bits.
/// Output buffer full: a byte waits at the data port.
const SR_OBF: u8 = 0x01;
/// System flag: the self-test passed.
const SR_SYS: u8 = 0x04;
/// The last write was a command (port 0x64) rather than data.
const SR_CMD: u8 = 0x08;
/// Keyboard not inhibited by the key lock.
const SR_UNLOCKED: u8 = 0x10;

// Controller configuration byte ("command byte", CTR) bits.
/// Keyboard interrupt enable.
const CTR_KBD_INT: u8 = 0x01;
/// System flag.
const CTR_SYS: u8 = 0x04;
/// Keyboard port disabled.
const CTR_KBD_DIS: u8 = 0x10;
/// Aux (mouse) port disabled.
const CTR_AUX_DIS: u8 = 0x20;
/// Scan-code set 1 translation.
const CTR_XLATE: u8 = 0x40;
/// What a BIOS leaves: keyboard interrupt on, translation on, no mouse.
const CTR_DEFAULT: u8 = CTR_KBD_INT | CTR_SYS | CTR_AUX_DIS | CTR_XLATE;

// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPUT_PORT: u8 = 0xc0;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

/// The self-test passed.
const SELF_TEST_OK: u8 = 0x55;
/// Interface test result "clock line stuck low": there is no mouse port.
const AUX_TEST_ABSENT: u8 = 0x01;
/// Interface test passed.
const KBD_TEST_OK: u8 = 0x00;
/// Output port: bit 0 high = CPU not in reset, bit 1 = A20 enabled.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;
const OUTPUT_PORT_RESET_BIT: u8 = 0x01;

/// Which parameter byte the next write to the data port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    Ctr,
    OutputPort,
    /// A byte that goes into the output buffer as if it came from a port.
    Echo,
    /// A byte for the (absent) mouse.
    AuxByte,
}

/// A keyboard controller with nothing plugged in, whose job is the reset.
pub struct I8042 {
    power: PowerHandler,
    ctr: u8,
    /// The byte waiting at the data port, if any.
    output: Option<u8>,
    /// The last byte the guest read (what the data port returns when empty).
    last_output: u8,
    pending: Pending,
    status_cmd: bool,
    self_tested: bool,
}

impl I8042 {
    /// A controller that reports resets to `power`.
    pub fn new(power: PowerHandler) -> I8042 {
        I8042 {
            power,
            ctr: CTR_DEFAULT,
            output: None,
            last_output: 0,
            pending: Pending::None,
            status_cmd: false,
            self_tested: true,
        }
    }

    fn status(&self) -> u8 {
        let mut sr = SR_UNLOCKED;
        if self.output.is_some() {
            sr |= SR_OBF;
        }
        if self.self_tested || self.ctr & CTR_SYS != 0 {
            sr |= SR_SYS;
        }
        if self.status_cmd {
            sr |= SR_CMD;
        }
        sr
    }

    fn read_data(&mut self) -> u8 {
        if let Some(b) = self.output.take() {
            self.last_output = b;
        }
        self.last_output
    }

    fn reply(&mut self, b: u8) {
        self.output = Some(b);
    }

    fn command(&mut self, cmd: u8) {
        self.status_cmd = true;
        // A new command abandons any reply or parameter still pending.
        self.output = None;
        self.pending = Pending::None;
        match cmd {
            CMD_READ_CTR => self.reply(self.ctr),
            CMD_WRITE_CTR => self.pending = Pending::Ctr,
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DIS,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DIS,
            CMD_AUX_TEST => self.reply(AUX_TEST_ABSENT),
            CMD_SELF_TEST => {
                self.self_tested = true;
                self.reply(SELF_TEST_OK);
            }
            CMD_KBD_TEST => self.reply(KBD_TEST_OK),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DIS,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DIS,
            CMD_READ_INPUT_PORT => self.reply(0x00),
            CMD_READ_OUTPUT_PORT => self.reply(OUTPUT_PORT_DEFAULT),
            CMD_WRITE_OUTPUT_PORT => self.pending = Pending::OutputPort,
            // The byte written comes back as keyboard data. For the AUX
            // loop (Linux's first mouse probe) this is deliberate: without
            // the "aux data" status bit Linux concludes there is no mouse
            // at once instead of waiting for a reply.
            CMD_WRITE_KBD_OUTPUT | CMD_WRITE_AUX_OUTPUT => self.pending = Pending::Echo,
            CMD_WRITE_AUX => self.pending = Pending::AuxByte,
            CMD_PULSE_RESET => (self.power)(PowerEvent::Reset),
            // 0xf0..=0xff pulse the output port lines whose bit is clear;
            // bit 0 is the reset line.
            0xf0..=0xff if cmd & OUTPUT_PORT_RESET_BIT == 0 => (self.power)(PowerEvent::Reset),
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        self.status_cmd = false;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Ctr => self.ctr = value,
            Pending::OutputPort => {
                if value & OUTPUT_PORT_RESET_BIT == 0 {
                    (self.power)(PowerEvent::Reset);
                }
            }
            Pending::Echo => self.reply(value),
            // Bytes for the absent mouse or keyboard are dropped: no device
            // answers them.
            Pending::AuxByte | Pending::None => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match offset.saturating_add(i as u64) {
                DATA_OFFSET => self.read_data(),
                COMMAND_OFFSET => self.status(),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                DATA_OFFSET => self.data(value),
                COMMAND_OFFSET => self.command(value),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn i8042() -> (I8042, Arc<Mutex<Vec<PowerEvent>>>) {
        let events = Arc::new(Mutex::new(vec![]));
        let e = events.clone();
        let dev = I8042::new(Arc::new(move |ev| e.lock().unwrap().push(ev)));
        (dev, events)
    }

    fn status(d: &mut I8042) -> u8 {
        let mut b = [0];
        d.read(COMMAND_OFFSET, &mut b);
        b[0]
    }

    fn cmd(d: &mut I8042, c: u8) {
        d.write(COMMAND_OFFSET, &[c]);
    }

    fn data(d: &mut I8042) -> u8 {
        let mut b = [0];
        d.read(DATA_OFFSET, &mut b);
        b[0]
    }

    /// What Linux's `__i8042_command` does for a command with one reply:
    /// wait for an empty input buffer, write, wait for a full output buffer.
    fn command_with_reply(d: &mut I8042, c: u8) -> u8 {
        assert_eq!(status(d) & 0x02, 0, "input buffer never fills");
        cmd(d, c);
        assert_ne!(status(d) & SR_OBF, 0, "reply to {c:#x} is ready");
        data(d)
    }

    #[test]
    fn pulse_reset_reports_reset() {
        let (mut d, events) = i8042();
        cmd(&mut d, 0xfe);
        assert_eq!(*events.lock().unwrap(), vec![PowerEvent::Reset]);
        // Other commands and the data port do not reset.
        cmd(&mut d, 0xff);
        d.write(DATA_OFFSET, &[0xfe]);
        d.write(1, &[0xfe]);
        assert_eq!(events.lock().unwrap().len(), 1);
        // Writing the output port with the reset bit low resets too.
        cmd(&mut d, CMD_WRITE_OUTPUT_PORT);
        d.write(DATA_OFFSET, &[0x03]);
        assert_eq!(events.lock().unwrap().len(), 1);
        cmd(&mut d, CMD_WRITE_OUTPUT_PORT);
        d.write(DATA_OFFSET, &[0x02]);
        assert_eq!(events.lock().unwrap().len(), 2);
    }

    #[test]
    fn linux_probe_sequence() {
        let (mut d, events) = i8042();
        // i8042_flush: nothing queued.
        assert_eq!(status(&mut d) & SR_OBF, 0);
        // Self-test.
        assert_eq!(command_with_reply(&mut d, CMD_SELF_TEST), 0x55);
        assert_ne!(status(&mut d) & SR_SYS, 0);
        assert_ne!(status(&mut d) & SR_UNLOCKED, 0);
        // Read the CTR twice (stable), write it back changed.
        let ctr = command_with_reply(&mut d, CMD_READ_CTR);
        assert_eq!(command_with_reply(&mut d, CMD_READ_CTR), ctr);
        let new = (ctr | CTR_KBD_DIS) & !CTR_KBD_INT;
        cmd(&mut d, CMD_WRITE_CTR);
        d.write(DATA_OFFSET, &[new]);
        assert_eq!(command_with_reply(&mut d, CMD_READ_CTR), new);
        // AUX loop answers without the aux-data bit: no mouse, no wait.
        cmd(&mut d, CMD_WRITE_AUX_OUTPUT);
        d.write(DATA_OFFSET, &[0x5a]);
        assert_eq!(status(&mut d) & (SR_OBF | 0x20), SR_OBF);
        // The interface test then reports a stuck clock line.
        assert_eq!(command_with_reply(&mut d, CMD_AUX_TEST), AUX_TEST_ABSENT);
        // Disable / enable the ports flips the CTR bits.
        cmd(&mut d, CMD_KBD_DISABLE);
        cmd(&mut d, CMD_AUX_ENABLE);
        let ctr = command_with_reply(&mut d, CMD_READ_CTR);
        assert_eq!(ctr & (CTR_KBD_DIS | CTR_AUX_DIS), CTR_KBD_DIS);
        cmd(&mut d, CMD_KBD_ENABLE);
        cmd(&mut d, CMD_AUX_DISABLE);
        let ctr = command_with_reply(&mut d, CMD_READ_CTR);
        assert_eq!(ctr & (CTR_KBD_DIS | CTR_AUX_DIS), CTR_AUX_DIS);
        // Keyboard bytes go nowhere and produce no reply.
        d.write(DATA_OFFSET, &[0xf2]);
        assert_eq!(status(&mut d) & SR_OBF, 0);
        assert!(events.lock().unwrap().is_empty());
    }

    #[test]
    fn ctr_round_trip() {
        let (mut d, _) = i8042();
        for v in [0x00, 0x47, 0xff, 0x65] {
            cmd(&mut d, CMD_WRITE_CTR);
            assert_ne!(status(&mut d) & SR_CMD, 0);
            d.write(DATA_OFFSET, &[v]);
            assert_eq!(status(&mut d) & SR_CMD, 0);
            assert_eq!(command_with_reply(&mut d, CMD_READ_CTR), v);
        }
        // An empty output buffer reads the last byte again.
        assert_eq!(data(&mut d), 0x65);
        assert_eq!(status(&mut d) & SR_OBF, 0);
    }

    #[test]
    fn hostile_accesses_do_not_panic() {
        let (mut d, _) = i8042();
        for off in (0..8).chain([u64::MAX - 2, u64::MAX]) {
            for len in 0..=8 {
                let mut buf = vec![0u8; len];
                d.read(off, &mut buf);
                if (1..4).contains(&off) && len == 1 {
                    assert_eq!(buf, [0xff]);
                }
                d.write(off, &vec![0x60; len]);
                d.write(off, &vec![0xd1; len]);
            }
        }
    }
}
