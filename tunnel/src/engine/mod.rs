//! The bundle engine the dataplane calls: [`BundleTx`] packs a sender
//! worker's burst of inner packets into frames, picks a tunnel for each and
//! seals it in place; [`BundleRx`] opens ESP packets of every tunnel of the
//! bundle, unpacks, reassembles and re-orders them, and answers probes.
//!
//! Sans-IO: buffers and `now` in, [`Transmit`] / delivered handles /
//! [`DropReason`] out. Nothing is allocated per packet once set up.
//!
//! ESP area layout (one output buffer, from the ESP header on):
//!
//! ```text
//! 0        8        16                     16+frame     +pad+2     +16
//! | SPI,seq |   IV   |  bundle frame ...     | pad | pl,nh |   ICV    |
//! ```
//!
//! The caller puts outer IP/UDP headers before it; [`esp_area_len`] gives
//! the room a frame of `max_frame` bytes needs.

mod rx;
mod tx;

pub use rx::{BundleRx, BundleRxConfig, OpenedFrame, ReceivedReply, RxCounters, RxSummary};
pub use tx::{BundleTx, BundleTxConfig, TxCounters};

use crate::wire::esp::{MAX_TAIL, PAYLOAD_OFFSET};
use crate::DropReason;

/// Bytes before the frame in the ESP area: ESP header and IV.
pub const ESP_HEADROOM: usize = PAYLOAD_OFFSET;
/// Bytes after the frame in the ESP area: pad, trailer and ICV at most.
pub const ESP_TAILROOM: usize = MAX_TAIL;

/// Size of the ESP area for frames of up to `max_frame` bytes.
pub const fn esp_area_len(max_frame: usize) -> usize {
    ESP_HEADROOM + max_frame + ESP_TAILROOM
}

/// Largest frame an ESP area of `area_len` bytes holds.
pub const fn max_frame_for(area_len: usize) -> usize {
    area_len.saturating_sub(ESP_HEADROOM + ESP_TAILROOM)
}

/// What a tunnel of a rebuilt bundle was in the bundle it replaces (see
/// [`BundleTx::continue_from`] and [`BundleRx::continue_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    /// Its index in the old bundle: the same path (port and addresses).
    pub tunnel: usize,
    /// Its inbound SA is the old tunnel's (SPI, key, salt and replay
    /// window size): the old SA, with its replay window, is kept.
    pub same_inbound: bool,
}

/// A sealed ESP packet ready in the caller's buffer: send `buf[..esp_len]`
/// on tunnel `tunnel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Tunnel index in the bundle.
    pub tunnel: usize,
    /// Length of the ESP packet, from SPI to ICV.
    pub esp_len: usize,
    /// SPI it was sealed with.
    pub spi: crate::sa::Spi,
    /// Its 64-bit sequence number.
    pub seq: u64,
}

/// Slots of [`DropCounters`]; more than `DropReason` has variants.
pub const DROP_SLOTS: usize = 64;

// Every reason must have a slot; the last variant is checked here.
const _: () = assert!(DropReason::ALL.len() <= DROP_SLOTS);

/// One counter per [`DropReason`] (VPP's per-node error counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DROP_SLOTS],
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: [0; DROP_SLOTS],
        }
    }
}

impl DropCounters {
    /// Counts one drop.
    #[inline]
    pub fn add(&mut self, reason: DropReason) {
        self.add_n(reason, 1);
    }

    /// Counts `n` drops.
    #[inline]
    pub fn add_n(&mut self, reason: DropReason, n: u64) {
        let i = (reason as usize).min(DROP_SLOTS - 1);
        self.counts[i] += n;
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[(reason as usize).min(DROP_SLOTS - 1)]
    }

    /// Every drop counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The raw array, indexed by `DropReason as usize`.
    pub fn as_array(&self) -> &[u64; DROP_SLOTS] {
        &self.counts
    }

    /// Adds another set of counters (summing workers or bundles).
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// Non-zero counters by reason name.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL.iter().filter(|r| self.get(**r) > 0).map(|r| (r.name(), self.get(*r))).collect()
    }
}

/// Fixed-capacity FIFO set up once: `push` refuses when full, never grows.
#[derive(Debug, Clone)]
struct Ring<T> {
    items: std::collections::VecDeque<T>,
    cap: usize,
}

impl<T> Ring<T> {
    fn new(cap: usize) -> Self {
        Ring {
            items: std::collections::VecDeque::with_capacity(cap),
            cap,
        }
    }

    fn push(&mut self, item: T) -> Result<(), DropReason> {
        if self.items.len() >= self.cap {
            return Err(DropReason::ProbeQueueFull);
        }
        self.items.push_back(item);
        Ok(())
    }

    fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    fn front(&self) -> Option<&T> {
        self.items.front()
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}
