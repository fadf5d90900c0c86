//! Batch assembly for PutTraceSegments.

use criterion::{BatchSize, Criterion, Throughput};
use xray_extension::document::Document;
use xray_extension::export::batcher::batches;
use xray_extension::export::xray::MAX_DOCUMENTS_PER_CALL;
use xray_extension::ingest::protocol::parse_datagram;

use crate::docs;

/// Documents of `size` bytes with distinct ids, every `dup_every`-th re-sending an earlier id.
fn documents(count: u64, size: usize, dup_every: Option<u64>) -> Vec<Document> {
    (0..count)
        .map(|n| {
            let id = match dup_every {
                Some(k) if n > 0 && n % k == 0 => n - 1,
                _ => n,
            };
            parse_datagram(&docs::datagram(&docs::subsegment(id, size)))
                .unwrap_or_else(|e| panic!("generated document {n} is invalid: {e}"))
        })
        .collect()
}

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    for (name, count, dup) in [
        ("batches_5", 5, None),
        ("batches_1000", 1000, None),
        ("batches_1000_dup10", 1000, Some(10)),
    ] {
        let input = documents(count, 1024, dup);
        group.throughput(Throughput::Elements(count));
        group.bench_function(name, |b| {
            b.iter_batched(
                || input.clone(),
                |docs| batches(docs, MAX_DOCUMENTS_PER_CALL),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}
