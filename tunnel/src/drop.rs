//! Why a packet was dropped. Every variant is a named counter in the dataplane
//! (VPP's `foreach_*_error`), so this enum is small, `Copy`, and stable.

/// A named reason for dropping a packet. Hot-path errors are this enum only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The buffer ended before the header it should hold.
    Truncated,
}

impl DropReason {
    /// Short, stable name for counters and logs (snake_case).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
        }
    }
}
