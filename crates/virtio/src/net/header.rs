//! The virtio-net header (`virtio_net_hdr_v1`, 12 bytes, little endian)
//! that precedes every frame, and the check of what the guest puts in it
//! before a frame leaves for the TAP. Pure functions: the fuzz target calls
//! [`check_tx_frame`] directly.

use virtio_bindings::virtio_net as n;

use super::features;

/// Bytes of `virtio_net_hdr_v1` (virtio 1.x always uses it, with
/// `num_buffers`, whether or not MRG_RXBUF is negotiated).
pub const HDR_LEN: usize = 12;
/// An Ethernet header: the shortest frame the TAP takes.
pub const MIN_FRAME_LEN: usize = 14;
/// The longest frame either way, header not included: the largest IP packet
/// (a 64 KiB TSO segment) behind an Ethernet header with two VLAN tags.
pub const MAX_FRAME_LEN: usize = 65_535 + 22;

const F_NEEDS_CSUM: u8 = n::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const F_DATA_VALID: u8 = n::VIRTIO_NET_HDR_F_DATA_VALID as u8;
const GSO_NONE: u8 = n::VIRTIO_NET_HDR_GSO_NONE as u8;
const GSO_TCPV4: u8 = n::VIRTIO_NET_HDR_GSO_TCPV4 as u8;
const GSO_TCPV6: u8 = n::VIRTIO_NET_HDR_GSO_TCPV6 as u8;
const GSO_ECN: u8 = n::VIRTIO_NET_HDR_GSO_ECN as u8;

/// A decoded `virtio_net_hdr_v1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl NetHdr {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// Why a frame from the guest is dropped instead of sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxFrameError {
    #[error(
        "Frame of {0} bytes (header included) is shorter than a virtio-net and an Ethernet header"
    )]
    TooShort(usize),
    #[error("Frame of {0} bytes (header included) is longer than the largest frame")]
    TooLong(usize),
    #[error("Header flags {0:#x} are not allowed on transmit")]
    Flags(u8),
    #[error("Checksum offload requested, but VIRTIO_NET_F_CSUM was not negotiated")]
    CsumNotNegotiated,
    #[error("Checksum field at {start}+{offset} is outside the {len}-byte frame")]
    CsumOutside { start: u16, offset: u16, len: usize },
    #[error("GSO type {0:#x} is unknown or was not negotiated")]
    GsoType(u8),
    #[error("GSO frame with a segment size of 0")]
    GsoSize,
}

/// Checks a frame the guest wants sent: `hdr` is the first [`HDR_LEN`]
/// bytes of the chain, `chain_len` the chain's readable bytes (header
/// included), `acked` the features the driver accepted. The TAP checks the
/// header again when it takes the frame; this drops what is wrong early and
/// tells why.
pub fn check_tx_frame(
    hdr: &[u8; HDR_LEN],
    chain_len: usize,
    acked: u64,
) -> Result<NetHdr, TxFrameError> {
    if chain_len < HDR_LEN + MIN_FRAME_LEN {
        return Err(TxFrameError::TooShort(chain_len));
    }
    if chain_len > HDR_LEN + MAX_FRAME_LEN {
        return Err(TxFrameError::TooLong(chain_len));
    }
    let frame_len = chain_len - HDR_LEN;
    let f = features::effective(acked);
    let h = NetHdr::from_bytes(hdr);
    // DATA_VALID means nothing on transmit (Linux never sets it); tolerate it.
    if h.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return Err(TxFrameError::Flags(h.flags));
    }
    if h.flags & F_NEEDS_CSUM != 0 {
        if f & features::CSUM == 0 {
            return Err(TxFrameError::CsumNotNegotiated);
        }
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if end > frame_len {
            return Err(TxFrameError::CsumOutside {
                start: h.csum_start,
                offset: h.csum_offset,
                len: frame_len,
            });
        }
    }
    let ecn = h.gso_type & GSO_ECN != 0;
    let needed = match h.gso_type & !GSO_ECN {
        GSO_NONE if !ecn => return Ok(h),
        GSO_TCPV4 => features::HOST_TSO4,
        GSO_TCPV6 => features::HOST_TSO6,
        _ => return Err(TxFrameError::GsoType(h.gso_type)),
    };
    if f & needed == 0 || (ecn && f & features::HOST_ECN == 0) {
        return Err(TxFrameError::GsoType(h.gso_type));
    }
    if h.gso_size == 0 {
        return Err(TxFrameError::GsoSize);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::features::*;

    const ALL: u64 = OFFERED;

    fn hdr(h: NetHdr) -> [u8; HDR_LEN] {
        h.to_bytes()
    }

    #[test]
    fn header_round_trips() {
        let h = NetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 0x1234,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], &[1, 4, 0x34, 0x12]);
        assert_eq!(NetHdr::from_bytes(&b), h);
    }

    #[test]
    fn plain_frames_pass() {
        let h = hdr(NetHdr::default());
        assert!(check_tx_frame(&h, HDR_LEN + 60, 0).is_ok());
        assert!(check_tx_frame(&h, HDR_LEN + MIN_FRAME_LEN, 0).is_ok());
        assert!(check_tx_frame(&h, HDR_LEN + MAX_FRAME_LEN, ALL).is_ok());
    }

    #[test]
    fn lengths_are_bounded() {
        let h = hdr(NetHdr::default());
        assert_eq!(check_tx_frame(&h, 0, ALL), Err(TxFrameError::TooShort(0)));
        assert_eq!(
            check_tx_frame(&h, HDR_LEN + 13, ALL),
            Err(TxFrameError::TooShort(25))
        );
        let big = HDR_LEN + MAX_FRAME_LEN + 1;
        assert_eq!(
            check_tx_frame(&h, big, ALL),
            Err(TxFrameError::TooLong(big))
        );
        assert!(check_tx_frame(&h, usize::MAX, ALL).is_err());
    }

    #[test]
    fn checksum_offload_needs_the_feature_and_a_field_inside() {
        let h = hdr(NetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 6,
            ..NetHdr::default()
        });
        assert_eq!(
            check_tx_frame(&h, HDR_LEN + 100, 0),
            Err(TxFrameError::CsumNotNegotiated)
        );
        assert!(check_tx_frame(&h, HDR_LEN + 100, CSUM).is_ok());
        assert!(check_tx_frame(&h, HDR_LEN + 42, CSUM).is_ok());
        assert!(matches!(
            check_tx_frame(&h, HDR_LEN + 41, CSUM),
            Err(TxFrameError::CsumOutside { .. })
        ));
        let h = hdr(NetHdr {
            flags: 1,
            csum_start: u16::MAX,
            csum_offset: u16::MAX,
            ..NetHdr::default()
        });
        assert!(matches!(
            check_tx_frame(&h, HDR_LEN + MAX_FRAME_LEN, CSUM),
            Err(TxFrameError::CsumOutside { .. })
        ));
    }

    #[test]
    fn unknown_flags_are_refused() {
        for flags in [4u8, 0x80, 0xff] {
            let h = hdr(NetHdr {
                flags,
                ..NetHdr::default()
            });
            assert_eq!(
                check_tx_frame(&h, HDR_LEN + 60, ALL),
                Err(TxFrameError::Flags(flags))
            );
        }
        let h = hdr(NetHdr {
            flags: 2,
            ..NetHdr::default()
        });
        assert!(check_tx_frame(&h, HDR_LEN + 60, ALL).is_ok());
    }

    #[test]
    fn gso_needs_its_feature_and_a_segment_size() {
        let tso = |gso_type, gso_size| {
            hdr(NetHdr {
                flags: 1,
                gso_type,
                gso_size,
                csum_start: 34,
                csum_offset: 16,
                hdr_len: 66,
                ..NetHdr::default()
            })
        };
        let len = HDR_LEN + 64_000;
        assert!(check_tx_frame(&tso(1, 1448), len, CSUM | HOST_TSO4).is_ok());
        assert!(check_tx_frame(&tso(4, 1428), len, CSUM | HOST_TSO6).is_ok());
        assert_eq!(
            check_tx_frame(&tso(1, 1448), len, CSUM | HOST_TSO6),
            Err(TxFrameError::GsoType(1))
        );
        // TSO without CSUM is not a consistent set: TSO is dropped.
        assert_eq!(
            check_tx_frame(&tso(1, 1448), len, HOST_TSO4),
            Err(TxFrameError::CsumNotNegotiated)
        );
        assert_eq!(
            check_tx_frame(&tso(0x81, 1448), len, CSUM | HOST_TSO4),
            Err(TxFrameError::GsoType(0x81))
        );
        assert!(check_tx_frame(&tso(0x81, 1448), len, CSUM | HOST_TSO4 | HOST_ECN).is_ok());
        assert_eq!(
            check_tx_frame(&tso(0x80, 1448), len, ALL),
            Err(TxFrameError::GsoType(0x80))
        );
        for t in [3u8, 5, 2, 0x7f] {
            assert_eq!(
                check_tx_frame(&tso(t, 1448), len, ALL),
                Err(TxFrameError::GsoType(t)),
                "{t}"
            );
        }
        assert_eq!(
            check_tx_frame(&tso(1, 0), len, ALL),
            Err(TxFrameError::GsoSize)
        );
    }

    #[test]
    fn effective_features_drop_what_lacks_a_prerequisite() {
        assert_eq!(effective(GUEST_TSO4 | GUEST_ECN), 0);
        assert_eq!(
            effective(GUEST_CSUM | GUEST_TSO4 | GUEST_ECN),
            GUEST_CSUM | GUEST_TSO4 | GUEST_ECN
        );
        assert_eq!(effective(GUEST_CSUM | GUEST_ECN), GUEST_CSUM);
        assert_eq!(effective(HOST_TSO6 | HOST_ECN | MRG_RXBUF), MRG_RXBUF);
        assert_eq!(effective(OFFERED), OFFERED);
    }
}
