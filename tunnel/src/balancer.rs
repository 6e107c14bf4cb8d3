//! Picks the tunnel of a bundle that carries each frame: round-robin,
//! smooth weighted round-robin, or earliest expected arrival. Dead paths
//! leave the rotation and come back when marked alive. No allocation per pick.

use crate::Nanos;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// How frames are spread over the live paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Each live path in turn.
    RoundRobin,
    /// Smooth weighted round-robin (nginx `ngx_http_upstream_get_peer`):
    /// over any `sum(weights)` picks each path gets exactly its weight.
    Weighted,
    /// The path where this frame is expected to arrive first:
    /// `min(now + backlog / rate + len / rate + delay)`.
    EarliestArrival,
}

/// Per-path figures, from configuration and liveness measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathParams {
    /// Share for `Weighted`; 0 never picks the path.
    pub weight: u32,
    /// Rate for `EarliestArrival` (bytes/s); 0 means unmetered.
    pub rate: u64,
    /// One-way delay for `EarliestArrival` (RTT/2 from liveness will do).
    pub delay: Nanos,
}

impl Default for PathParams {
    fn default() -> Self {
        PathParams {
            weight: 1,
            rate: 0,
            delay: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Path {
    params: PathParams,
    alive: bool,
    /// Smooth WRR running weight.
    current: i64,
    /// When this path's queue has drained at its rate (the backlog, decayed by `now`).
    busy_until: Nanos,
    picks: u64,
}

/// Longest smooth weighted round-robin cycle (the weights of the live paths
/// divided by their greatest common divisor, summed) kept as a schedule.
const MAX_SCHEDULE: u64 = 1024;

/// The balancer of one bundle (owned by one worker).
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: Policy,
    paths: Vec<Path>,
    next_rr: usize,
    /// `Weighted`: one whole cycle of smooth WRR from all-zero running
    /// weights (they are all zero again at its end), computed when the
    /// paths change; a pick reads the next entry instead of running the
    /// loop over every path (plain mode picks per packet: ~30 cycles less
    /// per 64-byte packet). Empty: picks run the loop (no cycle yet, one
    /// too long, or a `stay` moved the running weights off it).
    schedule: Vec<u16>,
    /// The next entry of `schedule`.
    at: usize,
}

impl Balancer {
    /// `paths` paths, all alive, default parameters.
    pub fn new(policy: Policy, paths: usize) -> Self {
        let mut b = Balancer {
            policy,
            paths: vec![
                Path {
                    params: PathParams::default(),
                    alive: true,
                    current: 0,
                    busy_until: 0,
                    picks: 0
                };
                paths
            ],
            next_rr: 0,
            schedule: Vec::new(),
            at: 0,
        };
        b.reschedule();
        b
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True with no paths.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Frames sent on `path` so far.
    pub fn picks(&self, path: usize) -> u64 {
        self.paths.get(path).map_or(0, |p| p.picks)
    }

    /// Whether `path` is in the rotation.
    pub fn is_alive(&self, path: usize) -> bool {
        self.paths.get(path).is_some_and(|p| p.alive)
    }

    /// Takes `path` out of the rotation or puts it back.
    pub fn set_alive(&mut self, path: usize, alive: bool) {
        if let Some(p) = self.paths.get_mut(path) {
            if p.alive != alive {
                p.alive = alive;
                p.busy_until = 0;
                self.reset_weights();
            }
        }
    }

    /// Sets a path's parameters.
    pub fn set_params(&mut self, path: usize, params: PathParams) {
        if let Some(p) = self.paths.get_mut(path) {
            let reweigh = p.params.weight != params.weight;
            p.params = params;
            if reweigh {
                self.reset_weights();
            }
        }
    }

    /// Updates a path's one-way delay only.
    pub fn set_delay(&mut self, path: usize, delay: Nanos) {
        if let Some(p) = self.paths.get_mut(path) {
            p.params.delay = delay;
        }
    }

    /// A path's parameters.
    pub fn params(&self, path: usize) -> Option<PathParams> {
        self.paths.get(path).map(|p| p.params)
    }

    fn reset_weights(&mut self) {
        // A fresh cycle keeps shares exact after the set of paths changes.
        for p in &mut self.paths {
            p.current = 0;
        }
        self.reschedule();
    }

    /// Computes `schedule` from all-zero running weights (which it leaves
    /// all zero), or leaves it empty.
    fn reschedule(&mut self) {
        self.schedule.clear();
        self.at = 0;
        if self.policy != Policy::Weighted || self.paths.len() > usize::from(u16::MAX) {
            return;
        }
        let weights = || self.paths.iter().filter(|p| p.alive && p.params.weight > 0).map(|p| u64::from(p.params.weight));
        let g = weights().fold(0, gcd);
        if g == 0 {
            return;
        }
        // Weights k times as large make the same picks: the cycle is as
        // long as the reduced weights' sum.
        let cycle: u64 = weights().map(|w| w / g).sum();
        if cycle > MAX_SCHEDULE {
            return;
        }
        for _ in 0..cycle {
            let i = self.pick_weighted_loop().expect("a live path with weight");
            self.schedule.push(i as u16);
        }
        debug_assert!(self.paths.iter().all(|p| p.current == 0), "a whole cycle");
    }

    /// Leaves the schedule: the running weights become what the loop
    /// would have made them by now.
    fn unschedule(&mut self) {
        if self.schedule.is_empty() {
            return;
        }
        for p in &mut self.paths {
            p.current = 0;
        }
        for k in 0..self.at {
            let i = self.pick_weighted_loop();
            debug_assert_eq!(i, Some(usize::from(self.schedule[k])));
        }
        self.schedule.clear();
        self.at = 0;
    }

    /// Picks the path for a frame of `len` bytes sent at `now`; `None` when no
    /// path is alive (or, for `Weighted`, none alive has weight).
    pub fn pick(&mut self, len: usize, now: Nanos) -> Option<usize> {
        let i = match self.policy {
            Policy::RoundRobin => self.pick_rr()?,
            Policy::Weighted => self.pick_weighted()?,
            Policy::EarliestArrival => self.pick_earliest(len, now)?,
        };
        let p = &mut self.paths[i];
        p.picks += 1;
        if p.params.rate > 0 {
            p.busy_until = p
                .busy_until
                .max(now)
                .saturating_add(tx_time(len, p.params.rate));
        }
        Some(i)
    }

    /// Sends a frame of `len` bytes on `path` again (the rest of an inner
    /// packet the previous frame began), accounted as if picked: for
    /// `Weighted` the shares hold in frames, for `EarliestArrival` the
    /// path's queue grows. `false` (nothing accounted) when the path is
    /// dead or, for `Weighted`, has no weight: pick another.
    pub fn stay(&mut self, path: usize, len: usize, now: Nanos) -> bool {
        let Some(p) = self.paths.get(path) else { return false };
        if !p.alive || (self.policy == Policy::Weighted && p.params.weight == 0) {
            return false;
        }
        if self.policy == Policy::Weighted {
            self.unschedule();
            let mut total = 0;
            for q in self.paths.iter_mut().filter(|q| q.alive && q.params.weight > 0) {
                q.current += i64::from(q.params.weight);
                total += i64::from(q.params.weight);
            }
            self.paths[path].current -= total;
        }
        let p = &mut self.paths[path];
        p.picks += 1;
        if p.params.rate > 0 {
            p.busy_until = p.busy_until.max(now).saturating_add(tx_time(len, p.params.rate));
        }
        true
    }

    /// When the frame just sent on `path` is expected to arrive, for a frame of
    /// `len` bytes sent at `now` (`EarliestArrival`'s measure).
    pub fn expected_arrival(&self, path: usize, len: usize, now: Nanos) -> Option<Nanos> {
        let p = self.paths.get(path)?;
        Some(
            p.busy_until
                .max(now)
                .saturating_add(tx_time(len, p.params.rate))
                .saturating_add(p.params.delay),
        )
    }

    fn pick_rr(&mut self) -> Option<usize> {
        let n = self.paths.len();
        for k in 0..n {
            let i = (self.next_rr + k) % n;
            if self.paths[i].alive {
                self.next_rr = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }

    #[inline]
    fn pick_weighted(&mut self) -> Option<usize> {
        if let Some(&i) = self.schedule.get(self.at) {
            self.at = if self.at + 1 == self.schedule.len() { 0 } else { self.at + 1 };
            return Some(usize::from(i));
        }
        self.pick_weighted_loop()
    }

    fn pick_weighted_loop(&mut self) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.paths.len() {
            let p = &mut self.paths[i];
            if !p.alive || p.params.weight == 0 {
                continue;
            }
            let w = i64::from(p.params.weight);
            p.current += w;
            let current = p.current;
            total += w;
            if best.is_none_or(|b| current > self.paths[b].current) {
                best = Some(i);
            }
        }
        let b = best?;
        self.paths[b].current -= total;
        Some(b)
    }

    fn pick_earliest(&mut self, len: usize, now: Nanos) -> Option<usize> {
        // Ties go to the path after the last one picked, so equal paths share.
        let n = self.paths.len();
        let mut best: Option<(Nanos, usize)> = None;
        for k in 0..n {
            let i = (self.next_rr + k) % n;
            if !self.paths[i].alive {
                continue;
            }
            let t = self.expected_arrival(i, len, now)?;
            if best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, i));
            }
        }
        let (_, i) = best?;
        self.next_rr = (i + 1) % n;
        Some(i)
    }
}

fn tx_time(len: usize, rate: u64) -> Nanos {
    if rate == 0 {
        return 0;
    }
    let t = len as u128 * NANOS_PER_SEC / u128::from(rate);
    t.min(u128::from(Nanos::MAX)) as Nanos
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn round_robin_skips_dead_paths() {
        let mut b = Balancer::new(Policy::RoundRobin, 3);
        let picks: Vec<_> = (0..6).map(|_| b.pick(100, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        b.set_alive(1, false);
        let picks: Vec<_> = (0..4).map(|_| b.pick(100, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
        b.set_alive(0, false);
        b.set_alive(2, false);
        assert_eq!(b.pick(100, 0), None);
        b.set_alive(1, true);
        assert_eq!(b.pick(100, 0), Some(1));
    }

    #[test]
    fn weighted_shares_match_weights() {
        let weights = [5u32, 1, 1, 13, 30];
        let mut b = Balancer::new(Policy::Weighted, weights.len());
        for (i, &w) in weights.iter().enumerate() {
            b.set_params(
                i,
                PathParams {
                    weight: w,
                    ..PathParams::default()
                },
            );
        }
        let n = 100_000u64;
        for _ in 0..n {
            b.pick(1000, 0).unwrap();
        }
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let want = n as f64 * f64::from(w) / f64::from(total);
            let got = b.picks(i) as f64;
            assert!(
                (got - want).abs() <= want * 0.01,
                "path {i}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn weighted_is_smooth_and_exact_per_cycle() {
        // nginx's example: weights 5, 1, 1 give a a b a c a a.
        let mut b = Balancer::new(Policy::Weighted, 3);
        b.set_params(
            0,
            PathParams {
                weight: 5,
                ..PathParams::default()
            },
        );
        let picks: Vec<_> = (0..7).map(|_| b.pick(1, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_dead_path_never_chosen() {
        let mut b = Balancer::new(Policy::Weighted, 4);
        b.set_alive(2, false);
        b.set_params(
            3,
            PathParams {
                weight: 0,
                ..PathParams::default()
            },
        );
        for _ in 0..1000 {
            let p = b.pick(1, 0).unwrap();
            assert!(p != 2 && p != 3);
        }
        b.set_alive(2, true);
        assert!((0..10).any(|_| b.pick(1, 0) == Some(2)));
    }

    #[test]
    fn earliest_arrival_prefers_low_delay_until_backlog() {
        let mut b = Balancer::new(Policy::EarliestArrival, 2);
        // Path 0: 5 ms, 1 MB/s (1 ms per 1000 bytes). Path 1: 20 ms, same rate.
        b.set_params(
            0,
            PathParams {
                weight: 1,
                rate: 1_000_000,
                delay: 5 * MS,
            },
        );
        b.set_params(
            1,
            PathParams {
                weight: 1,
                rate: 1_000_000,
                delay: 20 * MS,
            },
        );
        let picks: Vec<_> = (0..20).map(|_| b.pick(1000, 0).unwrap()).collect();
        // Path 0 until its backlog reaches 15 ms: frames 1..=15 arrive at 6..=20 ms;
        // the 16th would arrive at 21 ms, path 1's first at 21 ms too (tie → path 1).
        assert!(picks[..15].iter().all(|&p| p == 0), "{picks:?}");
        assert_eq!(picks[15], 1);
        // The backlog drains with time: later, path 0 is first again.
        assert_eq!(b.pick(1000, 100 * MS), Some(0));
        b.set_alive(0, false);
        assert_eq!(b.pick(1000, 100 * MS), Some(1));
    }

    #[test]
    fn earliest_arrival_unmetered_is_lowest_delay() {
        let mut b = Balancer::new(Policy::EarliestArrival, 3);
        b.set_delay(0, 9 * MS);
        b.set_delay(1, 3 * MS);
        b.set_delay(2, 4 * MS);
        assert!((0..100).all(|_| b.pick(1500, 0) == Some(1)));
        assert_eq!(b.expected_arrival(2, 1500, 7), Some(7 + 4 * MS));
    }

    #[test]
    fn empty_balancer() {
        let mut b = Balancer::new(Policy::Weighted, 0);
        assert!(b.is_empty());
        assert_eq!(b.pick(1, 0), None);
        let mut b = Balancer::new(Policy::EarliestArrival, 0);
        assert_eq!(b.pick(1, 0), None);
    }

    /// Smooth WRR as written in nginx, kept apart from the balancer: what
    /// the schedule must reproduce pick for pick.
    struct Model {
        weight: Vec<i64>,
        alive: Vec<bool>,
        current: Vec<i64>,
    }

    impl Model {
        fn pick(&mut self) -> Option<usize> {
            let mut total = 0;
            let mut best: Option<usize> = None;
            for i in 0..self.weight.len() {
                if !self.alive[i] || self.weight[i] == 0 {
                    continue;
                }
                self.current[i] += self.weight[i];
                total += self.weight[i];
                if best.is_none_or(|b| self.current[i] > self.current[b]) {
                    best = Some(i);
                }
            }
            self.current[best?] -= total;
            best
        }

        fn stay(&mut self, path: usize) -> bool {
            if !self.alive[path] || self.weight[path] == 0 {
                return false;
            }
            let mut total = 0;
            for i in 0..self.weight.len() {
                if self.alive[i] && self.weight[i] > 0 {
                    self.current[i] += self.weight[i];
                    total += self.weight[i];
                }
            }
            self.current[path] -= total;
            true
        }

        fn reset(&mut self) {
            self.current.iter_mut().for_each(|c| *c = 0);
        }
    }

    proptest::proptest! {
        /// Weights small and large (cycles kept as a schedule and cycles
        /// too long for one), paths dying and coming back, weights
        /// changed, `stay` between picks: the same picks as the model.
        #[test]
        fn weighted_picks_match_smooth_wrr(
            weights in proptest::collection::vec(proptest::prop_oneof![0u32..4, 1u32..1000, 400u32..2000], 1..6),
            ops in proptest::collection::vec((0u8..20, 0usize..6, 0u32..1500), 0..400),
        ) {
            let n = weights.len();
            let mut b = Balancer::new(Policy::Weighted, n);
            let mut m = Model { weight: vec![1; n], alive: vec![true; n], current: vec![0; n] };
            for (i, &w) in weights.iter().enumerate() {
                b.set_params(i, PathParams { weight: w, ..Default::default() });
                if m.weight[i] != i64::from(w) {
                    m.weight[i] = i64::from(w);
                    m.reset();
                }
            }
            for (op, path, w) in ops {
                let path = path % n;
                match op {
                    0 => {
                        let alive = !b.is_alive(path);
                        b.set_alive(path, alive);
                        m.alive[path] = alive;
                        m.reset();
                    }
                    1 => {
                        b.set_params(path, PathParams { weight: w, ..Default::default() });
                        if m.weight[path] != i64::from(w) {
                            m.weight[path] = i64::from(w);
                            m.reset();
                        }
                    }
                    2 => proptest::prop_assert_eq!(b.stay(path, 100, 0), m.stay(path)),
                    _ => proptest::prop_assert_eq!(b.pick(100, 0), m.pick()),
                }
            }
        }
    }

    #[test]
    fn the_schedule_is_one_cycle_of_reduced_weights() {
        let mut b = Balancer::new(Policy::Weighted, 3);
        for (i, w) in [300, 200, 100].into_iter().enumerate() {
            b.set_params(i, PathParams { weight: w, ..Default::default() });
        }
        assert_eq!(b.schedule, vec![0, 1, 0, 2, 1, 0], "weights 3:2:1, nginx's order");
        b.set_params(2, PathParams { weight: 1000, ..Default::default() });
        assert_eq!(b.schedule.len(), 15, "3 + 2 + 10 once divided by 100");
        b.set_params(2, PathParams { weight: 1001, ..Default::default() });
        assert!(b.schedule.is_empty(), "a cycle of 1501 is left to the loop");
        b.set_params(2, PathParams { weight: 100, ..Default::default() });
        b.pick(100, 0);
        assert!(b.stay(1, 100, 0));
        assert!(b.schedule.is_empty(), "stay leaves the schedule");
        b.set_alive(0, false);
        assert_eq!(b.schedule, vec![1, 2, 1], "2:1 once path 0 is dead");
    }
}
