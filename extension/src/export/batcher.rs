//! Splits documents into calls of at most the backend's batch size (PutTraceSegments: 50).
//!
//! When the same `id` appears more than once (a document re-sent with newer content), only the
//! latest is kept: X-Ray keeps the last write, and one call should not race two versions.
//! Pure: no I/O.

use std::borrow::Borrow;
use std::collections::HashSet;

use crate::document::Document;
use crate::trace::SegmentId;

/// Splits `docs` (oldest first; documents or what holds them) into batches of at most `max` (at
/// least 1), keeping order, after dropping older duplicates of the same id.
pub fn batches<T: Borrow<Document>>(docs: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let max = max.max(1);
    let mut seen: HashSet<SegmentId> = HashSet::with_capacity(docs.len());
    let mut latest_first: Vec<T> = docs
        .into_iter()
        .rev()
        .filter(|d| seen.insert(d.borrow().id))
        .collect();
    latest_first.reverse();
    let mut out = Vec::with_capacity(latest_first.len().div_ceil(max));
    let mut iter = latest_first.into_iter().peekable();
    while iter.peek().is_some() {
        out.push(iter.by_ref().take(max).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::xray::MAX_DOCUMENTS_PER_CALL;
    use crate::trace::TraceId;

    fn doc(n: u64, body: &str) -> Document {
        Document {
            body: body.into(),
            id: SegmentId::from_u64(n),
            trace_id: TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
            kind: crate::document::DocumentKind::Segment,
        }
    }

    #[test]
    fn never_more_than_fifty_a_call_and_order_is_kept() {
        for total in [0_u64, 1, 49, 50, 51, 100, 101, 1234] {
            let docs: Vec<Document> = (0..total).map(|n| doc(n, "{}")).collect();
            let out = batches(docs, MAX_DOCUMENTS_PER_CALL);
            assert!(
                out.iter()
                    .all(|b| !b.is_empty() && b.len() <= MAX_DOCUMENTS_PER_CALL)
            );
            let flat: Vec<SegmentId> = out.iter().flatten().map(|d| d.id).collect();
            let expect: Vec<SegmentId> = (0..total).map(SegmentId::from_u64).collect();
            assert_eq!(flat, expect, "total {total}");
            assert_eq!(out.len(), usize::try_from(total).unwrap().div_ceil(50));
        }
    }

    #[test]
    fn a_resent_id_keeps_only_the_latest_version() {
        let docs = vec![doc(1, "old"), doc(2, "b"), doc(1, "new"), doc(3, "c")];
        let out = batches(docs, MAX_DOCUMENTS_PER_CALL);
        let flat: Vec<(&str, &str)> = out
            .iter()
            .flatten()
            .map(|d| (d.id.as_str(), d.body.text().unwrap()))
            .collect();
        assert_eq!(
            flat,
            [
                (SegmentId::from_u64(2).as_str(), "b"),
                (SegmentId::from_u64(1).as_str(), "new"),
                (SegmentId::from_u64(3).as_str(), "c"),
            ]
        );
    }
}
