//! Daemon-protocol parse + validate.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use xray_extension::ingest::protocol::parse_datagram;

use crate::docs;

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    let one_kb = docs::datagram(&docs::subsegment(7, 1024));
    assert!(
        parse_datagram(&one_kb).is_ok(),
        "the 1 KB document must be valid"
    );
    group.bench_function("parse_1kb", |b| {
        b.iter(|| parse_datagram(black_box(&one_kb)));
    });
    for name in docs::DATAGRAM_FIXTURES {
        let path = docs::fixture(&format!("datagrams/{name}.bin"));
        let datagram =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(parse_datagram(&datagram).is_ok(), "{name} must be valid");
        group.bench_function(format!("parse_{name}"), |b| {
            b.iter(|| parse_datagram(black_box(&datagram)));
        });
    }
    group.finish();
}
