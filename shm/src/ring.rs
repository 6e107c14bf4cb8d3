//! The two ends of a single-producer/single-consumer ring.
//!
//! The producer writes a slot, then publishes it with a Release store of
//! `tail`; the consumer's Acquire load of `tail` makes the slot's bytes
//! visible before it reads them. Symmetrically the consumer frees a slot with
//! a Release store of `head`, which the producer Acquire-loads before reusing
//! it. Each side caches the other's position and re-reads it only when the
//! cached value says full (producer) or empty (consumer).

use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::RingIndices;
use crate::msg::Msg;
use crate::segment::{End, Mapping, Ring};

/// The ring had no free slot; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring full")]
pub struct Full;

/// The producing end of a ring. Not `Clone`: one producer per ring.
pub struct Producer {
    map: Arc<Mapping>,
    ring: Ring,
    slots: NonNull<Msg>,
    mask: u64,
    /// Our next position to write; the shared `tail` mirrors it.
    tail: u64,
    /// Last `head` read from the consumer.
    cached_head: u64,
}

// SAFETY: `slots` points into the mapping kept alive by `map`; nothing in a
// `Producer` is tied to the thread that created it, and `&mut self` on every
// method keeps one thread at a time on this end.
unsafe impl Send for Producer {}

impl Producer {
    pub(crate) fn new(map: Arc<Mapping>, ring: Ring) -> Producer {
        let slots = map.slots(ring);
        let mask = map.capacity() as u64 - 1;
        let idx = indices(&map, ring);
        // Resume where the last producer stopped: a new writer after a crash
        // continues the sequence instead of overwriting unread slots.
        let tail = idx.tail.value.load(Ordering::Acquire);
        let cached_head = idx.head.value.load(Ordering::Acquire);
        Producer { map, ring, slots, mask, tail, cached_head }
    }

    /// Appends `msg`, or returns [`Full`] without writing if every slot is
    /// still unread. A COMMIT on the commands ring also bumps the segment's
    /// generation, after the commit is visible.
    pub fn try_push(&mut self, msg: &Msg) -> Result<(), Full> {
        let idx = indices(&self.map, self.ring);
        if self.tail.wrapping_sub(self.cached_head) > self.mask {
            self.cached_head = idx.head.value.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) > self.mask {
                return Err(Full);
            }
        }
        let slot = (self.tail & self.mask) as usize;
        // SAFETY: `slot <= mask < capacity`, so the pointer is inside this
        // ring's slots. The consumer's `head` (Acquire-loaded above or
        // earlier) is past this position, so it no longer reads the slot, and
        // it will not read it again until our Release store of `tail` below.
        unsafe { self.slots.as_ptr().add(slot).write(*msg) };
        self.tail = self.tail.wrapping_add(1);
        idx.tail.value.store(self.tail, Ordering::Release);
        if self.ring == Ring::Commands && msg.kind() == Msg::KIND_COMMIT {
            self.map.header().meta.generation.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    /// Like [`Producer::try_push`], but waits (spinning, then yielding, then
    /// sleeping briefly) up to `timeout` for a free slot.
    pub fn push_blocking(&mut self, msg: &Msg, timeout: Duration) -> Result<(), Full> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::default();
        loop {
            match self.try_push(msg) {
                Ok(()) => return Ok(()),
                Err(Full) if Instant::now() >= deadline => return Err(Full),
                Err(Full) => backoff.wait(),
            }
        }
    }

    /// Messages written but not yet consumed (as of the last look at `head`).
    pub fn len(&mut self) -> usize {
        self.cached_head = indices(&self.map, self.ring).head.value.load(Ordering::Acquire);
        (self.tail.wrapping_sub(self.cached_head)).min(self.mask + 1) as usize
    }

    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        (self.mask + 1) as usize
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.map.release(self.ring, End::Producer);
    }
}

/// The consuming end of a ring. Not `Clone`: one consumer per ring.
pub struct Consumer {
    map: Arc<Mapping>,
    ring: Ring,
    slots: NonNull<Msg>,
    mask: u64,
    /// Our next position to read; the shared `head` mirrors it.
    head: u64,
    /// Last `tail` read from the producer.
    cached_tail: u64,
}

// SAFETY: as for `Producer`.
unsafe impl Send for Consumer {}

impl Consumer {
    pub(crate) fn new(map: Arc<Mapping>, ring: Ring) -> Consumer {
        let slots = map.slots(ring);
        let mask = map.capacity() as u64 - 1;
        let idx = indices(&map, ring);
        let head = idx.head.value.load(Ordering::Acquire);
        let cached_tail = idx.tail.value.load(Ordering::Acquire);
        Consumer { map, ring, slots, mask, head, cached_tail }
    }

    /// Takes the oldest unread message, if any.
    pub fn try_pop(&mut self) -> Option<Msg> {
        let idx = indices(&self.map, self.ring);
        if self.head == self.cached_tail {
            self.cached_tail = idx.tail.value.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let slot = (self.head & self.mask) as usize;
        // SAFETY: `slot <= mask < capacity`, so the pointer is inside this
        // ring's slots. The Acquire load of `tail` that showed this position
        // written synchronises with the producer's Release store after its
        // write, and the producer does not rewrite the slot until our Release
        // store of `head` below. Every bit pattern is a valid `Msg`; the read
        // is volatile, as a misbehaving peer may write the slot anyway.
        let msg = unsafe { self.slots.as_ptr().add(slot).read_volatile() };
        self.head = self.head.wrapping_add(1);
        idx.head.value.store(self.head, Ordering::Release);
        Some(msg)
    }

    /// Like [`Consumer::try_pop`], but waits up to `timeout` for a message.
    pub fn pop_blocking(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::default();
        loop {
            if let Some(msg) = self.try_pop() {
                return Some(msg);
            }
            if Instant::now() >= deadline {
                return None;
            }
            backoff.wait();
        }
    }

    pub fn capacity(&self) -> usize {
        (self.mask + 1) as usize
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.map.release(self.ring, End::Consumer);
    }
}

fn indices(map: &Mapping, ring: Ring) -> &RingIndices {
    let header = map.header();
    match ring {
        Ring::Commands => &header.commands,
        Ring::Events => &header.events,
    }
}

/// Spin a little, then yield, then sleep: the peer is another process that
/// may not be running right now.
#[derive(Default)]
struct Backoff {
    step: u32,
}

impl Backoff {
    fn wait(&mut self) {
        if self.step < 6 {
            for _ in 0..(1 << self.step) {
                std::hint::spin_loop();
            }
        } else if self.step < 16 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
        self.step = self.step.saturating_add(1);
    }
}
