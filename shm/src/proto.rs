//! What the two processes say over the rings.
//!
//! **Commands (control -> dataplane).** One transaction carries one whole
//! configuration snapshot: the JSON document of `braid-config` (keys
//! included), cut into chunks. Its transaction id is the configuration's
//! *generation*, which only grows. The first data message is a header
//! (total length, FNV-1a 64 hash of the document); then chunks, each with
//! its index and up to [`CHUNK_DATA`] bytes. [`config_from_txn`] checks
//! every index, the length and the hash, so a document arrives whole or is
//! refused; the dataplane then validates it with the same rules the control
//! process applied before sending (it never trusts the segment).
//!
//! Why whole snapshots and not per-record messages: one model (the JSON
//! document) for the file, the API and the ring, validated by one piece of
//! code; a change is all or nothing by construction; the dataplane diffs
//! the new tables against the running ones, so unchanged tunnels keep their
//! state. The cost (a 10,000-tunnel document re-sent per change) is
//! measured in the control plane's benchmark.
//!
//! **Events (dataplane -> control).** [`Event::Applied`] and
//! [`Event::Rejected`] answer each snapshot by generation;
//! [`Event::Hello`] is sent when a dataplane (re)starts or sees a new
//! control process, with the generation it runs.

use std::time::Duration;

use crate::msg::{Msg, TxnId, PAYLOAD_LEN};
use crate::ring::{Full, Producer};
use crate::txn::Txn;

/// Snapshot header: `u64 total length, u64 FNV-1a hash`.
pub const KIND_CONFIG_HEADER: u16 = 16;
/// Snapshot chunk: `u32 index`, then data.
pub const KIND_CONFIG_CHUNK: u16 = 17;
/// Data bytes per chunk.
pub const CHUNK_DATA: usize = PAYLOAD_LEN - 4;
/// Largest document [`push_config`] sends (and a reader should buffer):
/// 10,000 tunnels and 100,000 NAT rules fit.
pub const MAX_CONFIG_LEN: usize = 64 << 20;
/// Messages of the largest snapshot: what a `TxnReader` must accept.
pub const MAX_CONFIG_MSGS: usize = MAX_CONFIG_LEN / CHUNK_DATA + 2;

pub const KIND_EVENT_APPLIED: u16 = 32;
pub const KIND_EVENT_REJECTED: u16 = 33;
pub const KIND_EVENT_HELLO: u16 = 34;

/// Why a snapshot could not be sent or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("configuration is {0} bytes, at most {MAX_CONFIG_LEN} can be sent")]
    TooLarge(usize),
    #[error("commands ring stayed full for {0:?} (is the dataplane running?)")]
    RingFull(Duration),
    #[error("snapshot has no header message")]
    NoHeader,
    #[error("snapshot message {at} has kind {kind}, expected a chunk")]
    UnexpectedKind { at: usize, kind: u16 },
    #[error("snapshot chunk {at} carries index {index}")]
    BadIndex { at: usize, index: u32 },
    #[error("snapshot is {got} bytes, its header says {want}")]
    BadLength { got: usize, want: u64 },
    #[error("snapshot hash mismatch")]
    BadHash,
}

/// FNV-1a, 64 bits: integrity of a snapshot across the ring (not security:
/// both ends are braid's own processes behind a 0600 file), and what tells
/// two documents apart: the dataplane reports the hash of the document it
/// applied with its generation ([`Event::Applied`], the stats segment), as
/// two control processes may number different documents alike (one whose
/// state directory was wiped starts again from 1).
pub fn doc_hash(doc: &[u8]) -> u64 {
    fnv1a(doc)
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The messages of snapshot `generation`: BEGIN, header, chunks, COMMIT.
pub fn config_msgs(generation: u64, doc: &[u8]) -> Result<impl Iterator<Item = Msg> + '_, ProtoError> {
    if doc.len() > MAX_CONFIG_LEN {
        return Err(ProtoError::TooLarge(doc.len()));
    }
    let txn = TxnId(generation);
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&(doc.len() as u64).to_le_bytes());
    head[8..].copy_from_slice(&doc_hash(doc).to_le_bytes());
    let header = Msg::data(KIND_CONFIG_HEADER, txn, &head).expect("16 bytes fit");
    let chunks = doc.chunks(CHUNK_DATA).enumerate().map(move |(i, c)| {
        let mut p = [0u8; PAYLOAD_LEN];
        p[..4].copy_from_slice(&(i as u32).to_le_bytes());
        p[4..4 + c.len()].copy_from_slice(c);
        Msg::data(KIND_CONFIG_CHUNK, txn, &p[..4 + c.len()]).expect("chunk fits")
    });
    Ok(std::iter::once(Msg::begin(txn)).chain(std::iter::once(header)).chain(chunks).chain(std::iter::once(Msg::commit(txn))))
}

/// Sends snapshot `generation` on the commands ring, waiting up to
/// `timeout` per message while the ring is full (backpressure, never loss).
/// A sender that gives up mid-way leaves an open transaction, which the
/// reader discards at the next BEGIN.
pub fn push_config(p: &mut Producer, generation: u64, doc: &[u8], timeout: Duration) -> Result<(), ProtoError> {
    for msg in config_msgs(generation, doc)? {
        p.push_blocking(&msg, timeout).map_err(|Full| ProtoError::RingFull(timeout))?;
    }
    Ok(())
}

/// The generation and document of a committed snapshot transaction.
pub fn config_from_txn(txn: &Txn) -> Result<(u64, Vec<u8>), ProtoError> {
    let (head, chunks) = txn.msgs.split_first().ok_or(ProtoError::NoHeader)?;
    if head.kind() != KIND_CONFIG_HEADER || head.payload().len() != 16 {
        return Err(ProtoError::NoHeader);
    }
    let p = head.payload();
    let want = u64::from_le_bytes(p[..8].try_into().unwrap());
    let hash = u64::from_le_bytes(p[8..16].try_into().unwrap());
    if want > MAX_CONFIG_LEN as u64 {
        return Err(ProtoError::TooLarge(want as usize));
    }
    let mut doc = Vec::with_capacity(want as usize);
    for (at, m) in chunks.iter().enumerate() {
        if m.kind() != KIND_CONFIG_CHUNK {
            return Err(ProtoError::UnexpectedKind { at, kind: m.kind() });
        }
        let p = m.payload();
        let index = if p.len() >= 4 { u32::from_le_bytes(p[..4].try_into().unwrap()) } else { u32::MAX };
        if index as usize != at {
            return Err(ProtoError::BadIndex { at, index });
        }
        doc.extend_from_slice(&p[4..]);
        if doc.len() as u64 > want {
            break;
        }
    }
    if doc.len() as u64 != want {
        return Err(ProtoError::BadLength { got: doc.len(), want });
    }
    if doc_hash(&doc) != hash {
        return Err(ProtoError::BadHash);
    }
    Ok((txn.id.0, doc))
}

/// What the dataplane reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Snapshot `generation`, whose document hashes to `doc_hash`
    /// ([`doc_hash`]), is live in every worker.
    Applied { generation: u64, doc_hash: u64 },
    /// Snapshot `generation` was refused; the previous one keeps running.
    Rejected { generation: u64, reason: String },
    /// A dataplane started (`boot_id` is new on every start) and runs
    /// `generation` (0: none yet).
    Hello { boot_id: u64, generation: u64 },
}

impl Event {
    pub fn to_msg(&self) -> Msg {
        match self {
            Event::Applied { generation, doc_hash } => {
                Msg::data(KIND_EVENT_APPLIED, TxnId(*generation), &doc_hash.to_le_bytes())
            }
            Event::Rejected { generation, reason } => {
                // Cut at a character boundary to fit one message.
                let mut end = reason.len().min(PAYLOAD_LEN);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                Msg::data(KIND_EVENT_REJECTED, TxnId(*generation), &reason.as_bytes()[..end])
            }
            Event::Hello { boot_id, generation } => {
                Msg::data(KIND_EVENT_HELLO, TxnId(*generation), &boot_id.to_le_bytes())
            }
        }
        .expect("event fits one message")
    }

    /// `None` for a message that is no event (counted by the caller).
    pub fn from_msg(m: &Msg) -> Option<Event> {
        let generation = m.txn().0;
        match m.kind() {
            KIND_EVENT_APPLIED if m.payload().len() == 8 => {
                Some(Event::Applied { generation, doc_hash: u64::from_le_bytes(m.payload().try_into().unwrap()) })
            }
            KIND_EVENT_REJECTED => {
                Some(Event::Rejected { generation, reason: String::from_utf8_lossy(m.payload()).into_owned() })
            }
            KIND_EVENT_HELLO if m.payload().len() == 8 => {
                Some(Event::Hello { boot_id: u64::from_le_bytes(m.payload().try_into().unwrap()), generation })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn_of(generation: u64, doc: &[u8]) -> Txn {
        let msgs: Vec<Msg> = config_msgs(generation, doc).unwrap().collect();
        assert_eq!(msgs.first().unwrap().kind(), Msg::KIND_BEGIN);
        assert_eq!(msgs.last().unwrap().kind(), Msg::KIND_COMMIT);
        Txn { id: TxnId(generation), msgs: msgs[1..msgs.len() - 1].to_vec() }
    }

    #[test]
    fn round_trip_of_every_length_around_chunk_edges() {
        for len in [0, 1, CHUNK_DATA - 1, CHUNK_DATA, CHUNK_DATA + 1, 3 * CHUNK_DATA, 100_000] {
            let doc: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let (g, got) = config_from_txn(&txn_of(9, &doc)).unwrap();
            assert_eq!(g, 9);
            assert_eq!(got, doc, "len {len}");
        }
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let doc = vec![b'x'; 1000];
        let good = txn_of(1, &doc);

        let mut t = good.clone();
        t.msgs.remove(3);
        assert!(matches!(config_from_txn(&t), Err(ProtoError::BadIndex { at: 2, index: 3 })));

        let mut t = good.clone();
        t.msgs.pop();
        assert!(matches!(config_from_txn(&t), Err(ProtoError::BadLength { .. })));

        let mut t = good.clone();
        t.msgs[2] = Msg::data(KIND_CONFIG_CHUNK, TxnId(1), &[1, 0, 0, 0, b'y']).unwrap();
        assert!(config_from_txn(&t).is_err());

        let mut t = good.clone();
        let mut p = t.msgs[1].payload().to_vec();
        p[10] ^= 1;
        t.msgs[1] = Msg::data(KIND_CONFIG_CHUNK, TxnId(1), &p).unwrap();
        assert_eq!(config_from_txn(&t), Err(ProtoError::BadHash));

        let mut t = good.clone();
        t.msgs.remove(0);
        assert_eq!(config_from_txn(&t), Err(ProtoError::NoHeader));
        assert_eq!(config_from_txn(&Txn { id: TxnId(1), msgs: vec![] }), Err(ProtoError::NoHeader));

        let mut t = good;
        t.msgs[2] = Msg::data(40, TxnId(1), &[2, 0, 0, 0]).unwrap();
        assert!(matches!(config_from_txn(&t), Err(ProtoError::UnexpectedKind { at: 1, kind: 40 })));
    }

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Applied { generation: 7, doc_hash: 0x0123_4567_89ab_cdef },
            Event::Rejected { generation: 8, reason: "bundles[0].tunnels[1].key_in: 15 bytes".into() },
            Event::Hello { boot_id: 0xdead_beef_0001, generation: 0 },
        ] {
            assert_eq!(Event::from_msg(&e.to_msg()), Some(e));
        }
        let long = "é".repeat(200);
        let Some(Event::Rejected { reason, .. }) = Event::from_msg(&Event::Rejected { generation: 1, reason: long }.to_msg())
        else {
            panic!()
        };
        assert!(reason.len() <= PAYLOAD_LEN && reason.chars().all(|c| c == 'é'));
        assert_eq!(Event::from_msg(&Msg::data(99, TxnId(0), &[]).unwrap()), None);
        // An answer without the document's hash is no answer.
        assert_eq!(Event::from_msg(&Msg::data(KIND_EVENT_APPLIED, TxnId(7), &[]).unwrap()), None);
    }
}
