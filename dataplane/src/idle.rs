//! A worker's idle back-off: when a poll loop that found nothing sleeps,
//! and how long. Pure logic over the clock it is given.
//!
//! After [`SPIN_POLLS`] empty polls a worker sleeps `idle_us` between
//! polls (a burst waits at most that long); after [`DEEP_IDLE`] without
//! user traffic (liveness probes and keepalives, every 100 ms or so from a
//! live peer, do not count), `idle_max_us` (a quiet gateway takes a few
//! percent of a core instead of ~20%, and the first packets after the
//! silence wait up to that long). A busy worker never sleeps.
//!
//! User traffic is what moves the worker's `Worker::data_packets`, or
//! another worker's ([`Traffic`]): a worker that only hands ESP on to the
//! tunnel's owner sees none of its own (the owner delivers it), and would
//! otherwise sleep `idle_max_us` between sparse packets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Empty polls in a row before the first sleep.
pub const SPIN_POLLS: u32 = 1000;
/// How long a worker sees no user traffic before it sleeps `idle_max_us`
/// instead of `idle_us` between polls.
pub const DEEP_IDLE: Duration = Duration::from_millis(100);
/// Empty polls after a deep-idle wake-up that was not user traffic before
/// the worker sleeps again.
pub const WAKE_POLLS: u32 = 16;
/// Two wakes with work closer than this (or than two deep sleeps, if
/// longer, up to `WAKE_GAP_MAX`): traffic, not probes.
pub const WAKE_GAP: Duration = Duration::from_millis(1);
/// Beyond this, probes and keepalives of a few tunnels would look like
/// traffic.
pub const WAKE_GAP_MAX: Duration = Duration::from_millis(10);

/// When any worker of the gateway last saw user traffic, shared by all
/// of them. Written when a worker's own traffic moved, read on idle polls
/// only: never on the busy path.
#[derive(Debug)]
pub struct Traffic {
    t0: Instant,
    /// Nanoseconds after `t0`.
    at: AtomicU64,
}

impl Traffic {
    pub fn new(t0: Instant) -> Traffic {
        Traffic { t0, at: AtomicU64::new(0) }
    }

    /// A worker saw user traffic at `t`.
    pub fn saw(&self, t: Instant) {
        let ns = t.saturating_duration_since(self.t0).as_nanos() as u64;
        if ns > self.at.load(Ordering::Relaxed) {
            self.at.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// When some worker last saw user traffic (`t0` if none yet).
    pub fn last(&self) -> Instant {
        self.t0 + Duration::from_nanos(self.at.load(Ordering::Relaxed))
    }
}

/// One worker's back-off state.
#[derive(Debug)]
pub struct Backoff {
    idle_us: u64,
    idle_max_us: u64,
    wake_gap: Duration,
    /// Empty polls in a row.
    idle: u32,
    /// The last user traffic, this worker's or another's.
    idle_since: Instant,
    /// `data_packets` as last seen.
    last_data: u64,
    /// The last wake-up from a sleep that found work.
    last_wake: Instant,
}

impl Backoff {
    /// `idle_max_us` is raised to `idle_us` if below.
    pub fn new(idle_us: u64, idle_max_us: u64, now: Instant) -> Backoff {
        let idle_max_us = idle_max_us.max(idle_us);
        let wake_gap = Duration::from_micros(2 * idle_max_us).clamp(WAKE_GAP, WAKE_GAP_MAX);
        Backoff { idle_us, idle_max_us, wake_gap, idle: 0, idle_since: now, last_data: 0, last_wake: now }
    }

    /// Whether the worker sleeps between polls now (its clock is then read
    /// every poll).
    pub fn sleeping(&self) -> bool {
        self.idle > SPIN_POLLS
    }

    /// A poll found nothing: whether the worker sleeps now
    /// ([`sleep_for`](Self::sleep_for) says how long). Reads nothing
    /// while it spins.
    #[inline]
    pub fn empty_poll(&mut self) -> bool {
        self.idle = self.idle.saturating_add(1);
        self.sleeping()
    }

    /// How long a sleeping worker sleeps before its next poll. `data`: the
    /// worker's `data_packets`.
    pub fn sleep_for(&mut self, data: u64, traffic: &Traffic, now: Instant) -> Duration {
        self.tick(data, traffic, now);
        self.idle_since = self.idle_since.max(traffic.last());
        let deep = now.saturating_duration_since(self.idle_since) >= DEEP_IDLE;
        Duration::from_micros(if deep { self.idle_max_us } else { self.idle_us })
    }

    /// [`empty_poll`](Self::empty_poll), then [`sleep_for`](Self::sleep_for)
    /// if it sleeps.
    pub fn empty(&mut self, data: u64, traffic: &Traffic, now: Instant) -> Option<Duration> {
        self.empty_poll().then(|| self.sleep_for(data, traffic, now))
    }

    /// Notes the worker's own user traffic (`data`: its `data_packets`),
    /// for every worker ([`Traffic`]): from its sleeps, and from a busy
    /// worker every so often (one that never sleeps says so only here).
    pub fn tick(&mut self, data: u64, traffic: &Traffic, now: Instant) {
        if data != self.last_data {
            (self.last_data, self.idle_since) = (data, now);
            traffic.saw(now);
        }
    }

    /// A poll found work while the worker was not [`sleeping`](Self::sleeping)
    /// (the busy path: nothing read, no clock).
    #[inline]
    pub fn busy(&mut self) {
        self.idle = 0;
    }

    /// A poll found work after a sleep. Woken from a deep sleep by a
    /// probe, its reply or a keepalive (no user traffic here or elsewhere,
    /// and the last wake with work was a while ago), the worker sleeps
    /// again after [`WAKE_POLLS`] empty polls, not another [`SPIN_POLLS`]
    /// (a quiet gateway with four live tunnels otherwise spun ~1 ms on
    /// every probe).
    pub fn woke(&mut self, data: u64, traffic: &Traffic, now: Instant) {
        self.idle = 0;
        let quiet = data == self.last_data && traffic.last() <= self.idle_since;
        if quiet && now.saturating_duration_since(self.idle_since) >= DEEP_IDLE && now.saturating_duration_since(self.last_wake) >= self.wake_gap {
            self.idle = SPIN_POLLS - WAKE_POLLS;
        }
        self.last_wake = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Empty polls until the first sleep; what it is.
    fn sleep_after_spin(b: &mut Backoff, data: u64, traffic: &Traffic, now: Instant) -> Duration {
        (0..=SPIN_POLLS).find_map(|_| b.empty(data, traffic, now)).expect("a sleep")
    }

    #[test]
    fn a_quiet_worker_sleeps_longer_after_deep_idle() {
        let t0 = Instant::now();
        let traffic = Traffic::new(t0);
        let mut b = Backoff::new(50, 500, t0);
        assert_eq!(sleep_after_spin(&mut b, 0, &traffic, t0), 50 * US);
        assert_eq!(b.empty(0, &traffic, t0 + DEEP_IDLE), Some(500 * US));
        // Its own user traffic: short sleeps again.
        assert_eq!(b.empty(7, &traffic, t0 + DEEP_IDLE * 2), Some(50 * US));
        assert_eq!(b.empty(7, &traffic, t0 + DEEP_IDLE * 3), Some(500 * US));
    }

    /// A worker that only hands ESP on sees no traffic of its own; the
    /// owner delivering it keeps both on short sleeps.
    #[test]
    fn another_workers_traffic_keeps_short_sleeps() {
        let t0 = Instant::now();
        let traffic = Traffic::new(t0);
        let (mut hander, mut owner) = (Backoff::new(50, 500, t0), Backoff::new(50, 500, t0));
        sleep_after_spin(&mut hander, 0, &traffic, t0);
        sleep_after_spin(&mut owner, 0, &traffic, t0);
        let mut t = t0 + DEEP_IDLE;
        assert_eq!(hander.empty(0, &traffic, t), Some(500 * US));
        // Sparse packets, 30 ms apart: the hander wakes, hands one on
        // (no data of its own) and sleeps; the owner delivers it.
        for i in 1..=10 {
            t += Duration::from_millis(30);
            hander.woke(0, &traffic, t);
            owner.woke(i - 1, &traffic, t);
            assert_eq!(sleep_after_spin(&mut owner, i, &traffic, t + US), 50 * US);
            let s = sleep_after_spin(&mut hander, 0, &traffic, t + 2 * US);
            assert_eq!(s, 50 * US, "the hander slept long between sparse packets");
        }
        // Silence: both back to long sleeps.
        t += DEEP_IDLE * 2;
        assert_eq!(hander.empty(0, &traffic, t), Some(500 * US));
        assert_eq!(owner.empty(10, &traffic, t), Some(500 * US));
    }

    /// A busy owner never sleeps: its traffic is noted from its clock
    /// ticks, and the worker handing it ESP keeps short sleeps.
    #[test]
    fn a_busy_workers_traffic_counts_too() {
        let t0 = Instant::now();
        let traffic = Traffic::new(t0);
        let (mut hander, mut owner) = (Backoff::new(50, 500, t0), Backoff::new(50, 500, t0));
        sleep_after_spin(&mut hander, 0, &traffic, t0);
        let mut t = t0;
        for i in 1..=20 {
            t += Duration::from_millis(30);
            owner.busy();
            owner.tick(i, &traffic, t);
            assert!(!owner.sleeping());
            hander.woke(0, &traffic, t);
            assert_eq!(sleep_after_spin(&mut hander, 0, &traffic, t + US), 50 * US, "after {i} ticks");
        }
    }

    /// A probe waking a deeply idle worker puts it back to sleep after a
    /// few polls; traffic elsewhere does not.
    #[test]
    fn a_probe_wake_sleeps_again_soon() {
        let t0 = Instant::now();
        let traffic = Traffic::new(t0);
        let mut b = Backoff::new(50, 500, t0);
        sleep_after_spin(&mut b, 0, &traffic, t0);
        let t = t0 + DEEP_IDLE * 2;
        assert_eq!(b.empty(0, &traffic, t), Some(500 * US));
        b.woke(0, &traffic, t);
        let polls = (1..).find(|_| b.empty(0, &traffic, t).is_some()).unwrap();
        assert_eq!(polls, WAKE_POLLS + 1);
        // Another worker's traffic since: a full spin first.
        let t = t + DEEP_IDLE;
        b.empty(0, &traffic, t);
        traffic.saw(t + US);
        b.woke(0, &traffic, t + 2 * US);
        assert!(!b.sleeping());
        assert_eq!((1..).find(|_| b.empty(0, &traffic, t + 3 * US).is_some()).unwrap(), SPIN_POLLS + 1);
    }
}
