//! The virtio-pci common configuration structure (virtio 1.x 4.1.4.3) and
//! the device status machine. Pure state: the transport turns the returned
//! [`CommonAction`]s into resets, activations and interrupt routing.
//!
//! ```text
//!                 ACKNOWLEDGE         DRIVER          FEATURES_OK                DRIVER_OK
//!   RESET (0) ───────────────▶ ACK ──────────▶ DRV ─────────────▶ FEAT_OK ─────────────▶ LIVE
//!     ▲                                         │ (refused unless the driver's      (activates
//!     │ write 0, from any state                 │  features are a subset of the      the device)
//!     └─────────────────────────────────────────┘  offered ones and include VERSION_1)
//!   FAILED may be added in any state. A write that clears bits (other than
//!   0), skips a step or sets unknown bits is ignored. DEVICE_NEEDS_RESET is
//!   the device's own bit: the driver cannot set or clear it, only reset.
//! ```

use crate::features::VERSION_1;

/// "No MSI-X vector" in `config_msix_vector` / `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 64;
pub const STATUS_FAILED: u8 = 128;

// Register offsets (struct virtio_pci_common_cfg).
pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const DEVICE_FEATURE: u64 = 0x04;
pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const DRIVER_FEATURE: u64 = 0x0c;
pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
pub const NUM_QUEUES: u64 = 0x12;
pub const DEVICE_STATUS: u64 = 0x14;
pub const CONFIG_GENERATION: u64 = 0x15;
pub const QUEUE_SELECT: u64 = 0x16;
pub const QUEUE_SIZE: u64 = 0x18;
pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
pub const QUEUE_ENABLE: u64 = 0x1c;
pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub const QUEUE_DESC: u64 = 0x20;
pub const QUEUE_DRIVER: u64 = 0x28;
pub const QUEUE_DEVICE: u64 = 0x30;
/// Size of the register image (fields past `queue_device` read as zero).
const IMAGE_SIZE: usize = 0x40;

/// One queue's configuration as the driver wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub enabled: bool,
    pub msix_vector: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            msix_vector: NO_VECTOR,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// The common configuration state (plain data, for snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommonConfigState {
    /// The status the driver set (DEVICE_NEEDS_RESET is kept apart, by the
    /// transport's interrupt state).
    pub device_status: u8,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    /// The driver wrote a non-zero feature word past bit 63.
    pub driver_features_unknown: bool,
    pub config_msix_vector: u16,
    pub queue_select: u16,
    pub queues: Vec<QueueConfig>,
}

/// What the transport must do after a register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommonAction {
    None,
    /// The driver wrote 0 to `device_status`.
    Reset,
    /// The driver set DRIVER_OK: activate the device.
    Activate,
    /// `config_msix_vector` changed.
    ConfigVector(u16),
    /// Queue `queue`'s MSI-X vector changed.
    QueueVector {
        queue: u16,
        vector: u16,
    },
}

/// The result of a `device_status` write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    Reset,
    /// Not a valid transition: keep the old status.
    Ignore,
    /// The new status, and which bits it adds.
    Set {
        status: u8,
        added: u8,
    },
}

/// Validates a write of `new` over `old` (see the module diagram).
pub fn status_transition(old: u8, new: u8) -> StatusWrite {
    if new == 0 {
        return StatusWrite::Reset;
    }
    const KNOWN: u8 =
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK | STATUS_FEATURES_OK | STATUS_FAILED;
    // Drivers write back what they read, DEVICE_NEEDS_RESET included.
    let new = new & !STATUS_NEEDS_RESET;
    if new & !KNOWN != 0 || new & old != old {
        return StatusWrite::Ignore;
    }
    let added = new & !old;
    let needs = |bit: u8, before: u8| added & bit == 0 || new & before != 0;
    if !needs(STATUS_DRIVER, STATUS_ACKNOWLEDGE)
        || !needs(STATUS_FEATURES_OK, STATUS_DRIVER)
        || !needs(STATUS_DRIVER_OK, STATUS_FEATURES_OK)
    {
        return StatusWrite::Ignore;
    }
    StatusWrite::Set { status: new, added }
}

/// The common configuration registers of one device.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub state: CommonConfigState,
    offered: u64,
    msix_vectors: u16,
}

/// Values the transport keeps elsewhere that the registers show.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadContext {
    pub needs_reset: bool,
    pub config_generation: u8,
}

impl CommonConfig {
    /// `offered` are all the features the device offers; `msix_vectors` the
    /// size of the MSI-X table (vectors at or past it read back as
    /// NO_VECTOR, which tells Linux to use fewer).
    pub fn new(offered: u64, queue_max_sizes: &[u16], msix_vectors: u16) -> Self {
        let state = CommonConfigState {
            config_msix_vector: NO_VECTOR,
            queues: queue_max_sizes
                .iter()
                .map(|&m| QueueConfig::new(m))
                .collect(),
            ..Default::default()
        };
        Self {
            state,
            offered,
            msix_vectors,
        }
    }

    /// Back to the state after power-on (device reset).
    pub fn reset(&mut self) {
        let max: Vec<u16> = self.state.queues.iter().map(|q| q.max_size).collect();
        *self = Self::new(self.offered, &max, self.msix_vectors);
    }

    /// Whether the driver's features can be accepted (FEATURES_OK).
    pub fn features_acceptable(&self) -> bool {
        let f = self.state.driver_features;
        !self.state.driver_features_unknown && f & !self.offered == 0 && f & VERSION_1 != 0
    }

    fn selected(&self) -> Option<&QueueConfig> {
        self.state.queues.get(usize::from(self.state.queue_select))
    }

    fn image(&self, ctx: ReadContext) -> [u8; IMAGE_SIZE] {
        let s = &self.state;
        let mut img = [0u8; IMAGE_SIZE];
        let mut put = |off: u64, bytes: &[u8]| {
            let off = off as usize;
            img[off..off + bytes.len()].copy_from_slice(bytes);
        };
        put(
            DEVICE_FEATURE_SELECT,
            &s.device_feature_select.to_le_bytes(),
        );
        let word = match s.device_feature_select {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        };
        put(DEVICE_FEATURE, &word.to_le_bytes());
        put(
            DRIVER_FEATURE_SELECT,
            &s.driver_feature_select.to_le_bytes(),
        );
        let word = match s.driver_feature_select {
            0 => s.driver_features as u32,
            1 => (s.driver_features >> 32) as u32,
            _ => 0,
        };
        put(DRIVER_FEATURE, &word.to_le_bytes());
        put(CONFIG_MSIX_VECTOR, &s.config_msix_vector.to_le_bytes());
        put(NUM_QUEUES, &(s.queues.len() as u16).to_le_bytes());
        let status = s.device_status
            | if ctx.needs_reset {
                STATUS_NEEDS_RESET
            } else {
                0
            };
        put(DEVICE_STATUS, &[status]);
        put(CONFIG_GENERATION, &[ctx.config_generation]);
        put(QUEUE_SELECT, &s.queue_select.to_le_bytes());
        // A queue past num_queues reads as size 0: "not available".
        let q = self.selected().copied().unwrap_or(QueueConfig {
            msix_vector: NO_VECTOR,
            ..Default::default()
        });
        put(QUEUE_SIZE, &q.size.to_le_bytes());
        put(QUEUE_MSIX_VECTOR, &q.msix_vector.to_le_bytes());
        put(QUEUE_ENABLE, &u16::from(q.enabled).to_le_bytes());
        // Notify offset = queue index (multiplier 4 in the notify cap).
        put(QUEUE_NOTIFY_OFF, &s.queue_select.to_le_bytes());
        put(QUEUE_DESC, &q.desc.to_le_bytes());
        put(QUEUE_DRIVER, &q.driver.to_le_bytes());
        put(QUEUE_DEVICE, &q.device.to_le_bytes());
        img
    }

    /// Reads registers at `offset` (any width; unknown bytes read as 0).
    pub fn read(&self, offset: u64, data: &mut [u8], ctx: ReadContext) {
        crate::device::read_config_bytes(&self.image(ctx), offset, data);
    }

    /// Writes a register; only writes of a field's natural width (or a
    /// 32-bit half of a 64-bit field) count, others are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonAction {
        let value = match data.len() {
            1 => u64::from(data[0]),
            2 => u64::from(u16::from_le_bytes([data[0], data[1]])),
            4 => u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])),
            8 => u64::from_le_bytes([
                data[0], data[1], data[2], data[3], data[4], data[5], data[6], data[7],
            ]),
            _ => return CommonAction::None,
        };
        let status = self.state.device_status;
        let features_open = status & STATUS_FEATURES_OK == 0;
        let queues_open = status & STATUS_DRIVER_OK == 0;
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => self.state.device_feature_select = value as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.state.driver_feature_select = value as u32,
            (DRIVER_FEATURE, 4) if features_open => {
                let f = &mut self.state.driver_features;
                match self.state.driver_feature_select {
                    0 => *f = (*f & !0xffff_ffff) | value,
                    1 => *f = (*f & 0xffff_ffff) | (value << 32),
                    _ => self.state.driver_features_unknown |= value != 0,
                }
            }
            (CONFIG_MSIX_VECTOR, 2) => {
                let v = self.vector(value as u16);
                self.state.config_msix_vector = v;
                return CommonAction::ConfigVector(v);
            }
            (DEVICE_STATUS, 1) => return self.write_status(value as u8),
            (QUEUE_SELECT, 2) => self.state.queue_select = value as u16,
            (QUEUE_MSIX_VECTOR, 2) => {
                let v = self.vector(value as u16);
                let queue = self.state.queue_select;
                if let Some(q) = self.state.queues.get_mut(usize::from(queue)) {
                    q.msix_vector = v;
                    return CommonAction::QueueVector { queue, vector: v };
                }
            }
            (QUEUE_SIZE, 2) if queues_open => {
                let size = value as u16;
                if let Some(q) = self.selected_open() {
                    // Not a power of two, 0 or too big: keep the old size.
                    if size.is_power_of_two() && size <= q.max_size {
                        q.size = size;
                    }
                }
            }
            // Writing 0 is forbidden to drivers: ignored.
            (QUEUE_ENABLE, 2) if queues_open && value == 1 => {
                if let Some(q) = self.selected_open() {
                    q.enabled = true;
                }
            }
            (QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE, 4 | 8) | (0x24 | 0x2c | 0x34, 4)
                if queues_open =>
            {
                let base = offset & !7;
                let high = offset & 4 != 0;
                if let Some(q) = self.selected_open() {
                    let field = match base {
                        QUEUE_DESC => &mut q.desc,
                        QUEUE_DRIVER => &mut q.driver,
                        _ => &mut q.device,
                    };
                    *field = match (data.len(), high) {
                        (8, _) => value,
                        (_, false) => (*field & !0xffff_ffff) | value,
                        (_, true) => (*field & 0xffff_ffff) | (value << 32),
                    };
                }
            }
            _ => {}
        }
        CommonAction::None
    }

    /// The selected queue, if it exists and is not enabled yet (an enabled
    /// queue's configuration is frozen).
    fn selected_open(&mut self) -> Option<&mut QueueConfig> {
        let q = self
            .state
            .queues
            .get_mut(usize::from(self.state.queue_select))?;
        (!q.enabled).then_some(q)
    }

    fn vector(&self, v: u16) -> u16 {
        if v < self.msix_vectors {
            v
        } else {
            NO_VECTOR
        }
    }

    fn write_status(&mut self, value: u8) -> CommonAction {
        match status_transition(self.state.device_status, value) {
            StatusWrite::Reset => CommonAction::Reset,
            StatusWrite::Ignore => CommonAction::None,
            StatusWrite::Set { mut status, added } => {
                if added & STATUS_FEATURES_OK != 0 && !self.features_acceptable() {
                    // The driver reads FEATURES_OK back and gives up.
                    status &= !(STATUS_FEATURES_OK | STATUS_DRIVER_OK);
                }
                self.state.device_status = status;
                if added & STATUS_DRIVER_OK != 0 && status & STATUS_DRIVER_OK != 0 {
                    CommonAction::Activate
                } else {
                    CommonAction::None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::RING_EVENT_IDX;

    const OFFERED: u64 = VERSION_1 | RING_EVENT_IDX | 0b101;

    fn cfg() -> CommonConfig {
        CommonConfig::new(OFFERED, &[256, 64], 3)
    }

    fn read(c: &CommonConfig, off: u64, len: usize) -> u64 {
        let mut d = [0u8; 8];
        c.read(off, &mut d[..len], ReadContext::default());
        u64::from_le_bytes(d)
    }

    fn w16(c: &mut CommonConfig, off: u64, v: u16) -> CommonAction {
        c.write(off, &v.to_le_bytes())
    }

    fn w32(c: &mut CommonConfig, off: u64, v: u32) -> CommonAction {
        c.write(off, &v.to_le_bytes())
    }

    fn negotiate(c: &mut CommonConfig, features: u64) -> u8 {
        c.write(DEVICE_STATUS, &[STATUS_ACKNOWLEDGE]);
        c.write(DEVICE_STATUS, &[STATUS_ACKNOWLEDGE | STATUS_DRIVER]);
        w32(c, DRIVER_FEATURE_SELECT, 0);
        w32(c, DRIVER_FEATURE, features as u32);
        w32(c, DRIVER_FEATURE_SELECT, 1);
        w32(c, DRIVER_FEATURE, (features >> 32) as u32);
        c.write(
            DEVICE_STATUS,
            &[STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK],
        );
        read(c, DEVICE_STATUS, 1) as u8
    }

    #[test]
    fn status_machine_follows_the_spec_order() {
        use StatusWrite::*;
        assert_eq!(
            status_transition(0, 1),
            Set {
                status: 1,
                added: 1
            }
        );
        assert_eq!(
            status_transition(1, 3),
            Set {
                status: 3,
                added: 2
            }
        );
        assert_eq!(status_transition(0, 2), Ignore, "DRIVER before ACKNOWLEDGE");
        assert_eq!(
            status_transition(3, 7),
            Ignore,
            "DRIVER_OK before FEATURES_OK"
        );
        assert_eq!(status_transition(1, 9), Ignore, "FEATURES_OK before DRIVER");
        assert_eq!(
            status_transition(11, 15),
            Set {
                status: 15,
                added: 4
            }
        );
        assert_eq!(status_transition(3, 1), Ignore, "clearing a bit");
        assert_eq!(status_transition(3, 3 | 0x10), Ignore, "unknown bit");
        assert_eq!(status_transition(15, 0), Reset);
        assert_eq!(
            status_transition(3, 3 | 128),
            Set {
                status: 131,
                added: 128
            }
        );
        // NEEDS_RESET written back is dropped, not refused.
        assert_eq!(
            status_transition(15, 15 | 64),
            Set {
                status: 15,
                added: 0
            }
        );
    }

    #[test]
    fn device_features_are_read_in_two_words() {
        let mut c = cfg();
        assert_eq!(read(&c, DEVICE_FEATURE, 4), OFFERED & 0xffff_ffff);
        w32(&mut c, DEVICE_FEATURE_SELECT, 1);
        assert_eq!(read(&c, DEVICE_FEATURE, 4), OFFERED >> 32);
        w32(&mut c, DEVICE_FEATURE_SELECT, 2);
        assert_eq!(read(&c, DEVICE_FEATURE, 4), 0);
        assert_eq!(read(&c, NUM_QUEUES, 2), 2);
    }

    #[test]
    fn features_ok_accepts_a_subset() {
        let mut c = cfg();
        let s = negotiate(&mut c, VERSION_1 | 1);
        assert_eq!(s, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        assert_eq!(c.state.driver_features, VERSION_1 | 1);
        // Features are frozen after FEATURES_OK.
        w32(&mut c, DRIVER_FEATURE_SELECT, 0);
        w32(&mut c, DRIVER_FEATURE, 0);
        assert_eq!(c.state.driver_features, VERSION_1 | 1);
    }

    #[test]
    fn features_ok_refuses_unknown_features() {
        let mut c = cfg();
        assert_eq!(
            negotiate(&mut c, VERSION_1 | 0b10),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER
        );
        let mut c = cfg();
        assert_eq!(
            negotiate(&mut c, 1),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER,
            "legacy driver"
        );
        let mut c = cfg();
        w32(&mut c, DRIVER_FEATURE_SELECT, 2);
        w32(&mut c, DRIVER_FEATURE, 1);
        assert_eq!(
            negotiate(&mut c, VERSION_1),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER,
            "bit 64"
        );
    }

    #[test]
    fn driver_ok_activates_once() {
        let mut c = cfg();
        negotiate(&mut c, VERSION_1);
        assert_eq!(c.write(DEVICE_STATUS, &[15]), CommonAction::Activate);
        assert_eq!(c.write(DEVICE_STATUS, &[15]), CommonAction::None);
        assert_eq!(c.write(DEVICE_STATUS, &[0]), CommonAction::Reset);
    }

    #[test]
    fn needs_reset_and_generation_are_shown() {
        let c = cfg();
        let mut d = [0u8; 2];
        c.read(
            DEVICE_STATUS,
            &mut d,
            ReadContext {
                needs_reset: true,
                config_generation: 7,
            },
        );
        assert_eq!(d, [STATUS_NEEDS_RESET, 7]);
    }

    #[test]
    fn queue_size_must_be_a_power_of_two_within_max() {
        let mut c = cfg();
        w16(&mut c, QUEUE_SELECT, 1);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 64);
        w16(&mut c, QUEUE_SIZE, 48);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 64);
        w16(&mut c, QUEUE_SIZE, 128);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 64);
        w16(&mut c, QUEUE_SIZE, 0);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 64);
        w16(&mut c, QUEUE_SIZE, 16);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 16);
        // A queue that does not exist reads as size 0 and ignores writes.
        w16(&mut c, QUEUE_SELECT, 2);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 0);
        w16(&mut c, QUEUE_SIZE, 16);
        w16(&mut c, QUEUE_ENABLE, 1);
        assert_eq!(read(&c, QUEUE_ENABLE, 2), 0);
    }

    #[test]
    fn queue_addresses_in_halves_and_frozen_when_enabled() {
        let mut c = cfg();
        w32(&mut c, QUEUE_DESC, 0x1000);
        w32(&mut c, QUEUE_DESC + 4, 0x2);
        c.write(QUEUE_DRIVER, &0x3_0000_2000u64.to_le_bytes());
        w32(&mut c, QUEUE_DEVICE + 4, 0x4);
        w32(&mut c, QUEUE_DEVICE, 0x3000);
        assert_eq!(read(&c, QUEUE_DESC, 8), 0x2_0000_1000);
        assert_eq!(read(&c, QUEUE_DRIVER, 8), 0x3_0000_2000);
        assert_eq!(read(&c, QUEUE_DEVICE, 8), 0x4_0000_3000);
        w16(&mut c, QUEUE_ENABLE, 1);
        assert_eq!(read(&c, QUEUE_ENABLE, 2), 1);
        w32(&mut c, QUEUE_DESC, 0x5000);
        w16(&mut c, QUEUE_SIZE, 16);
        assert_eq!(read(&c, QUEUE_DESC, 4), 0x1000);
        assert_eq!(read(&c, QUEUE_SIZE, 2), 256);
        // Odd-width writes are ignored.
        c.write(QUEUE_SELECT, &[1]);
        assert_eq!(read(&c, QUEUE_SELECT, 2), 0);
        c.write(QUEUE_SELECT, &[1, 0, 0]);
        assert_eq!(read(&c, QUEUE_SELECT, 2), 0);
    }

    #[test]
    fn msix_vectors_past_the_table_read_back_as_no_vector() {
        let mut c = cfg();
        assert_eq!(read(&c, CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        assert_eq!(
            w16(&mut c, CONFIG_MSIX_VECTOR, 2),
            CommonAction::ConfigVector(2)
        );
        assert_eq!(read(&c, CONFIG_MSIX_VECTOR, 2), 2);
        assert_eq!(
            w16(&mut c, CONFIG_MSIX_VECTOR, 3),
            CommonAction::ConfigVector(NO_VECTOR)
        );
        w16(&mut c, QUEUE_SELECT, 1);
        assert_eq!(
            w16(&mut c, QUEUE_MSIX_VECTOR, 1),
            CommonAction::QueueVector {
                queue: 1,
                vector: 1
            }
        );
        assert_eq!(read(&c, QUEUE_MSIX_VECTOR, 2), 1);
        assert_eq!(read(&c, QUEUE_NOTIFY_OFF, 2), 1);
    }

    #[test]
    fn reset_restores_power_on_state() {
        let mut c = cfg();
        negotiate(&mut c, VERSION_1);
        w16(&mut c, QUEUE_SIZE, 16);
        w16(&mut c, QUEUE_ENABLE, 1);
        c.reset();
        assert_eq!(c.state, cfg().state);
    }
}
