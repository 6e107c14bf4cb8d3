//! braid's dataplane: poll-mode workers that encrypt, spray, decrypt and
//! re-order, and the immutable tables they read.
//!
//! It owns the per-packet pipeline (`worker`) and the process around it
//! (`main.rs`); the tables (`config`, `route`) are `braid-config`'s,
//! re-exported here. It contains no
//! `unsafe`: DPDK is reached through `braid-dpdk` only, and never takes a
//! lock on the per-packet path.

pub mod control;
pub mod counters;
pub mod encap;
pub mod gateway;
pub mod idle;
pub mod lab;
pub mod local;
pub mod mld;
pub mod mss;
pub mod nat;
pub mod report;
pub mod sas;
pub mod segment;
pub mod stats;
pub mod worker;

pub use braid_config as config;
pub use braid_config::route;
