//! MAC addresses: parsing what the user gives, and Keel's stable
//! locally administered default.

use std::fmt;
use std::str::FromStr;

/// The first three bytes of the MACs Keel makes up: `02` (locally
/// administered, unicast) then `6b:65` ("ke" in ASCII). QEMU's are
/// `52:54:00`; this keeps Keel's guests apart from QEMU's on one bridge.
pub const KEEL_MAC_PREFIX: [u8; 3] = [0x02, 0x6b, 0x65];

/// An Ethernet MAC address a NIC may own: unicast and not all zeroes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr([u8; 6]);

/// Why a MAC address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("Invalid MAC '{0}': expected six hex bytes separated by ':', like 02:6b:65:00:00:01")]
    Malformed(String),
    #[error("MAC {0} is a multicast address: the lowest bit of the first byte must be 0")]
    Multicast(String),
    #[error("MAC {0} is all zeroes")]
    Zero(String),
}

impl MacAddr {
    /// A unicast, non-zero address from its bytes.
    pub fn new(bytes: [u8; 6]) -> Result<Self, MacError> {
        let shown = || format_mac(&bytes);
        if bytes[0] & 1 != 0 {
            return Err(MacError::Multicast(shown()));
        }
        if bytes == [0; 6] {
            return Err(MacError::Zero(shown()));
        }
        Ok(MacAddr(bytes))
    }

    /// Keel's default for a NIC: [`KEEL_MAC_PREFIX`] and 24 bits of an
    /// FNV-1a hash of `seed` (the TAP's name), so a VM keeps its MAC from
    /// run to run as long as its TAP keeps its name.
    pub fn keel_default(seed: &str) -> Self {
        let mut h: u32 = 0x811c_9dc5;
        for b in seed.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let [_, a, b, c] = h.to_be_bytes();
        let [p0, p1, p2] = KEEL_MAC_PREFIX;
        MacAddr([p0, p1, p2, a, b, c])
    }

    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

fn format_mac(b: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mac(&self.0))
    }
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// `aa:bb:cc:dd:ee:ff`, hex digits in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || MacError::Malformed(s.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut bytes {
            let part = parts.next().ok_or_else(malformed)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(malformed());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        MacAddr::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "02:6B:65:0a:ff:01".parse().unwrap();
        assert_eq!(m.bytes(), [0x02, 0x6b, 0x65, 0x0a, 0xff, 0x01]);
        assert_eq!(m.to_string(), "02:6b:65:0a:ff:01");
        assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
    }

    #[test]
    fn malformed_is_refused() {
        for bad in [
            "",
            "02:6b:65:00:00",
            "02:6b:65:00:00:01:02",
            "02-6b-65-00-00-01",
            "2:6b:65:00:00:01",
            "002:6b:65:00:00:01",
            "02:6b:65:00:00:0g",
            "02:6b:65:00:00:+1",
            "02:6b:65:00:00:01:",
            "02::6b:65:00:00:01",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(MacError::Malformed(_))),
                "{bad}"
            );
        }
        let m = "zz".parse::<MacAddr>().unwrap_err().to_string();
        assert!(m.contains("'zz'") && m.contains("02:6b:65:00:00:01"), "{m}");
    }

    #[test]
    fn multicast_and_zero_are_refused() {
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            "ff:ff:ff:ff:ff:ff".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            "00:00:00:00:00:00".parse::<MacAddr>(),
            Err(MacError::Zero(_))
        ));
    }

    #[test]
    fn default_is_stable_local_unicast() {
        let a = MacAddr::keel_default("keel0");
        assert_eq!(a, MacAddr::keel_default("keel0"));
        assert_ne!(a, MacAddr::keel_default("keel1"));
        let b = a.bytes();
        assert_eq!(b[..3], KEEL_MAC_PREFIX);
        assert_eq!(b[0] & 1, 0, "unicast");
        assert_eq!(b[0] & 2, 2, "locally administered");
        assert!(MacAddr::new(b).is_ok());
    }
}
