//! The ACPI fixed-hardware power-management block: PM1a event and control
//! registers and the PM timer, in one 12-byte I/O range.
//!
//! ```text
//! offset 0..2   PM1_STS   write 1 to clear
//! offset 2..4   PM1_EN
//! offset 4..6   PM1_CNT   SCI_EN always 1; SLP_TYP, SLP_EN (write-only)
//! offset 6..8   (reserved, reads 0)
//! offset 8..12  PM_TMR    24-bit, 3.579545 MHz, read-only
//! ```
//!
//! There is no SMI command port: the board is always in ACPI mode. Writing
//! SLP_EN with SLP_TYP = [`S5_SLEEP_TYPE`] reports
//! [`PowerEvent::PowerOff`]; other sleep states are not supported and
//! "wake up" at once (WAK_STS is set) so a guest that tries one does not
//! wait forever.
//!
//! The SCI is a level-triggered ISA interrupt, high while an enabled status
//! bit (power button, timer carry) is set. TMR_STS is set when bit 23 of
//! the timer flips; it is noticed when the guest touches the block (there
//! is no host timer behind it), which is enough for polling guests.

use std::sync::Arc;
use std::time::Instant;

use crate::{BusDevice, IrqLine, PowerEvent, PowerHandler};

/// The number of ports the block occupies.
pub const PM_PORT_COUNT: u64 = 12;

/// The sleep type the DSDT's `\_S5` names.
pub const S5_SLEEP_TYPE: u16 = 5;

/// The PM timer's frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const STS_OFFSET: usize = 0;
const EN_OFFSET: usize = 2;
const CNT_OFFSET: usize = 4;
const TMR_OFFSET: usize = 8;

/// PM1_STS / PM1_EN: timer carry.
const TMR_BIT: u16 = 1 << 0;
/// PM1_STS / PM1_EN: power button.
const PWRBTN_BIT: u16 = 1 << 8;
/// PM1_STS: woke from a sleep state.
const WAK_STS: u16 = 1 << 15;
/// The status bits that drive the SCI (when enabled).
const SCI_SOURCES: u16 = TMR_BIT | PWRBTN_BIT;

/// PM1_CNT: SCI (not SMI) interrupts, i.e. ACPI mode.
const SCI_EN: u16 = 1 << 0;
/// PM1_CNT: global release (write-only, for firmware we do not have).
const GBL_RLS: u16 = 1 << 2;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
/// PM1_CNT: enter the sleep state in SLP_TYP (write-only).
const SLP_EN: u16 = 1 << 13;

const TMR_MASK: u32 = 0x00ff_ffff;

/// Nanoseconds of a monotonic clock.
pub type MonotonicClock = Box<dyn Fn() -> u64 + Send>;

/// The PM1a event/control block and PM timer.
pub struct Pm {
    irq: Arc<dyn IrqLine>,
    power: PowerHandler,
    sts: u16,
    en: u16,
    cnt: u16,
    /// The level last driven on the SCI.
    sci: bool,
    /// Timer ticks >> 23 when last looked at (for TMR_STS).
    tmr_epoch: u64,
    clock: MonotonicClock,
}

impl Pm {
    /// A PM block whose SCI is `irq` and whose S5 requests go to `power`;
    /// the timer counts from 0 now (host `CLOCK_MONOTONIC`).
    pub fn new(irq: Arc<dyn IrqLine>, power: PowerHandler) -> Pm {
        let start = Instant::now();
        let clock = Box::new(move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Pm::with_clock(irq, power, clock)
    }

    /// Like [`Pm::new`] with another clock (nanoseconds since creation).
    pub fn with_clock(irq: Arc<dyn IrqLine>, power: PowerHandler, clock: MonotonicClock) -> Pm {
        let mut pm = Pm {
            irq,
            power,
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            sci: false,
            tmr_epoch: 0,
            clock,
        };
        pm.tmr_epoch = pm.ticks() >> 23;
        pm
    }

    /// Presses the power button: sets PWRBTN_STS (the guest's ACPI driver
    /// then starts an orderly shutdown).
    pub fn press_power_button(&mut self) {
        self.sts |= PWRBTN_BIT;
        self.update_sci(true);
    }

    /// Whether the SCI is asserted.
    pub fn sci_level(&self) -> bool {
        self.sci
    }

    /// Timer ticks since creation (not truncated to 24 bits).
    fn ticks(&self) -> u64 {
        let ns = u128::from((self.clock)());
        (ns * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64
    }

    /// Samples the timer, setting TMR_STS when bit 23 flipped since the
    /// last look. Returns the 24-bit counter.
    fn sample_timer(&mut self) -> u32 {
        let ticks = self.ticks();
        let epoch = ticks >> 23;
        if epoch != self.tmr_epoch {
            self.tmr_epoch = epoch;
            self.sts |= TMR_BIT;
        }
        (ticks as u32) & TMR_MASK
    }

    /// Drives the SCI from the status and enable bits; `force` drives it
    /// even when the level did not change.
    fn update_sci(&mut self, force: bool) {
        let level = self.sts & self.en & SCI_SOURCES != 0;
        if force || level != self.sci {
            self.sci = level;
            self.irq.set_level(level);
        }
    }

    /// The register file as the guest sees it.
    fn snapshot(&mut self) -> [u8; PM_PORT_COUNT as usize] {
        let tmr = self.sample_timer();
        let mut regs = [0u8; PM_PORT_COUNT as usize];
        regs[STS_OFFSET..STS_OFFSET + 2].copy_from_slice(&self.sts.to_le_bytes());
        regs[EN_OFFSET..EN_OFFSET + 2].copy_from_slice(&self.en.to_le_bytes());
        regs[CNT_OFFSET..CNT_OFFSET + 2].copy_from_slice(&(self.cnt | SCI_EN).to_le_bytes());
        regs[TMR_OFFSET..TMR_OFFSET + 4].copy_from_slice(&tmr.to_le_bytes());
        regs
    }

    fn write_cnt(&mut self, value: u16, mask: u16) {
        let written = value & mask;
        self.cnt = ((self.cnt & !mask) | written) & !(SLP_EN | GBL_RLS);
        if written & SLP_EN != 0 {
            let slp_typ = (self.cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
            if slp_typ == S5_SLEEP_TYPE {
                (self.power)(PowerEvent::PowerOff);
            } else {
                // Unsupported sleep state: wake up at once.
                self.sts |= WAK_STS;
            }
        }
    }
}

impl BusDevice for Pm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let regs = self.snapshot();
        for (i, byte) in data.iter_mut().enumerate() {
            let off = offset.saturating_add(i as u64);
            *byte = usize::try_from(off)
                .ok()
                .and_then(|o| regs.get(o).copied())
                .unwrap_or(0xff);
        }
        // The timer may have set TMR_STS.
        self.update_sci(false);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.sample_timer();
        // Gather the bytes of each 16-bit register the access covers, so a
        // 16-bit write acts once and byte writes act on their half.
        let mut value = [0u16; 3];
        let mut mask = [0u16; 3];
        for (i, &b) in data.iter().enumerate() {
            let off = offset.saturating_add(i as u64);
            if off >= TMR_OFFSET as u64 {
                continue;
            }
            let (reg, shift) = ((off / 2) as usize, (off % 2) * 8);
            if reg < 3 {
                value[reg] |= u16::from(b) << shift;
                mask[reg] |= 0xff << shift;
            }
        }
        // PM1_STS: write 1 to clear.
        self.sts &= !(value[0] & mask[0]);
        // PM1_EN
        self.en = (self.en & !mask[1]) | (value[1] & mask[1]);
        // PM1_CNT
        if mask[2] != 0 {
            self.write_cnt(value[2], mask[2]);
        }
        self.update_sci(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Line {
        high: AtomicBool,
        raises: AtomicUsize,
    }
    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            if high && !self.high.load(Ordering::SeqCst) {
                self.raises.fetch_add(1, Ordering::SeqCst);
            }
            self.high.store(high, Ordering::SeqCst);
        }
    }

    struct Rig {
        pm: Pm,
        line: Arc<Line>,
        events: Arc<Mutex<Vec<PowerEvent>>>,
        ns: Arc<AtomicU64>,
    }

    fn rig() -> Rig {
        let line = Arc::new(Line::default());
        let events = Arc::new(Mutex::new(vec![]));
        let ns = Arc::new(AtomicU64::new(0));
        let (e, n) = (events.clone(), ns.clone());
        let pm = Pm::with_clock(
            line.clone(),
            Arc::new(move |ev| e.lock().unwrap().push(ev)),
            Box::new(move || n.load(Ordering::SeqCst)),
        );
        Rig {
            pm,
            line,
            events,
            ns,
        }
    }

    fn r16(pm: &mut Pm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    fn r32(pm: &mut Pm, off: u64) -> u32 {
        let mut b = [0u8; 4];
        pm.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w16(pm: &mut Pm, off: u64, v: u16) {
        pm.write(off, &v.to_le_bytes());
    }

    fn high(r: &Rig) -> bool {
        r.line.high.load(Ordering::SeqCst)
    }

    #[test]
    fn power_button_raises_the_sci_only_when_enabled() {
        let mut r = rig();
        r.pm.press_power_button();
        assert!(!high(&r));
        assert_eq!(r16(&mut r.pm, 0) & PWRBTN_BIT, PWRBTN_BIT);
        // Enabling it with the status pending raises the SCI.
        w16(&mut r.pm, 2, PWRBTN_BIT);
        assert!(high(&r));
        assert!(r.pm.sci_level());
        // Write 1 to clear lowers it; writing 0 bits clears nothing.
        w16(&mut r.pm, 0, 0);
        assert!(high(&r));
        w16(&mut r.pm, 0, PWRBTN_BIT);
        assert!(!high(&r));
        assert_eq!(r16(&mut r.pm, 0) & PWRBTN_BIT, 0);
        // Enabled first, then pressed.
        r.pm.press_power_button();
        assert!(high(&r));
        // A byte write to the high half clears it too.
        r.pm.write(1, &[0x01]);
        assert!(!high(&r));
        assert_eq!(r.line.raises.load(Ordering::SeqCst), 2);
        // Disabling masks a pending status.
        r.pm.press_power_button();
        assert!(high(&r));
        r.pm.write(3, &[0x00]);
        assert!(!high(&r));
        assert_eq!(r16(&mut r.pm, 0) & PWRBTN_BIT, PWRBTN_BIT);
        assert_eq!(r16(&mut r.pm, 2), 0);
    }

    #[test]
    fn s5_powers_off_and_other_sleep_types_do_not() {
        let mut r = rig();
        // SCI_EN always reads 1.
        assert_eq!(r16(&mut r.pm, 4) & SCI_EN, SCI_EN);
        w16(&mut r.pm, 4, 0);
        assert_eq!(r16(&mut r.pm, 4) & SCI_EN, SCI_EN);

        // S1 with SLP_EN: ignored, but the guest sees a wake.
        w16(&mut r.pm, 4, (1 << SLP_TYP_SHIFT) | SLP_EN);
        assert!(r.events.lock().unwrap().is_empty());
        assert_eq!(r16(&mut r.pm, 0) & WAK_STS, WAK_STS);
        // SLP_EN reads back as 0, SLP_TYP as written.
        assert_eq!(r16(&mut r.pm, 4), (1 << SLP_TYP_SHIFT) | SCI_EN);

        // S5 without SLP_EN does nothing yet; with it, power off.
        w16(&mut r.pm, 4, 5 << SLP_TYP_SHIFT);
        assert!(r.events.lock().unwrap().is_empty());
        w16(&mut r.pm, 4, (5 << SLP_TYP_SHIFT) | SLP_EN);
        assert_eq!(*r.events.lock().unwrap(), vec![PowerEvent::PowerOff]);

        // A single byte write to the high half of PM1_CNT works too.
        r.pm.write(5, &[(((5 << SLP_TYP_SHIFT) | SLP_EN) >> 8) as u8]);
        assert_eq!(r.events.lock().unwrap().len(), 2);
        // A byte write to the low half leaves SLP_TYP alone.
        r.pm.write(4, &[0x00]);
        assert_eq!(r16(&mut r.pm, 4), (5 << SLP_TYP_SHIFT) | SCI_EN);
        assert_eq!(r.events.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_timer_advances_and_is_24_bit() {
        let mut r = rig();
        assert_eq!(r32(&mut r.pm, 8), 0);
        r.ns.store(1_000_000_000, Ordering::SeqCst);
        assert_eq!(r32(&mut r.pm, 8), 3_579_545);
        // 2^24 ticks is about 4.687 s: it wraps.
        r.ns.store(5_000_000_000, Ordering::SeqCst);
        let t = r32(&mut r.pm, 8);
        assert_eq!(t, (5 * 3_579_545) & 0xff_ffff);
        assert!(t < 1 << 24);
        // Writes do not change it.
        r.pm.write(8, &[0; 4]);
        assert_eq!(r32(&mut r.pm, 8), t);
        // Byte reads see the same counter.
        let mut b = [0u8; 1];
        r.pm.read(10, &mut b);
        assert_eq!(b[0], (t >> 16) as u8);
        r.pm.read(11, &mut b);
        assert_eq!(b[0], 0);
    }

    #[test]
    fn the_real_timer_advances() {
        let line = Arc::new(Line::default());
        let mut pm = Pm::new(line, Arc::new(|_| {}));
        let a = r32(&mut pm, 8);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = r32(&mut pm, 8);
        assert!(b > a && b < 1 << 24, "{a} {b}");
    }

    #[test]
    fn timer_carry_sets_tmr_sts() {
        let mut r = rig();
        w16(&mut r.pm, 2, TMR_BIT);
        assert!(!high(&r));
        // Bit 23 flips after 2^23 ticks (about 2.34 s).
        r.ns.store(2_400_000_000, Ordering::SeqCst);
        r32(&mut r.pm, 8);
        assert!(high(&r));
        assert_eq!(r16(&mut r.pm, 0) & TMR_BIT, TMR_BIT);
        w16(&mut r.pm, 0, TMR_BIT);
        assert!(!high(&r));
    }

    #[test]
    fn odd_accesses() {
        let mut r = rig();
        r.pm.press_power_button();
        // One 32-bit write covering STS and EN: clear and enable at once.
        r.pm.write(0, &[0x00, 0x01, 0x00, 0x01]);
        assert_eq!(r16(&mut r.pm, 0) & PWRBTN_BIT, 0);
        assert_eq!(r16(&mut r.pm, 2), PWRBTN_BIT);
        // A 3-byte read at offset 1 sees STS high, EN low and high bytes.
        let mut b = [0u8; 3];
        r.pm.read(1, &mut b);
        assert_eq!(b, [0x00, 0x00, 0x01]);
        // The reserved gap reads 0, past the end reads 0xff.
        let mut b = [0u8; 8];
        r.pm.read(6, &mut b);
        assert_eq!(b[..2], [0, 0]);
        assert_eq!(b[6..], [0xff, 0xff]);
    }

    #[test]
    fn hostile_accesses_do_not_panic() {
        let mut r = rig();
        r.ns.store(u64::MAX, Ordering::SeqCst);
        for off in (0..16).chain([u64::MAX - 3, u64::MAX]) {
            for len in 0..=8 {
                let mut buf = vec![0u8; len];
                r.pm.read(off, &mut buf);
                r.pm.write(off, &vec![0xff; len]);
                r.pm.write(off, &vec![0x00; len]);
            }
        }
        // 0xff everywhere includes S7 + SLP_EN: not a power-off.
        assert!(r.events.lock().unwrap().is_empty());
    }
}
