//! Why a packet was dropped. Every variant is a named counter in the dataplane
//! (VPP's `foreach_*_error`), so this enum is small, `Copy`, and stable.

/// A named reason for dropping a packet. Hot-path errors are this enum only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The buffer ended before the header it should hold.
    Truncated,
    /// The IP version nibble is neither 4 nor 6 where an IP header must start.
    BadIpVersion,
    /// IPv4 IHL is below 5, the minimum header (RFC 791 section 3.1).
    BadIpHeaderLen,
    /// IPv4 total length is below the header length or past the buffer.
    BadIpTotalLen,
    /// IPv4 header checksum does not verify (RFC 791 section 3.1).
    BadIpChecksum,
    /// IPv6 payload length runs past the buffer (RFC 8200 section 3).
    BadIpv6PayloadLen,
    /// An IPv6 extension header chain runs off the end of the packet.
    BadIpv6ExtHeader,
    /// UDP length is below 8 or past the IP payload (RFC 768).
    BadUdpLen,
    /// UDP checksum does not verify over the pseudo-header (RFC 768, RFC 8200).
    BadUdpChecksum,
    /// UDP over IPv6 with a zero checksum, not allowed here (RFC 8200 section 8.1).
    UdpZeroChecksum,
    /// An ESP-in-UDP payload too short for an ESP header (RFC 3948 section 2.2).
    Runt,
    /// An ESP packet shorter than header, IV, trailer and ICV (RFC 4303 section 2).
    EspTruncated,
    /// ESP padding bytes are not 1, 2, 3, ... (RFC 4303 section 2.4).
    EspBadPad,
    /// ESP pad length runs past the decrypted payload (RFC 4303 section 2.5).
    EspPadTooLong,
    /// The SPI is not the one of the SA the packet was given to.
    EspWrongSpi,
    /// No SA with this SPI is installed (RFC 4303 section 3.4.2).
    EspUnknownSpi,
    /// The SA was replaced by a rekey and its grace period is over.
    SaExpired,
    /// The ICV does not verify: forged, corrupted or wrong key (RFC 4106 section 6).
    AuthFailed,
    /// The sequence number was already received (RFC 4303 section 3.4.3).
    Replayed,
    /// The sequence number is left of the anti-replay window (RFC 4303 section 3.4.3).
    ReplayTooOld,
    /// Sequence number zero is never sent (RFC 4303 section 3.3.3).
    EspSeqZero,
    /// The outbound SA reached its packet limit; it must be rekeyed (RFC 4303 section 3.3.3).
    SaExhausted,
    /// The sequence block was leased from another SA.
    EspWrongSeqBlock,
    /// No room after the payload for pad, trailer and ICV.
    EspNoTailroom,
    /// The payload is too long for AES-GCM (NIST SP 800-38D section 5.2.1.1).
    EspTooLong,
    /// The ESP next header is not one this receiver accepts (RFC 4303 section 2.6).
    EspBadNextHeader,
    /// The inner IP version nibble disagrees with the ESP next header.
    EspInnerVersionMismatch,
    /// The bundle frame version is not one this receiver speaks (docs/wire-format.md).
    BundleVersion,
    /// A bundle record's length runs past the frame or is wrong for its type.
    BundleRecordLength,
    /// A bundle record type this receiver does not know.
    BundleRecordType,
    /// A data record's first flag and fragment offset disagree.
    BundleFragment,
    /// A fragment that was already received.
    FragmentDuplicate,
    /// A fragment overlaps another of the same packet, or contradicts its end.
    FragmentOverlap,
    /// Fragments of a packet still missing when its reassembly timed out or was evicted.
    FragmentMissing,
    /// A reassembled packet would exceed the reassembly buffer or fragment limit.
    FragmentOversize,
    /// The re-orderer already released or holds this flow sequence.
    ReorderDuplicate,
    /// Arrived after the re-orderer had skipped its flow sequence.
    ReorderTooLate,
    /// The re-orderer had no free hold slot for this packet.
    ReorderOverflow,
    /// A probe reply that matches no outstanding probe.
    ProbeUnmatched,
    /// A data record's flow bucket is beyond the receiver's configuration.
    BundleBucket,
    /// A frame with data from a stream id beyond the receiver's stream table.
    BundleStream,
    /// The caller had no buffer for a received inner packet.
    RxNoBuffer,
    /// The probe or probe-reply queue was full.
    ProbeQueueFull,
}

impl DropReason {
    /// Every reason, in declaration order (counter index = `as usize`).
    pub const ALL: [DropReason; 43] = [
        DropReason::Truncated,
        DropReason::BadIpVersion,
        DropReason::BadIpHeaderLen,
        DropReason::BadIpTotalLen,
        DropReason::BadIpChecksum,
        DropReason::BadIpv6PayloadLen,
        DropReason::BadIpv6ExtHeader,
        DropReason::BadUdpLen,
        DropReason::BadUdpChecksum,
        DropReason::UdpZeroChecksum,
        DropReason::Runt,
        DropReason::EspTruncated,
        DropReason::EspBadPad,
        DropReason::EspPadTooLong,
        DropReason::EspWrongSpi,
        DropReason::EspUnknownSpi,
        DropReason::SaExpired,
        DropReason::AuthFailed,
        DropReason::Replayed,
        DropReason::ReplayTooOld,
        DropReason::EspSeqZero,
        DropReason::SaExhausted,
        DropReason::EspWrongSeqBlock,
        DropReason::EspNoTailroom,
        DropReason::EspTooLong,
        DropReason::EspBadNextHeader,
        DropReason::EspInnerVersionMismatch,
        DropReason::BundleVersion,
        DropReason::BundleRecordLength,
        DropReason::BundleRecordType,
        DropReason::BundleFragment,
        DropReason::FragmentDuplicate,
        DropReason::FragmentOverlap,
        DropReason::FragmentMissing,
        DropReason::FragmentOversize,
        DropReason::ReorderDuplicate,
        DropReason::ReorderTooLate,
        DropReason::ReorderOverflow,
        DropReason::ProbeUnmatched,
        DropReason::BundleBucket,
        DropReason::BundleStream,
        DropReason::RxNoBuffer,
        DropReason::ProbeQueueFull,
    ];

    /// Short, stable name for counters and logs (snake_case).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadIpVersion => "bad_ip_version",
            DropReason::BadIpHeaderLen => "bad_ip_header_len",
            DropReason::BadIpTotalLen => "bad_ip_total_len",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::BadIpv6PayloadLen => "bad_ipv6_payload_len",
            DropReason::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            DropReason::BadUdpLen => "bad_udp_len",
            DropReason::BadUdpChecksum => "bad_udp_checksum",
            DropReason::UdpZeroChecksum => "udp_zero_checksum",
            DropReason::Runt => "runt",
            DropReason::EspTruncated => "esp_truncated",
            DropReason::EspBadPad => "esp_bad_pad",
            DropReason::EspPadTooLong => "esp_pad_too_long",
            DropReason::EspWrongSpi => "esp_wrong_spi",
            DropReason::EspUnknownSpi => "esp_unknown_spi",
            DropReason::SaExpired => "sa_expired",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::ReplayTooOld => "replay_too_old",
            DropReason::EspSeqZero => "esp_seq_zero",
            DropReason::SaExhausted => "sa_exhausted",
            DropReason::EspWrongSeqBlock => "esp_wrong_seq_block",
            DropReason::EspNoTailroom => "esp_no_tailroom",
            DropReason::EspTooLong => "esp_too_long",
            DropReason::EspBadNextHeader => "esp_bad_next_header",
            DropReason::EspInnerVersionMismatch => "esp_inner_version_mismatch",
            DropReason::BundleVersion => "bundle_version",
            DropReason::BundleRecordLength => "bundle_record_length",
            DropReason::BundleRecordType => "bundle_record_type",
            DropReason::BundleFragment => "bundle_fragment",
            DropReason::FragmentDuplicate => "fragment_duplicate",
            DropReason::FragmentOverlap => "fragment_overlap",
            DropReason::FragmentMissing => "fragment_missing",
            DropReason::FragmentOversize => "fragment_oversize",
            DropReason::ReorderDuplicate => "reorder_duplicate",
            DropReason::ReorderTooLate => "reorder_too_late",
            DropReason::ReorderOverflow => "reorder_overflow",
            DropReason::ProbeUnmatched => "probe_unmatched",
            DropReason::BundleBucket => "bundle_bucket",
            DropReason::BundleStream => "bundle_stream",
            DropReason::RxNoBuffer => "rx_no_buffer",
            DropReason::ProbeQueueFull => "probe_queue_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DropReason;

    #[test]
    fn all_lists_every_reason_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len(), "duplicate counter names");
    }
}
