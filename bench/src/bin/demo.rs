//! `make demo`: the extension end to end on a local Lambda, no AWS account.
//!
//! Starts the embedded X-Ray sink and the emulator with the real extension and the sample
//! function, runs a cold start, warm invocations (one with OpenTelemetry spans, which go to X-Ray's
//! OTLP endpoint: `XRAY_EXTENSION_SPAN_DESTINATION=otlp`, the sink's `/v1/traces`), an error and
//! a shutdown, then two invocations
//! of tenant `blue` of the same function with tenant isolation, then prints every trace
//! the sink received as a tree (offsets and durations in milliseconds) and a summary line, and
//! writes the same traces as a timeline to one self-contained HTML file (`XRAY_DEMO_HTML`, by
//! default `demo-timeline.html` beside the binary), whose path it prints last.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    Emulator, ExtensionSpec, FunctionSpec, Invocation, Invoke, ShutdownReport,
};
use xray_extension_tests::extension_log::{self, EXTENSION};
use xray_extension_tests::net;
use xray_extension_tests::sink::{Operation, ReceivedDocument, ReceivedSpan, XraySink};
use xray_extension_tests::timeline;
use xray_extension_tests::trace::TraceHeader;

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.parent().ok_or("no parent directory")?.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `make build` first",
            path.display()
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The local Lambda with the real extension and the sample function; `tenant_isolation` for a
/// function created with `TenantIsolationMode=PER_TENANT`.
async fn start_lambda(
    sink: &XraySink,
    udp_port: u16,
    telemetry_port: u16,
    tenant_isolation: bool,
) -> Result<Emulator, Box<dyn std::error::Error>> {
    Ok(Emulator::builder()
        .extension(
            ExtensionSpec::new(sibling(EXTENSION)?)
                .env(
                    "XRAY_EXTENSION_UDP_ADDRESS",
                    format!("127.0.0.1:{udp_port}"),
                )
                .env("XRAY_EXTENSION_TELEMETRY_PORT", telemetry_port.to_string())
                .env("XRAY_EXTENSION_ANNOTATIONS", "team=demo")
                .env("XRAY_EXTENSION_SPAN_DESTINATION", "otlp"),
        )
        .function(
            FunctionSpec::command([sibling("sample-function")?])
                .env("AWS_XRAY_DAEMON_ADDRESS", format!("127.0.0.1:{udp_port}")),
        )
        .function_name("demo-orders")
        .function_timeout(Duration::from_secs(3))
        .tenant_isolation(tenant_isolation)
        .xray_endpoint(sink.endpoint())
        .start()
        .await?)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let sink = XraySink::start().await?;
    let udp_port = net::free_udp_port()?;
    let telemetry_port = net::free_tcp_port()?;
    let mut lambda = start_lambda(&sink, udp_port, telemetry_port, false).await?;

    println!(
        "local Lambda at {}, X-Ray sink at {}",
        lambda.runtime_api(),
        sink.endpoint()
    );
    println!();
    let plan = [
        ("cold start", json!({"subsegments": 2, "sleep_ms": 20})),
        ("warm", json!({"subsegments": 3, "sleep_ms": 10})),
        ("warm", json!({"subsegments": 1, "sleep_ms": 5})),
        ("warm", json!({"subsegments": 2})),
        ("OpenTelemetry", json!({"subsegments": 1, "otel_spans": 2})),
        ("error", json!({"subsegments": 1, "error": true})),
    ];
    let mut roots = Vec::new();
    let mut function_ids = HashSet::new();
    for (label, event) in plan {
        let trace = TraceHeader::sampled();
        let inv = lambda
            .invoke(Invoke::new(event).traced(trace.clone()))
            .await?;
        print_invocation(label, &inv);
        function_ids.extend(sent_ids(&inv));
        roots.push((label, trace.root));
    }
    for timing in lambda.extension_init_times() {
        if let (Some(init), Some(register)) = (timing.init_duration(), timing.register_duration()) {
            println!(
                "init         extension {}: spawn → register {:.1} ms, spawn → first /event/next {:.1} ms",
                timing.name,
                register.as_secs_f64() * 1e3,
                init.as_secs_f64() * 1e3
            );
        }
    }
    let report = lambda.shutdown().await?;
    print_shutdown(&report);
    let mut counters = extension_log::counters(&lambda).unwrap_or_default();

    // The same function with tenant isolation: each tenant's invocations run in environments of
    // their own, and our subsegments carry its id (`annotation.TenantId = "blue"`).
    let mut tenant_lambda = start_lambda(&sink, udp_port, telemetry_port, true).await?;
    for (label, event) in [
        ("tenant blue", json!({"subsegments": 1, "sleep_ms": 10})),
        ("tenant blue", json!({"subsegments": 1})),
    ] {
        let trace = TraceHeader::sampled();
        let inv = tenant_lambda
            .invoke(Invoke::new(event).traced(trace.clone()).tenant("blue"))
            .await?;
        print_invocation(label, &inv);
        function_ids.extend(sent_ids(&inv));
        roots.push((label, trace.root));
    }
    print_shutdown(&tenant_lambda.shutdown().await?);
    for (key, value) in extension_log::counters(&tenant_lambda).unwrap_or_default() {
        *counters.entry(key).or_default() += value;
    }
    println!();

    let mut docs = sink.documents();
    let spans = sink.spans();
    // OpenTelemetry spans (decoded from the T1S documents) join the tree by their parent ids.
    docs.extend(spans.iter().map(span_as_document));
    for (label, root) in &roots {
        println!("trace {root}  ({label})");
        print_tree(&docs, root);
        println!();
    }
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    println!(
        "summary: documents received {} (rejected {}), generated {}, sent {}, PutTraceSegments calls {}, distinct documents in X-Ray {}",
        get("received"),
        get("rejected"),
        get("generated"),
        get("sent"),
        sink.put_calls().len(),
        docs.len() - spans.len()
    );
    print_otel_summary(&sink, &spans);
    let span_ids: HashSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
    let html = write_timeline(&docs, &roots, &function_ids, &span_ids)?;
    println!("timeline: {}", html.display());
    Ok(())
}

/// Where the OpenTelemetry spans went: the OTLP endpoint's requests, or T1S/T1U documents.
fn print_otel_summary(sink: &XraySink, spans: &[ReceivedSpan]) {
    // Spans from /v1/traces carry no document; the others were decoded from T1S/T1U ones.
    let documents: HashSet<&str> = spans
        .iter()
        .map(|s| s.document.as_str())
        .filter(|d| !d.is_empty())
        .collect();
    let requests: Vec<_> = sink
        .calls()
        .into_iter()
        .filter(|c| c.operation == Operation::OtlpTraces)
        .filter_map(|c| c.traces)
        .collect();
    let at_endpoint: usize = requests.iter().map(|t| t.spans).sum();
    println!(
        "OpenTelemetry: {} spans; {} at the OTLP endpoint /v1/traces in {} signed, gzip'd requests ({} bytes, {} on the wire); {} decoded from {} T1S/T1U documents on PutTraceSegments",
        spans.len(),
        at_endpoint,
        requests.len(),
        requests.iter().map(|t| t.raw_bytes).sum::<usize>(),
        requests.iter().map(|t| t.wire_bytes).sum::<usize>(),
        spans.len() - at_endpoint,
        documents.len()
    );
}

/// An OpenTelemetry span drawn like a subsegment: its name marked, its times in seconds.
fn span_as_document(span: &ReceivedSpan) -> ReceivedDocument {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let seconds = |ns: u64| ns as f64 / 1e9;
    // A span the OTLP endpoint took came in no document.
    let via = if span.document.is_empty() {
        "OTel, /v1/traces"
    } else {
        "OTel"
    };
    ReceivedDocument {
        id: span.span_id.clone(),
        trace_id: span.trace_id.clone(),
        raw: span.document.clone(),
        value: json!({
            "name": format!("{} ({via})", span.name),
            "id": span.span_id,
            "parent_id": span.parent_span_id,
            "start_time": seconds(span.start_time_unix_nano),
            "end_time": seconds(span.end_time_unix_nano),
            "annotations": {"service.name": span.service_name, "sampled": span.sampled},
        }),
        at: std::time::Instant::now(),
        put_index: 0,
    }
}

/// Writes every trace as a timeline to one HTML file and returns its path.
fn write_timeline(
    docs: &[ReceivedDocument],
    roots: &[(&str, String)],
    function_ids: &HashSet<String>,
    span_ids: &HashSet<String>,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    // The function's documents: those it reports sending, and those without our `origin` (an
    // erroring invocation reports nothing; the SDK's subsegments carry no origin).
    let source_of = |d: &ReceivedDocument| {
        if span_ids.contains(&d.id) {
            timeline::Source::OpenTelemetry
        } else if function_ids.contains(&d.id) || d.value.get("origin").is_none() {
            timeline::Source::Function
        } else {
            timeline::Source::Extension
        }
    };
    let traces: Vec<timeline::Trace> = roots
        .iter()
        .map(|(label, root)| timeline::Trace {
            id: root.clone(),
            label: (*label).to_owned(),
            rows: timeline::rows_from_documents(docs, root, &source_of),
        })
        .collect();
    let html = html_path()?;
    std::fs::write(
        &html,
        timeline::render_html("make demo: every trace", &traces),
    )?;
    Ok(html)
}

/// Where the timeline goes: `XRAY_DEMO_HTML`, or beside the binary.
fn html_path() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os("XRAY_DEMO_HTML") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .ok_or("no parent directory")?
        .join("demo-timeline.html"))
}

fn print_shutdown(report: &ShutdownReport) {
    if let Some(ext) = report.extension(EXTENSION) {
        println!(
            "shutdown     extension exit {:?} in {} ms (deadline 2000 ms)",
            ext.exit_code(),
            ext.took.map_or(0, |d| d.as_millis())
        );
    }
}

/// The ids of the documents the function reports it sent.
fn sent_ids(inv: &Invocation) -> Vec<String> {
    inv.response_json()
        .and_then(|v| v.get("sent_ids").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn print_invocation(label: &str, inv: &Invocation) {
    let ms = |d: Option<Duration>| {
        d.map_or(String::from("-"), |d| {
            format!("{:.1}", d.as_secs_f64() * 1e3)
        })
    };
    println!(
        "{label:<12} request {}  status {:<7} response {:>6} ms  post-runtime {:>5} ms{}",
        &inv.request_id[..8],
        inv.status.as_str(),
        ms(inv.response_latency()),
        ms(inv.post_runtime),
        if inv.cold { "  (cold)" } else { "" }
    );
}

/// One node of the printed tree: a document or an embedded subsegment.
struct Node<'a> {
    value: &'a Value,
    children: Vec<Node<'a>>,
}

fn print_tree(docs: &[ReceivedDocument], root: &str) {
    let in_trace: Vec<&ReceivedDocument> = docs.iter().filter(|d| d.trace_id == root).collect();
    if in_trace.is_empty() {
        println!("  (nothing)");
        return;
    }
    let t0 = in_trace
        .iter()
        .map(|d| d.value["start_time"].as_f64().unwrap_or(f64::MAX))
        .fold(f64::MAX, f64::min);
    let ids: HashMap<&str, &ReceivedDocument> =
        in_trace.iter().map(|d| (d.id.as_str(), *d)).collect();
    let mut by_parent: BTreeMap<String, Vec<&ReceivedDocument>> = BTreeMap::new();
    let mut tops = Vec::new();
    for d in &in_trace {
        match d.parent_id() {
            Some(p) if ids.contains_key(p) => by_parent.entry(p.to_owned()).or_default().push(d),
            _ => tops.push(*d),
        }
    }
    let parent = tops.first().and_then(|d| d.parent_id()).unwrap_or("-");
    println!("  AWS::Lambda::Function {parent} (Lambda's segment)");
    let mut nodes: Vec<Node<'_>> = tops.iter().map(|d| build(d, &by_parent)).collect();
    sort(&mut nodes);
    let count = nodes.len();
    for (i, n) in nodes.iter().enumerate() {
        print_node(n, t0, "  ", i + 1 == count);
    }
}

fn build<'a>(
    d: &'a ReceivedDocument,
    by_parent: &BTreeMap<String, Vec<&'a ReceivedDocument>>,
) -> Node<'a> {
    let mut children: Vec<Node<'a>> = embedded(&d.value);
    if let Some(kids) = by_parent.get(&d.id) {
        children.extend(kids.iter().map(|k| build(k, by_parent)));
    }
    sort(&mut children);
    Node {
        value: &d.value,
        children,
    }
}

fn embedded(v: &Value) -> Vec<Node<'_>> {
    v["subsegments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| Node {
                    value: c,
                    children: embedded(c),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sort(nodes: &mut [Node<'_>]) {
    nodes.sort_by(|a, b| {
        let s = |n: &Node<'_>| n.value["start_time"].as_f64().unwrap_or(0.0);
        s(a).total_cmp(&s(b))
    });
}

fn print_node(n: &Node<'_>, t0: f64, indent: &str, last: bool) {
    let v = n.value;
    let start = v["start_time"].as_f64().unwrap_or(t0);
    let end = v["end_time"].as_f64().unwrap_or(start);
    let mut extra = String::new();
    if v["fault"] == json!(true) {
        let msg = v["cause"]["exceptions"][0]["message"]
            .as_str()
            .unwrap_or("fault");
        let _ = write!(extra, "  FAULT: {msg}");
    }
    if let Some(a) = v["annotations"].as_object() {
        let pairs: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(extra, "  [{}]", pairs.join(" "));
    }
    if let Some(billed) = v["metadata"]["lambda"]["billedDurationMs"].as_u64() {
        let _ = write!(extra, "  billed {billed} ms");
    }
    println!(
        "{indent}{} {:<20} +{:>8.1} ms {:>8.1} ms{extra}",
        if last { "└─" } else { "├─" },
        v["name"].as_str().unwrap_or("?"),
        (start - t0) * 1e3,
        (end - start) * 1e3,
    );
    let child_indent = format!("{indent}{}", if last { "   " } else { "│  " });
    let count = n.children.len();
    for (i, c) in n.children.iter().enumerate() {
        print_node(c, t0, &child_indent, i + 1 == count);
    }
}
