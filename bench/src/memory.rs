//! The memory section: the extension's RSS over a long life ([`super::soak`]: idle, at 1,000 and
//! at 10,000 invocations), and its peak RSS while local clients send hostile OTLP/HTTP requests
//! or large Telemetry API deliveries, side by side with its idle figure.
//!
//! Hostile requests: [`CONNECTIONS`] connections at once, each sending the same body back to
//! back for a few seconds while the function is invoked, at `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`
//! [`MEMORY_MB`]:
//! - [`Hostile::JsonValues`]: gzip'd OTLP JSON that inflates to just under the receiver's
//!   decompressed limit, nearly all of it millions of empty attribute values;
//! - [`Hostile::Protobuf`]: valid protobuf requests of just under the receiver's 4 MiB body
//!   limit (thousands of spans each);
//! - [`Hostile::GzipBomb`]: a small gzip body that inflates to 256 MiB of zeros;
//! - [`Hostile::TelemetryDeliveries`]: record arrays of just under the telemetry listener's
//!   2 MiB body limit, posted to it (any local process can).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::counting_sink::CountingSink;
use super::load::{flush_rest, mib, shut_down};
use super::otel::{Trace, request};
use super::report::{Row, Target, Unit};
use super::soak::{self, Plan};
use super::{Binaries, Env, EnvSpec};
use xray_extension_tests::emulator::Invoke;
use xray_extension_tests::net;
use xray_extension_tests::procfs;
use xray_extension_tests::trace::TraceHeader;

/// Concurrent hostile connections.
pub const CONNECTIONS: usize = 16;
/// The function's memory size for the hostile runs (the smallest common one).
pub const MEMORY_MB: u32 = 128;
/// The receiver's limits the bodies are built against (`ingest/otlp_http.rs`).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;
/// What the gzip bomb inflates to.
const BOMB_BYTES: usize = 256 * 1024 * 1024;
/// One request's deadline (the receiver's own body timeout is 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Memory sampling period during the hostile runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// A kind of hostile request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// gzip'd JSON inflating into millions of values.
    JsonValues,
    /// Protobuf bodies of nearly 4 MiB.
    Protobuf,
    /// gzip of 256 MiB of zeros.
    GzipBomb,
    /// Telemetry API deliveries of ~1.95 MB.
    TelemetryDeliveries,
}

/// One of the extension's local listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Otlp,
    Telemetry,
}

impl Listener {
    /// What it receives, for the row's name.
    fn receives(self) -> &'static str {
        match self {
            Self::Otlp => "OTLP/HTTP requests",
            Self::Telemetry => "Telemetry API deliveries",
        }
    }

    /// The path posted to.
    fn path(self) -> &'static str {
        match self {
            Self::Otlp => "/v1/traces",
            Self::Telemetry => "/telemetry",
        }
    }
}

/// The telemetry listener's body limit (`lambda/listener.rs`) the deliveries stay under.
const TELEMETRY_BODY_BYTES: usize = 1_950_000;

impl Hostile {
    const ALL: [Self; 4] = [
        Self::JsonValues,
        Self::Protobuf,
        Self::GzipBomb,
        Self::TelemetryDeliveries,
    ];

    /// The listener they are sent to.
    fn listener(self) -> Listener {
        match self {
            Self::TelemetryDeliveries => Listener::Telemetry,
            Self::JsonValues | Self::Protobuf | Self::GzipBomb => Listener::Otlp,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::JsonValues => "gzip'd JSON inflating to ~16 MiB of empty attribute values",
            Self::Protobuf => "protobuf bodies of ~4 MiB",
            Self::GzipBomb => "a gzip bomb (256 MiB of zeros)",
            Self::TelemetryDeliveries => "record arrays of ~1.95 MB (1 KB records)",
        }
    }

    /// The body and its headers (content type, content encoding).
    fn body(self) -> anyhow::Result<(Bytes, &'static str, Option<&'static str>)> {
        match self {
            Self::JsonValues => {
                let head = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"arrayValue":{"values":["#;
                let tail = r#"]}}}]},"scopeSpans":[]}]}"#;
                let value = "{},";
                let n = (MAX_DECODED_BYTES - head.len() - tail.len() - 1024) / value.len();
                let mut json = String::with_capacity(MAX_DECODED_BYTES);
                json.push_str(head);
                for _ in 0..n {
                    json.push_str(value);
                }
                json.push_str("{}");
                json.push_str(tail);
                Ok((
                    Bytes::from(gzip(json.as_bytes())?),
                    "application/json",
                    Some("gzip"),
                ))
            }
            Self::Protobuf => {
                let trace = Trace::new();
                let probe = request(&trace.id, &trace.parent, 0xd0, 0, 100).len();
                let spans = (MAX_BODY_BYTES - 64 * 1024) * 100 / probe;
                let body = request(&trace.id, &trace.parent, 0xd0, 0, spans as u64);
                anyhow::ensure!(body.len() <= MAX_BODY_BYTES, "protobuf body too large");
                Ok((Bytes::from(body), "application/x-protobuf", None))
            }
            Self::GzipBomb => Ok((
                Bytes::from(gzip(&vec![0_u8; BOMB_BYTES])?),
                "application/x-protobuf",
                Some("gzip"),
            )),
            Self::TelemetryDeliveries => {
                let record = json!({"time": "2026-01-01T00:00:00.000Z", "type": "platform.start",
                    "record": {"requestId": "r-1", "version": "$LATEST", "pad": "x".repeat(900)}})
                .to_string();
                let n = TELEMETRY_BODY_BYTES / (record.len() + 1);
                let body = format!("[{}]", vec![record; n].join(","));
                Ok((Bytes::from(body), "application/json", None))
            }
        }
    }
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

/// Answers to the hostile requests, by status class.
#[derive(Debug, Default)]
struct Answers {
    ok: AtomicU64,
    busy: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// One connection sending `body` back to back until `stop`.
async fn hostile_connection(
    addr: SocketAddr,
    path: &'static str,
    body: Bytes,
    content_type: &'static str,
    encoding: Option<&'static str>,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            answers.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            answers.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let driver = tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let mut req = http::Request::post(path)
                .header(http::header::HOST, addr.to_string())
                .header(http::header::CONTENT_TYPE, content_type);
            if let Some(e) = encoding {
                req = req.header(http::header::CONTENT_ENCODING, e);
            }
            let Ok(req) = req.body(http_body_util::Full::new(body.clone())) else {
                break;
            };
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let response = sender.send_request(req).await?;
                let status = response.status();
                response.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            })
            .await;
            let counter = match answer {
                Ok(Ok(s)) if s.is_success() => &answers.ok,
                Ok(Ok(s)) if s == http::StatusCode::SERVICE_UNAVAILABLE => &answers.busy,
                Ok(Ok(_)) => &answers.refused,
                Ok(Err(_)) | Err(_) => {
                    answers.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        driver.abort();
    }
}

/// Figures of one hostile run.
#[derive(Debug, Clone, Copy)]
struct HostileFigures {
    idle_kib: u64,
    peak_kib: u64,
    hwm_kib: u64,
    after_kib: u64,
    ok: u64,
    busy: u64,
    refused: u64,
    failed: u64,
    body_bytes: usize,
    invokes: u64,
    /// Invocations that timed out or reset the environment.
    failed_invokes: u64,
    /// The longest invocation, start to end.
    worst: Duration,
}

/// Samples the RSS of `pid` (or of the extension started again after a reset) into `peak`
/// until `stop`.
fn spawn_peak_sampler(
    pid: u32,
    exe: std::path::PathBuf,
    stop: &Arc<AtomicBool>,
    peak: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (stop, peak) = (Arc::clone(stop), Arc::clone(peak));
    tokio::spawn(async move {
        let mut pid = pid;
        while !stop.load(Ordering::Relaxed) {
            match procfs::memory(pid) {
                Some(m) => {
                    peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
                // Started again after a reset: follow the new process.
                None => pid = procfs::child_running(&exe).unwrap_or(pid),
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    })
}

/// Invokes the function back to back for `duration`: how many invocations, how many timed out
/// or reset the environment, and the longest one.
async fn invoke_for(
    env: &mut Env,
    event: &serde_json::Value,
    duration: Duration,
) -> anyhow::Result<(u64, u64, Duration)> {
    let started = Instant::now();
    let (mut invokes, mut failed) = (0_u64, 0_u64);
    let mut worst = Duration::ZERO;
    while started.elapsed() < duration {
        let i = env
            .lambda
            .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
            .await?;
        invokes += 1;
        worst = worst.max(i.finished_at.saturating_duration_since(i.started_at));
        if i.timed_out || i.reset.is_some() || i.failure.is_some() {
            failed += 1;
        }
    }
    Ok((invokes, failed, worst))
}

async fn hostile_run(
    bins: &Binaries,
    kind: Hostile,
    duration: Duration,
) -> anyhow::Result<HostileFigures> {
    let (body, content_type, encoding) = kind.body()?;
    let sink = CountingSink::start(0xd0).await?;
    let (otlp_port, telemetry_port) = (net::free_tcp_port()?, net::free_tcp_port()?);
    let mut env = EnvSpec::new(&bins.extension, &bins.function, &sink.endpoint())
        .env(
            "XRAY_EXTENSION_OTLP_ADDRESS",
            &format!("127.0.0.1:{otlp_port}"),
        )
        .env("XRAY_EXTENSION_TELEMETRY_PORT", &telemetry_port.to_string())
        .memory_mb(MEMORY_MB)
        .start()
        .await?;
    env.lambda.prewarm().await?;
    let pid =
        procfs::child_running(&bins.extension).context("cannot find the extension's process")?;
    let event = json!({"subsegments": 1, "sleep_ms": 20});
    env.lambda
        .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = procfs::memory(pid).context("cannot read the extension's memory")?;

    let listener = kind.listener();
    let port = match listener {
        Listener::Otlp => otlp_port,
        Listener::Telemetry => telemetry_port,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Answers::default());
    let peak = Arc::new(AtomicU64::new(idle.rss_kib));
    let sampler = spawn_peak_sampler(pid, bins.extension.clone(), &stop, &peak);
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(hostile_connection(
                addr,
                listener.path(),
                body.clone(),
                content_type,
                encoding,
                Arc::clone(&stop),
                Arc::clone(&answers),
            ))
        })
        .collect();
    let outcome = invoke_for(&mut env, &event, duration).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = sampler.await;
    let (invokes, failed_invokes, worst) = outcome?;
    flush_rest(&mut env, &event).await?;
    let after = procfs::child_running(&bins.extension)
        .and_then(procfs::memory)
        .context("the extension is gone after the hostile requests")?;
    shut_down(&mut env).await?;
    Ok(HostileFigures {
        idle_kib: idle.rss_kib,
        peak_kib: peak.load(Ordering::Relaxed).max(after.rss_kib),
        hwm_kib: after.hwm_kib,
        after_kib: after.rss_kib,
        ok: answers.ok.load(Ordering::Relaxed),
        busy: answers.busy.load(Ordering::Relaxed),
        refused: answers.refused.load(Ordering::Relaxed),
        failed: answers.failed.load(Ordering::Relaxed),
        body_bytes: body.len(),
        invokes,
        failed_invokes,
        worst,
    })
}

/// The soak's rows: RSS idle, at 1,000 and at 10,000 invocations, and the growth between.
async fn soak_rows(bins: &Binaries, which: &str) -> anyhow::Result<Vec<Row>> {
    let plan = Plan::new(&bins.extension, &bins.function);
    let s = soak::run(&plan, |_, _| {}).await?;
    let at = |n: u64| s.rss_at(n).map_or(f64::NAN, mib);
    #[expect(clippy::cast_precision_loss, reason = "KiB of one process")]
    let growth = s
        .growth_kib(soak::GROWTH_FROM)
        .map_or(f64::NAN, |g| g as f64 / 1024.0);
    let how = format!(
        "{} invocations back to back, {} subsegments each, default settings; {which}; {} documents sent, {} missing; {:.1} s; RSS (KiB) every {} invocations: {}",
        plan.invocations,
        plan.subsegments,
        s.sent,
        s.missing,
        s.took.as_secs_f64(),
        plan.sample_every,
        s.trace()
    );
    Ok(vec![
        Row::new(
            "memory: RSS idle after init (VmRSS)",
            &[mib(s.idle.rss_kib)],
            Unit::MiB,
            Target::AtMost(6.0),
        ),
        Row::new(
            format!("memory: RSS after {} invocations", soak::GROWTH_FROM),
            &[at(soak::GROWTH_FROM)],
            Unit::MiB,
            Target::AtMost(6.0),
        ),
        Row::new(
            format!("memory: RSS after {} invocations", plan.invocations),
            &[at(plan.invocations)],
            Unit::MiB,
            Target::AtMost(6.0),
        ),
        Row::new(
            format!(
                "memory: RSS growth from invocation {} to {}",
                soak::GROWTH_FROM,
                plan.invocations
            ),
            &[growth],
            Unit::MiB,
            Target::AtMost(1.0),
        )
        .note(how),
    ])
}

/// The memory section: the soak, then one hostile run of `duration` per kind.
pub async fn measure(bins: &Binaries, which: &str, duration: Duration) -> anyhow::Result<Vec<Row>> {
    let mut rows = soak_rows(bins, which).await?;
    let mut stalled = Vec::new();
    let mut total_stalled = Vec::new();
    for kind in Hostile::ALL {
        let f = hostile_run(bins, kind, duration)
            .await
            .with_context(|| format!("hostile run: {kind:?}"))?;
        stalled.push(format!("{kind:?} {} of {}", f.failed_invokes, f.invokes));
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        total_stalled.push(f.failed_invokes as f64);
        rows.push(
            Row::new(
                format!(
                    "memory: peak RSS under {CONNECTIONS} concurrent {}: {}",
                    kind.listener().receives(),
                    kind.describe()
                ),
                &[mib(f.peak_kib)],
                Unit::MiB,
                Target::None,
            )
            .note(format!(
                "idle {:.2} MiB before, {:.2} MiB after, VmHWM {:.2} MiB; AWS_LAMBDA_FUNCTION_MEMORY_SIZE={MEMORY_MB}; body {} bytes, sent back to back on each connection for {:.0} s while the function was invoked; answers: {} 2xx, {} 503, {} other refusals, {} failed or timed out; {} invocations meanwhile, {} of them timed out or reset the environment, the longest {:.0} ms; {which}",
                mib(f.idle_kib),
                mib(f.after_kib),
                mib(f.hwm_kib),
                f.body_bytes,
                duration.as_secs_f64(),
                f.ok,
                f.busy,
                f.refused,
                f.failed,
                f.invokes,
                f.failed_invokes,
                super::ms(f.worst),
            )),
        );
    }
    rows.push(
        Row::new(
            "memory: invocations timed out during the hostile requests",
            &[total_stalled.iter().sum()],
            Unit::Count,
            Target::AtMost(0.0),
        )
        .note(format!(
            "the function (20 ms handler, 3 s timeout) invoked back to back while the hostile requests run; a timeout resets the environment; by kind: {}",
            stalled.join(", ")
        )),
    );
    Ok(rows)
}
