use std::io::Write as _;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::otlp::wire::{put_fixed64, put_len};

const TRACE: [u8; 16] = [
    0x57, 0x59, 0xe9, 0x88, 0xbd, 0x86, 0x2e, 0x3f, 0xe1, 0xbe, 0x46, 0xa9, 0x94, 0x27, 0x27, 0x93,
];

/// A request with one span per name length in `names`.
fn request(name_lens: &[usize]) -> Vec<u8> {
    let mut ss = Vec::new();
    for (i, len) in name_lens.iter().enumerate() {
        let mut span = Vec::new();
        put_len(&mut span, 1, &TRACE);
        put_len(&mut span, 2, &(i as u64 + 1).to_be_bytes());
        put_len(&mut span, 5, "n".repeat(*len).as_bytes());
        put_fixed64(&mut span, 7, 1);
        put_len(&mut ss, 2, &span);
    }
    let mut rs = Vec::new();
    put_len(&mut rs, 2, &ss);
    let mut out = Vec::new();
    put_len(&mut out, 1, &rs);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const JSON: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
    {"traceId":"5759e988bd862e3fe1be46a994272793","spanId":"1bbaa244e76f8d42","name":"a"}]}]}]}"#;

#[test]
fn content_types() {
    for (value, want) in [
        ("application/x-protobuf", Some(Encoding::Protobuf)),
        ("Application/JSON; charset=utf-8", Some(Encoding::Json)),
        ("application/json", Some(Encoding::Json)),
        ("text/plain", None),
        ("", None),
    ] {
        assert_eq!(Encoding::of_content_type(value), want, "{value}");
    }
}

#[test]
fn requests_decode_in_each_encoding_and_compression() {
    let proto = request(&[10, 10]);
    for (encoding, content_encoding, body) in [
        (Encoding::Protobuf, None, proto.clone()),
        (Encoding::Protobuf, Some("identity"), proto.clone()),
        (Encoding::Protobuf, Some("gzip"), gzip(&proto)),
        (Encoding::Json, None, JSON.as_bytes().to_vec()),
        (Encoding::Json, Some("GZIP"), gzip(JSON.as_bytes())),
    ] {
        let split = decode_export(encoding, content_encoding, &body, &Packing::DOCUMENTS)
            .unwrap_or_else(|e| panic!("{encoding:?} {content_encoding:?}: {e}"));
        assert!(!split.documents.is_empty());
        assert!(
            split
                .documents
                .iter()
                .all(|d| d.body.as_bytes().starts_with(b"T1S"))
        );
    }
}

#[test]
fn bad_requests_are_refused_with_their_status() {
    let proto = request(&[10]);
    let bomb = gzip(&vec![0; MAX_DECODED_BYTES + 1]);
    for (encoding, content_encoding, body, want) in [
        (
            Encoding::Protobuf,
            Some("br"),
            proto.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Encoding::Protobuf,
            Some("gzip"),
            proto.clone(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Encoding::Protobuf,
            Some("gzip"),
            bomb,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Encoding::Protobuf,
            None,
            b"\x0a\xff".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (Encoding::Json, None, proto.clone(), StatusCode::BAD_REQUEST),
        (
            Encoding::Json,
            None,
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let e = decode_export(encoding, content_encoding, &body, &Packing::DOCUMENTS).unwrap_err();
        assert_eq!(e.status(), want, "{encoding:?} {content_encoding:?}: {e}");
    }
}

#[test]
fn a_span_too_large_for_a_document_is_reported_as_partial_success() {
    let split = decode_export(
        Encoding::Protobuf,
        None,
        &request(&[10, 70_000, 10]),
        &Packing::DOCUMENTS,
    )
    .unwrap();
    assert_eq!(split.rejected_spans, 1);
    assert_eq!(split.documents.len(), 1);
    // ExportTraceServiceResponse { partial_success { rejected_spans: 1, error_message } }.
    let body = success_body(Encoding::Protobuf, 1, "too large");
    let outer: Vec<_> = wire::Fields::new(&body).collect::<Result<_, _>>().unwrap();
    assert_eq!(outer.len(), 1);
    assert_eq!(outer[0].number, 1);
    let inner: Vec<_> = wire::Fields::new(outer[0].value)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!((inner[0].number, inner[0].varint), (1, 1));
    let json: serde_json::Value =
        serde_json::from_slice(&success_body(Encoding::Json, 2, "too large")).unwrap();
    assert_eq!(json["partialSuccess"]["rejectedSpans"], "2");
    assert!(success_body(Encoding::Protobuf, 0, "too large").is_empty());
    assert_eq!(success_body(Encoding::Json, 0, "too large"), b"{}");
}

/// One raw HTTP/1.1 request; returns the status line and headers, and the body.
async fn post(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&out[..split]).into_owned(),
        out[split + 4..].to_vec(),
    )
}

/// A receiver on a free loopback port handing documents to a queue of `capacity`, under a 1 MiB
/// budget: its address, the queue and its counters.
async fn receiver(
    capacity: usize,
) -> (std::net::SocketAddr, mpsc::Receiver<Ingested>, Arc<Metrics>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(capacity);
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(run(
        listener,
        tx,
        &Packing::DOCUMENTS,
        HandOffBudget::new(1024 * 1024),
        metrics.clone(),
    ));
    (addr, rx, metrics)
}

#[tokio::test]
async fn the_receiver_answers_as_the_otlp_specification_says() {
    // Room for exactly two documents.
    let (addr, mut rx, metrics) = receiver(2).await;
    let proto = "Content-Type: application/x-protobuf\r\n";
    let json = "Content-Type: application/json\r\n";

    let (head, body) = post(addr, "POST", TRACES_PATH, proto, &request(&[5])).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf")
    );
    assert!(body.is_empty());
    let Some(Ingested::Document(admitted)) = rx.recv().await else {
        panic!("no document");
    };
    assert_eq!(admitted.into_parts().0.id.as_str(), "0000000000000001");

    let gz = format!("{json}Content-Encoding: gzip\r\n");
    let (head, body) = post(addr, "POST", TRACES_PATH, &gz, &gzip(JSON.as_bytes())).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"{}");

    // The queue now holds one document: a request of two (too large for one) is refused whole.
    let (head, _) = post(
        addr,
        "POST",
        TRACES_PATH,
        proto,
        &request(&[40_000, 40_000]),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(metrics::get(&metrics.otlp_busy), 1);

    let (head, body) = post(addr, "POST", TRACES_PATH, json, b"[not otlp").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["code"], 3);
    assert_eq!(metrics::get(&metrics.rejected), 1);

    let (head, _) = post(
        addr,
        "POST",
        TRACES_PATH,
        "Content-Type: text/plain\r\n",
        b"x",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 415"), "{head}");
    let (head, _) = post(addr, "GET", TRACES_PATH, "", b"").await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let (head, _) = post(addr, "POST", "/v1/metrics", proto, b"").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Only the two accepted requests reached the queue.
    assert!(matches!(rx.recv().await, Some(Ingested::Document(_))));
    assert!(rx.try_recv().is_err());
    assert_eq!(metrics::get(&metrics.received), 2);
}

#[tokio::test]
async fn idle_local_connections_at_the_limit_never_keep_an_export_out() {
    let (addr, mut rx, _metrics) = receiver(4).await;
    // Every slot taken by a connection that never sends a request (well inside the head
    // deadline, so only the limit's own handling can let the export in).
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let proto = "Content-Type: application/x-protobuf\r\n";
    let answered = tokio::time::timeout(
        HEADER_TIMEOUT / 2,
        post(addr, "POST", TRACES_PATH, proto, &request(&[5])),
    )
    .await
    .expect("an export is answered while idle connections hold every slot");
    assert!(answered.0.starts_with("HTTP/1.1 200"), "{}", answered.0);
    assert!(matches!(rx.recv().await, Some(Ingested::Document(_))));
    drop(idle);
}

/// A decode job for `body` under `budget`, its body's bytes reserved, with `wait` for room and
/// `time` in all.
fn job(
    budget: &HandOffBudget,
    encoding: Encoding,
    gzip: bool,
    body: Vec<u8>,
    wait: Duration,
    time: Duration,
) -> decode::Job {
    let mut reservation = budget.reservation();
    reservation.try_grow(body.capacity()).unwrap();
    decode::Job {
        encoding,
        gzip,
        body,
        packing: &Packing::DOCUMENTS,
        reservation,
        room_deadline: Instant::now() + wait,
        deadline: Instant::now() + time,
        wake: mpsc::channel(1).0,
    }
}

#[test]
fn a_decode_holds_only_its_documents_once_done() {
    let budget = HandOffBudget::new(1024 * 1024);
    let second = Duration::from_secs(1);
    for (encoding, gzip, body) in [
        (Encoding::Protobuf, false, request(&[10, 2_000])),
        (Encoding::Protobuf, true, gzip(&request(&[10, 2_000]))),
        (Encoding::Json, true, gzip(JSON.as_bytes())),
        (Encoding::Json, false, JSON.as_bytes().to_vec()),
    ] {
        let decoded = decode::decode(job(&budget, encoding, gzip, body, second, second)).unwrap();
        let held: usize = decoded.documents.iter().map(|a| a.doc().weight()).sum();
        assert!(held > 0);
        assert_eq!(
            budget.available(),
            budget.capacity() - held,
            "{encoding:?} {gzip}"
        );
        drop(decoded);
        assert_eq!(budget.available(), budget.capacity());
    }
}

#[test]
fn a_decode_stops_at_the_budget_at_its_deadline_and_at_an_announced_size() {
    let second = Duration::from_secs(1);
    let budget = HandOffBudget::new(256 * 1024);
    // Why a decode of `body` with `wait` for room and `time` in all fails.
    let refused = |encoding, gzip, body, wait, time| {
        decode::decode(job(&budget, encoding, gzip, body, wait, time)).unwrap_err()
    };
    // A body that inflates past the whole budget: 413, and nothing held afterwards.
    let big = request(&[40_000; 4]);
    for (encoding, gzip, body) in [
        (Encoding::Protobuf, true, gzip(&big)),
        (Encoding::Protobuf, false, big.clone()),
    ] {
        let e = refused(encoding, gzip, body, second, second);
        assert_eq!(e, ReceiverError::TooLarge, "{gzip}");
        assert_eq!(budget.available(), budget.capacity());
    }
    // JSON whose output outgrows the budget.
    let mut values = String::from(
        r#"{"resourceSpans":[{"resource":{"attributes":[{"value":{"arrayValue":{"values":["#,
    );
    values.push_str(&"{},".repeat(200_000));
    values.push_str("{}]}}}]}}]}");
    let e = refused(
        Encoding::Json,
        true,
        gzip(values.as_bytes()),
        second,
        second,
    );
    assert_eq!(e, ReceiverError::TooLarge);
    assert_eq!(budget.available(), budget.capacity());
    // A gzip trailer announcing more than the limit is refused before inflating.
    let mut liar = gzip(&request(&[10]));
    let n = liar.len();
    liar[n - 4..].copy_from_slice(&u32::try_from(MAX_DECODED_BYTES + 1).unwrap().to_le_bytes());
    let e = refused(Encoding::Protobuf, true, liar, second, second);
    assert_eq!(e, ReceiverError::TooLarge);
    // Room taken by others: it waits until its room deadline, then 503.
    let mut others = budget.reservation();
    others.try_grow(budget.capacity() - 40_000).unwrap();
    let started = Instant::now();
    let wait = Duration::from_millis(50);
    let e = refused(Encoding::Protobuf, false, request(&[30_000]), wait, second);
    assert_eq!(e, ReceiverError::Busy);
    assert!(started.elapsed() >= Duration::from_millis(45));
    drop(others);
    // Out of time: 503 too.
    let e = refused(
        Encoding::Json,
        true,
        gzip(values.as_bytes()),
        second,
        Duration::ZERO,
    );
    assert_eq!(e, ReceiverError::Timeout);
    assert_eq!(budget.available(), budget.capacity());
}

#[test]
fn with_whole_spans_a_decode_keeps_a_150_kb_span_refuses_a_250_kb_one_and_holds_only_its_documents()
{
    use crate::export::otlp::request::PACKING;
    let budget = HandOffBudget::new(4 * 1024 * 1024);
    let second = Duration::from_secs(1);
    let body = request(&[10, 150_000, 250_000, 10]);
    let mut job = job(
        &budget,
        Encoding::Protobuf,
        true,
        gzip(&body),
        second,
        second,
    );
    job.packing = &PACKING;
    let decoded = decode::decode(job).unwrap();
    assert_eq!(decoded.rejected_spans, 1);
    let held: usize = decoded.documents.iter().map(|a| a.doc().weight()).sum();
    assert_eq!(budget.available(), budget.capacity() - held);
    let [doc] = &decoded.documents[..] else {
        panic!("{} documents", decoded.documents.len());
    };
    let crate::document::Body::Spans(bytes) = &doc.doc().body else {
        panic!("a text document");
    };
    let request = crate::otlp::parse_request(bytes).unwrap();
    let lens: Vec<usize> = request.spans().map(|s| s.bytes.len()).collect();
    assert_eq!(lens.len(), 3);
    assert!(lens[1] > 150_000, "{lens:?}");
    // The endpoint's message, in the answer.
    let answer = success_body(Encoding::Json, 1, PACKING.refusal);
    assert!(String::from_utf8_lossy(&answer).contains("200,000"));
}
