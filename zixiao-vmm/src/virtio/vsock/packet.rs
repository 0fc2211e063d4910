//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, virtio 1.2
//! section 5.10.6), its operations and flags. virtio-bindings 0.2 has no
//! vsock module, so the layout is written out here: 44 bytes, packed,
//! little endian.

/// The header's size in bytes.
pub(crate) const HEADER: usize = 44;

/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type offered (no
/// `VIRTIO_VSOCK_F_SEQPACKET`).
pub(crate) const TYPE_STREAM: u16 = 1;

/// `VIRTIO_VSOCK_OP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Connect.
    Request,
    /// Connection accepted.
    Response,
    /// Connection refused or reset.
    Rst,
    /// No more sending and/or receiving (`flags`).
    Shutdown,
    /// Data.
    Rw,
    /// The sender's `buf_alloc`/`fwd_cnt` changed.
    CreditUpdate,
    /// The sender asks for a credit update.
    CreditRequest,
}

impl Op {
    /// The operation for wire value `op`; `None` for an unknown one.
    pub(crate) fn from_wire(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }

    fn wire(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }
}

/// `VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE`: the sender receives nothing more.
pub(crate) const SHUTDOWN_RECEIVE: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_F_SEND`: the sender sends nothing more.
pub(crate) const SHUTDOWN_SEND: u32 = 2;

/// A decoded header. `op` stays raw so that an unknown operation can still
/// be answered with a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// A stream header of `op`, everything else zero.
    pub(crate) fn stream(op: Op) -> Header {
        Header {
            kind: TYPE_STREAM,
            op: op.wire(),
            ..Header::default()
        }
    }

    /// Decodes the wire form.
    pub(crate) fn decode(b: &[u8; HEADER]) -> Header {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The wire form.
    pub(crate) fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The operation, if known.
    pub(crate) fn op(&self) -> Option<Op> {
        Op::from_wire(self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_in_the_spec_layout() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1122_3344,
            dst_port: 52,
            len: 4096,
            kind: TYPE_STREAM,
            op: 5,
            flags: SHUTDOWN_SEND,
            buf_alloc: 262_144,
            fwd_cnt: 7,
        };
        let b = h.encode();
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&b[28..32], &[1, 0, 5, 0], "type then op");
        assert_eq!(Header::decode(&b), h);
        assert_eq!(h.op(), Some(Op::Rw));
        assert_eq!(Op::from_wire(0), None);
    }
}
