//! The export buffer: documents waiting for their send, bounded in bytes. One queue of
//! [`Entry`]s: the document, since when it waits, and the budget's permits for its bytes.
//!
//! Entries handed to a send stay accounted for until the send settles, so a slow call cannot
//! let the buffer grow past its limit. What a send kept comes back to the front, oldest first,
//! with its permits. Pure: no I/O.
//!
//! A document from a receiver comes with a [`Permit`]: the hand-off budget's permits for its
//! bytes, taken before the sender was told it was accepted. It travels with the document until
//! the document is sent, refused or dropped (a send that keeps the document gives it back with
//! it), so the budget refuses new documents, and the OTLP/HTTP receiver answers 503, exactly
//! while the buffer is full, and a document accepted once is never dropped here for space.
//! Documents without one (our own) are bounded by the limit.

use std::borrow::Borrow;
use std::collections::VecDeque;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::document::Document;

/// Hand-off budget permits for a document's bytes, released when dropped.
pub type Permit = OwnedSemaphorePermit;

/// One queued document.
#[derive(Debug)]
pub struct Entry {
    document: Document,
    since: Instant,
    /// Held, never read: the bytes go back to the budget when the entry is dropped.
    _permit: Option<Permit>,
}

impl Entry {
    /// The document.
    pub fn document(&self) -> &Document {
        &self.document
    }

    /// Bytes it accounts for in the buffer.
    pub fn weight(&self) -> usize {
        self.document.weight()
    }
}

impl Borrow<Document> for Entry {
    fn borrow(&self) -> &Document {
        &self.document
    }
}

/// Room (in entries) the queue keeps once a send has taken a burst: what ordinary traffic
/// needs (a few batches), so it never reallocates, while the room a burst grew is given back.
pub const RETAINED_ENTRIES: usize = 256;

/// A bounded FIFO of documents.
#[derive(Debug)]
pub struct Buffer {
    queue: VecDeque<Entry>,
    queued_bytes: usize,
    in_flight_bytes: usize,
    limit_bytes: usize,
}

/// A document was refused because the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("export buffer full ({limit_bytes} bytes)")]
pub struct BufferFull {
    /// The configured limit.
    pub limit_bytes: usize,
}

impl Buffer {
    /// An empty buffer holding at most `limit_bytes` (queued plus in flight).
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight_bytes: 0,
            limit_bytes,
        }
    }

    /// Appends a document buffered at `now`, or refuses it when the limit would be exceeded.
    pub fn push(&mut self, document: Document, now: Instant) -> Result<(), BufferFull> {
        if self.bytes() + document.weight() > self.limit_bytes {
            return Err(BufferFull {
                limit_bytes: self.limit_bytes,
            });
        }
        self.append(document, now, None);
        Ok(())
    }

    /// Appends a document whose bytes `permit` already holds: always taken (the budget behind
    /// the permits is as large as the limit, so together they stay bounded).
    pub fn push_reserved(&mut self, document: Document, permit: Permit, now: Instant) {
        self.append(document, now, Some(permit));
    }

    fn append(&mut self, document: Document, since: Instant, permit: Option<Permit>) {
        self.queued_bytes += document.weight();
        self.queue.push_back(Entry {
            document,
            since,
            _permit: permit,
        });
    }

    /// Takes up to `max` queued entries, oldest first, for a send. Their bytes stay counted
    /// against the limit until [`Buffer::settle`].
    pub fn take(&mut self, max: usize) -> Vec<Entry> {
        let n = max.min(self.queue.len());
        let taken: Vec<Entry> = self.queue.drain(..n).collect();
        let bytes = weight_of(&taken);
        self.queued_bytes -= bytes;
        self.in_flight_bytes += bytes;
        // The room a burst grew is memory no budget counts once its documents are gone: give
        // it back when what is left is small (a cheap move), keep what ordinary traffic needs.
        if self.queue.capacity() > RETAINED_ENTRIES && self.queue.len() <= RETAINED_ENTRIES / 2 {
            self.queue.shrink_to(RETAINED_ENTRIES);
        }
        taken
    }

    /// Ends a send that took `taken_bytes`: the `kept` entries return to the front in order,
    /// with their permits, counted as waiting since `since` (when the send took them).
    pub fn settle(&mut self, taken_bytes: usize, kept: Vec<Entry>, since: Instant) {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(taken_bytes);
        for mut entry in kept.into_iter().rev() {
            self.queued_bytes += entry.weight();
            entry.since = since;
            self.queue.push_front(entry);
        }
    }

    /// When the oldest queued document was buffered.
    pub fn oldest(&self) -> Option<Instant> {
        self.queue.front().map(|e| e.since)
    }

    /// Queued documents (not counting those in flight).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Entries the queue has room for without reallocating.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Bytes queued plus in flight.
    pub fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// Removes everything queued (at the shutdown deadline) and returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        self.queued_bytes = 0;
        n
    }
}

/// Total weight of a set of entries, as [`Buffer::settle`] expects it.
pub fn weight_of(entries: &[Entry]) -> usize {
    entries.iter().map(Entry::weight).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::budget::HandOffBudget;
    use crate::trace::{SegmentId, TraceId};
    use std::time::Duration;

    fn doc(n: u64, pad: usize) -> Document {
        Document {
            body: "x".repeat(pad).into(),
            id: SegmentId::from_u64(n),
            trace_id: TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
            kind: crate::document::DocumentKind::Segment,
        }
    }

    #[test]
    fn refuses_past_the_limit_counting_in_flight() {
        let t = Instant::now();
        let w = doc(0, 100).weight();
        let mut b = Buffer::new(w * 3);
        for n in 0..3 {
            b.push(doc(n, 100), t).unwrap();
        }
        assert_eq!(
            b.push(doc(3, 100), t),
            Err(BufferFull { limit_bytes: w * 3 })
        );
        let taken = b.take(2);
        assert_eq!(b.len(), 1);
        // In-flight documents still count: nothing new fits.
        assert!(b.push(doc(4, 100), t).is_err());
        b.settle(weight_of(&taken), Vec::new(), t);
        assert!(b.push(doc(5, 100), t).is_ok());
        assert!(b.push(doc(6, 100), t).is_ok());
        assert!(b.push(doc(7, 100), t).is_err());
    }

    #[test]
    fn kept_entries_return_to_the_front_in_order() {
        let t = Instant::now();
        let mut b = Buffer::new(1 << 20);
        for n in 0..5 {
            b.push(doc(n, 10), t).unwrap();
        }
        let mut taken = b.take(3);
        let bytes = weight_of(&taken);
        b.push(doc(9, 10), t + Duration::from_secs(1)).unwrap();
        let kept = taken.split_off(1);
        b.settle(bytes, kept, t + Duration::from_secs(2));
        // Waiting again since the send took them.
        assert_eq!(b.oldest(), Some(t + Duration::from_secs(2)));
        let ids: Vec<String> = b
            .take(10)
            .iter()
            .map(|e| e.document().id.to_string())
            .collect();
        let expect: Vec<String> = [1, 2, 3, 4, 9]
            .iter()
            .map(|n| SegmentId::from_u64(*n).to_string())
            .collect();
        assert_eq!(ids, expect);
    }

    #[test]
    fn permits_travel_with_their_documents() {
        let t = Instant::now();
        let w = doc(0, 10).weight();
        let budget = HandOffBudget::new(w * 2);
        let mut b = Buffer::new(1 << 20);
        for n in 0..2 {
            let (d, permit) = budget.admit(doc(n, 10)).unwrap().into_parts();
            b.push_reserved(d, permit, t);
        }
        let mut taken = b.take(2);
        assert_eq!(budget.available(), 0);
        // The first is sent (dropped with its permit), the second kept.
        let kept = taken.split_off(1);
        drop(taken);
        assert_eq!(budget.available(), w);
        b.settle(2 * w, kept, t);
        assert_eq!(budget.available(), w);
        assert_eq!(b.clear(), 1);
        assert_eq!(budget.available(), 2 * w);
    }

    #[test]
    fn a_burst_leaves_no_capacity_behind_once_sent() {
        let t = Instant::now();
        let mut b = Buffer::new(usize::MAX);
        for round in 0..3_u64 {
            for n in 0..20_000 {
                b.push(doc(round * 100_000 + n, 10), t).unwrap();
            }
            // A send takes everything, then settles keeping a few.
            let taken = b.take(usize::MAX);
            assert!(b.is_empty());
            let kept: Vec<Entry> = taken.into_iter().take(3).collect();
            b.settle(0, kept, t);
            assert_eq!(b.len(), 3);
            assert!(
                b.capacity() <= RETAINED_ENTRIES,
                "{} entries of room kept after the burst",
                b.capacity()
            );
        }
        // Steady traffic below the retained room never reallocates.
        let room = b.capacity();
        for n in 0..RETAINED_ENTRIES as u64 - 3 {
            b.push(doc(900_000 + n, 10), t).unwrap();
        }
        assert_eq!(b.capacity(), room);
    }

    #[test]
    fn clear_reports_what_was_dropped() {
        let t = Instant::now();
        let mut b = Buffer::new(1 << 20);
        b.push(doc(1, 10), t).unwrap();
        b.push(doc(2, 10), t).unwrap();
        assert_eq!(b.clear(), 2);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
        assert_eq!(b.oldest(), None);
    }
}
