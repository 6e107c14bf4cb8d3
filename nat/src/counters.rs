//! Verdicts, drop reasons and counters: every drop has a named reason and
//! every reason is a counter.

/// What the NAT did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Rewritten in place; send it on.
    Translated,
    /// No NAT rule or session applies; send it on unchanged.
    Untouched,
    /// Drop it; the reason was counted.
    Drop(NatDrop),
}

/// Why the NAT dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatDrop {
    /// Not a well-formed IPv4 packet, or its TCP/UDP/ICMP header is short.
    Malformed,
    /// An IPv4 fragment that needs translating: the NAT translates whole
    /// packets only (the dataplane reassembles such fragments first; one
    /// whose header does not check reaches the NAT and is dropped here).
    Fragment,
    /// A protocol other than TCP, UDP and ICMP to or from a NATed address.
    UnsupportedProtocol,
    /// Inbound to a NAT address with no session (filtered, RFC 4787
    /// address-and-port-dependent filtering), or an outbound reply or RST
    /// that would have to open one.
    NoSession,
    /// The shard's session table is at its bound.
    SessionsFull,
    /// The pool address's port slice of this shard is all in use.
    PortsExhausted,
    /// A port forward's internal endpoint already has a session with this
    /// remote (an outbound flow took it first).
    Conflict,
    /// An ICMP error to or from a NAT address whose quoted packet is not a
    /// TCP/UDP/ICMP-query IPv4 header with 8 bytes of L4.
    IcmpBadQuote,
    /// An ICMP error about a flow the NAT has no session for.
    IcmpNoSession,
    /// An IPv6 address NPTv6 cannot map: the word it adjusts is 0xffff
    /// (RFC 6296 section 3.5).
    NptUnmappable,
}

impl NatDrop {
    /// Number of reasons.
    pub const COUNT: usize = 10;

    /// Every reason, in counter order.
    pub const ALL: [NatDrop; Self::COUNT] = [
        NatDrop::Malformed,
        NatDrop::Fragment,
        NatDrop::UnsupportedProtocol,
        NatDrop::NoSession,
        NatDrop::SessionsFull,
        NatDrop::PortsExhausted,
        NatDrop::Conflict,
        NatDrop::IcmpBadQuote,
        NatDrop::IcmpNoSession,
        NatDrop::NptUnmappable,
    ];

    /// Stable snake_case counter name.
    pub const fn name(self) -> &'static str {
        match self {
            NatDrop::Malformed => "malformed",
            NatDrop::Fragment => "fragment",
            NatDrop::UnsupportedProtocol => "unsupported_protocol",
            NatDrop::NoSession => "no_session",
            NatDrop::SessionsFull => "sessions_full",
            NatDrop::PortsExhausted => "ports_exhausted",
            NatDrop::Conflict => "conflict",
            NatDrop::IcmpBadQuote => "icmp_bad_quote",
            NatDrop::IcmpNoSession => "icmp_no_session",
            NatDrop::NptUnmappable => "npt_unmappable",
        }
    }
}

/// A shard's counters; plain integers, owned by one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Outbound packets rewritten.
    pub out_translated: u64,
    /// Outbound packets passed unchanged.
    pub out_untouched: u64,
    /// Inbound packets rewritten.
    pub in_translated: u64,
    /// Inbound packets passed unchanged.
    pub in_untouched: u64,
    /// ICMP errors rewritten (both directions, also in `*_translated`).
    pub icmp_errors_translated: u64,
    /// Sessions opened.
    pub sessions_created: u64,
    /// Sessions closed by their idle timeout.
    pub sessions_expired: u64,
    /// TCP sessions not yet established closed early to make room for a
    /// new flow in a full table (`shard::EVICT_SCAN`).
    pub sessions_evicted: u64,
    /// Endpoint-independent mappings (external ports) taken.
    pub mappings_created: u64,
    /// Drops, indexed by `NatDrop as usize`.
    pub drops: [u64; NatDrop::COUNT],
}

impl NatCounters {
    /// Drops for one reason.
    pub fn drop_count(&self, reason: NatDrop) -> u64 {
        self.drops[reason as usize]
    }

    /// Name and value of every counter, for the stats segment.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        [
            ("out_translated", self.out_translated),
            ("out_untouched", self.out_untouched),
            ("in_translated", self.in_translated),
            ("in_untouched", self.in_untouched),
            ("icmp_errors_translated", self.icmp_errors_translated),
            ("sessions_created", self.sessions_created),
            ("sessions_expired", self.sessions_expired),
            ("sessions_evicted", self.sessions_evicted),
            ("mappings_created", self.mappings_created),
        ]
        .into_iter()
        .chain(
            NatDrop::ALL
                .iter()
                .map(|&r| (r.name(), self.drops[r as usize])),
        )
    }
}
