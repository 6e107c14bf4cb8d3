//! braid's table model, shared by the dataplane and the control process.
//!
//! Pure Rust, no I/O beyond reading a file, no `unsafe`, no DPDK: the
//! control process (not a DPDK process) validates requests with exactly the
//! rules the dataplane applies.
//!
//! - [`tables`]: the JSON [`Config`] document and the validated [`Tables`].
//! - [`route`]: longest-prefix-match route tables for IPv4 and IPv6.

pub mod route;
pub mod tables;

pub use tables::*;
