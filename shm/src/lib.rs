//! Shared-memory rings between braid's control process and the dataplane.
//!
//! This crate owns the segment format and the only code that touches it: a
//! file under `/dev/shm` (created 0600), mapped by both processes, holding a
//! versioned `#[repr(C)]` header ([`layout`]) and two single-producer /
//! single-consumer rings of fixed-size 128-byte [`Msg`]s with no pointers
//! inside: [`Ring::Commands`] (control -> dataplane) and [`Ring::Events`]
//! (dataplane -> control).
//!
//! Producers never overwrite: [`Producer::try_push`] returns [`Full`] and the
//! caller decides whether to wait ([`Producer::push_blocking`]). Tables travel
//! as transactions (`BEGIN`, data, `COMMIT`); [`TxnReader`] hands a
//! transaction out only once committed, so a writer killed mid-way leaves no
//! half-applied change. The header's generation counts committed transactions.
//! [`proto`] says what the transactions carry (whole configuration
//! snapshots) and what the events are.
//!
//! The stats segment ([`stats`]) is a second file, written by the
//! dataplane's workers (one seqlocked block each) and read by the control
//! process without locks, like VPP's stats segment.
//!
//! It must never block the dataplane's workers (only the dataplane's control
//! thread touches a ring), allocate on the ring path, or trust the peer: any
//! bytes the other process writes can at worst yield wrong messages or a
//! ring that looks full, never out-of-bounds access.
//!
//! # Why `unsafe`
//! The rings live in memory that another process writes concurrently, which
//! the borrow checker cannot see. Reaching it means raw pointers into the
//! mapping, a `&Header` over bytes the peer mutates (sound only because every
//! shared mutable field is an atomic), and `Send` for handles holding those
//! pointers. All of it is in this crate, each block with a `// SAFETY:`
//! comment; the public API is safe. One hazard no code here can prevent: if
//! another process truncates the file while mapped, accesses fault (SIGBUS),
//! which is why only braid's own processes may open the segment (mode 0600).

pub mod layout;
mod msg;
pub mod proto;
mod ring;
mod segment;
pub mod stats;
mod txn;

pub use msg::{Msg, MsgError, TxnId, PAYLOAD_LEN};
pub use ring::{Consumer, Full, Producer};
pub use segment::{End, Ring, Segment, ShmError};
pub use stats::{StatsError, StatsLayout, StatsReader, StatsSegment, StatsSnapshot, StatsWriter};
pub use txn::{Txn, TxnReader, TxnStats};
