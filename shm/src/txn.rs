//! Reassembly of transactions on the consumer side.
//!
//! A writer sends `BEGIN(t)`, data messages tagged `t`, then `COMMIT(t)`.
//! [`TxnReader`] buffers a transaction's data and hands it out only when its
//! COMMIT arrives, so a writer that dies mid-transaction leaves nothing
//! half-applied: the next writer's `BEGIN` discards the orphan.

use crate::msg::{Msg, TxnId};
use crate::ring::Consumer;

/// A committed transaction: its data messages, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub id: TxnId,
    pub msgs: Vec<Msg>,
}

/// What the reader has seen, as counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxnStats {
    /// Transactions handed out.
    pub committed: u64,
    /// Open transactions dropped because a new `BEGIN` arrived first
    /// (typically: their writer died before committing).
    pub discarded_partial: u64,
    /// Transactions dropped because they outgrew the reader's buffer.
    pub discarded_oversize: u64,
    /// Data or COMMIT messages that belonged to no open transaction.
    pub stray: u64,
}

/// Reads whole transactions from a ring (normally the commands ring).
pub struct TxnReader {
    consumer: Consumer,
    max_msgs: usize,
    /// The transaction being buffered.
    open: Option<TxnId>,
    /// A transaction dropped as oversize whose remaining messages are skipped.
    skipping: Option<TxnId>,
    buf: Vec<Msg>,
    stats: TxnStats,
}

impl TxnReader {
    /// Buffers at most `max_msgs` data messages per transaction; a larger
    /// transaction is discarded whole and counted.
    pub fn new(consumer: Consumer, max_msgs: usize) -> TxnReader {
        TxnReader { consumer, max_msgs, open: None, skipping: None, buf: Vec::new(), stats: TxnStats::default() }
    }

    /// Drains the ring until a transaction commits (and returns it) or the
    /// ring is empty. Messages after that commit stay in the ring.
    pub fn poll(&mut self) -> Option<Txn> {
        while let Some(msg) = self.consumer.try_pop() {
            if let Some(txn) = self.accept(msg) {
                return Some(txn);
            }
        }
        None
    }

    fn accept(&mut self, msg: Msg) -> Option<Txn> {
        let id = msg.txn();
        match msg.kind() {
            Msg::KIND_BEGIN => {
                if self.open.take().is_some() {
                    self.stats.discarded_partial += 1;
                }
                self.skipping = None;
                self.buf.clear();
                self.open = Some(id);
            }
            Msg::KIND_COMMIT if self.open == Some(id) => {
                self.open = None;
                self.stats.committed += 1;
                return Some(Txn { id, msgs: std::mem::take(&mut self.buf) });
            }
            _ if self.skipping == Some(id) => {
                if msg.kind() == Msg::KIND_COMMIT {
                    self.skipping = None;
                }
            }
            Msg::KIND_COMMIT => self.stats.stray += 1,
            _ if self.open != Some(id) => self.stats.stray += 1,
            _ if self.buf.len() >= self.max_msgs => {
                self.open = None;
                self.skipping = Some(id);
                self.buf.clear();
                self.stats.discarded_oversize += 1;
            }
            _ => self.buf.push(msg),
        }
        None
    }

    pub fn stats(&self) -> TxnStats {
        self.stats
    }

    /// The transaction currently buffered and its message count, if any.
    pub fn pending(&self) -> Option<(TxnId, usize)> {
        self.open.map(|id| (id, self.buf.len()))
    }

    pub fn into_consumer(self) -> Consumer {
        self.consumer
    }
}
