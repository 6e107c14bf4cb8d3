//! braid's tunnel engine: ESP-in-UDP with AES-GCM, bundles across many
//! tunnels, anti-replay, balancing and re-ordering.
//!
//! It owns the wire formats and the per-tunnel protocol state. It never does
//! I/O, never reads a clock (time comes in as a `now` argument in
//! nanoseconds), never spawns a thread, and allocates nothing on the
//! per-packet path once set up. The dataplane calls it on mbuf bytes in
//! place; tests, fuzzers and benchmarks call it on plain slices.

pub mod balancer;
pub mod bundle;
pub mod crypto;
pub mod drop;
pub mod engine;
pub mod liveness;
pub mod plain;
pub mod reorder;
pub mod replay;
pub mod sa;
pub mod wire;

pub use drop::DropReason;

/// Monotonic time in nanoseconds, injected by the caller.
pub type Nanos = u64;
