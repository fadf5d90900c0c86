//! The one byte budget for what the receivers hold: documents from their hand-off until their
//! send settles, and an OTLP/HTTP request's bytes (its body as read, as inflated, its decoded
//! form and the documents built from it) while it is decoded; and, in a slice of its own past
//! the documents' limit, Telemetry API deliveries (the body as read and the records decoded
//! from it, until the lifecycle loop has them). A receiver takes permits for the bytes before
//! it reads or allocates them; the permits travel with a document and are given back when it is
//! dropped, and a [`Reservation`] gives back what it holds when it is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::document::Document;

/// The bytes of received documents allowed from the receivers up to the end of their send, on
/// top of the channel's slot count (with 64 KB documents the slots alone would not bound
/// memory): sized like the export buffer, so a document is refused here exactly when the buffer
/// is full (the OTLP/HTTP receiver then answers 503), and never dropped once accepted. Telemetry
/// deliveries have [`TELEMETRY_SLICE`] more of their own.
#[derive(Debug, Clone)]
pub struct HandOffBudget {
    documents: Pool,
    telemetry: Pool,
}

/// Room past the documents' limit for Telemetry API deliveries, so that a buffer full of the
/// function's spans never keeps out the `platform.runtimeDone` that releases an invocation:
/// three of the deliveries our subscription asks for (256 KiB) at their largest decoding cost,
/// or one of Lambda's largest (1 MiB).
pub const TELEMETRY_SLICE: usize = 4 * 1024 * 1024;

/// How long a receiver waits for room (a send in flight, or the lifecycle loop taking a
/// delivery, frees it) before it answers 503: far less than the second a client waits before
/// it sends again.
pub const ROOM_WAIT: Duration = Duration::from_millis(250);
/// How often a waiting receiver looks for room. It looks rather than queues: a queue of
/// waiting requests would take every freed byte before the UDP reader, which never waits.
pub const ROOM_POLL: Duration = Duration::from_millis(5);

/// Permits for a number of bytes.
#[derive(Debug, Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl Pool {
    fn new(bytes: usize) -> Self {
        let capacity = bytes.min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }
}

impl HandOffBudget {
    /// A budget of `bytes` for documents (at most [`Semaphore::MAX_PERMITS`]), and the
    /// [`TELEMETRY_SLICE`] for telemetry deliveries.
    pub fn new(bytes: usize) -> Self {
        Self {
            documents: Pool::new(bytes),
            telemetry: Pool::new(TELEMETRY_SLICE),
        }
    }

    /// The same budget with a telemetry slice of `bytes` instead.
    #[must_use]
    pub fn with_telemetry_slice(mut self, bytes: usize) -> Self {
        self.telemetry = Pool::new(bytes);
        self
    }

    /// Takes the permits for `doc`'s bytes, or gives the document back when they are not free.
    pub fn admit(&self, doc: Document) -> Result<Admitted, Document> {
        let Ok(weight) = u32::try_from(doc.weight()) else {
            return Err(doc);
        };
        match self
            .documents
            .permits
            .clone()
            .try_acquire_many_owned(weight)
        {
            Ok(permit) => Ok(Admitted { doc, permit }),
            Err(_) => Err(doc),
        }
    }

    /// Takes the permits of all of `docs` at once, or of none: gives the documents back when the
    /// room is not free now, or never could be (more than the whole budget).
    pub fn admit_all(&self, docs: Vec<Document>) -> Result<Vec<Admitted>, Vec<Document>> {
        let total: usize = docs.iter().map(Document::weight).sum();
        let Ok(wanted) = u32::try_from(total) else {
            return Err(docs);
        };
        if total > self.documents.capacity {
            return Err(docs);
        }
        let Ok(mut permit) = self
            .documents
            .permits
            .clone()
            .try_acquire_many_owned(wanted)
        else {
            return Err(docs);
        };
        let mut admitted: Vec<Admitted> = Vec::with_capacity(docs.len());
        let mut rest = docs.into_iter();
        while let Some(doc) = rest.next() {
            let Some(share) = permit.split(doc.weight()) else {
                // Cannot happen (the total covers every document); give everything back.
                let mut back: Vec<Document> = admitted.into_iter().map(|a| a.doc).collect();
                back.push(doc);
                back.extend(rest);
                return Err(back);
            };
            admitted.push(Admitted { doc, permit: share });
        }
        Ok(admitted)
    }

    /// Whether documents of `bytes` in all could ever be admitted (at most the whole budget).
    pub fn could_admit(&self, bytes: usize) -> bool {
        bytes <= self.documents.capacity
    }

    /// Bytes free now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.documents.permits.available_permits()
    }

    /// The whole budget, in bytes.
    pub fn capacity(&self) -> usize {
        self.documents.capacity
    }

    /// An empty reservation on this budget, to grow as the work it covers needs bytes.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            pool: self.documents.clone(),
            permit: None,
        }
    }

    /// An empty reservation on the telemetry slice, for one Telemetry API delivery.
    pub fn telemetry_reservation(&self) -> Reservation {
        Reservation {
            pool: self.telemetry.clone(),
            permit: None,
        }
    }
}

/// Why a reservation could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// It would hold more than the whole budget: it never could.
    #[error("more than the whole budget")]
    TooLarge,
    /// The bytes are held by others now.
    #[error("no room free now")]
    NoRoom,
}

/// Bytes held from the budget for one piece of work (an OTLP/HTTP request being read and
/// decoded, a telemetry delivery), grown before each allocation it covers and given back when
/// dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Pool,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Takes `bytes` more from the budget now, or says why not (nothing is taken then).
    pub fn try_grow(&mut self, bytes: usize) -> Result<(), BudgetError> {
        if bytes == 0 {
            return Ok(());
        }
        if self.bytes().saturating_add(bytes) > self.pool.capacity {
            return Err(BudgetError::TooLarge);
        }
        let wanted = u32::try_from(bytes).map_err(|_| BudgetError::TooLarge)?;
        let more = self
            .pool
            .permits
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| BudgetError::NoRoom)?;
        match &mut self.permit {
            Some(held) => held.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }

    /// Takes `bytes` more, looking for room every [`ROOM_POLL`] until `deadline` (`on_wait` is
    /// called once, when it first finds none): [`BudgetError::NoRoom`] when none came in time.
    pub async fn grow_until(
        &mut self,
        bytes: usize,
        deadline: Instant,
        on_wait: impl FnOnce(),
    ) -> Result<(), BudgetError> {
        let mut on_wait = Some(on_wait);
        loop {
            match self.try_grow(bytes) {
                Err(BudgetError::NoRoom) if Instant::now() + ROOM_POLL <= deadline => {
                    if let Some(first) = on_wait.take() {
                        first();
                    }
                    tokio::time::sleep(ROOM_POLL).await;
                }
                done => return done,
            }
        }
    }

    /// Gives back `bytes` of what it holds (all of it, when it holds less).
    pub fn release(&mut self, bytes: usize) {
        if bytes >= self.bytes() {
            self.permit = None;
        } else if let Some(held) = &mut self.permit {
            drop(held.split(bytes));
        }
    }

    /// The whole budget (or slice) it draws from, in bytes.
    pub fn capacity(&self) -> usize {
        self.pool.capacity
    }

    /// `doc` with permits for its bytes, moved out of this reservation (grown first by what it
    /// lacks): the document keeps them until its send settles, after this work is done.
    pub fn admit(&mut self, doc: Document) -> Result<Admitted, (Document, BudgetError)> {
        let weight = doc.weight();
        if let Err(e) = self.try_grow(weight.saturating_sub(self.bytes())) {
            return Err((doc, e));
        }
        let permit = if self.bytes() == weight {
            self.permit.take()
        } else {
            self.permit.as_mut().and_then(|held| held.split(weight))
        };
        match permit {
            Some(permit) => Ok(Admitted { doc, permit }),
            // Cannot happen: it holds at least `weight` now.
            None => Err((doc, BudgetError::NoRoom)),
        }
    }
}

/// A document with the hand-off permits for its bytes, released when it is dropped.
#[derive(Debug)]
pub struct Admitted {
    doc: Document,
    permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// The document.
    pub fn doc(&self) -> &Document {
        &self.doc
    }

    /// The document, and the permits for its bytes (given back when dropped).
    pub fn into_parts(self) -> (Document, OwnedSemaphorePermit) {
        (self.doc, self.permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_grows_within_the_budget_and_gives_back_what_it_holds() {
        let budget = HandOffBudget::new(1_000);
        let mut work = budget.reservation();
        assert_eq!(work.bytes(), 0);
        work.try_grow(600).unwrap();
        assert_eq!((work.bytes(), budget.available()), (600, 400));
        // Another piece of work finds only what is left.
        let mut other = budget.reservation();
        assert_eq!(other.try_grow(500), Err(BudgetError::NoRoom));
        assert_eq!(budget.available(), 400);
        // More than the whole budget never could fit, whatever is free.
        assert_eq!(work.try_grow(401), Err(BudgetError::TooLarge));
        assert_eq!(other.try_grow(1_001), Err(BudgetError::TooLarge));
        work.release(200);
        assert_eq!((work.bytes(), budget.available()), (400, 600));
        other.try_grow(400).unwrap();
        // A document built under a reservation takes its permits from it; they outlive the work.
        let d = doc(1, 50);
        let weight = d.weight();
        let admitted = work.admit(d).unwrap();
        assert_eq!(work.bytes(), 400 - weight);
        assert_eq!(budget.available(), 200);
        drop(work);
        drop(other);
        assert_eq!(budget.available(), 1_000 - weight);
        drop(admitted);
        assert_eq!(budget.available(), 1_000);
        // An empty reservation grows by what a document needs.
        let mut again = budget.reservation();
        let admitted = again.admit(doc(2, 50)).unwrap();
        assert_eq!((again.bytes(), budget.available()), (0, 1_000 - weight));
        drop(admitted);
        again.try_grow(10).unwrap();
        again.release(50);
        assert_eq!((again.bytes(), budget.available()), (0, 1_000));
    }

    fn doc(n: u64, pad: usize) -> Document {
        Document {
            body: "x".repeat(pad).into(),
            id: crate::trace::SegmentId::from_u64(n),
            trace_id: crate::trace::TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
            kind: crate::document::DocumentKind::Segment,
        }
    }

    #[test]
    fn a_request_is_admitted_whole_or_not_at_all() {
        let w = doc(0, 100).weight();
        let budget = HandOffBudget::new(w * 4);
        let held = budget
            .admit_all(vec![doc(1, 100), doc(2, 100), doc(3, 100)])
            .unwrap();
        assert_eq!(budget.available(), w);
        // Two do not fit: neither is taken, nothing is held for them.
        let refused = budget
            .admit_all(vec![doc(4, 100), doc(5, 100)])
            .unwrap_err();
        assert_eq!(refused.len(), 2);
        assert_eq!(budget.available(), w);
        // Once a send settles (the permits drop), they do; each holds its own share.
        drop(held);
        let mut admitted = budget.admit_all(refused).unwrap();
        assert_eq!(budget.available(), w * 2);
        admitted.pop();
        assert_eq!(budget.available(), w * 3);
        // More than the whole budget never could be.
        let five: Vec<Document> = (10..15).map(|n| doc(n, 100)).collect();
        assert!(!budget.could_admit(w * 5));
        assert!(budget.admit_all(five).is_err());
    }
}
