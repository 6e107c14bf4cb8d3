//! braid's NAT44 engine, NPTv6 (IPv6 prefix translation) and the link-layer services a gateway owes its
//! neighbours: ARP/ND resolution of next hops and answers (ARP, NS, ping)
//! for the gateway's own addresses.
//!
//! NAT applies once, to inner packets at the tunnel endpoint: before the
//! balancer on the way to the WAN peer, after the re-orderer on the way
//! back, so the tunnel a packet took can never split a flow's NAT state.
//! Each worker owns one [`NatShard`]; a worker's shard allocates external
//! ports only from its own slice of every pool, so a reply's destination
//! port names its shard ([`NatConfig::owner_of`]).
//!
//! This crate owns the session tables and the rewriting. It never does
//! I/O, never reads a clock (time is a [`Nanos`] argument), never takes a
//! lock, contains no `unsafe` but one prefetch hint (`hint.rs`), and
//! allocates nothing per packet once built. Design and limits:
//! `nat/README.md`.

#![deny(unsafe_code)]

pub mod config;
pub mod counters;
mod hint;
mod index;
pub mod npt6;
pub mod resolver;
mod rewrite;
mod table;
pub mod shard;

pub use braid_tunnel::Nanos;
pub use config::{ConfigError, DnatRule, NatConfig, Prefix, Proto, SnatRule, Timeouts, SECOND};
pub use counters::{NatCounters, NatDrop, Verdict};
pub use npt6::{Npt6, Npt6Error, Npt6Rule};
pub use shard::{NatShard, SWEEP_PER_PACKET};
