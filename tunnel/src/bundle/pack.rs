//! The sending side of one stream: flow buckets, sequences, and packing a
//! burst of inner packets into frames (many small ones per frame, a big one
//! cut across frames). It never waits for more packets than it was given.

use super::frame::{
    DataRecord, FrameBuilder, FrameHeader, DATA_HEADER_LEN, HEADER_LEN, MAX_INNER_PACKET,
};

/// Smallest first fragment worth starting at the tail of a partly filled
/// frame; below it the packet starts in the next frame (engineering choice:
/// keeps record overhead under ~10%).
pub const MIN_FIRST_FRAGMENT: usize = 128;

/// An inner packet handed to the packer, with the flow hash the caller
/// computed (RSS hash or 5-tuple hash).
#[derive(Debug, Clone, Copy)]
pub struct InnerPacket<'p> {
    /// The inner IP packet.
    pub bytes: &'p [u8],
    /// Hash of the inner flow; equal for every packet of one flow.
    pub flow_hash: u32,
}

/// Where packing stands in a slice of inner packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackCursor {
    index: usize,
    offset: usize,
    bucket: u16,
    flow_seq: u32,
}

impl PackCursor {
    /// The next frame continues a packet the last one began.
    pub fn continues(&self) -> bool {
        self.offset > 0
    }

    /// A cursor at the first packet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Packets fully packed (or rejected) so far.
    pub fn consumed(&self) -> usize {
        self.index
    }
}

/// Counters of a stream sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderCounters {
    /// Frames written.
    pub frames: u64,
    /// Inner packets packed whole.
    pub packets: u64,
    /// Inner packets cut into fragments.
    pub fragmented: u64,
    /// Fragment records written.
    pub fragments: u64,
    /// Inner packets refused: empty or over `MAX_INNER_PACKET`.
    pub rejected: u64,
}

/// One sender stream of a bundle: owned by one worker, so no shared state.
#[derive(Debug, Clone)]
pub struct StreamSender {
    stream: u16,
    next_stream_seq: u64,
    flow_seqs: Vec<u32>,
    counters: SenderCounters,
}

impl StreamSender {
    /// A stream with `buckets` flow buckets (at least 1).
    pub fn new(stream: u16, buckets: u16) -> Self {
        StreamSender {
            stream,
            next_stream_seq: 0,
            flow_seqs: vec![0; usize::from(buckets.max(1))],
            counters: SenderCounters::default(),
        }
    }

    /// The stream id.
    pub fn stream(&self) -> u16 {
        self.stream
    }

    /// Number of flow buckets.
    pub fn buckets(&self) -> u16 {
        self.flow_seqs.len() as u16
    }

    /// Counters.
    pub fn counters(&self) -> &SenderCounters {
        &self.counters
    }

    /// The bucket of a flow hash (Lemire's multiply-shift range reduction).
    pub fn bucket_of(&self, flow_hash: u32) -> u16 {
        bucket_of(flow_hash, self.buckets())
    }

    /// Continues `old`'s numbering: the next frame follows `old`'s last
    /// stream sequence and each bucket's next packet its last flow
    /// sequence, so the peer's re-orderer sees one unbroken stream when a
    /// sender is rebuilt (new tables). Refused (`false`, nothing changed)
    /// when the stream id or the number of buckets differ: the peer's
    /// re-orderer for that stream would not match.
    pub fn continue_from(&mut self, old: &StreamSender) -> bool {
        if old.stream != self.stream || old.flow_seqs.len() != self.flow_seqs.len() {
            return false;
        }
        self.next_stream_seq = old.next_stream_seq;
        self.flow_seqs.copy_from_slice(&old.flow_seqs);
        true
    }

    /// The stream sequence the next frame will carry.
    pub fn next_stream_seq(&self) -> u64 {
        self.next_stream_seq
    }

    /// The header of the next frame, consuming a stream sequence. For frames
    /// built by hand (probes); `pack` takes its own.
    pub fn next_header(&mut self) -> FrameHeader {
        let h = FrameHeader {
            stream: self.stream,
            stream_seq: self.next_stream_seq,
        };
        self.next_stream_seq += 1;
        self.counters.frames += 1;
        h
    }

    fn next_flow_seq(&mut self, bucket: u16) -> u32 {
        let s = &mut self.flow_seqs[usize::from(bucket)];
        let seq = *s;
        *s = s.wrapping_add(1);
        seq
    }

    /// Writes the next frame for `packets[cursor..]` into `buf` (whose length
    /// is the largest frame allowed) and returns its length, or `None` when
    /// every packet is packed. Packs greedily: whole packets while they fit;
    /// a packet bigger than one frame is cut across frames.
    pub fn pack(
        &mut self,
        packets: &[InnerPacket<'_>],
        cursor: &mut PackCursor,
        buf: &mut [u8],
    ) -> Option<usize> {
        if buf.len() <= HEADER_LEN + DATA_HEADER_LEN {
            return None;
        }
        let frame_room = buf.len() - HEADER_LEN - DATA_HEADER_LEN;
        let header = FrameHeader {
            stream: self.stream,
            stream_seq: self.next_stream_seq,
        };
        let mut b = FrameBuilder::new(buf, header)?;
        while let Some(p) = packets.get(cursor.index) {
            let len = p.bytes.len();
            if cursor.offset > 0 {
                // Continue a packet already cut.
                let chunk = (len - cursor.offset).min(b.data_room());
                if chunk == 0 {
                    break;
                }
                let last = cursor.offset + chunk == len;
                let ok = b.push_data(&DataRecord {
                    bucket: cursor.bucket,
                    flow_seq: cursor.flow_seq,
                    offset: cursor.offset as u16,
                    first: false,
                    last,
                    data: &p.bytes[cursor.offset..cursor.offset + chunk],
                });
                debug_assert!(ok);
                self.counters.fragments += 1;
                if !last {
                    cursor.offset += chunk;
                    break;
                }
                cursor.index += 1;
                cursor.offset = 0;
                continue;
            }
            if len == 0 || len > MAX_INNER_PACKET {
                self.counters.rejected += 1;
                cursor.index += 1;
                continue;
            }
            let room = b.data_room();
            if len <= room {
                let bucket = self.bucket_of(p.flow_hash);
                let seq = self.next_flow_seq(bucket);
                let ok = b.push_packet(bucket, seq, p.bytes);
                debug_assert!(ok);
                self.counters.packets += 1;
                cursor.index += 1;
                continue;
            }
            if len <= frame_room || room < MIN_FIRST_FRAGMENT.min(frame_room) {
                // Fits in a fresh frame, or too little room to start cutting.
                break;
            }
            let bucket = self.bucket_of(p.flow_hash);
            let seq = self.next_flow_seq(bucket);
            let ok = b.push_data(&DataRecord {
                bucket,
                flow_seq: seq,
                offset: 0,
                first: true,
                last: false,
                data: &p.bytes[..room],
            });
            debug_assert!(ok);
            self.counters.fragmented += 1;
            self.counters.fragments += 1;
            *cursor = PackCursor {
                index: cursor.index,
                offset: room,
                bucket,
                flow_seq: seq,
            };
            break;
        }
        if b.is_empty() {
            return None;
        }
        self.next_stream_seq += 1;
        self.counters.frames += 1;
        Some(b.finish())
    }
}

/// The bucket of `flow_hash` among `buckets` (Lemire, "Fast Random Integer
/// Generation in an Interval", 2019: multiply-shift instead of modulo).
pub fn bucket_of(flow_hash: u32, buckets: u16) -> u16 {
    ((u64::from(flow_hash) * u64::from(buckets.max(1))) >> 32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::frame::{Frame, Record};

    fn frames(s: &mut StreamSender, pkts: &[InnerPacket<'_>], max: usize) -> Vec<Vec<u8>> {
        let mut cur = PackCursor::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; max];
        while let Some(n) = s.pack(pkts, &mut cur, &mut buf) {
            assert!(n <= max);
            out.push(buf[..n].to_vec());
        }
        assert_eq!(cur.consumed(), pkts.len());
        out
    }

    fn data(f: &[u8]) -> Vec<(u16, u32, u16, bool, bool, usize)> {
        Frame::parse(f)
            .unwrap()
            .records()
            .map(|r| match r.unwrap() {
                Record::Data(d) => (
                    d.bucket,
                    d.flow_seq,
                    d.offset,
                    d.first,
                    d.last,
                    d.data.len(),
                ),
                r => panic!("{r:?}"),
            })
            .collect()
    }

    #[test]
    fn a_rebuilt_sender_continues_the_stream() {
        let p = [1u8; 100];
        let pkts: Vec<InnerPacket<'_>> = (0..6u32)
            .map(|i| InnerPacket {
                bytes: &p,
                flow_hash: i.wrapping_mul(0x4000_0000),
            })
            .collect();
        let mut old = StreamSender::new(2, 4);
        frames(&mut old, &pkts, 300);
        // One sender that never stopped, and one rebuilt mid-stream.
        let mut straight = old.clone();
        let want = frames(&mut straight, &pkts, 300);
        let mut rebuilt = StreamSender::new(2, 4);
        assert!(rebuilt.continue_from(&old));
        assert_eq!(rebuilt.next_stream_seq(), old.next_stream_seq());
        assert_eq!(frames(&mut rebuilt, &pkts, 300), want, "same stream and flow sequences");
        // Another stream id or bucket count: refused, untouched.
        for mut other in [StreamSender::new(3, 4), StreamSender::new(2, 8)] {
            assert!(!other.continue_from(&old));
            assert_eq!(other.next_stream_seq(), 0);
            assert_eq!(data(&frames(&mut other, &pkts[..1], 300)[0])[0].1, 0);
        }
    }

    #[test]
    fn small_packets_share_frames() {
        let mut s = StreamSender::new(3, 1);
        let p = [0u8; 100];
        let pkts = [InnerPacket {
            bytes: &p,
            flow_hash: 1,
        }; 10];
        // 12 + 4 * (12 + 100) = 460: four per frame.
        let f = frames(&mut s, &pkts, 460);
        assert_eq!(f.len(), 3);
        assert_eq!(data(&f[0]).len(), 4);
        assert_eq!(
            data(&f[2]),
            vec![(0, 8, 0, true, true, 100), (0, 9, 0, true, true, 100)]
        );
        let seqs: Vec<_> = f
            .iter()
            .map(|f| Frame::parse(f).unwrap().header().stream_seq)
            .collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!(Frame::parse(&f[0]).unwrap().header().stream, 3);
    }

    #[test]
    fn big_packet_is_cut() {
        let mut s = StreamSender::new(0, 4);
        let big: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let small = [7u8; 50];
        let pkts = [
            InnerPacket {
                bytes: &small,
                flow_hash: 0,
            },
            InnerPacket {
                bytes: &big,
                flow_hash: u32::MAX,
            },
            InnerPacket {
                bytes: &small,
                flow_hash: 0,
            },
        ];
        let f = frames(&mut s, &pkts, 1000);
        // Frame 0: small + first fragment; then middles; the tail shares with the last small.
        let d0 = data(&f[0]);
        assert_eq!(d0[0], (0, 0, 0, true, true, 50));
        assert_eq!(d0[1], (3, 0, 0, true, false, 1000 - 12 - 62 - 12));
        let mut off = 0;
        let mut pieces = Vec::new();
        for fr in &f {
            let frame = Frame::parse(fr).unwrap();
            for r in frame.records() {
                if let Record::Data(d) = r.unwrap() {
                    if d.bucket == 3 {
                        assert_eq!(usize::from(d.offset), off);
                        off += d.data.len();
                        pieces.extend_from_slice(d.data);
                    }
                }
            }
        }
        assert_eq!(pieces, big);
        assert_eq!(
            *data(f.last().unwrap()).last().unwrap(),
            (0, 1, 0, true, true, 50)
        );
        assert_eq!(s.counters().fragmented, 1);
    }

    #[test]
    fn packet_that_fits_a_fresh_frame_is_not_cut() {
        let mut s = StreamSender::new(0, 1);
        let a = [1u8; 600];
        let pkts = [InnerPacket {
            bytes: &a,
            flow_hash: 0,
        }; 2];
        let f = frames(&mut s, &pkts, 1000);
        assert_eq!(f.len(), 2);
        assert!(f
            .iter()
            .all(|f| data(f).len() == 1 && data(f)[0].3 && data(f)[0].4));
    }

    #[test]
    fn rejects_empty_and_tiny_buffers() {
        let mut s = StreamSender::new(0, 1);
        let pkts = [InnerPacket {
            bytes: &[],
            flow_hash: 0,
        }];
        assert!(frames(&mut s, &pkts, 1000).is_empty());
        assert_eq!(s.counters().rejected, 1);
        let mut cur = PackCursor::new();
        let one = [InnerPacket {
            bytes: &[1],
            flow_hash: 0,
        }];
        assert_eq!(
            s.pack(&one, &mut cur, &mut [0; HEADER_LEN + DATA_HEADER_LEN]),
            None
        );
        assert_eq!(s.counters().frames, 0);
    }

    #[test]
    fn buckets_spread_and_sequence() {
        assert_eq!(bucket_of(0, 16), 0);
        assert_eq!(bucket_of(u32::MAX, 16), 15);
        assert_eq!(bucket_of(0x8000_0000, 16), 8);
        let mut s = StreamSender::new(0, 2);
        assert_eq!(
            (s.next_flow_seq(1), s.next_flow_seq(1), s.next_flow_seq(0)),
            (0, 1, 0)
        );
    }
}
