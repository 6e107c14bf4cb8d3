//! The bundle frame: a typed view and a builder over braid's ESP payload for
//! next header BUNDLE. The layout is specified in `docs/wire-format.md`.
//!
//! A frame is a 12-byte header (version, stream id, stream sequence) followed
//! by records; each record is a 4-byte type/flags/length header and a value.
//! Like RFC 9347 (IP-TFS) one frame packs several inner packets and one inner
//! packet may be cut across frames, but every data record also names its flow
//! bucket and per-bucket sequence so the receiver re-orders per flow.

use crate::DropReason;

/// ESP next header of a bundle frame: 253, "use for experimentation and
/// testing" in the IANA protocol numbers registry (RFC 3692 section 2.1).
pub const NEXT_HEADER_BUNDLE: u8 = 253;

/// Bundle frame version this code writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 12;
/// Bytes of every record's type/flags/length header.
pub const RECORD_HEADER_LEN: usize = 4;
/// Bytes a data record adds before its data (record header + bucket, offset, flow seq).
pub const DATA_HEADER_LEN: usize = 12;
/// Bytes of a whole probe record.
pub const PROBE_LEN: usize = RECORD_HEADER_LEN + 16;
/// Bytes of a whole probe-reply record.
pub const PROBE_REPLY_LEN: usize = RECORD_HEADER_LEN + 24;
/// Largest inner packet: the fragment offset is 16 bits, like IPv4's total
/// length (RFC 791 section 3.1).
pub const MAX_INNER_PACKET: usize = u16::MAX as usize;
/// Largest data one record carries: its 16-bit length covers the 8-byte data header too.
pub const MAX_RECORD_DATA: usize = u16::MAX as usize - (DATA_HEADER_LEN - RECORD_HEADER_LEN);

/// Record type values.
pub mod record_type {
    /// Padding: the rest of the frame is ignored.
    pub const PAD: u8 = 0x00;
    /// An inner packet or a fragment of one.
    pub const DATA: u8 = 0x01;
    /// A liveness probe.
    pub const PROBE: u8 = 0x02;
    /// The answer to a liveness probe.
    pub const PROBE_REPLY: u8 = 0x03;
}

/// Data record flag: this record holds the first byte of the inner packet.
pub const FLAG_FIRST: u8 = 0x80;
/// Data record flag: this record holds the last byte of the inner packet.
pub const FLAG_LAST: u8 = 0x40;

mod field {
    pub type Field = core::ops::Range<usize>;
    // Frame header.
    pub const VERSION: usize = 0;
    pub const STREAM: Field = 2..4;
    pub const STREAM_SEQ: Field = 4..12;
    // Record header, relative to the record.
    pub const TYPE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const LENGTH: Field = 2..4;
    // Data record, relative to the record.
    pub const BUCKET: Field = 4..6;
    pub const OFFSET: Field = 6..8;
    pub const FLOW_SEQ: Field = 8..12;
    // Probe and probe reply, relative to the record.
    pub const PATH: Field = 4..6;
    pub const PROBE_SEQ: Field = 8..12;
    pub const TX_TIME: Field = 12..20;
    pub const PEER_TIME: Field = 20..28;
}

fn be16(b: &[u8], f: field::Field) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[f]);
    u16::from_be_bytes(a)
}

fn be32(b: &[u8], f: field::Field) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[f]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], f: field::Field) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[f]);
    u64::from_be_bytes(a)
}

/// The frame header: which sender stream, and that stream's frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sender stream (one per sender worker).
    pub stream: u16,
    /// Per-stream frame sequence, +1 per frame whatever tunnel carries it.
    pub stream_seq: u64,
}

/// An inner packet, or a fragment of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRecord<'a> {
    /// Flow bucket of the inner packet, within its stream.
    pub bucket: u16,
    /// Sequence of the inner packet within its bucket.
    pub flow_seq: u32,
    /// Byte offset of `data` in the inner packet.
    pub offset: u16,
    /// `data` starts the inner packet.
    pub first: bool,
    /// `data` ends the inner packet.
    pub last: bool,
    /// The bytes.
    pub data: &'a [u8],
}

impl DataRecord<'_> {
    /// True for a whole inner packet (not a fragment).
    pub fn is_whole(&self) -> bool {
        self.first && self.last
    }

    fn check(&self) -> Result<(), DropReason> {
        check_data(self.data.len(), self.first, self.offset)
    }
}

/// The checks of a data record of `len` data bytes.
#[inline(always)]
fn check_data(len: usize, first: bool, offset: u16) -> Result<(), DropReason> {
    if len == 0 || len > MAX_RECORD_DATA {
        return Err(DropReason::BundleRecordLength);
    }
    if first != (offset == 0) {
        return Err(DropReason::BundleFragment);
    }
    if usize::from(offset) + len > MAX_INNER_PACKET {
        return Err(DropReason::FragmentOversize);
    }
    Ok(())
}

/// A liveness probe, sent on the tunnel it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Index of the probed tunnel in the sender's bundle.
    pub path: u16,
    /// Probe sequence, per path.
    pub seq: u32,
    /// Sender's clock when sent (ns).
    pub tx_time: u64,
}

/// The answer to a probe: echoes it and adds the replier's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    /// `path` of the probe.
    pub path: u16,
    /// `seq` of the probe.
    pub seq: u32,
    /// `tx_time` of the probe.
    pub echo_tx_time: u64,
    /// Replier's clock when the probe arrived (ns); not synchronised.
    pub peer_time: u64,
}

impl ProbeReply {
    /// The reply to `probe`, received at the replier's `now`.
    pub fn answer(probe: &Probe, now: u64) -> Self {
        ProbeReply {
            path: probe.path,
            seq: probe.seq,
            echo_tx_time: probe.tx_time,
            peer_time: now,
        }
    }
}

/// One record of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// Inner packet or fragment.
    Data(DataRecord<'a>),
    /// Liveness probe.
    Probe(Probe),
    /// Liveness probe reply.
    ProbeReply(ProbeReply),
}

/// A checked view of a bundle frame (the decrypted ESP payload, without the
/// ESP trailer).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    header: FrameHeader,
    records: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks the frame header. Records are checked as they are iterated.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DropReason> {
        if bytes.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if bytes[field::VERSION] >> 4 != VERSION {
            return Err(DropReason::BundleVersion);
        }
        Ok(Frame {
            header: FrameHeader {
                stream: be16(bytes, field::STREAM),
                stream_seq: be64(bytes, field::STREAM_SEQ),
            },
            records: &bytes[HEADER_LEN..],
        })
    }

    /// The frame header.
    pub fn header(&self) -> FrameHeader {
        self.header
    }

    /// Zero-copy iterator over the records; it ends after the first error.
    /// Receivers call `check_records` first so a malformed frame is dropped whole.
    pub fn records(&self) -> Records<'a> {
        Records { rest: self.records }
    }

    /// Checks every record without keeping any: a frame is taken whole or dropped.
    pub fn check_records(&self) -> Result<(), DropReason> {
        self.check(usize::MAX).map(|_| ())
    }

    /// Checks every record as iterating them does, in the same order and
    /// with the same errors, and that each data record's bucket is below
    /// `buckets` (`BundleBucket`), without building any record: the first
    /// of a receiver's two passes over a frame it takes whole or drops.
    /// Returns whether the frame holds data.
    #[inline]
    pub fn check(&self, buckets: usize) -> Result<bool, DropReason> {
        let mut rest = self.records;
        let mut has_data = false;
        while let Some(&ty) = rest.first() {
            if ty == record_type::PAD {
                break;
            }
            if rest.len() < RECORD_HEADER_LEN {
                return Err(DropReason::Truncated);
            }
            let end = RECORD_HEADER_LEN + usize::from(be16(rest, field::LENGTH));
            if end > rest.len() {
                return Err(DropReason::BundleRecordLength);
            }
            match ty {
                record_type::DATA => {
                    if end <= DATA_HEADER_LEN {
                        return Err(DropReason::BundleRecordLength);
                    }
                    let first = rest[field::FLAGS] & FLAG_FIRST != 0;
                    check_data(end - DATA_HEADER_LEN, first, be16(rest, field::OFFSET))?;
                    if usize::from(be16(rest, field::BUCKET)) >= buckets {
                        return Err(DropReason::BundleBucket);
                    }
                    has_data = true;
                }
                record_type::PROBE if end != PROBE_LEN => return Err(DropReason::BundleRecordLength),
                record_type::PROBE_REPLY if end != PROBE_REPLY_LEN => {
                    return Err(DropReason::BundleRecordLength)
                }
                record_type::PROBE | record_type::PROBE_REPLY => {}
                _ => return Err(DropReason::BundleRecordType),
            }
            rest = &rest[end..];
        }
        Ok(has_data)
    }
}

/// Iterator over the records of a frame.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    #[inline(always)]
    fn next_record(&mut self) -> Result<Option<Record<'a>>, DropReason> {
        let rest = self.rest;
        if rest.is_empty() || rest[field::TYPE] == record_type::PAD {
            return Ok(None);
        }
        if rest.len() < RECORD_HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let end = RECORD_HEADER_LEN + usize::from(be16(rest, field::LENGTH));
        if end > rest.len() {
            return Err(DropReason::BundleRecordLength);
        }
        let rec = &rest[..end];
        let flags = rec[field::FLAGS];
        let record = match rec[field::TYPE] {
            record_type::DATA => {
                if end <= DATA_HEADER_LEN {
                    return Err(DropReason::BundleRecordLength);
                }
                let data = DataRecord {
                    bucket: be16(rec, field::BUCKET),
                    flow_seq: be32(rec, field::FLOW_SEQ),
                    offset: be16(rec, field::OFFSET),
                    first: flags & FLAG_FIRST != 0,
                    last: flags & FLAG_LAST != 0,
                    data: &rec[DATA_HEADER_LEN..],
                };
                data.check()?;
                Record::Data(data)
            }
            record_type::PROBE => {
                if end != PROBE_LEN {
                    return Err(DropReason::BundleRecordLength);
                }
                Record::Probe(Probe {
                    path: be16(rec, field::PATH),
                    seq: be32(rec, field::PROBE_SEQ),
                    tx_time: be64(rec, field::TX_TIME),
                })
            }
            record_type::PROBE_REPLY => {
                if end != PROBE_REPLY_LEN {
                    return Err(DropReason::BundleRecordLength);
                }
                Record::ProbeReply(ProbeReply {
                    path: be16(rec, field::PATH),
                    seq: be32(rec, field::PROBE_SEQ),
                    echo_tx_time: be64(rec, field::TX_TIME),
                    peer_time: be64(rec, field::PEER_TIME),
                })
            }
            _ => return Err(DropReason::BundleRecordType),
        };
        self.rest = &rest[end..];
        Ok(Some(record))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, DropReason>;

    /// Inlined into the receive loop: returned through the stack, the
    /// record's fields were reloaded one by one.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_record().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.rest = &[];
        }
        item
    }
}

/// Writes one frame into a caller buffer whose length is the largest frame
/// allowed (path MTU less outer headers, ESP trailer and ICV).
#[derive(Debug)]
pub struct FrameBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> FrameBuilder<'b> {
    /// Writes `header`; `None` if `buf` cannot hold it.
    pub fn new(buf: &'b mut [u8], header: FrameHeader) -> Option<Self> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        buf[field::VERSION] = VERSION << 4;
        buf[1] = 0;
        buf[field::STREAM].copy_from_slice(&header.stream.to_be_bytes());
        buf[field::STREAM_SEQ].copy_from_slice(&header.stream_seq.to_be_bytes());
        Some(FrameBuilder {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True while no record has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Largest data a data record pushed now could carry.
    pub fn data_room(&self) -> usize {
        (self.buf.len() - self.len)
            .saturating_sub(DATA_HEADER_LEN)
            .min(MAX_RECORD_DATA)
    }

    fn record(&mut self, kind: u8, flags: u8, total: usize) -> Option<&mut [u8]> {
        if total > self.buf.len() - self.len {
            return None;
        }
        let rec = &mut self.buf[self.len..self.len + total];
        rec[field::TYPE] = kind;
        rec[field::FLAGS] = flags;
        // `total - 4` fits: callers bound it by MAX_RECORD_DATA or a fixed size.
        rec[field::LENGTH].copy_from_slice(&((total - RECORD_HEADER_LEN) as u16).to_be_bytes());
        self.len += total;
        Some(rec)
    }

    /// Appends a data record; false (nothing written) if it does not fit or is
    /// malformed.
    pub fn push_data(&mut self, data: &DataRecord<'_>) -> bool {
        if data.check().is_err() {
            return false;
        }
        let flags = if data.first { FLAG_FIRST } else { 0 } | if data.last { FLAG_LAST } else { 0 };
        let Some(rec) = self.record(record_type::DATA, flags, DATA_HEADER_LEN + data.data.len())
        else {
            return false;
        };
        rec[field::BUCKET].copy_from_slice(&data.bucket.to_be_bytes());
        rec[field::OFFSET].copy_from_slice(&data.offset.to_be_bytes());
        rec[field::FLOW_SEQ].copy_from_slice(&data.flow_seq.to_be_bytes());
        crate::wire::copy_bytes(&mut rec[DATA_HEADER_LEN..], data.data);
        true
    }

    /// Appends a whole inner packet; false if it does not fit.
    pub fn push_packet(&mut self, bucket: u16, flow_seq: u32, packet: &[u8]) -> bool {
        self.push_data(&DataRecord {
            bucket,
            flow_seq,
            offset: 0,
            first: true,
            last: true,
            data: packet,
        })
    }

    /// Appends a probe; false if it does not fit.
    pub fn push_probe(&mut self, probe: &Probe) -> bool {
        let Some(rec) = self.record(record_type::PROBE, 0, PROBE_LEN) else {
            return false;
        };
        rec[field::PATH].copy_from_slice(&probe.path.to_be_bytes());
        rec[6..8].fill(0);
        rec[field::PROBE_SEQ].copy_from_slice(&probe.seq.to_be_bytes());
        rec[field::TX_TIME].copy_from_slice(&probe.tx_time.to_be_bytes());
        true
    }

    /// Appends a probe reply; false if it does not fit.
    pub fn push_probe_reply(&mut self, reply: &ProbeReply) -> bool {
        let Some(rec) = self.record(record_type::PROBE_REPLY, 0, PROBE_REPLY_LEN) else {
            return false;
        };
        rec[field::PATH].copy_from_slice(&reply.path.to_be_bytes());
        rec[6..8].fill(0);
        rec[field::PROBE_SEQ].copy_from_slice(&reply.seq.to_be_bytes());
        rec[field::TX_TIME].copy_from_slice(&reply.echo_tx_time.to_be_bytes());
        rec[field::PEER_TIME].copy_from_slice(&reply.peer_time.to_be_bytes());
        true
    }

    /// The frame length: the bytes to encrypt are `buf[..len]`.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test vector 1 of docs/wire-format.md: stream 1, stream seq 42, two
    /// whole packets (bucket 7 seq 5, bucket 300 seq 0x01020304).
    pub(crate) const VECTOR_PACKETS: &str = "
        10 00 00 01 00 00 00 00 00 00 00 2a
        01 c0 00 0c 00 07 00 00 00 00 00 05 45 00 00 14
        01 c0 00 0b 01 2c 00 00 01 02 03 04 60 00 00";

    /// Test vector 2: stream 2, stream seq 7, the middle fragment (offset
    /// 1000, neither first nor last) of bucket 3 seq 9.
    pub(crate) const VECTOR_FRAGMENT: &str = "
        10 00 00 02 00 00 00 00 00 00 00 07
        01 00 00 0b 00 03 03 e8 00 00 00 09 aa bb cc";

    /// Test vector 3: stream 0, stream seq 1, a probe then a probe reply.
    pub(crate) const VECTOR_PROBES: &str = "
        10 00 00 00 00 00 00 00 00 00 00 01
        02 00 00 10 00 04 00 00 00 00 00 63 00 00 00 00 3b 9a ca 00
        03 00 00 18 00 04 00 00 00 00 00 63 00 00 00 00 3b 9a ca 00 00 00 00 00 00 00 30 39";

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn build(f: impl FnOnce(&mut FrameBuilder<'_>)) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut b = FrameBuilder::new(
            &mut buf,
            FrameHeader {
                stream: 0,
                stream_seq: 0,
            },
        )
        .unwrap();
        f(&mut b);
        let n = b.finish();
        buf[..n].to_vec()
    }

    fn records(bytes: &[u8]) -> Vec<Result<Record<'_>, DropReason>> {
        Frame::parse(bytes).unwrap().records().collect()
    }

    #[test]
    fn vector_packets() {
        let mut buf = [0u8; 1500];
        let mut b = FrameBuilder::new(
            &mut buf,
            FrameHeader {
                stream: 1,
                stream_seq: 42,
            },
        )
        .unwrap();
        assert!(b.push_packet(7, 5, &[0x45, 0, 0, 0x14]));
        assert!(b.push_packet(300, 0x0102_0304, &[0x60, 0, 0]));
        let n = b.finish();
        assert_eq!(&buf[..n], &hex(VECTOR_PACKETS)[..]);

        let frame = Frame::parse(&buf[..n]).unwrap();
        assert_eq!(
            frame.header(),
            FrameHeader {
                stream: 1,
                stream_seq: 42
            }
        );
        let recs: Vec<_> = frame.records().map(Result::unwrap).collect();
        assert_eq!(recs.len(), 2);
        let Record::Data(d) = recs[1] else { panic!() };
        assert_eq!(
            (d.bucket, d.flow_seq, d.data),
            (300, 0x0102_0304, &[0x60, 0, 0][..])
        );
        assert!(d.is_whole());
    }

    #[test]
    fn vector_fragment() {
        let mut buf = [0u8; 1500];
        let mut b = FrameBuilder::new(
            &mut buf,
            FrameHeader {
                stream: 2,
                stream_seq: 7,
            },
        )
        .unwrap();
        let d = DataRecord {
            bucket: 3,
            flow_seq: 9,
            offset: 1000,
            first: false,
            last: false,
            data: &[0xaa, 0xbb, 0xcc],
        };
        assert!(b.push_data(&d));
        let n = b.finish();
        assert_eq!(&buf[..n], &hex(VECTOR_FRAGMENT)[..]);
        assert_eq!(records(&buf[..n]), vec![Ok(Record::Data(d))]);
    }

    #[test]
    fn vector_probes() {
        let mut buf = [0u8; 1500];
        let mut b = FrameBuilder::new(
            &mut buf,
            FrameHeader {
                stream: 0,
                stream_seq: 1,
            },
        )
        .unwrap();
        let p = Probe {
            path: 4,
            seq: 99,
            tx_time: 1_000_000_000,
        };
        let r = ProbeReply::answer(&p, 12345);
        assert!(b.push_probe(&p));
        assert!(b.push_probe_reply(&r));
        let n = b.finish();
        assert_eq!(&buf[..n], &hex(VECTOR_PROBES)[..]);
        assert_eq!(
            records(&buf[..n]),
            vec![Ok(Record::Probe(p)), Ok(Record::ProbeReply(r))]
        );
    }

    #[test]
    fn vectors_match_the_doc() {
        let doc: String = include_str!("../../../docs/wire-format.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for v in [VECTOR_PACKETS, VECTOR_FRAGMENT, VECTOR_PROBES] {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(doc.contains(&v), "docs/wire-format.md lacks vector {v}");
        }
    }

    #[test]
    fn short_header_is_truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Frame::parse(&hex(VECTOR_PACKETS)[..n]).unwrap_err(),
                DropReason::Truncated
            );
        }
    }

    #[test]
    fn unknown_version() {
        let mut f = hex(VECTOR_PACKETS);
        f[0] = 0x20;
        assert_eq!(Frame::parse(&f).unwrap_err(), DropReason::BundleVersion);
    }

    #[test]
    fn empty_frame_and_padding() {
        let f = hex(VECTOR_PACKETS);
        assert!(records(&f[..HEADER_LEN]).is_empty());
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 9]);
        assert_eq!(records(&padded).len(), 2);
        assert!(records(&padded).iter().all(Result::is_ok));
    }

    #[test]
    fn short_record_header_is_truncated() {
        let mut f = hex(VECTOR_PACKETS);
        f.extend_from_slice(&[0x01, 0xc0, 0x00]);
        let r = records(&f);
        assert_eq!(r.len(), 3);
        assert_eq!(r[2], Err(DropReason::Truncated));
    }

    #[test]
    fn record_past_frame_is_bad_length() {
        let f = hex(VECTOR_PACKETS);
        let r = records(&f[..f.len() - 1]);
        assert_eq!(r.last(), Some(&Err(DropReason::BundleRecordLength)));
    }

    #[test]
    fn data_record_without_data_is_bad_length() {
        for len in 0u16..=8 {
            let mut f = hex(VECTOR_FRAGMENT)[..HEADER_LEN].to_vec();
            f.extend_from_slice(&[0x01, 0xc0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[0; 8][..usize::from(len)]);
            assert_eq!(
                records(&f),
                vec![Err(DropReason::BundleRecordLength)],
                "len {len}"
            );
        }
    }

    #[test]
    fn probe_with_wrong_length() {
        let mut f = hex(VECTOR_PROBES);
        f[HEADER_LEN + 3] = 0x0f; // probe length 15: the record now ends one byte early
        assert_eq!(records(&f)[0], Err(DropReason::BundleRecordLength));
        let mut f = hex(VECTOR_PROBES);
        f[HEADER_LEN + PROBE_LEN + 3] = 0x17;
        assert_eq!(records(&f)[1], Err(DropReason::BundleRecordLength));
    }

    #[test]
    fn unknown_record_type() {
        let mut f = hex(VECTOR_PACKETS);
        f[HEADER_LEN] = 0x7f;
        assert_eq!(records(&f), vec![Err(DropReason::BundleRecordType)]);
        assert_eq!(
            Frame::parse(&f).unwrap().check_records(),
            Err(DropReason::BundleRecordType)
        );
    }

    #[test]
    fn first_flag_and_offset_disagree() {
        let mut f = hex(VECTOR_FRAGMENT);
        f[HEADER_LEN + 1] = FLAG_FIRST; // first, but offset 1000
        assert_eq!(records(&f), vec![Err(DropReason::BundleFragment)]);
        let mut f = hex(VECTOR_PACKETS);
        f[HEADER_LEN + 1] = FLAG_LAST; // not first, but offset 0
        assert_eq!(records(&f)[0], Err(DropReason::BundleFragment));
    }

    #[test]
    fn fragment_past_max_inner_packet() {
        let mut f = hex(VECTOR_FRAGMENT);
        f[HEADER_LEN + 6] = 0xff;
        f[HEADER_LEN + 7] = 0xfe; // offset 65534 + 3 bytes
        assert_eq!(records(&f), vec![Err(DropReason::FragmentOversize)]);
    }

    #[test]
    fn builder_refuses_what_does_not_fit() {
        let mut buf = [0u8; HEADER_LEN + DATA_HEADER_LEN + 4];
        assert!(FrameBuilder::new(
            &mut buf[..HEADER_LEN - 1],
            FrameHeader {
                stream: 0,
                stream_seq: 0
            }
        )
        .is_none());
        let mut b = FrameBuilder::new(
            &mut buf,
            FrameHeader {
                stream: 0,
                stream_seq: 0,
            },
        )
        .unwrap();
        assert_eq!(b.data_room(), 4);
        assert!(!b.push_packet(0, 0, &[1; 5]));
        assert!(!b.push_packet(0, 0, &[]));
        assert!(!b.push_probe(&Probe {
            path: 0,
            seq: 0,
            tx_time: 0
        }));
        assert!(b.is_empty());
        assert!(b.push_packet(0, 0, &[1; 4]));
        assert_eq!(b.data_room(), 0);
        assert_eq!(b.finish(), buf.len());
    }

    #[test]
    fn builder_refuses_malformed_fragments() {
        let bad = DataRecord {
            bucket: 0,
            flow_seq: 0,
            offset: 0,
            first: false,
            last: true,
            data: &[1],
        };
        assert!(build(|b| assert!(!b.push_data(&bad))).len() == HEADER_LEN);
    }

    /// What `Frame::check` must agree with: the records walked one by one,
    /// the first error or bad bucket, and whether any is data.
    fn walked(frame: &Frame<'_>, buckets: usize) -> Result<bool, DropReason> {
        let mut has_data = false;
        for r in frame.records() {
            if let Record::Data(d) = r? {
                if usize::from(d.bucket) >= buckets {
                    return Err(DropReason::BundleBucket);
                }
                has_data = true;
            }
        }
        Ok(has_data)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Frames built from the doc's vectors, then damaged anywhere: the
        /// lean check finds what walking the records finds, error for error.
        #[test]
        fn check_agrees_with_the_records(
            which in 0usize..3,
            // Mostly in the first records' headers, mostly small values
            // (types, flags, lengths' high bytes).
            cuts in proptest::collection::vec(
                (
                    proptest::prop_oneof![0usize..48, 0usize..200],
                    proptest::prop_oneof![0u8..5, 0x3fu8..0x42, 0x7fu8..0x82, 0xbfu8..0xc2, proptest::num::u8::ANY],
                ),
                0..4,
            ),
            truncate in 0usize..200,
            buckets in 0usize..400,
        ) {
            let mut f = hex([VECTOR_PACKETS, VECTOR_FRAGMENT, VECTOR_PROBES][which]);
            f.extend(hex(VECTOR_PACKETS).split_off(HEADER_LEN));
            for (at, b) in cuts {
                if HEADER_LEN + at < f.len() {
                    f[HEADER_LEN + at] = b;
                }
            }
            f.truncate(HEADER_LEN + truncate);
            let frame = Frame::parse(&f).unwrap();
            proptest::prop_assert_eq!(frame.check(buckets), walked(&frame, buckets));
        }
    }
}
