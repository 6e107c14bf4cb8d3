//! Start-up and control errors. The per-packet path never builds one of these.

use thiserror::Error;

/// Everything that can go wrong setting DPDK up, with enough context for an
/// operator to fix it.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "refusing to start EAL without --no-pci or an explicit -a/--allow list: \
         a PCI probe could take the machine's own NIC (args: {args:?})"
    )]
    PciProbeRefused { args: Vec<String> },
    #[error("EAL is already initialised in this process (it can start only once)")]
    EalAlreadyInitialised,
    #[error("EAL initialisation failed: {reason} (rte_errno {errno}; args: {args:?})")]
    EalInit { errno: i32, reason: String, args: Vec<String> },
    #[error("EAL argument contains a NUL byte: {0:?}")]
    BadArgument(String),
    #[error("EAL argument {0:?} is refused: EAL would print help and exit the process")]
    HelpRefused(String),
    #[error("no DPDK port named {name:?}: is its --vdev (or -a) on the EAL command line? ports present: {present:?}")]
    NoSuchPort { name: String, present: Vec<String> },
    #[error("mempool {name:?} ({n} mbufs of {data_room} B): {reason} (rte_errno {errno})")]
    PoolCreate { name: String, n: u32, data_room: u16, errno: i32, reason: String },
    #[error("mempool {pool:?} has {have} mbufs but port {port} needs at least {need} ({detail})")]
    PoolTooSmall { pool: String, port: u16, have: u32, need: u32, detail: String },
    #[error("port {port} ({driver}): {op} failed: {reason} ({ret})")]
    Port { port: u16, driver: String, op: &'static str, ret: i32, reason: String },
    #[error("port {port} ({driver}): {what}")]
    PortLimit { port: u16, driver: String, what: String },
    #[error("ring {name:?}: {reason}")]
    Ring { name: String, reason: String },
    #[error("IP fragment table ({flows} flows): {reason} (rte_errno {errno})")]
    FragTable { flows: u32, errno: i32, reason: String },
    #[error("lcore {0} is not a worker lcore of this EAL (see -l/--lcores)")]
    NoSuchLcore(u32),
    #[error("lcore {0} is busy running another closure")]
    LcoreBusy(u32),
    #[error("closure on lcore {lcore} panicked: {message}")]
    LcorePanicked { lcore: u32, message: String },
}
