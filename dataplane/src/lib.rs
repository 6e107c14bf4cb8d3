//! braid's dataplane: poll-mode workers that encrypt, spray, decrypt and
//! re-order, and the immutable tables they read.
//!
//! It owns the per-packet pipeline (`worker`), the tables (`config`,
//! `route`) and the process around them (`main.rs`). It contains no
//! `unsafe`: DPDK is reached through `braid-dpdk` only, and never takes a
//! lock on the per-packet path.

pub mod config;
pub mod counters;
pub mod encap;
pub mod gateway;
pub mod lab;
pub mod report;
pub mod route;
pub mod worker;
