//! The segment's byte layout: a fixed header at offset 0, then the slots of
//! the commands ring, then the slots of the events ring.
//!
//! ```text
//! 0    Meta (64 B): magic, version, header size, msg size, capacity, generation
//! 64   commands.head  (own cache line)    dataplane stores, control loads
//! 128  commands.tail  (own cache line)    control stores, dataplane loads
//! 192  events.head    (own cache line)    control stores, dataplane loads
//! 256  events.tail    (own cache line)    dataplane stores, control loads
//! 320  commands slots: capacity x Msg (128 B)
//! ...  events slots:   capacity x Msg (128 B)
//! ```
//!
//! Head and tail are free-running u64 positions; a slot index is
//! `position & (capacity - 1)`. Little-endian, as on every host braid targets.

use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU64;

use crate::msg::Msg;

/// First eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"BRAIDSHM";
/// Bumped on any change to this file's layout or to [`Msg`].
pub const LAYOUT_VERSION: u32 = 1;
/// Largest ring a segment may declare (2^20 slots = 128 MiB per ring).
pub const MAX_CAPACITY: u32 = 1 << 20;

/// Size of the header, which is also the offset of the first slot.
pub const HEADER_SIZE: usize = size_of::<Header>();
/// Size of one ring slot.
pub const MSG_SIZE: usize = size_of::<Msg>();

/// Byte offsets of the header fields, for tools and for the tests that
/// corrupt segments on purpose.
pub mod field {
    use super::*;
    pub const MAGIC: usize = offset_of!(Meta, magic);
    pub const VERSION: usize = offset_of!(Meta, version);
    pub const HEADER_SIZE: usize = offset_of!(Meta, header_size);
    pub const MSG_SIZE: usize = offset_of!(Meta, msg_size);
    pub const CAPACITY: usize = offset_of!(Meta, capacity);
    pub const GENERATION: usize = offset_of!(Meta, generation);
}

/// Written once by the creator before the segment becomes visible under its
/// name; only `generation` changes afterwards.
#[repr(C, align(64))]
pub(crate) struct Meta {
    pub(crate) magic: [u8; 8],
    pub(crate) version: u32,
    pub(crate) header_size: u32,
    pub(crate) msg_size: u32,
    pub(crate) capacity: u32,
    /// Committed transactions on the commands ring, bumped by its producer.
    pub(crate) generation: AtomicU64,
}

/// One u64 alone on a cache line, so head and tail never false-share.
#[repr(C, align(64))]
pub(crate) struct CacheLine {
    pub(crate) value: AtomicU64,
}

/// Positions of one single-producer/single-consumer ring.
#[repr(C)]
pub(crate) struct RingIndices {
    /// Next position to read; stored (Release) only by the consumer.
    pub(crate) head: CacheLine,
    /// Next position to write; stored (Release) only by the producer.
    pub(crate) tail: CacheLine,
}

#[repr(C)]
pub(crate) struct Header {
    pub(crate) meta: Meta,
    pub(crate) commands: RingIndices,
    pub(crate) events: RingIndices,
}

const _: () = assert!(size_of::<Meta>() == 64);
const _: () = assert!(HEADER_SIZE == 320);
const _: () = assert!(MSG_SIZE == 128);
const _: () = assert!(HEADER_SIZE.is_multiple_of(core::mem::align_of::<Msg>()));

/// Total bytes of a segment whose rings hold `capacity` slots each.
pub const fn segment_len(capacity: u32) -> u64 {
    HEADER_SIZE as u64 + 2 * capacity as u64 * MSG_SIZE as u64
}

/// Offset of the first slot of ring `index` (0 = commands, 1 = events).
pub(crate) const fn slots_offset(capacity: u32, index: usize) -> usize {
    HEADER_SIZE + index * capacity as usize * MSG_SIZE
}

pub(crate) const fn valid_capacity(capacity: u32) -> bool {
    capacity.is_power_of_two() && capacity <= MAX_CAPACITY
}
