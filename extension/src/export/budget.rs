//! The one byte budget for what the receivers hold: documents from their hand-off until their
//! send settles. A receiver takes permits for a document's bytes before handing it over; the
//! permit travels with the document and is given back when it is dropped.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ingest::protocol::Document;

/// The bytes of received documents allowed from the receivers up to the end of their send, on
/// top of the channel's slot count (with 64 KB documents the slots alone would not bound
/// memory): sized like the export buffer, so a document is refused here exactly when the buffer
/// is full (the OTLP/HTTP receiver then answers 503), and never dropped once accepted.
#[derive(Debug, Clone)]
pub struct HandOffBudget {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl HandOffBudget {
    /// A budget of `bytes` (at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(bytes: usize) -> Self {
        let capacity = bytes.min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Takes the permits for `doc`'s bytes, or gives the document back when they are not free.
    pub fn admit(&self, doc: Document) -> Result<Admitted, Document> {
        let Ok(weight) = u32::try_from(doc.weight()) else {
            return Err(doc);
        };
        match self.permits.clone().try_acquire_many_owned(weight) {
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
        if total > self.capacity {
            return Err(docs);
        }
        let Ok(mut permit) = self.permits.clone().try_acquire_many_owned(wanted) else {
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
        bytes <= self.capacity
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
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

    fn doc(n: u64, pad: usize) -> Document {
        Document {
            body: "x".repeat(pad).into(),
            id: crate::trace::SegmentId::from_u64(n),
            trace_id: crate::trace::TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
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
