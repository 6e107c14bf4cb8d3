//! braid's control process: it owns the running configuration and is the
//! only writer of the dataplane's commands ring.
//!
//! - [`api`]: the HTTP JSON API (Unix socket 0600, or TCP with a bearer
//!   token): whole document, peers, bundles and tunnels, routes, NAT,
//!   ports, status, stats, Prometheus metrics. Every change is validated
//!   with `braid-config`'s own rules before anything is applied.
//! - [`store`]: the running document and its generation, persisted
//!   atomically; key redaction.
//! - [`link`]: the shared-memory link to the dataplane (`braid-shm`):
//!   snapshot pushes, events, resync after either side restarts.
//! - [`metrics`]: the stats segment as JSON and Prometheus text.
//! - [`listen`]: the TCP listener, bounded in connections and in the time
//!   a request head may take (the token is checked only once it arrived).
//! - [`client`]: a small HTTP/1.1 client over a Unix socket or TCP, for
//!   `braidctl` and the tests.
//!
//! It must never link DPDK, apply a change it has not validated, apply
//! part of a change, or show a key (responses, logs, errors).

pub mod api;
pub mod client;
pub mod error;
pub mod link;
pub mod listen;
pub mod metrics;
pub mod store;
