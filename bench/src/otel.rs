//! OpenTelemetry throughput through real sockets, the extension pinned to one core: spans/s
//! through the daemon-protocol UDP path (`T1S` datagrams, the ADOT SDKs' shape) and through the
//! OTLP/HTTP receiver (protobuf bodies, a plain SDK's default exporter), each delivered to the
//! counting endpoint, which decodes every `T1S` document and counts the distinct spans.
//!
//! - UDP: a generator thread sends datagrams of [`SPANS_PER_DATAGRAM`] spans at a fixed offered
//!   rate ([`UDP_SPANS_PER_SECOND`]), every datagram encoded afresh with new span ids;
//! - HTTP: a closed loop: [`HTTP_CONNECTIONS`] kept-alive connections each POST a request of
//!   [`SPANS_PER_REQUEST`] spans (the SDK's default `max_export_batch_size`) as soon as the
//!   previous one is answered; 429/503 wait for `Retry-After`, as the SDKs do.
//!
//! Meanwhile the emulator invokes the function back to back, so the flush points export what
//! arrived. The extension's CPU time over the window gives the spans per CPU-second: what one
//! core sustains, independently of the harness sharing the machine.
//!
//! Each path runs with both span destinations in one run: `segments` (`T1S` documents in
//! `PutTraceSegments`) and `otlp` (X-Ray's OTLP endpoint, gzip'd protobuf), with the bytes the
//! spans took on the wire per span for each.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use serde_json::json;

use super::counting_sink::CountingSink;
use super::load::{cpu_seconds, flush_rest, invoke_while, paced, shut_down};
use super::report::{Row, Target, Unit};
use super::{Binaries, Env, EnvSpec, docs};
use xray_extension_tests::emulator::Invoke;
use xray_extension_tests::net;
use xray_extension_tests::procfs;
use xray_extension_tests::sink::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span,
};
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

/// Spans in one UDP datagram.
pub const SPANS_PER_DATAGRAM: u64 = 10;
/// The UDP generator's offered rate.
pub const UDP_SPANS_PER_SECOND: u64 = 100_000;
/// Spans in one OTLP/HTTP request (the OpenTelemetry SDKs' default `max_export_batch_size`).
pub const SPANS_PER_REQUEST: u64 = 512;
/// Concurrent OTLP/HTTP connections.
pub const HTTP_CONNECTIONS: usize = 2;
/// The extension's counters the notes give for each run.
const NOTED_COUNTERS: [&str; 7] = [
    "received",
    "sent",
    "spilled",
    "kernel_dropped",
    "otlp_busy",
    "api_calls",
    "peak_rss_kb",
];
/// The CPU the extension is pinned to.
const EXTENSION_CPU: &str = "0";
/// A client waits at most this long on a 429/503 before trying again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);
/// One request's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A span id in the run's tag space: the tag, then `n` scrambled (a multiplication by an odd
/// constant is a bijection on 32 bits), so the ids look random to gzip as real ones do.
fn span_id(tag: u64, n: u64) -> Vec<u8> {
    let low = n.wrapping_mul(0x9e37_79b1) & 0xffff_ffff;
    ((tag << 32) | low).to_be_bytes().to_vec()
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            string_value: Some(value.to_owned()),
            ..AnyValue::default()
        }),
    }
}

/// A serialized request of `count` spans, ids `tag << 32 | first..`, each an SDK-shaped client
/// span (HTTP and AWS attributes) under `parent` in the trace `trace_id`.
pub(super) fn request(trace_id: &[u8], parent: &[u8], tag: u64, first: u64, count: u64) -> Vec<u8> {
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX);
    let spans = (first..first + count)
        .map(|n| Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(tag, n),
            parent_span_id: parent.to_vec(),
            name: "DynamoDB.GetItem".into(),
            kind: 3,
            // Times that differ from span to span, as real ones do (to the nanosecond).
            start_time_unix_nano: now
                .saturating_sub(4_000_000 + (n.wrapping_mul(7_919) % 1_000_003)),
            end_time_unix_nano: now.saturating_sub(n.wrapping_mul(104_729) % 999_983),
            attributes: vec![
                attribute("rpc.system", "aws-api"),
                attribute("rpc.service", "DynamoDB"),
                attribute("rpc.method", "GetItem"),
                attribute("aws.dynamodb.table_names", "orders"),
                attribute("http.response.status_code", "200"),
                attribute("server.address", "dynamodb.us-east-1.amazonaws.com"),
            ],
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", "bench"),
                    attribute("cloud.provider", "aws"),
                    attribute("faas.name", "bench"),
                ],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.botocore".into(),
                    version: "0.52b0".into(),
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Where the generated spans go.
#[derive(Debug, Clone)]
pub(super) struct Trace {
    pub(super) id: Vec<u8>,
    pub(super) parent: Vec<u8>,
}

impl Trace {
    pub(super) fn new() -> Self {
        let header = TraceHeader::sampled();
        let hex = header.root.replacen("1-", "", 1).replace('-', "");
        let bytes = |h: &str| {
            (0..h.len() / 2)
                .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Vec<u8>>()
        };
        Self {
            id: bytes(&hex),
            parent: bytes(&new_segment_id()),
        }
    }
}

/// What a generator did.
#[derive(Debug, Clone, Copy, Default)]
struct Generated {
    /// Spans sent (UDP) or accepted with a 200 (HTTP).
    spans: u64,
    /// Send errors, non-200 answers other than 429/503, request timeouts.
    errors: u64,
    /// 429/503 answers.
    busy: u64,
    elapsed: Duration,
}

/// Sends `T1S` datagrams at [`UDP_SPANS_PER_SECOND`] for `duration` to `target`.
fn generate_udp(
    target: SocketAddr,
    duration: Duration,
    tag: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Generated> {
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    let trace = Trace::new();
    let mut datagram = String::new();
    let (sent, errors, elapsed) = paced(
        UDP_SPANS_PER_SECOND / SPANS_PER_DATAGRAM,
        duration,
        stop,
        |n| {
            let body = request(
                &trace.id,
                &trace.parent,
                tag,
                n * SPANS_PER_DATAGRAM,
                SPANS_PER_DATAGRAM,
            );
            datagram.clear();
            datagram.push_str(docs::HEADER);
            datagram.push_str("\nT1S");
            base64::engine::general_purpose::STANDARD.encode_string(&body, &mut datagram);
            socket.send_to(datagram.as_bytes(), target).is_ok()
        },
    );
    Ok(Generated {
        spans: sent * SPANS_PER_DATAGRAM,
        errors,
        busy: 0,
        elapsed,
    })
}

/// How long a 429/503 asks the client to wait (capped).
fn retry_after(headers: &http::HeaderMap) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(MAX_RETRY_AFTER, |s| {
            Duration::from_secs(s).min(MAX_RETRY_AFTER)
        })
}

/// One connection's closed loop: POST requests of [`SPANS_PER_REQUEST`] spans back to back until
/// `duration` has passed; ids from `next` (shared by the connections).
async fn http_connection(
    addr: SocketAddr,
    duration: Duration,
    tag: u64,
    next: Arc<AtomicU64>,
    trace: Trace,
) -> anyhow::Result<Generated> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the receiver at {addr}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let start = Instant::now();
    let mut out = Generated::default();
    let mut pending: Option<Bytes> = None;
    while start.elapsed() < duration {
        let body = pending.take().unwrap_or_else(|| {
            let first = next.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
            Bytes::from(request(
                &trace.id,
                &trace.parent,
                tag,
                first,
                SPANS_PER_REQUEST,
            ))
        });
        let req = http::Request::post("/v1/traces")
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(http_body_util::Full::new(body.clone()))?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = sender.send_request(req).await?;
            let status = response.status();
            let wait = retry_after(response.headers());
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, wait))
        })
        .await;
        match answer {
            Ok(Ok((status, _))) if status == http::StatusCode::OK => {
                out.spans += SPANS_PER_REQUEST;
            }
            Ok(Ok((status, wait)))
                if status == http::StatusCode::TOO_MANY_REQUESTS
                    || status == http::StatusCode::SERVICE_UNAVAILABLE =>
            {
                out.busy += 1;
                pending = Some(body);
                tokio::time::sleep(wait).await;
            }
            Ok(Ok(_)) => out.errors += 1,
            Ok(Err(e)) => {
                driver.abort();
                return Err(e).context("the receiver closed the connection");
            }
            Err(_) => {
                out.errors += 1;
                break;
            }
        }
    }
    driver.abort();
    out.elapsed = start.elapsed();
    Ok(out)
}

/// Which path a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Udp,
    Http,
}

/// Where the extension sends the spans (`XRAY_EXTENSION_SPAN_DESTINATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Segments,
    Otlp,
}

impl Destination {
    fn value(self) -> &'static str {
        match self {
            Self::Segments => "segments",
            Self::Otlp => "otlp",
        }
    }
}

/// Figures of one run.
#[derive(Debug, Clone, Default)]
struct RunFigures {
    generated: Generated,
    delivered: u64,
    cpu_seconds: f64,
    invokes: u64,
    rejected_spans: u64,
    /// Bytes the spans took on the wire: their `T1S` documents in `PutTraceSegments` bodies, or
    /// the gzip'd `/v1/traces` bodies.
    wire_bytes: u64,
    counters: std::collections::BTreeMap<String, u64>,
}

impl RunFigures {
    fn secs(&self) -> f64 {
        self.generated.elapsed.as_secs_f64()
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    fn delivered_per_second(&self) -> f64 {
        self.delivered as f64 / self.secs()
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_seconds / self.secs()
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    fn per_cpu_second(&self) -> f64 {
        self.delivered as f64 / self.cpu_seconds
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    fn wire_bytes_per_span(&self) -> f64 {
        self.wire_bytes as f64 / self.delivered as f64
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    fn lost(&self) -> f64 {
        self.generated.spans.saturating_sub(self.delivered) as f64
    }
}

/// Pins every thread of `pid` to [`EXTENSION_CPU`]; false when `taskset` is not there.
fn pin(pid: u32) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", EXTENSION_CPU, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the run's generators: one UDP sender thread, or the HTTP connections.
fn spawn_generators(
    path: Path,
    env: &Env,
    otlp_port: u16,
    duration: Duration,
    tag: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<Generated>>> {
    match path {
        Path::Udp => {
            let target = SocketAddr::from(([127, 0, 0, 1], env.udp_port));
            let stop = Arc::clone(stop);
            vec![tokio::task::spawn_blocking(move || {
                generate_udp(target, duration, tag, &stop)
            })]
        }
        Path::Http => {
            let addr = SocketAddr::from(([127, 0, 0, 1], otlp_port));
            let next = Arc::new(AtomicU64::new(0));
            let trace = Trace::new();
            (0..HTTP_CONNECTIONS)
                .map(|_| {
                    tokio::spawn(http_connection(
                        addr,
                        duration,
                        tag,
                        Arc::clone(&next),
                        trace.clone(),
                    ))
                })
                .collect()
        }
    }
}

async fn run_once(
    bins: &Binaries,
    (path, destination): (Path, Destination),
    run: u64,
    duration: Duration,
) -> anyhow::Result<(RunFigures, bool)> {
    let tag = 0xc0_00
        | (run << 4)
        | u64::from(path == Path::Http)
        | (u64::from(destination == Destination::Otlp) << 1);
    let sink = CountingSink::start(tag).await?;
    let otlp_port = net::free_tcp_port()?;
    let mut env: Env = EnvSpec::new(&bins.extension, &bins.function, &sink.endpoint())
        .env(
            "XRAY_EXTENSION_OTLP_ADDRESS",
            &format!("127.0.0.1:{otlp_port}"),
        )
        .env("XRAY_EXTENSION_SPAN_DESTINATION", destination.value())
        .start()
        .await?;
    env.lambda.prewarm().await?;
    let pid =
        procfs::child_running(&bins.extension).context("cannot find the extension's process")?;
    let pinned = pin(pid);
    let event = json!({"subsegments": 1, "sleep_ms": 20});
    env.lambda
        .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_seconds(pid).unwrap_or(f64::NAN);
    let generators = spawn_generators(path, &env, otlp_port, duration, tag, &stop);
    let (mut invokes, failure) = invoke_while(&mut env, &event, &stop, || {
        !generators.iter().all(tokio::task::JoinHandle::is_finished)
    })
    .await;
    invokes += 1;
    let mut generated = Generated::default();
    for g in generators {
        let one = g.await.context("a generator panicked")??;
        generated.spans += one.spans;
        generated.errors += one.errors;
        generated.busy += one.busy;
        generated.elapsed = generated.elapsed.max(one.elapsed);
    }
    let cpu_after = cpu_seconds(pid).unwrap_or(f64::NAN);
    if let Some(e) = failure {
        return Err(e);
    }
    invokes += flush_rest(&mut env, &event).await?;
    let c = shut_down(&mut env).await?;
    let (delivered, wire_bytes) = sink.with_counts(|c| {
        let wire = match destination {
            Destination::Segments => c.span_document_bytes,
            Destination::Otlp => c.traces_wire_bytes,
        };
        (c.tagged.len() as u64, wire)
    });
    Ok((
        RunFigures {
            generated,
            delivered,
            cpu_seconds: cpu_after - cpu_before,
            invokes,
            rejected_spans: c.get("otlp_spans_rejected").copied().unwrap_or(0),
            wire_bytes,
            counters: c
                .into_iter()
                .filter(|(k, _)| NOTED_COUNTERS.contains(&k.as_str()))
                .collect(),
        },
        pinned,
    ))
}

/// A path's name in the rows, and how it was driven.
fn describe(
    (path, destination): (Path, Destination),
    duration: Duration,
    core: &str,
) -> (&'static str, String) {
    let name = match (path, destination) {
        (Path::Udp, Destination::Segments) => "OTLP over UDP",
        (Path::Http, Destination::Segments) => "OTLP/HTTP",
        (Path::Udp, Destination::Otlp) => "OTLP over UDP → OTLP endpoint",
        (Path::Http, Destination::Otlp) => "OTLP/HTTP → OTLP endpoint",
    };
    let core = format!(
        "XRAY_EXTENSION_SPAN_DESTINATION={}; {core}",
        destination.value()
    );
    match path {
        Path::Udp => (
            name,
            format!(
                "T1S datagrams of {SPANS_PER_DATAGRAM} spans offered at {UDP_SPANS_PER_SECOND} spans/s for {:.0} s per run; {core}",
                duration.as_secs_f64()
            ),
        ),
        Path::Http => (
            name,
            format!(
                "{HTTP_CONNECTIONS} kept-alive connections, protobuf requests of {SPANS_PER_REQUEST} spans back to back for {:.0} s per run, into the default 4 MiB buffer (a full one makes a request wait for room, 250 ms at most, then 503); {core}",
                duration.as_secs_f64()
            ),
        ),
    }
}

/// The paths and destinations measured, in order.
const RUNS: [(Path, Destination); 4] = [
    (Path::Udp, Destination::Segments),
    (Path::Http, Destination::Segments),
    (Path::Udp, Destination::Otlp),
    (Path::Http, Destination::Otlp),
];

/// `runs` runs of `duration` on each path, to each destination.
pub async fn measure(bins: &Binaries, runs: u64, duration: Duration) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for which in RUNS {
        let (path, _) = which;
        let mut all = Vec::new();
        let mut pinned = true;
        for run in 0..runs {
            let (figures, p) = run_once(bins, which, run, duration)
                .await
                .with_context(|| format!("{which:?} run {run}"))?;
            pinned &= p;
            all.push(figures);
        }
        let col = |f: fn(&RunFigures) -> f64| all.iter().map(f).collect::<Vec<f64>>();
        let detail: Vec<String> = all
            .iter()
            .map(|r| {
                format!(
                    "{} spans {} / {} at the endpoint; {} errors, {} busy answers, {} spans rejected, {} invokes, {:.1} s; {:?}",
                    if path == Path::Udp { "sent" } else { "accepted" },
                    r.generated.spans,
                    r.delivered,
                    r.generated.errors,
                    r.generated.busy,
                    r.rejected_spans,
                    r.invokes,
                    r.secs(),
                    r.counters
                )
            })
            .collect();
        let core = if pinned {
            format!("the extension pinned to CPU {EXTENSION_CPU} (taskset)")
        } else {
            String::from("not pinned: taskset is missing")
        };
        let (name, how) = describe(which, duration, &core);
        rows.push(
            Row::new(
                format!("{name}: spans/s delivered to X-Ray, extension on one core"),
                &col(RunFigures::delivered_per_second),
                Unit::PerSecond,
                Target::None,
            )
            .note(how),
        );
        rows.push(Row::new(
            format!("{name}: extension CPU (% of one core)"),
            &col(RunFigures::cpu_percent),
            Unit::Percent,
            Target::None,
        ));
        rows.push(
            Row::new(
                format!("{name}: spans per CPU-second of the extension"),
                &col(RunFigures::per_cpu_second),
                Unit::PerSecond,
                Target::None,
            )
            .note("spans delivered ÷ the extension's user + system CPU time over the window: what one core sustains"),
        );
        rows.push(
            Row::new(
                format!("{name}: bytes on the wire per span"),
                &col(RunFigures::wire_bytes_per_span),
                Unit::Bytes,
                Target::None,
            )
            .note(match which.1 {
                Destination::Segments => "the T1S documents' bytes in the PutTraceSegments bodies (base64, no compression; quotes and commas counted) ÷ spans delivered",
                Destination::Otlp => "the /v1/traces bodies as sent (protobuf, gzip) ÷ spans delivered",
            }),
        );
        rows.push(
            Row::new(
                format!(
                    "{name}: spans lost ({} − distinct ones X-Ray got)",
                    if path == Path::Udp {
                        "sent"
                    } else {
                        "accepted"
                    }
                ),
                &col(RunFigures::lost),
                Unit::Count,
                Target::AtMost(0.0),
            )
            .note(detail.join(" | ")),
        );
    }
    Ok(rows)
}
