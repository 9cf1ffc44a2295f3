//! The virtio-vsock packet header (virtio 1.x section 5.10.6) and the host
//! side's `CONNECT <port>` line. Pure functions of bytes: the fuzz target
//! calls them directly.

/// Size of the packet header.
pub const HEADER_LEN: usize = 44;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Stream sockets, the only type the device offers.
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// The largest payload a packet carries (Linux's
/// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// A packet header, as on the wire (all fields little endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

/// What a packet from the driver asks for, after its header was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Response,
    Rst,
    Shutdown { flags: u32 },
    Rw,
    CreditUpdate,
    CreditRequest,
}

/// Why a driver's packet is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("Packet of {0} bytes is shorter than its 44-byte header")]
    TooShort(usize),
    #[error("Packet says {len} payload bytes but carries {carried}")]
    BadLength { len: u32, carried: usize },
    #[error("Packet payload of {0} bytes is larger than 64 KiB")]
    TooLarge(u32),
    #[error("Packet type {0} is not a stream")]
    BadType(u16),
    #[error("Packet operation {0} is unknown")]
    BadOp(u16),
    #[error("Packet from CID {0}, not the guest's")]
    BadSource(u64),
    #[error("Packet to CID {0}, not the host")]
    BadDestination(u64),
    #[error("{0} packet carries a payload")]
    PayloadOnControl(&'static str),
}

impl Header {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, PacketError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(PacketError::TooShort(bytes.len()))?;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Ok(Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    /// The header as it goes on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Checks a packet the guest sent: `header` read from its first bytes,
/// `carried` the payload bytes its buffers hold after the header. The
/// packet must come from `guest_cid`, be a stream packet with a known
/// operation, and carry exactly `len` payload bytes (at most 64 KiB, and
/// only on RW). A packet to another CID than the host is refused too (the
/// caller answers it with RST).
pub fn check_guest_packet(
    header: &Header,
    carried: usize,
    guest_cid: u64,
) -> Result<Op, PacketError> {
    if header.src_cid != guest_cid {
        return Err(PacketError::BadSource(header.src_cid));
    }
    if header.len > MAX_PAYLOAD {
        return Err(PacketError::TooLarge(header.len));
    }
    if carried < header.len as usize {
        return Err(PacketError::BadLength {
            len: header.len,
            carried,
        });
    }
    if header.type_ != TYPE_STREAM {
        return Err(PacketError::BadType(header.type_));
    }
    if header.dst_cid != HOST_CID {
        return Err(PacketError::BadDestination(header.dst_cid));
    }
    let op = match header.op {
        OP_REQUEST => Op::Request,
        OP_RESPONSE => Op::Response,
        OP_RST => Op::Rst,
        OP_SHUTDOWN => Op::Shutdown {
            flags: header.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND),
        },
        OP_RW => Op::Rw,
        OP_CREDIT_UPDATE => Op::CreditUpdate,
        OP_CREDIT_REQUEST => Op::CreditRequest,
        other => return Err(PacketError::BadOp(other)),
    };
    if op != Op::Rw && header.len != 0 {
        return Err(PacketError::PayloadOnControl(op_name(header.op)));
    }
    Ok(op)
}

/// The name of operation `op`, for logs.
pub fn op_name(op: u16) -> &'static str {
    match op {
        OP_REQUEST => "REQUEST",
        OP_RESPONSE => "RESPONSE",
        OP_RST => "RST",
        OP_SHUTDOWN => "SHUTDOWN",
        OP_RW => "RW",
        OP_CREDIT_UPDATE => "CREDIT_UPDATE",
        OP_CREDIT_REQUEST => "CREDIT_REQUEST",
        _ => "unknown",
    }
}

/// The longest `CONNECT <port>` line a host client may send (newline
/// included).
pub const MAX_CONNECT_LINE: usize = 32;

/// Why a host client's first line is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectLineError {
    #[error("Expected 'CONNECT <port>'")]
    Syntax,
    #[error("Port '{0}' is not a number from 0 to 4294967295")]
    Port(String),
}

/// Parses a host client's first line, `CONNECT <port>` (the newline
/// already stripped; a trailing `\r` is accepted).
pub fn parse_connect_line(line: &[u8]) -> Result<u32, ConnectLineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| ConnectLineError::Syntax)?;
    let Some(rest) = text.strip_prefix("CONNECT ") else {
        return Err(ConnectLineError::Syntax);
    };
    let port = rest.trim_matches(' ');
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectLineError::Port(port.to_string()));
    }
    port.parse::<u32>()
        .map_err(|_| ConnectLineError::Port(port.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(op: u16, len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 5000,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        }
    }

    #[test]
    fn header_round_trips_in_little_endian() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xaabb_ccdd,
            dst_port: 7,
            len: 9,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 0x1000,
            fwd_cnt: 0xffff_ffff,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[16..20], &[0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(Header::parse(&b), Ok(h));
        let mut longer = b.to_vec();
        longer.extend_from_slice(b"payload");
        assert_eq!(Header::parse(&longer), Ok(h));
        assert_eq!(Header::parse(&b[..43]), Err(PacketError::TooShort(43)));
    }

    #[test]
    fn good_packets_are_accepted() {
        assert_eq!(
            check_guest_packet(&hdr(OP_REQUEST, 0), 0, 3),
            Ok(Op::Request)
        );
        assert_eq!(check_guest_packet(&hdr(OP_RW, 10), 10, 3), Ok(Op::Rw));
        // Buffers may be longer than the payload.
        assert_eq!(check_guest_packet(&hdr(OP_RW, 10), 4096, 3), Ok(Op::Rw));
        let mut s = hdr(OP_SHUTDOWN, 0);
        s.flags = 0xffff_ffff;
        assert_eq!(check_guest_packet(&s, 0, 3), Ok(Op::Shutdown { flags: 3 }));
        for op in [OP_RESPONSE, OP_RST, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST] {
            assert!(check_guest_packet(&hdr(op, 0), 0, 3).is_ok());
        }
    }

    #[test]
    fn hostile_packets_are_refused() {
        let cases = [
            (
                hdr(OP_RW, 100),
                99,
                PacketError::BadLength {
                    len: 100,
                    carried: 99,
                },
            ),
            (
                hdr(OP_RW, u32::MAX),
                usize::MAX,
                PacketError::TooLarge(u32::MAX),
            ),
            (
                hdr(OP_RW, MAX_PAYLOAD + 1),
                1 << 20,
                PacketError::TooLarge(MAX_PAYLOAD + 1),
            ),
            (hdr(0, 0), 0, PacketError::BadOp(0)),
            (hdr(8, 0), 0, PacketError::BadOp(8)),
            (
                hdr(OP_REQUEST, 4),
                4,
                PacketError::PayloadOnControl("REQUEST"),
            ),
            (
                hdr(OP_CREDIT_UPDATE, 1),
                1,
                PacketError::PayloadOnControl("CREDIT_UPDATE"),
            ),
        ];
        for (h, carried, want) in cases {
            assert_eq!(check_guest_packet(&h, carried, 3), Err(want), "{h:?}");
        }
        let mut h = hdr(OP_RW, 0);
        h.type_ = 2;
        assert_eq!(check_guest_packet(&h, 0, 3), Err(PacketError::BadType(2)));
        let mut h = hdr(OP_REQUEST, 0);
        h.src_cid = 4;
        assert_eq!(check_guest_packet(&h, 0, 3), Err(PacketError::BadSource(4)));
        let mut h = hdr(OP_REQUEST, 0);
        h.dst_cid = 7;
        assert_eq!(
            check_guest_packet(&h, 0, 3),
            Err(PacketError::BadDestination(7))
        );
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 5000"), Ok(5000));
        assert_eq!(parse_connect_line(b"CONNECT 0\r"), Ok(0));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295"), Ok(u32::MAX));
        for bad in [
            &b""[..],
            b"CONNECT",
            b"connect 1",
            b"CONNECT",
            b"HELLO 1",
            b"\xff\xfe",
        ] {
            assert_eq!(
                parse_connect_line(bad),
                Err(ConnectLineError::Syntax),
                "{bad:?}"
            );
        }
        for bad in [
            &b"CONNECT "[..],
            b"CONNECT x",
            b"CONNECT -1",
            b"CONNECT 4294967296",
            b"CONNECT 1 2",
        ] {
            assert!(
                matches!(parse_connect_line(bad), Err(ConnectLineError::Port(_))),
                "{bad:?}"
            );
        }
    }
}
