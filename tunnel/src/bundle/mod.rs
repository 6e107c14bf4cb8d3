//! braid's bundle layer: the frame carried in ESP with next header BUNDLE
//! (format in `docs/wire-format.md`), the per-stream packer on the sending
//! side, and fragment reassembly on the receiving side. It works on plaintext
//! payload bytes; the caller encrypts, decrypts and hashes flows.

pub mod frame;
pub mod pack;
pub mod reassembly;

pub use frame::{
    DataRecord, Frame, FrameBuilder, FrameHeader, Probe, ProbeReply, Record, Records,
    NEXT_HEADER_BUNDLE,
};
pub use pack::{bucket_of, InnerPacket, PackCursor, SenderCounters, StreamSender};
pub use reassembly::{Reassembled, Reassembler, ReassemblyConfig, ReassemblyCounters};
