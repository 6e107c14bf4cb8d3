//! Work handed between the workers of one gateway, over one
//! single-producer/single-consumer `rte_ring` per ordered pair of workers.
//!
//! Who owns what (ARCHITECTURE.md, "Several workers"):
//! - a tunnel's inbound SA (its replay window, the remote it learns): the
//!   worker whose RX queue the WAN port's RSS gives the tunnel's packets
//!   (the Toeplitz hash of its configured addresses and ports, looked up in
//!   the port's table: `braid_dpdk::rss`), or without RSS the one
//!   [`tunnel_owner`] names from its local UDP port. A packet that reaches
//!   another worker (no RSS, a peer behind a NAT that rebound, a replay
//!   from elsewhere) is handed on unopened (`Esp`), so one window sees
//!   every packet of the tunnel and a replay is still a replay;
//! - a peer's sender stream (its re-orderer): [`stream_owner`]. The
//!   tunnel's owner opens a frame and hands it on (`Frame`); probe-reply
//!   frames go to the worker that probes (worker 0);
//! - everything else a worker learns that the others need travels as a
//!   message: a tunnel's new remote (`Remote`), a path's liveness from the
//!   prober (`Path`), an ARP reply or neighbor advertisement (`Neighbor`,
//!   since RSS gives every non-IP frame to one queue).
//!
//! - with NAT rules, a flow's NAT session: the worker braid-nat's steering
//!   names (`outbound_owner` for LAN frames, `inbound_owner` for packets
//!   about to go to the LAN); another worker hands the frame over (`Lan`,
//!   `Deliver`). A flow always has one owner, so its order holds.
//!
//! Each handed mbuf starts with a [`HEADER`]-byte header, removed by the
//! receiver. Data (`Esp`, `Frame`) that does not fit in a full ring is
//! dropped and counted; messages wait in the sender until the ring takes
//! them, so no worker misses a remote or a path change.

use braid_dpdk::mbuf_ring::{MbufRing, RingConsumer, RingProducer};
use braid_dpdk::{Mbuf, BURST};

/// Bytes of the header in front of every handed mbuf.
pub const HEADER: usize = 16;

/// What a handed mbuf carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A WAN frame as received, for the owner of its tunnel. `a`: WAN port;
    /// `b`: 1 if the outer IPv4 checksum is still to be checked.
    Esp = 1,
    /// An opened bundle frame, for the owner of its stream. `a`: 1 if its
    /// ESP packet was the newest on its SA; `spi`: the SA's.
    Frame = 2,
    /// A tunnel's peer now sends from `x`: IPv4 << 16 | port, or for IPv6
    /// the port with the `REMOTE_V6` flag, the address in the body. `spi`:
    /// the tunnel's inbound SPI.
    Remote = 3,
    /// A path's liveness as the prober sees it. `spi`: the tunnel's
    /// inbound SPI; `a`: alive; `x`: one-way delay in ns, `u64::MAX` if
    /// unknown. The mbuf carries only the header.
    Path = 4,
    /// An ARP reply or neighbor advertisement seen on port `a` (0: LAN,
    /// 1 + w: WAN w), for the other workers' resolvers.
    Neighbor = 5,
    /// A LAN frame for the worker whose NAT shard owns its flow
    /// (`NatConfig::outbound_owner`), to be routed and tunnelled there.
    Lan = 6,
    /// A packet for the LAN (Ethernet header written) for the worker whose
    /// NAT shard holds its session (`NatConfig::inbound_owner`).
    Deliver = 7,
}

/// A handed mbuf's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub a: u8,
    pub b: u8,
    pub spi: u32,
    pub x: u64,
}

impl Header {
    /// Puts the header in front of `m`'s data; `false` without headroom.
    pub fn push(&self, m: &mut Mbuf) -> bool {
        let Some(h) = m.prepend(HEADER) else { return false };
        h[0] = self.kind as u8;
        h[1] = self.a;
        h[2] = self.b;
        h[3] = 0;
        h[4..8].copy_from_slice(&self.spi.to_ne_bytes());
        h[8..16].copy_from_slice(&self.x.to_ne_bytes());
        true
    }

    /// Takes the header off `m` (written by [`push`](Self::push) on this
    /// machine, so native byte order).
    pub fn pop(m: &mut Mbuf) -> Option<Header> {
        let d = m.data();
        if d.len() < HEADER {
            return None;
        }
        let kind = match d[0] {
            1 => Kind::Esp,
            2 => Kind::Frame,
            3 => Kind::Remote,
            4 => Kind::Path,
            5 => Kind::Neighbor,
            6 => Kind::Lan,
            7 => Kind::Deliver,
            _ => return None,
        };
        let h = Header {
            kind,
            a: d[1],
            b: d[2],
            spi: u32::from_ne_bytes(d[4..8].try_into().expect("4 bytes")),
            x: u64::from_ne_bytes(d[8..16].try_into().expect("8 bytes")),
        };
        m.adj(HEADER);
        Some(h)
    }
}

/// The worker that owns the tunnel whose local UDP port is `port` when its
/// WAN port has no RSS to follow: its replay window and learned remote.
/// Consecutive ports (a bundle's X, X+1, ...) go round the workers; stable
/// across new tables.
#[inline]
pub fn tunnel_owner(port: u16, workers: u16) -> u16 {
    port % workers.max(1)
}

/// Stream ids at or above this are probe-reply streams (`0x8000 | id` of
/// the answering worker), never data.
pub const REPLY_STREAMS: u16 = 0x8000;

/// The worker that re-orders (and delivers) a peer's sender stream
/// `stream`; probe-reply frames go to the prober, worker 0.
#[inline]
pub fn stream_owner(stream: u16, workers: u16) -> u16 {
    if stream >= REPLY_STREAMS {
        0
    } else {
        stream % workers.max(1)
    }
}

/// What one [`Handoff::flush`] did with the data queued, by [`Kind`]
/// (index `kind as usize`): (taken by the ring, dropped: the ring was full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed(pub [(u64, u64); 8]);

impl Flushed {
    /// (taken, dropped) of `kind`.
    pub fn of(&self, kind: Kind) -> (u64, u64) {
        self.0[kind as usize]
    }
}

/// ESP packets are handed to a tunnel's owner unopened, so anyone who
/// knows a tunnel's SPI (sent in clear) can make a worker hand them: only
/// while the ring to the owner holds fewer mbufs than this. What
/// unauthenticated senders can park in the rings stays far below the pool
/// (the rings hold 16,384 each), and authenticated frames still fill them.
pub const ESP_BACKLOG: usize = 1024;

/// Messages waiting for a full ring, per other worker, at most; more are
/// dropped (`messages_failed`). A ring stays full only under overload.
pub const MESSAGES_WAITING: usize = 1024;

/// One worker's ends of the rings to and from every other worker.
pub struct Handoff {
    id: u16,
    workers: u16,
    to: Vec<Option<RingProducer>>,
    from: Vec<Option<RingConsumer>>,
    /// Data for each worker, sent at the end of the poll.
    data: Vec<Vec<Mbuf>>,
    /// Messages for each worker, kept until its ring takes them.
    messages: Vec<Vec<Mbuf>>,
}

/// Rings of `size` mbufs for `workers` workers: element `i` is worker
/// `i`'s [`Handoff`]. `name` prefixes the rings' names (unique per process).
pub fn mesh(name: &str, workers: u16, size: u32) -> Result<Vec<Handoff>, String> {
    let n = usize::from(workers);
    let mut to: Vec<Vec<Option<RingProducer>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut from: Vec<Vec<Option<RingConsumer>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for (i, to_i) in to.iter_mut().enumerate() {
        for (j, slot) in to_i.iter_mut().enumerate().filter(|(j, _)| *j != i) {
            let ring = MbufRing::new(&format!("{name}_{i}_{j}"), size).map_err(|e| format!("hand-off ring {i}->{j}: {e}"))?;
            let (p, c) = ring.split();
            *slot = Some(p);
            from[j][i] = Some(c);
        }
    }
    Ok(to
        .into_iter()
        .zip(from)
        .enumerate()
        .map(|(i, (to, from))| Handoff {
            id: i as u16,
            workers,
            to,
            from,
            data: (0..n).map(|_| Vec::with_capacity(BURST)).collect(),
            messages: (0..n).map(|_| Vec::new()).collect(),
        })
        .collect())
}

impl Handoff {
    /// This worker's index.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Workers of the gateway.
    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// Queues data for worker `to`.
    #[inline]
    pub fn send(&mut self, to: u16, m: Mbuf) {
        self.data[usize::from(to)].push(m);
    }

    /// Mbufs on their way to worker `to`: in its ring, and queued here.
    #[inline]
    pub fn backlog(&self, to: u16) -> usize {
        let to = usize::from(to);
        self.to[to].as_ref().map_or(0, |r| r.len()) + self.data[to].len()
    }

    /// Queues a message for every other worker, made by `make` (`None`: no
    /// mbuf; returns how many could not be made or had no room, see
    /// [`MESSAGES_WAITING`]).
    pub fn broadcast(&mut self, mut make: impl FnMut() -> Option<Mbuf>) -> usize {
        let mut failed = 0;
        for (j, q) in self.messages.iter_mut().enumerate() {
            if j == usize::from(self.id) {
                continue;
            }
            match (q.len() < MESSAGES_WAITING).then(&mut make).flatten() {
                Some(m) => q.push(m),
                None => failed += 1,
            }
        }
        failed
    }

    /// Hands what is queued to the rings. Data a full ring does not take
    /// is freed; messages that do not fit stay for the next flush.
    pub fn flush(&mut self) -> Flushed {
        let mut f = Flushed::default();
        let kind = |m: &Mbuf| usize::from(m.data().first().copied().unwrap_or(0) & 7);
        for (j, ring) in self.to.iter_mut().enumerate() {
            let Some(ring) = ring else { continue };
            if !self.messages[j].is_empty() {
                ring.enqueue(&mut self.messages[j]);
            }
            let q = &mut self.data[j];
            if q.is_empty() {
                continue;
            }
            // Counted before the ring takes them: then they are the other
            // worker's. What it leaves is what was dropped.
            for m in q.iter() {
                f.0[kind(m)].0 += 1;
            }
            ring.enqueue(q);
            for m in q.iter() {
                f.0[kind(m)].0 -= 1;
                f.0[kind(m)].1 += 1;
            }
            Mbuf::free_bulk(q);
        }
        f
    }

    /// Takes up to `max` handed mbufs from every other worker into `out`.
    pub fn receive(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let mut n = 0;
        for ring in self.from.iter_mut().flatten() {
            n += ring.dequeue(out, max);
        }
        n
    }

    /// Whether anything waits to be handed (messages the rings did not
    /// take yet).
    pub fn pending(&self) -> bool {
        self.messages.iter().chain(&self.data).any(|q| !q.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(tunnel_owner(4500, 1), 0);
        assert_eq!((4500..4504).map(|p| tunnel_owner(p, 2)).collect::<Vec<_>>(), vec![0, 1, 0, 1]);
        assert_eq!(stream_owner(3, 2), 1);
        assert_eq!(stream_owner(REPLY_STREAMS | 3, 2), 0);
        assert_eq!(stream_owner(5, 0), 0);
    }
}
