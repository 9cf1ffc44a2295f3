//! Fuzzes virtio-console's parser of the control messages a driver sends
//! (`parse_driver_message`) and the header codec.
//!
//! Besides "no panic": only DEVICE_READY, PORT_READY and PORT_OPEN are
//! accepted, from 8 bytes or more, with the id and value they carry; a
//! header writes back to the same 8 bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::console::events::{DEVICE_READY, HEADER_LEN, PORT_OPEN, PORT_READY};
use virtio::console::{parse_driver_message, ControlHeader, DriverMessage};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_driver_message(data);
    let Ok(h) = ControlHeader::parse(data) else {
        assert!(data.len() < HEADER_LEN);
        assert!(parsed.is_err());
        return;
    };
    assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN]);
    match parsed {
        Ok(DriverMessage::DeviceReady { ok }) => {
            assert_eq!(h.event, DEVICE_READY);
            assert_eq!(ok, h.value != 0);
        }
        Ok(DriverMessage::PortReady { id, ok }) => {
            assert_eq!((h.event, id, ok), (PORT_READY, h.id, h.value != 0));
        }
        Ok(DriverMessage::PortOpen { id, open }) => {
            assert_eq!((h.event, id, open), (PORT_OPEN, h.id, h.value != 0));
        }
        Err(_) => assert!(![DEVICE_READY, PORT_READY, PORT_OPEN].contains(&h.event)),
    }
});
