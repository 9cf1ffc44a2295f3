//! The MC146818 CMOS real-time clock and its 128 bytes of NVRAM.
//!
//! Inserted at the CMOS index port with two ports: offset 0 is the index
//! (bit 7 is the NMI mask and is ignored for addressing), offset 1 the data.
//!
//! The time is the host's UTC (`CLOCK_REALTIME`) plus an offset that changes
//! when the guest sets the clock (register B's SET bit, as Linux's
//! `hwclock --systohc` does, or a direct write to a time register). Register
//! B's data mode (BCD or binary) and 12/24-hour bits are honoured. The
//! update-in-progress bit never reads as set, so readers never wait.
//!
//! Not emulated: periodic, alarm and update-ended *interrupts* (IRQ 8 is
//! never raised). Register C's update-ended flag is set when a second has
//! passed since C was last read, for software that polls it; the alarm
//! registers are plain storage. Daylight saving (DSE) is ignored.
//!
//! The rest of the 128 bytes is battery-backed storage the guest reads
//! back; the VMM keeps the same `Rtc` across a guest reboot so it persists.
//! The conventional memory-size bytes a PC BIOS reads (SeaBIOS) are filled
//! in at creation.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::BusDevice;

/// The number of ports the RTC occupies (index, data).
pub const RTC_PORT_COUNT: u64 = 2;

const CMOS_SIZE: usize = 128;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Register A: update in progress (read-only, never set here).
const A_UIP: u8 = 0x80;
/// 32.768 kHz time base, 1024 Hz periodic rate.
const A_DEFAULT: u8 = 0x26;
/// Register B: halt updates while the guest sets the time.
const B_SET: u8 = 0x80;
/// Register B: binary (1) or BCD (0) data.
const B_DM_BINARY: u8 = 0x04;
/// Register B: 24-hour (1) or 12-hour (0) format.
const B_24H: u8 = 0x02;
/// 24-hour, BCD.
const B_DEFAULT: u8 = B_24H;
/// Register C: update-ended flag.
const C_UF: u8 = 0x10;
/// Register D: valid RAM and time.
const D_VRT: u8 = 0x80;
/// In 12-hour mode, bit 7 of the hour register means PM.
const HOUR_PM: u8 = 0x80;

/// Where the clock reads the host's seconds since the Unix epoch (UTC).
pub type WallClock = Box<dyn Fn() -> i64 + Send>;

/// The host's `CLOCK_REALTIME` in whole seconds.
fn host_realtime() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `month` must be 1..=12 and `day` 1..=31.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day of the week, 0 = Sunday, of a day count since 1970-01-01 (a Thursday).
pub fn weekday_from_days(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

impl DateTime {
    /// The UTC date and time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: i64) -> DateTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// Seconds since the Unix epoch (days past the month's end roll over).
    pub fn to_unix(&self) -> i64 {
        let secs_of_day =
            i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second);
        // Saturating: only absurd years (from an absurd host clock) get near.
        days_from_civil(self.year, self.month, self.day)
            .saturating_mul(86_400)
            .saturating_add(secs_of_day)
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi < 10 && lo < 10).then_some(hi * 10 + lo)
}

/// The MC146818 RTC and CMOS NVRAM.
pub struct Rtc {
    cmos: [u8; CMOS_SIZE],
    index: u8,
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// The time being set while register B's SET bit is on.
    latched: Option<DateTime>,
    /// Host time of the last register C read (for the update-ended flag).
    last_c_read: i64,
    now: WallClock,
}

impl Rtc {
    /// An RTC on the host's UTC clock, with the memory-size bytes filled
    /// for `mem_below_4g` and `mem_above_4g` bytes of RAM.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64) -> Rtc {
        Rtc::with_clock(mem_below_4g, mem_above_4g, Box::new(host_realtime))
    }

    /// Like [`Rtc::new`] with another source of host time.
    pub fn with_clock(mem_below_4g: u64, mem_above_4g: u64, now: WallClock) -> Rtc {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let mut cmos = [0u8; CMOS_SIZE];
        let mut put = |at: usize, value: u64, bytes: usize| {
            for i in 0..bytes {
                cmos[at + i] = (value >> (8 * i)) as u8;
            }
        };
        // Base memory in KiB (at most 640).
        put(0x15, (mem_below_4g / KIB).min(640), 2);
        // Extended memory above 1 MiB in KiB (capped).
        let ext = (mem_below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        put(0x17, ext, 2);
        put(0x30, ext, 2);
        // RAM between 16 MiB and 4 GiB in 64 KiB units.
        put(
            0x34,
            (mem_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff),
            2,
        );
        // RAM above 4 GiB in 64 KiB units.
        put(0x5b, (mem_above_4g / (64 * KIB)).min(0xff_ffff), 3);
        cmos[REG_A as usize] = A_DEFAULT;
        cmos[REG_B as usize] = B_DEFAULT;
        cmos[REG_D as usize] = D_VRT;
        let last_c_read = now();
        Rtc {
            cmos,
            index: 0,
            offset: 0,
            latched: None,
            last_c_read,
            now,
        }
    }

    /// Seconds since the Unix epoch as the guest sees them.
    pub fn guest_time(&self) -> i64 {
        (self.now)().saturating_add(self.offset)
    }

    fn reg_b(&self) -> u8 {
        self.cmos[REG_B as usize]
    }

    /// The time the guest sees now, or the one it is setting.
    fn current(&self) -> DateTime {
        self.latched
            .unwrap_or_else(|| DateTime::from_unix(self.guest_time()))
    }

    fn encode(&self, v: u32) -> u8 {
        let v = (v % 100) as u8;
        if self.reg_b() & B_DM_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> Option<u32> {
        if self.reg_b() & B_DM_BINARY != 0 {
            Some(u32::from(v))
        } else {
            from_bcd(v).map(u32::from)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.reg_b() & B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> Option<u32> {
        if self.reg_b() & B_24H != 0 {
            return self.decode(v).filter(|&h| h < 24);
        }
        let h12 = self.decode(v & !HOUR_PM).filter(|h| (1..=12).contains(h))?;
        Some(h12 % 12 + if v & HOUR_PM != 0 { 12 } else { 0 })
    }

    fn read_time_reg(&self, reg: u8) -> u8 {
        let t = self.current();
        match reg {
            REG_SECONDS => self.encode(t.second),
            REG_MINUTES => self.encode(t.minute),
            REG_HOURS => self.encode_hour(t.hour),
            REG_WEEKDAY => {
                self.encode(weekday_from_days(days_from_civil(t.year, t.month, t.day)) + 1)
            }
            REG_DAY => self.encode(t.day),
            REG_MONTH => self.encode(t.month),
            REG_YEAR => self.encode(t.year.rem_euclid(100) as u32),
            _ => self.encode(t.year.div_euclid(100).rem_euclid(100) as u32),
        }
    }

    /// Applies a guest write to a time register; invalid values are ignored.
    fn write_time_reg(&mut self, reg: u8, value: u8) {
        let mut t = self.current();
        let ok = match reg {
            REG_SECONDS => self.decode(value).filter(|&v| v < 60).map(|v| t.second = v),
            REG_MINUTES => self.decode(value).filter(|&v| v < 60).map(|v| t.minute = v),
            REG_HOURS => self.decode_hour(value).map(|v| t.hour = v),
            // The weekday follows from the date.
            REG_WEEKDAY => None,
            REG_DAY => self
                .decode(value)
                .filter(|v| (1..=31).contains(v))
                .map(|v| t.day = v),
            REG_MONTH => self
                .decode(value)
                .filter(|v| (1..=12).contains(v))
                .map(|v| t.month = v),
            REG_YEAR => self
                .decode(value)
                .filter(|&v| v < 100)
                .map(|v| t.year = t.year.div_euclid(100) * 100 + i64::from(v)),
            _ => self
                .decode(value)
                .filter(|&v| v < 100)
                .map(|v| t.year = i64::from(v) * 100 + t.year.rem_euclid(100)),
        };
        if ok.is_none() {
            return;
        }
        if self.latched.is_some() {
            self.latched = Some(t);
        } else {
            self.commit(t);
        }
    }

    fn commit(&mut self, t: DateTime) {
        self.offset = t.to_unix().saturating_sub((self.now)());
    }

    fn write_reg_b(&mut self, value: u8) {
        let was_set = self.reg_b() & B_SET != 0;
        let set = value & B_SET != 0;
        if set && !was_set {
            self.latched = Some(self.current());
        }
        self.cmos[REG_B as usize] = value;
        if !set {
            if let Some(t) = self.latched.take() {
                self.commit(t);
            }
        }
    }

    fn read_reg(&mut self, reg: u8) -> u8 {
        match reg {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => self.read_time_reg(reg),
            REG_A => self.cmos[REG_A as usize] & !A_UIP,
            REG_C => {
                let now = (self.now)();
                let mut c = self.cmos[REG_C as usize];
                if now != self.last_c_read && self.latched.is_none() {
                    c |= C_UF;
                }
                self.last_c_read = now;
                self.cmos[REG_C as usize] = 0;
                c
            }
            REG_D => D_VRT,
            _ => self.cmos[usize::from(reg) % CMOS_SIZE],
        }
    }

    fn write_reg(&mut self, reg: u8, value: u8) {
        match reg {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => self.write_time_reg(reg, value),
            REG_A => self.cmos[REG_A as usize] = value & !A_UIP,
            REG_B => self.write_reg_b(value),
            // C and D are read-only.
            REG_C | REG_D => {}
            _ => self.cmos[usize::from(reg) % CMOS_SIZE] = value,
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match offset.saturating_add(i as u64) {
                // The index port is write-only.
                0 => 0xff,
                1 => self.read_reg(self.index),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            match offset.saturating_add(i as u64) {
                0 => self.index = value & 0x7f,
                1 => self.write_reg(self.index, value),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    /// 2026-11-26 (a Thursday) 13:45:07 UTC.
    const T0: i64 = 1_795_700_707;

    fn rtc_at(t: i64) -> (Rtc, Arc<AtomicI64>) {
        let clock = Arc::new(AtomicI64::new(t));
        let c = clock.clone();
        let rtc = Rtc::with_clock(256 << 20, 0, Box::new(move || c.load(Ordering::SeqCst)));
        (rtc, clock)
    }

    fn get(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    fn set(rtc: &mut Rtc, index: u8, value: u8) {
        rtc.write(0, &[index]);
        rtc.write(1, &[value]);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(days_from_civil(2026, 11, 26), 20_783);
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
        assert_eq!(weekday_from_days(20_783), 4); // Thursday
        assert_eq!(weekday_from_days(0), 4); // 1970-01-01, Thursday
                                             // 1900 is not a leap year, 2000 and 2024 are, 2100 is not.
        assert_eq!(
            civil_from_days(days_from_civil(1900, 2, 28) + 1),
            (1900, 3, 1)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 28) + 1),
            (2024, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2100, 2, 28) + 1),
            (2100, 3, 1)
        );
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // Round trip over a wide range.
        for d in (-800_000..800_000).step_by(97) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
        let t = DateTime::from_unix(T0);
        assert_eq!(
            t,
            DateTime {
                year: 2026,
                month: 11,
                day: 26,
                hour: 13,
                minute: 45,
                second: 7
            }
        );
        assert_eq!(t.to_unix(), T0);
    }

    #[test]
    fn reads_bcd_by_default() {
        let (mut rtc, _) = rtc_at(T0);
        assert_eq!(get(&mut rtc, REG_B), 0x02);
        assert_eq!(get(&mut rtc, REG_SECONDS), 0x07);
        assert_eq!(get(&mut rtc, REG_MINUTES), 0x45);
        assert_eq!(get(&mut rtc, REG_HOURS), 0x13);
        assert_eq!(get(&mut rtc, REG_WEEKDAY), 0x05); // Thursday, Sunday = 1
        assert_eq!(get(&mut rtc, REG_DAY), 0x26);
        assert_eq!(get(&mut rtc, REG_MONTH), 0x11);
        assert_eq!(get(&mut rtc, REG_YEAR), 0x26);
        assert_eq!(get(&mut rtc, REG_CENTURY), 0x20);
        assert_eq!(get(&mut rtc, REG_A) & A_UIP, 0);
        assert_eq!(get(&mut rtc, REG_A), 0x26);
        assert_eq!(get(&mut rtc, REG_D), 0x80);
    }

    #[test]
    fn reads_binary_and_12_hour() {
        let (mut rtc, _) = rtc_at(T0);
        set(&mut rtc, REG_B, B_DM_BINARY | B_24H);
        assert_eq!(get(&mut rtc, REG_SECONDS), 7);
        assert_eq!(get(&mut rtc, REG_MINUTES), 45);
        assert_eq!(get(&mut rtc, REG_HOURS), 13);
        assert_eq!(get(&mut rtc, REG_YEAR), 26);
        assert_eq!(get(&mut rtc, REG_CENTURY), 20);
        // 12-hour binary: 1 PM.
        set(&mut rtc, REG_B, B_DM_BINARY);
        assert_eq!(get(&mut rtc, REG_HOURS), 0x80 | 1);
        // 12-hour BCD: midnight is 12 AM, noon is 12 PM.
        let (mut rtc, _) = rtc_at(days_from_civil(2026, 1, 1) * 86_400);
        set(&mut rtc, REG_B, 0);
        assert_eq!(get(&mut rtc, REG_HOURS), 0x12);
        let (mut rtc, _) = rtc_at(days_from_civil(2026, 1, 1) * 86_400 + 12 * 3600);
        set(&mut rtc, REG_B, 0);
        assert_eq!(get(&mut rtc, REG_HOURS), 0x92);
    }

    #[test]
    fn the_clock_follows_the_host() {
        let (mut rtc, clock) = rtc_at(T0);
        clock.store(T0 + 60, Ordering::SeqCst);
        assert_eq!(get(&mut rtc, REG_MINUTES), 0x46);
        assert_eq!(get(&mut rtc, REG_SECONDS), 0x07);
    }

    #[test]
    fn setting_the_time_shifts_the_offset() {
        let (mut rtc, clock) = rtc_at(T0);
        // What Linux's mc146818_set_time does: SET, write fields, clear SET.
        set(&mut rtc, REG_B, B_SET | B_24H);
        set(&mut rtc, REG_YEAR, 0x99);
        set(&mut rtc, REG_CENTURY, 0x19);
        set(&mut rtc, REG_MONTH, 0x12);
        set(&mut rtc, REG_DAY, 0x31);
        set(&mut rtc, REG_HOURS, 0x23);
        set(&mut rtc, REG_MINUTES, 0x59);
        set(&mut rtc, REG_SECONDS, 0x50);
        // Frozen while SET is on.
        clock.store(T0 + 5, Ordering::SeqCst);
        assert_eq!(get(&mut rtc, REG_SECONDS), 0x50);
        set(&mut rtc, REG_B, B_24H);
        let target = DateTime {
            year: 1999,
            month: 12,
            day: 31,
            hour: 23,
            minute: 59,
            second: 50,
        }
        .to_unix();
        assert_eq!(rtc.guest_time(), target);
        // And it keeps running from there, across the century.
        clock.store(T0 + 15, Ordering::SeqCst);
        assert_eq!(get(&mut rtc, REG_SECONDS), 0x00);
        assert_eq!(get(&mut rtc, REG_YEAR), 0x00);
        assert_eq!(get(&mut rtc, REG_CENTURY), 0x20);
        assert_eq!(get(&mut rtc, REG_MONTH), 0x01);
        assert_eq!(get(&mut rtc, REG_WEEKDAY), 0x07); // 2000-01-01, Saturday
    }

    #[test]
    fn direct_binary_write_and_bad_values() {
        let (mut rtc, _) = rtc_at(T0);
        set(&mut rtc, REG_B, B_DM_BINARY | B_24H);
        set(&mut rtc, REG_HOURS, 1);
        assert_eq!(rtc.guest_time(), T0 - 12 * 3600);
        // Out of range and non-BCD values change nothing.
        set(&mut rtc, REG_MONTH, 13);
        set(&mut rtc, REG_HOURS, 24);
        set(&mut rtc, REG_B, B_24H);
        set(&mut rtc, REG_MINUTES, 0x5a);
        set(&mut rtc, REG_WEEKDAY, 0x01);
        assert_eq!(rtc.guest_time(), T0 - 12 * 3600);
        // 12-hour BCD write: 11 PM.
        set(&mut rtc, REG_B, 0);
        set(&mut rtc, REG_HOURS, 0x80 | 0x11);
        assert_eq!(rtc.guest_time(), T0 + 10 * 3600);
    }

    #[test]
    fn nvram_round_trip_and_index_masking() {
        let (mut rtc, _) = rtc_at(T0);
        set(&mut rtc, 0x38, 0xa5);
        assert_eq!(get(&mut rtc, 0x38), 0xa5);
        // Bit 7 of the index (NMI mask) does not change the address.
        assert_eq!(get(&mut rtc, 0x80 | 0x38), 0xa5);
        set(&mut rtc, 0x80 | 0x7f, 0x11);
        assert_eq!(get(&mut rtc, 0x7f), 0x11);
        // Alarm registers are storage too.
        set(&mut rtc, 0x01, 0x30);
        assert_eq!(get(&mut rtc, 0x01), 0x30);
        // Index then data in a single 16-bit write.
        rtc.write(0, &[0x40, 0x77]);
        assert_eq!(get(&mut rtc, 0x40), 0x77);
        // D is read-only.
        set(&mut rtc, REG_D, 0);
        assert_eq!(get(&mut rtc, REG_D), 0x80);
    }

    #[test]
    fn register_c_clears_on_read() {
        let (mut rtc, clock) = rtc_at(T0);
        assert_eq!(get(&mut rtc, REG_C), 0);
        clock.store(T0 + 1, Ordering::SeqCst);
        assert_eq!(get(&mut rtc, REG_C), C_UF);
        assert_eq!(get(&mut rtc, REG_C), 0);
        set(&mut rtc, REG_C, 0xff);
        assert_eq!(get(&mut rtc, REG_C), 0);
    }

    #[test]
    fn memory_size_bytes() {
        let rtc = Rtc::with_clock(0xc000_0000, 2 << 30, Box::new(|| 0));
        let w = |at: usize| u16::from_le_bytes([rtc.cmos[at], rtc.cmos[at + 1]]);
        assert_eq!(w(0x15), 640);
        assert_eq!(w(0x17), 0xffff);
        assert_eq!(w(0x30), 0xffff);
        assert_eq!(w(0x34), ((0xc000_0000u64 - (16 << 20)) >> 16) as u16);
        let above = u32::from_le_bytes([rtc.cmos[0x5b], rtc.cmos[0x5c], rtc.cmos[0x5d], 0]);
        assert_eq!(above, (2u32 << 30) >> 16);

        let small = Rtc::with_clock(8 << 20, 0, Box::new(|| 0));
        assert_eq!(small.cmos[0x17..0x19], ((7u16 << 10).to_le_bytes()));
        assert_eq!(small.cmos[0x34..0x36], [0, 0]);
        assert_eq!(small.cmos[0x5b..0x5e], [0, 0, 0]);
    }

    #[test]
    fn real_clock_is_sane() {
        let rtc = Rtc::new(256 << 20, 0);
        // After 2020-01-01.
        assert!(rtc.guest_time() > 1_577_836_800);
    }

    #[test]
    fn hostile_accesses_do_not_panic() {
        let (mut rtc, _) = rtc_at(T0);
        for off in (0..6).chain([u64::MAX - 1, u64::MAX]) {
            for len in 0..=8 {
                for index in [0u8, 0x09, 0x0b, 0x32, 0x7f, 0xff] {
                    rtc.write(0, &[index]);
                    let mut buf = vec![0xffu8; len];
                    rtc.read(off, &mut buf);
                    rtc.write(off, &buf);
                    rtc.write(off, &vec![0xa5; len]);
                }
            }
        }
        // Extreme host clocks do not overflow either.
        for t in [i64::MIN, i64::MAX, 0, -1] {
            let (mut rtc, _) = rtc_at(t);
            for reg in 0..0x80 {
                get(&mut rtc, reg);
            }
            set(&mut rtc, REG_B, B_SET);
            set(&mut rtc, REG_YEAR, 0x50);
            set(&mut rtc, REG_B, 0);
            get(&mut rtc, REG_YEAR);
        }
    }
}
