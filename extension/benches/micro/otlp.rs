//! OpenTelemetry ingest: a captured ADOT `T1S` datagram of 10 spans through `parse_datagram`
//! (the UDP path), and a 100-span `ExportTraceServiceRequest` through the OTLP/HTTP receiver's
//! decoding and 64 KB document building. Throughput is in spans.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use xray_extension::ingest::otlp_http::{Encoding, decode_export};
use xray_extension::ingest::protocol::parse_datagram;
use xray_extension::otlp::Packing;

use crate::docs;

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("otlp");
    let path = docs::fixture("datagrams/adot_python_fast_start_t1s.bin");
    let datagram =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        parse_datagram(&datagram).is_ok(),
        "the fixture must be valid"
    );
    group.throughput(Throughput::Elements(10));
    group.bench_function("udp_10_spans", |b| {
        b.iter(|| parse_datagram(black_box(&datagram)));
    });

    // Repeated fields concatenate: ten copies of a 10-span request are one of 100 spans.
    let body = &datagram[datagram.iter().position(|&b| b == b'\n').unwrap_or(0) + 4..];
    let one = base64_simd::STANDARD
        .decode_to_vec(body)
        .unwrap_or_else(|e| panic!("fixture base64: {e}"));
    let request = one.repeat(10);
    let split = decode_export(Encoding::Protobuf, None, &request, &Packing::DOCUMENTS)
        .unwrap_or_else(|e| panic!("100-span request: {e}"));
    assert_eq!(split.rejected_spans, 0);
    group.throughput(Throughput::Elements(100));
    group.bench_function("http_protobuf_100_spans", |b| {
        b.iter(|| {
            decode_export(
                Encoding::Protobuf,
                None,
                black_box(&request),
                &Packing::DOCUMENTS,
            )
        });
    });
    group.finish();
}
