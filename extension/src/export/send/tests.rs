use super::*;
use crate::export::memory::{MemoryBackend, Reply, doc};
use crate::trace::SegmentId;

fn docs(n: u64) -> Vec<Document> {
    (1..=n).map(doc).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The backoff's largest delay every time: the retry times are exact.
fn no_jitter() -> f64 {
    1.0
}

struct Outcome {
    report: FlushReport,
    progress: usize,
    backend: Arc<MemoryBackend>,
    metrics: Arc<Metrics>,
    start: Instant,
}

impl Outcome {
    /// When each call came, from the flush's start, in milliseconds.
    fn call_times(&self) -> Vec<u64> {
        self.backend
            .calls()
            .iter()
            .map(|c| u64::try_from((c.at - self.start).as_millis()).unwrap())
            .collect()
    }

    fn kept(&self) -> usize {
        self.report.kept.len()
    }
}

/// Flushes `docs` through a backend of `max_batch` answering `script`, under a deadline
/// `deadline` from now (time is paused: it advances only while everything waits).
async fn flush(
    docs: Vec<Document>,
    max_batch: usize,
    script: Vec<Reply>,
    deadline: Duration,
) -> Outcome {
    let backend = Arc::new(MemoryBackend::new(max_batch, script));
    let metrics = Arc::new(Metrics::default());
    let sender = Sender::with_jitter(backend.clone(), metrics.clone(), no_jitter);
    let progress = Progress::default();
    let start = Instant::now();
    let report = sender.flush(docs, start + deadline, &progress).await;
    Outcome {
        report,
        progress: progress.settled(),
        backend,
        metrics,
        start,
    }
}

fn fail(e: ExportError) -> Reply {
    Reply::Fail(e)
}

fn auth() -> ExportError {
    ExportError::Auth {
        status: 403,
        code: "ExpiredTokenException".into(),
        message: String::new(),
    }
}

struct Case {
    name: &'static str,
    docs: u64,
    script: Vec<Reply>,
    deadline: u64,
    sent: usize,
    refused: usize,
    kept: usize,
    /// When each call comes, in milliseconds from the start.
    calls: &'static [u64],
}

/// Batches of 3, jitter pinned to its largest value; deadlines and call times in milliseconds.
#[expect(clippy::too_many_lines, reason = "a table, one row per case")]
fn cases() -> Vec<Case> {
    let throttled = || fail(ExportError::Throttled);
    let unprocessed = |which: &[(usize, &'static str, bool)]| Reply::Unprocessed(which.to_vec());
    let bad_request = ExportError::Client4xx {
        status: 400,
        message: "bad".into(),
    };
    let internal = || unprocessed(&[(0, "InternalFailure", true)]);
    vec![
        Case {
            name: "stored at once, one call a batch",
            docs: 7,
            script: vec![],
            deadline: 1_000,
            sent: 7,
            refused: 0,
            kept: 0,
            calls: &[0, 0, 0],
        },
        Case {
            name: "throttled once: retried after the first backoff",
            docs: 2,
            script: vec![throttled()],
            deadline: 1_000,
            sent: 2,
            refused: 0,
            kept: 0,
            calls: &[0, 25],
        },
        Case {
            name: "failing every attempt: the delay doubles, then kept",
            docs: 2,
            script: vec![
                fail(ExportError::Server5xx { status: 503 }),
                fail(ExportError::Timeout),
                fail(ExportError::Refused("reset".into())),
            ],
            deadline: 1_000,
            sent: 0,
            refused: 0,
            kept: 2,
            calls: &[0, 25, 75],
        },
        Case {
            name: "a retry that would end past the deadline is not made",
            docs: 2,
            script: vec![fail(ExportError::Server5xx { status: 500 })],
            deadline: 20,
            sent: 0,
            refused: 0,
            kept: 2,
            calls: &[0],
        },
        Case {
            name: "a call with no answer ends at the deadline, its documents kept",
            docs: 3,
            script: vec![Reply::Hang],
            deadline: 300,
            sent: 0,
            refused: 0,
            kept: 3,
            calls: &[0],
        },
        Case {
            name: "a slow answer spends the time of the retries",
            docs: 2,
            script: vec![Reply::Late(ms(280), Box::new(throttled()))],
            deadline: 300,
            sent: 0,
            refused: 0,
            kept: 2,
            calls: &[0],
        },
        Case {
            name: "unprocessed: only the retryable ones go again",
            docs: 3,
            script: vec![unprocessed(&[
                (0, "ThrottledException", true),
                (2, "InvalidTraceId", false),
            ])],
            deadline: 1_000,
            sent: 2,
            refused: 1,
            kept: 0,
            calls: &[0, 25],
        },
        Case {
            name: "unprocessed every attempt: kept after the last",
            docs: 1,
            script: vec![internal(), internal(), internal()],
            deadline: 1_000,
            sent: 0,
            refused: 0,
            kept: 1,
            calls: &[0, 25, 75],
        },
        Case {
            name: "a refused request drops its batch, no retry; the next batch is stored",
            docs: 4,
            script: vec![fail(bad_request)],
            deadline: 1_000,
            sent: 1,
            refused: 3,
            kept: 0,
            calls: &[0, 0],
        },
        Case {
            name: "refused credentials keep the batch for the next flush, no retry",
            docs: 2,
            script: vec![fail(auth())],
            deadline: 1_000,
            sent: 0,
            refused: 0,
            kept: 2,
            calls: &[0],
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn retries_backoff_refusals_and_deadlines() {
    for case in cases() {
        // Batches of 3.
        let out = flush(docs(case.docs), 3, case.script, ms(case.deadline)).await;
        let name = case.name;
        assert_eq!(
            (out.report.sent, out.report.refused, out.kept()),
            (case.sent, case.refused, case.kept),
            "{name}"
        );
        assert_eq!(out.call_times(), case.calls, "{name}");
        assert_eq!(out.report.calls, case.calls.len(), "{name}");
        assert_eq!(
            metrics::get(&out.metrics.api_calls),
            case.calls.len() as u64,
            "{name}"
        );
        assert_eq!(
            metrics::get(&out.metrics.sent),
            out.report.sent as u64,
            "{name}"
        );
        assert_eq!(
            metrics::get(&out.metrics.unprocessed),
            out.report.refused as u64,
            "{name}"
        );
        // Everything is settled or kept, exactly once.
        assert_eq!(
            out.progress + out.kept(),
            usize::try_from(case.docs).unwrap(),
            "{name}"
        );
        assert_eq!(
            out.backend.stored().len(),
            out.report.sent,
            "{name}: stored what it reports sent"
        );
        // No call outlives the deadline it was given.
        assert!(
            out.backend
                .calls()
                .iter()
                .all(|c| c.deadline == out.start + ms(case.deadline)),
            "{name}"
        );
        assert!(Instant::now() <= out.start + ms(case.deadline), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_metrics_observe_what_the_report_says() {
    let out = flush(
        docs(5),
        50,
        vec![Reply::Unprocessed(vec![(1, "InvalidTraceId", false)])],
        ms(1_000),
    )
    .await;
    assert_eq!((out.report.sent, out.report.refused), (4, 1));
    assert_eq!(metrics::get(&out.metrics.sent), 4);
    assert_eq!(metrics::get(&out.metrics.unprocessed), 1);
    let out = flush(docs(2), 50, vec![fail(ExportError::Throttled)], ms(1_000)).await;
    assert_eq!(metrics::get(&out.metrics.backend_4xx), 1);
    assert_eq!(metrics::get(&out.metrics.sent), 2);
}

#[tokio::test(start_paused = true)]
async fn older_versions_of_a_re_sent_id_are_settled_as_superseded() {
    let mut d = docs(3);
    d.push(doc(2));
    let out = flush(d, 50, vec![], ms(1_000)).await;
    assert_eq!(out.report.superseded, 1);
    assert_eq!(out.report.sent, 3);
    assert_eq!(out.progress, 4);
    assert_eq!(out.backend.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn progress_tells_what_an_aborted_flush_had_settled() {
    // Three batches: the first stored, the second never answered, the third stored.
    let backend = Arc::new(MemoryBackend::new(50, [Reply::Store, Reply::Hang]));
    let sender = Arc::new(Sender::with_jitter(
        backend.clone(),
        Arc::new(Metrics::default()),
        no_jitter,
    ));
    let progress = Arc::new(Progress::default());
    let deadline = Instant::now() + Duration::from_secs(1);
    let task = tokio::spawn({
        let (sender, progress) = (sender.clone(), progress.clone());
        async move { sender.flush(docs(120), deadline, &progress).await }
    });
    while backend.stored().len() < 70 {
        tokio::time::sleep(ms(1)).await;
    }
    assert!(!task.is_finished());
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(progress.settled(), 70);
}

#[test]
fn an_answer_splits_its_batch() {
    use crate::export::backend::Unprocessed;
    let unprocessed = |n: u64, retry: bool| Unprocessed {
        id: SegmentId::from_u64(n).as_str().to_owned(),
        code: String::new(),
        message: String::new(),
        retry,
    };
    let answer = |u: Vec<Unprocessed>| Answer {
        unprocessed: u,
        ..Answer::default()
    };
    let ids = |d: &[Document]| d.iter().map(|d| d.id).collect::<Vec<_>>();
    // (answer, sent, refused, sent again)
    let table = [
        (answer(vec![]), 4, 0, vec![]),
        (answer(vec![unprocessed(2, true)]), 3, 0, vec![2]),
        (answer(vec![unprocessed(2, false)]), 3, 1, vec![]),
        (
            answer(vec![
                unprocessed(1, true),
                unprocessed(4, true),
                unprocessed(3, false),
            ]),
            1,
            1,
            vec![1, 4],
        ),
        // More refusals than documents left: never more refused than there were.
        (
            answer((1..=6).map(|n| unprocessed(n, false)).collect()),
            0,
            4,
            vec![],
        ),
    ];
    for (answer, sent, refused, again) in table {
        let s = split(docs(4), &answer);
        assert_eq!((s.sent, s.refused), (sent, refused), "{answer:?}");
        let again: Vec<SegmentId> = again.into_iter().map(SegmentId::from_u64).collect();
        assert_eq!(ids(&s.again), again, "{answer:?}");
    }
}

#[test]
fn backoff_is_capped_and_jittered() {
    assert_eq!(backoff(1, 0.0), Duration::ZERO);
    assert_eq!(backoff(1, 1.0), RETRY_BASE_DELAY);
    assert_eq!(backoff(2, 1.0), RETRY_BASE_DELAY * 2);
    assert_eq!(backoff(30, 1.0), RETRY_MAX_DELAY);
    assert_eq!(backoff(3, 0.5), RETRY_BASE_DELAY * 2);
}

/// A `T1S` (or `T1U`) document of one span `n`, with a name of `name_len` bytes.
fn span_doc(prefix: &str, n: u64, name_len: usize) -> Document {
    use crate::otlp::wire::{put_fixed64, put_len};
    let mut span = Vec::new();
    put_len(&mut span, 1, &[0x57; 16]);
    put_len(&mut span, 2, &n.to_be_bytes());
    put_len(&mut span, 5, "n".repeat(name_len).as_bytes());
    put_fixed64(&mut span, 7, 1);
    put_fixed64(&mut span, 8, 2);
    let mut ss = Vec::new();
    put_len(&mut ss, 2, &span);
    let mut rs = Vec::new();
    put_len(&mut rs, 2, &ss);
    let mut request = Vec::new();
    put_len(&mut request, 1, &rs);
    let body = format!(
        "{prefix}{}",
        base64_simd::STANDARD.encode_to_string(&request)
    );
    crate::otlp::parse_document(body.as_bytes(), crate::otlp::Form::Text).unwrap()
}

struct Routed {
    report: FlushReport,
    documents: Arc<MemoryBackend>,
    spans: Arc<MemoryBackend>,
    metrics: Arc<Metrics>,
}

async fn flush_routed(docs: Vec<Document>, spans_script: Vec<Reply>) -> Routed {
    let documents = Arc::new(MemoryBackend::new(50, []));
    let spans = Arc::new(MemoryBackend::new(
        otlp::request::MAX_SPANS_PER_REQUEST,
        spans_script,
    ));
    let metrics = Arc::new(Metrics::default());
    let sender = Sender::with_jitter(documents.clone(), metrics.clone(), no_jitter)
        .with_spans(spans.clone());
    let start = Instant::now();
    let report = sender
        .flush(docs, start + ms(1000), &Progress::default())
        .await;
    Routed {
        report,
        documents,
        spans,
        metrics,
    }
}

#[tokio::test(start_paused = true)]
async fn sampled_spans_go_to_the_span_backend_and_the_rest_to_put_trace_segments() {
    let docs = vec![
        doc(1),
        span_doc("T1S", 2, 10),
        span_doc("T1U", 3, 10),
        span_doc("T1S", 4, 10),
        doc(5),
    ];
    let id = SegmentId::from_u64;
    // Without a span backend, everything goes to PutTraceSegments, as before.
    let out = flush(docs.clone(), 50, vec![], ms(1000)).await;
    assert_eq!(out.backend.stored(), [1, 2, 3, 4, 5].map(id));
    // With one, only the sampled spans leave PutTraceSegments.
    let out = flush_routed(docs, vec![]).await;
    assert_eq!(out.documents.stored(), [1, 3, 5].map(id));
    assert_eq!(out.spans.stored(), [2, 4].map(id));
    assert_eq!(out.spans.calls().len(), 1);
    assert_eq!(out.report.sent, 5);
}

#[tokio::test(start_paused = true)]
async fn span_requests_stay_within_the_endpoints_limits() {
    // 30 documents of one 190,000-byte span: at most 26 fit 5,000,000 bytes.
    let docs: Vec<Document> = (1..=30).map(|n| span_doc("T1S", n, 190_000)).collect();
    let out = flush_routed(docs, vec![]).await;
    let sizes: Vec<usize> = out.spans.calls().iter().map(|c| c.ids.len()).collect();
    assert_eq!(sizes, [26, 4]);
    assert_eq!(out.spans.stored().len(), 30);
}

#[tokio::test(start_paused = true)]
async fn span_calls_retry_like_documents_and_count_rejected_spans() {
    let docs: Vec<Document> = (1..=3).map(|n| span_doc("T1S", n, 10)).collect();
    let busy = fail(ExportError::Server5xx { status: 503 });
    let out = flush_routed(docs, vec![busy.clone(), busy, Reply::RejectSpans(2)]).await;
    // Two 503s, then stored: nothing lost; the spans the answer rejected are counted.
    assert_eq!(out.spans.calls().len(), 3);
    assert_eq!(out.spans.stored().len(), 3);
    assert_eq!(out.report.kept.len(), 0);
    assert_eq!(metrics::get(&out.metrics.otlp_spans_rejected), 2);
    assert!(out.documents.calls().is_empty());
}

/// The same span as [`span_doc`] `T1S`, held as the serialized request (what the OTLP/HTTP
/// receiver builds when spans go to the OTLP endpoint).
fn whole_span_doc(n: u64, name_len: usize) -> Document {
    let text = span_doc("T1S", n, name_len);
    let bytes = otlp::request::request_bytes(&text).unwrap().into_owned();
    Document {
        body: crate::document::Body::Spans(bytes.into()),
        ..text
    }
}

#[tokio::test(start_paused = true)]
async fn spans_held_for_the_otlp_endpoint_never_go_to_put_trace_segments() {
    let id = SegmentId::from_u64;
    let docs = vec![doc(1), whole_span_doc(2, 150_000), span_doc("T1S", 3, 10)];
    let out = flush_routed(docs.clone(), vec![]).await;
    assert_eq!(out.documents.stored(), [1].map(id));
    assert_eq!(out.spans.stored(), [2, 3].map(id));
    // Without a span backend (never so in the extension), they are refused, not sent as text.
    let out = flush(docs, 50, vec![], ms(1000)).await;
    assert_eq!(out.backend.stored(), [1, 3].map(id));
    assert_eq!(out.report.refused, 1);
    assert_eq!(metrics::get(&out.metrics.unprocessed), 1);
}
