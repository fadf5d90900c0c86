//! Post-runtime duration per invoke: `platform.runtimeDone` delivered to our listener → our
//! `/event/next`, for each flush strategy; and the sink's round trip, which bounds the `end`
//! strategy's target.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::report::{Row, Target, Unit, percentile};
use super::{Binaries, EXTENSION, EnvSpec, FLUSH_STRATEGY_VAR, knows_flush_strategy, ms};
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::emulator::{Invocation, Invoke, TelemetryDelivery};
use xray_extension_tests::sink::XraySink;
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

/// The strategies, in the order of the first round.
pub const STRATEGIES: [&str; 3] = ["end", "background", "adaptive"];
/// Subsegments the function sends per invoke.
const SUBSEGMENTS_PER_INVOKE: u64 = 3;
/// Documents per timed PutTraceSegments in the round-trip measurement: what one warm invoke
/// flushes (the function's subsegments, our `Runtime` and its re-send with the report).
const RTT_DOCUMENTS: usize = 5;
/// Timed round trips per round.
const RTT_REQUESTS: usize = 200;

/// One invoke's figures, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// runtimeDone delivered → our next; when we called next before the delivery, the runtime's
    /// next → our next.
    after_delivery: f64,
    /// The runtime's next → our next (what Lambda bills as `PostRuntimeExtensionsDuration`).
    billed: f64,
    /// We called next before runtimeDone was delivered.
    early: bool,
}

/// Per-round percentiles of one strategy.
#[derive(Debug, Default)]
struct Rounds {
    p50: Vec<f64>,
    p99: Vec<f64>,
    billed_p50: Vec<f64>,
    early: usize,
    invokes: usize,
}

/// When the delivery that carried `request_id`'s `platform.runtimeDone` was acknowledged.
fn runtime_done_delivered(deliveries: &[TelemetryDelivery], request_id: &str) -> Option<Instant> {
    deliveries
        .iter()
        .filter(|d| d.extension == EXTENSION && d.succeeded())
        .filter(|d| {
            d.events.iter().any(|e| {
                e.get("type").and_then(Value::as_str) == Some("platform.runtimeDone")
                    && e.pointer("/record/requestId").and_then(Value::as_str) == Some(request_id)
            })
        })
        .map(|d| d.at)
        .min()
}

/// The figures of one invocation, or why there are none.
fn sample(inv: &Invocation, deliveries: &[TelemetryDelivery]) -> Result<Sample, &'static str> {
    let next = inv
        .extension_next(EXTENSION)
        .ok_or("no /event/next of ours recorded")?;
    let billed = inv
        .post_runtime
        .map(ms)
        .ok_or("no post-runtime duration recorded")?;
    let delivered = runtime_done_delivered(deliveries, &inv.request_id);
    Ok(
        match delivered.and_then(|d| next.checked_duration_since(d)) {
            Some(d) => Sample {
                after_delivery: ms(d),
                billed,
                early: false,
            },
            // We did not wait for runtimeDone: what we added is what Lambda bills.
            None => Sample {
                after_delivery: billed,
                billed,
                early: true,
            },
        },
    )
}

/// One environment with `strategy`: a cold invoke (not counted), then `invokes` warm ones.
async fn run_strategy(
    bins: &Binaries,
    sink: &XraySink,
    strategy: &str,
    invokes: usize,
) -> anyhow::Result<Vec<Sample>> {
    let mut env = EnvSpec::new(&bins.extension, &bins.function, &sink.endpoint())
        .env(FLUSH_STRATEGY_VAR, strategy)
        .start()
        .await?;
    let event = json!({"subsegments": SUBSEGMENTS_PER_INVOKE});
    let mut warm = Vec::with_capacity(invokes);
    for i in 0..=invokes {
        let inv = env
            .lambda
            .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
            .await?;
        anyhow::ensure!(
            inv.failure.is_none() && !inv.timed_out,
            "invoke {i} with strategy {strategy} failed: {:?}",
            inv.failure
        );
        if i > 0 {
            warm.push(inv);
        }
    }
    let deliveries = env.lambda.observer().telemetry_deliveries();
    env.lambda.shutdown().await?;
    sink.clear();
    let mut samples = Vec::with_capacity(warm.len());
    for inv in &warm {
        match sample(inv, &deliveries) {
            Ok(s) => samples.push(s),
            Err(why) => anyhow::bail!(
                "invoke {} ({:?}, {strategy}): {why}",
                inv.request_id,
                inv.status
            ),
        }
    }
    dump(strategy, &samples);
    Ok(samples)
}

/// With `XRAY_BENCH_DUMP=<dir>`, appends each invoke's figures to `<dir>/post-runtime-<strategy>.csv`
/// (for looking at a distribution rather than two percentiles).
fn dump(strategy: &str, samples: &[Sample]) {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os("XRAY_BENCH_DUMP") else {
        return;
    };
    let path = std::path::Path::new(&dir).join(format!("post-runtime-{strategy}.csv"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Ok(mut file) = file {
        for s in samples {
            let _ = writeln!(file, "{:.4},{:.4},{}", s.after_delivery, s.billed, s.early);
        }
    }
}

/// Timed `PutTraceSegments` calls of [`RTT_DOCUMENTS`] documents over one kept-alive connection
/// (the X-Ray client pools its connections too).
async fn sink_round_trips(addr: SocketAddr, requests: usize) -> anyhow::Result<Vec<f64>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let mut out = Vec::with_capacity(requests);
    for _ in 0..requests {
        let trace = TraceHeader::sampled();
        let start = epoch_seconds(SystemTime::now());
        let docs: Vec<String> = (0..RTT_DOCUMENTS)
            .map(|i| {
                json!({
                    "id": new_segment_id(), "name": format!("work-{i}"), "start_time": start,
                    "end_time": start + 0.001, "type": "subsegment", "trace_id": trace.root,
                    "parent_id": trace.parent, "annotations": {"i": i},
                })
                .to_string()
            })
            .collect();
        let body = json!({"TraceSegmentDocuments": docs}).to_string();
        let request = http::Request::post("/TraceSegments")
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        sender.ready().await?;
        let t0 = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        out.push(ms(t0.elapsed()));
        anyhow::ensure!(status.is_success(), "the sink answered {status}");
    }
    driver.abort();
    Ok(out)
}

/// `rounds` rounds; in each, every strategy runs `invokes` warm invokes (the order rotates)
/// and the sink's round trip is timed.
pub async fn measure(bins: &Binaries, rounds: usize, invokes: usize) -> anyhow::Result<Vec<Row>> {
    let sink = XraySink::start().await?;
    let mut by_strategy: Vec<Rounds> = STRATEGIES.iter().map(|_| Rounds::default()).collect();
    let mut rtt_p50 = Vec::new();
    let mut rtt_p99 = Vec::new();
    for round in 0..rounds {
        let rtt = sink_round_trips(sink.addr(), RTT_REQUESTS)
            .await
            .context("timing the sink's round trip")?;
        sink.clear();
        rtt_p50.extend(percentile(&rtt, 50.0));
        rtt_p99.extend(percentile(&rtt, 99.0));
        for k in 0..STRATEGIES.len() {
            let index = (k + round) % STRATEGIES.len();
            let samples = run_strategy(bins, &sink, STRATEGIES[index], invokes)
                .await
                .with_context(|| format!("strategy {}", STRATEGIES[index]))?;
            let after: Vec<f64> = samples.iter().map(|s| s.after_delivery).collect();
            let billed: Vec<f64> = samples.iter().map(|s| s.billed).collect();
            let r = &mut by_strategy[index];
            r.p50.extend(percentile(&after, 50.0));
            r.p99.extend(percentile(&after, 99.0));
            r.billed_p50.extend(percentile(&billed, 50.0));
            r.early += samples.iter().filter(|s| s.early).count();
            r.invokes += samples.len();
        }
    }
    let rtt50 = super::report::summarize(&rtt_p50).map_or(f64::NAN, |s| s.median);
    let rtt99 = super::report::summarize(&rtt_p99).map_or(f64::NAN, |s| s.median);
    let supported = knows_flush_strategy(&bins.extension);
    let mut rows = vec![
        Row::new(
            format!("sink round trip p50 ({RTT_DOCUMENTS} documents, kept-alive connection)"),
            &rtt_p50,
            Unit::Ms,
            Target::None,
        ),
        Row::new("sink round trip p99", &rtt_p99, Unit::Ms, Target::None),
    ];
    for (strategy, r) in STRATEGIES.iter().zip(&by_strategy) {
        let (t50, t99, text50, text99) = if *strategy == "end" {
            (
                Target::AtMost(rtt50 + 2.0),
                Target::AtMost(rtt99 + 2.0),
                Some(format!("≤ RTT p50 + 2 ms = {:.2} ms", rtt50 + 2.0)),
                Some(format!("≤ RTT p99 + 2 ms = {:.2} ms", rtt99 + 2.0)),
            )
        } else {
            (Target::AtMost(1.0), Target::AtMost(5.0), None, None)
        };
        let mut p50 = Row::new(
            format!("post-runtime p50, {strategy}"),
            &r.p50,
            Unit::Ms,
            t50,
        );
        let mut p99 = Row::new(
            format!("post-runtime p99, {strategy}"),
            &r.p99,
            Unit::Ms,
            t99,
        );
        if let Some(t) = text50 {
            p50 = p50.target_text(t);
        }
        if let Some(t) = text99 {
            p99 = p99.target_text(t);
        }
        let mut notes = vec![format!(
            "runtimeDone delivered to our listener → our /event/next, per invoke; p50 and p99 per round; {} warm invokes over {rounds} rounds",
            r.invokes
        )];
        if !supported && *strategy != "end" {
            notes.push(format!(
                "this build has no {FLUSH_STRATEGY_VAR} setting, so it ran as `end`"
            ));
        }
        if r.early > 0 {
            notes.push(format!(
                "{} invokes called next before runtimeDone was delivered: for those, the runtime's next → our next",
                r.early
            ));
        }
        rows.push(p50.note(notes.join("; ")));
        rows.push(p99);
        rows.push(Row::new(
            format!("billed post-runtime p50, {strategy} (runtime's next → our next)"),
            &r.billed_p50,
            Unit::Ms,
            Target::None,
        ));
    }
    Ok(rows)
}
