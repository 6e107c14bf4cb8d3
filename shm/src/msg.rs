//! The fixed-size message carried by both rings.

use core::fmt;

/// Bytes of payload in one message.
pub const PAYLOAD_LEN: usize = 112;

/// Identifies one transaction of the commands ring; chosen by the writer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TxnId(pub u64);

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn#{}", self.0)
    }
}

/// Why a message could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    #[error("payload is {len} bytes, a message holds at most {PAYLOAD_LEN}")]
    PayloadTooLong { len: usize },
    #[error("message kind {0} is reserved for framing (data kinds start at {first})", first = Msg::KIND_FIRST_DATA)]
    ReservedKind(u16),
}

/// One ring slot: 128 bytes, plain integers only, no pointers, so any bit
/// pattern another process leaves in a slot is a valid `Msg`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    kind: u16,
    flags: u16,
    len: u32,
    txn: u64,
    payload: [u8; PAYLOAD_LEN],
}

impl Msg {
    /// Opens transaction `txn`; a reader discards any transaction still open.
    pub const KIND_BEGIN: u16 = 1;
    /// Closes transaction `txn`; a reader applies it only now.
    pub const KIND_COMMIT: u16 = 2;
    /// Kinds below this one are reserved for framing.
    pub const KIND_FIRST_DATA: u16 = 16;

    /// A data message of `kind` (at least [`Msg::KIND_FIRST_DATA`]).
    pub fn data(kind: u16, txn: TxnId, payload: &[u8]) -> Result<Msg, MsgError> {
        if kind < Self::KIND_FIRST_DATA {
            return Err(MsgError::ReservedKind(kind));
        }
        Self::raw(kind, txn, payload)
    }

    /// A message of any kind, framing kinds included; for tests and tools.
    pub fn raw(kind: u16, txn: TxnId, payload: &[u8]) -> Result<Msg, MsgError> {
        if payload.len() > PAYLOAD_LEN {
            return Err(MsgError::PayloadTooLong { len: payload.len() });
        }
        let mut msg = Msg { kind, flags: 0, len: payload.len() as u32, txn: txn.0, payload: [0; PAYLOAD_LEN] };
        msg.payload[..payload.len()].copy_from_slice(payload);
        Ok(msg)
    }

    pub fn begin(txn: TxnId) -> Msg {
        Msg { kind: Self::KIND_BEGIN, flags: 0, len: 0, txn: txn.0, payload: [0; PAYLOAD_LEN] }
    }

    pub fn commit(txn: TxnId) -> Msg {
        Msg { kind: Self::KIND_COMMIT, flags: 0, len: 0, txn: txn.0, payload: [0; PAYLOAD_LEN] }
    }

    pub fn with_flags(mut self, flags: u16) -> Msg {
        self.flags = flags;
        self
    }

    pub fn kind(&self) -> u16 {
        self.kind
    }

    pub fn flags(&self) -> u16 {
        self.flags
    }

    pub fn txn(&self) -> TxnId {
        TxnId(self.txn)
    }

    /// The used part of the payload; a `len` beyond the slot (only possible
    /// from a misbehaving peer) is clamped, never trusted.
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.len as usize).min(PAYLOAD_LEN)]
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msg(kind {}, flags {:#x}, {:?}, {} B)", self.kind, self.flags, self.txn(), self.len)
    }
}
