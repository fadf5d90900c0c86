//! The export buffer: documents waiting for PutTraceSegments, bounded in bytes.
//!
//! Documents handed to a flush stay accounted for until the flush settles, so a slow X-Ray call
//! cannot let the buffer grow past its limit. What a flush could not send comes back to the
//! front, oldest first. Pure: no I/O.
//!
//! A document from a receiver comes with a [`Reservation`]: the hand-off budget's permits for
//! its bytes, taken before the sender was told it was accepted. The buffer keeps it (and a
//! flush keeps it until it settles), so the budget refuses new documents, and the OTLP/HTTP
//! receiver answers 503, exactly while the buffer is full, and a document accepted once is
//! never dropped here for space. Documents without one (our own) are bounded by the limit.

use std::collections::VecDeque;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// Hand-off budget permits for a document's bytes, released when dropped.
pub type Reservation = OwnedSemaphorePermit;

use crate::ingest::protocol::Document;

/// A bounded FIFO of documents.
#[derive(Debug)]
pub struct Buffer {
    queue: VecDeque<Document>,
    since: VecDeque<Instant>,
    reservations: VecDeque<Option<Reservation>>,
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
            since: VecDeque::new(),
            reservations: VecDeque::new(),
            queued_bytes: 0,
            in_flight_bytes: 0,
            limit_bytes,
        }
    }

    /// Appends a document buffered at `now`, or refuses it when the limit would be exceeded.
    pub fn push(&mut self, doc: Document, now: Instant) -> Result<(), BufferFull> {
        let weight = doc.weight();
        if self.queued_bytes + self.in_flight_bytes + weight > self.limit_bytes {
            return Err(BufferFull {
                limit_bytes: self.limit_bytes,
            });
        }
        self.append(doc, now, None);
        Ok(())
    }

    /// Appends a document whose bytes `reservation` already holds: always taken (the budget
    /// behind the reservations is as large as the limit, so together they stay bounded).
    pub fn push_reserved(&mut self, doc: Document, reservation: Reservation, now: Instant) {
        self.append(doc, now, Some(reservation));
    }

    fn append(&mut self, doc: Document, now: Instant, reservation: Option<Reservation>) {
        self.queued_bytes += doc.weight();
        self.queue.push_back(doc);
        self.since.push_back(now);
        self.reservations.push_back(reservation);
    }

    /// Takes up to `max` queued documents, oldest first, for a flush, with their reservations.
    /// They stay counted against the limit until [`Buffer::settle`]; the flush keeps the
    /// reservations until then.
    pub fn take(&mut self, max: usize) -> (Vec<Document>, Vec<Reservation>) {
        let n = max.min(self.queue.len());
        let docs: Vec<Document> = self.queue.drain(..n).collect();
        self.since.drain(..n);
        let reservations = self.reservations.drain(..n).flatten().collect();
        let bytes: usize = docs.iter().map(Document::weight).sum();
        self.queued_bytes -= bytes;
        self.in_flight_bytes += bytes;
        (docs, reservations)
    }

    /// Ends a flush that took `taken_bytes`: `unsent` documents return to the front in order,
    /// counted as buffered since `since` (when the flush took them).
    pub fn settle(&mut self, taken_bytes: usize, unsent: Vec<Document>, since: Instant) {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(taken_bytes);
        for doc in unsent.into_iter().rev() {
            self.queued_bytes += doc.weight();
            self.queue.push_front(doc);
            self.since.push_front(since);
            self.reservations.push_front(None);
        }
    }

    /// When the oldest queued document was buffered.
    pub fn oldest(&self) -> Option<Instant> {
        self.since.front().copied()
    }

    /// Queued documents (not counting those in flight).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes queued plus in flight.
    pub fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }

    /// Removes everything queued (at the shutdown deadline) and returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        self.since.clear();
        self.reservations.clear();
        self.queued_bytes = 0;
        n
    }
}

/// Total weight of a set of documents, as [`Buffer::settle`] expects it.
pub fn weight_of(docs: &[Document]) -> usize {
    docs.iter().map(Document::weight).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SegmentId, TraceId};
    use std::time::Duration;

    fn doc(n: u64, pad: usize) -> Document {
        Document {
            body: "x".repeat(pad).into(),
            id: SegmentId::from_u64(n),
            trace_id: TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
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
        let (taken, _) = b.take(2);
        assert_eq!(b.len(), 1);
        // In-flight documents still count: nothing new fits.
        assert!(b.push(doc(4, 100), t).is_err());
        b.settle(weight_of(&taken), Vec::new(), t);
        assert!(b.push(doc(5, 100), t).is_ok());
        assert!(b.push(doc(6, 100), t).is_ok());
        assert!(b.push(doc(7, 100), t).is_err());
    }

    #[test]
    fn unsent_documents_return_to_the_front_in_order() {
        let t = Instant::now();
        let mut b = Buffer::new(1 << 20);
        for n in 0..5 {
            b.push(doc(n, 10), t).unwrap();
        }
        let (taken, _) = b.take(3);
        let bytes = weight_of(&taken);
        b.push(doc(9, 10), t + Duration::from_secs(1)).unwrap();
        b.settle(bytes, taken[1..].to_vec(), t);
        assert_eq!(b.oldest(), Some(t));
        let ids: Vec<String> = b.take(10).0.iter().map(|d| d.id.to_string()).collect();
        let expect: Vec<String> = [1, 2, 3, 4, 9]
            .iter()
            .map(|n| SegmentId::from_u64(*n).to_string())
            .collect();
        assert_eq!(ids, expect);
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
