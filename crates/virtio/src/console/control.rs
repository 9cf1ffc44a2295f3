//! The multiport control protocol (virtio 1.x section 5.3.6.2): 8-byte
//! messages `{le32 id, le16 event, le16 value}` on the control queues, a
//! port's name following the header of PORT_NAME.
//!
//! Parsing is a pure function of the bytes the driver wrote, so the fuzz
//! target calls it directly.

/// Size of the control message header.
pub const HEADER_LEN: usize = 8;
/// The id the driver uses for messages about the whole device.
pub const BAD_ID: u32 = u32::MAX;

pub const DEVICE_READY: u16 = 0;
pub const PORT_ADD: u16 = 1;
pub const PORT_REMOVE: u16 = 2;
pub const PORT_READY: u16 = 3;
pub const CONSOLE_PORT: u16 = 4;
pub const RESIZE: u16 = 5;
pub const PORT_OPEN: u16 = 6;
pub const PORT_NAME: u16 = 7;

/// A control message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlHeader {
    pub id: u32,
    pub event: u16,
    pub value: u16,
}

impl ControlHeader {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ControlError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(ControlError::TooShort(bytes.len()))?;
        Ok(Self {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            event: u16::from_le_bytes([b[4], b[5]]),
            value: u16::from_le_bytes([b[6], b[7]]),
        })
    }

    /// The header as it goes on the wire.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..6].copy_from_slice(&self.event.to_le_bytes());
        b[6..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }
}

/// Why a driver's control message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("Control message of {0} bytes is shorter than its 8-byte header")]
    TooShort(usize),
    #[error("Control event {0} is not one a driver sends")]
    UnknownEvent(u16),
}

/// What a driver tells the device on the control transmit queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverMessage {
    /// The driver is ready for PORT_ADD messages (`ok` false: it failed).
    DeviceReady { ok: bool },
    /// The driver set port `id` up (`ok` false: it could not).
    PortReady { id: u32, ok: bool },
    /// An application in the guest opened (or closed) port `id`.
    PortOpen { id: u32, open: bool },
}

/// Parses one message from the driver. Values other than 0 count as 1, as
/// Linux writes them; port ids are checked by the caller against its ports.
pub fn parse_driver_message(bytes: &[u8]) -> Result<DriverMessage, ControlError> {
    let h = ControlHeader::parse(bytes)?;
    let on = h.value != 0;
    match h.event {
        DEVICE_READY => Ok(DriverMessage::DeviceReady { ok: on }),
        PORT_READY => Ok(DriverMessage::PortReady { id: h.id, ok: on }),
        PORT_OPEN => Ok(DriverMessage::PortOpen { id: h.id, open: on }),
        other => Err(ControlError::UnknownEvent(other)),
    }
}

/// What the device tells the driver on the control receive queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceMessage {
    /// A port exists.
    PortAdd(u32),
    /// The port is a console (hvc).
    ConsolePort(u32),
    /// The port's name follows the header.
    PortName(u32),
    /// The host side of the port connected (or went away).
    PortOpen { id: u32, open: bool },
}

impl DeviceMessage {
    /// The message header.
    pub fn header(self) -> ControlHeader {
        let (id, event, value) = match self {
            DeviceMessage::PortAdd(id) => (id, PORT_ADD, 1),
            DeviceMessage::ConsolePort(id) => (id, CONSOLE_PORT, 1),
            DeviceMessage::PortName(id) => (id, PORT_NAME, 1),
            DeviceMessage::PortOpen { id, open } => (id, PORT_OPEN, u16::from(open)),
        };
        ControlHeader { id, event, value }
    }

    /// The port the message is about.
    pub fn port(self) -> u32 {
        self.header().id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u32, event: u16, value: u16) -> [u8; 8] {
        ControlHeader { id, event, value }.to_bytes()
    }

    #[test]
    fn driver_messages_parse() {
        assert_eq!(
            parse_driver_message(&msg(BAD_ID, DEVICE_READY, 1)),
            Ok(DriverMessage::DeviceReady { ok: true })
        );
        assert_eq!(
            parse_driver_message(&msg(BAD_ID, DEVICE_READY, 0)),
            Ok(DriverMessage::DeviceReady { ok: false })
        );
        assert_eq!(
            parse_driver_message(&msg(3, PORT_READY, 1)),
            Ok(DriverMessage::PortReady { id: 3, ok: true })
        );
        assert_eq!(
            parse_driver_message(&msg(1, PORT_OPEN, 7)),
            Ok(DriverMessage::PortOpen { id: 1, open: true })
        );
        // Trailing bytes are ignored.
        let mut long = msg(1, PORT_OPEN, 0).to_vec();
        long.extend_from_slice(b"junk");
        assert_eq!(
            parse_driver_message(&long),
            Ok(DriverMessage::PortOpen { id: 1, open: false })
        );
    }

    #[test]
    fn hostile_driver_messages_are_refused() {
        assert_eq!(parse_driver_message(&[]), Err(ControlError::TooShort(0)));
        assert_eq!(
            parse_driver_message(&[1, 2, 3, 4, 5, 6, 7]),
            Err(ControlError::TooShort(7))
        );
        for event in [
            PORT_ADD,
            PORT_REMOVE,
            CONSOLE_PORT,
            RESIZE,
            PORT_NAME,
            8,
            u16::MAX,
        ] {
            assert_eq!(
                parse_driver_message(&msg(1, event, 1)),
                Err(ControlError::UnknownEvent(event))
            );
        }
    }

    #[test]
    fn device_messages_encode() {
        assert_eq!(
            DeviceMessage::PortAdd(2).header().to_bytes(),
            [2, 0, 0, 0, 1, 0, 1, 0]
        );
        assert_eq!(
            DeviceMessage::PortOpen { id: 1, open: false }.header(),
            ControlHeader {
                id: 1,
                event: PORT_OPEN,
                value: 0
            }
        );
        assert_eq!(DeviceMessage::PortName(5).port(), 5);
        let h = DeviceMessage::ConsolePort(0).header();
        assert_eq!(ControlHeader::parse(&h.to_bytes()), Ok(h));
    }
}
