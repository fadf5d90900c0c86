//! The enricher under the execution models beyond one-invocation-at-a-time on-demand: async
//! retries that reuse a request id, Lambda Managed Instances (start/report pairs in any order,
//! many at once), SnapStart (stale init records around the restore records), and documents
//! whose function-controlled fields are huge.

use serde_json::{Value, json};

use super::tests::{RECEIVED, children, close, invoke, names, record};
use super::*;
use crate::attempt::Attempts;
use crate::document::MAX_DOCUMENT_BYTES;
use crate::ingest::protocol::parse_document;
use crate::lambda::telemetry;
use crate::trace::IdSource;

const ROOT: &str = "1-62e900b2-710d76f009d6e7785905449a";
const PARENT: &str = "0efbd19962d95b05";
/// 2022-10-12T00:00:00Z.
const T0: f64 = 1_665_532_800.0;

fn header(root: &str, parent: &str) -> String {
    format!("Root={root};Parent={parent};Sampled=1")
}

fn iso(t: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "test times are whole microseconds since the epoch"
    )]
    let micros = (t * 1e6).round() as i64;
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// One Telemetry API element.
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers pass a json! temporary"
)]
fn rec(t: f64, kind: &str, record: Value) -> Value {
    json!({"time": iso(t), "type": format!("platform.{kind}"), "record": record})
}

fn tracing(h: &str) -> Value {
    json!({"type": "X-Amzn-Trace-Id", "value": h})
}

enum Step {
    Invoke(&'static str, String, f64),
    Telemetry(Vec<Value>),
    Shutdown(&'static str, f64),
}

fn env(init_type: &str) -> Environment {
    Environment {
        function_name: Some("orders".into()),
        function_version: Some("$LATEST".into()),
        memory_size_mb: Some(128),
        initialization_type: Some(InitializationType::parse(init_type)),
        extension_started: Some(EpochSeconds(T0 + 0.005)),
        extension_ready: Some(EpochSeconds(T0 + 0.040)),
    }
}

/// Runs `steps`; the documents of each step, checked by our own ingest and parsed.
fn run(env: Environment, steps: Vec<Step>) -> Vec<Vec<Value>> {
    let mut e = Enricher::with_ids(Settings::default(), env, IdSource::sequence(0x5000));
    let mut attempts = Attempts::new();
    steps
        .into_iter()
        .map(|step| {
            let docs = match step {
                Step::Invoke(id, h, at) => invoke(
                    &mut e,
                    &mut attempts,
                    &Invoke {
                        request_id: id.into(),
                        trace: Some(TraceHeader::parse(&h).unwrap()),
                        deadline: EpochSeconds(at + 3.0),
                        received_at: EpochSeconds(at),
                    },
                ),
                Step::Telemetry(records) => {
                    let body = Value::Array(records).to_string();
                    let decoded = telemetry::decode(body.as_bytes(), RECEIVED);
                    assert_eq!(decoded.skipped, 0);
                    decoded
                        .events
                        .iter()
                        .flat_map(|ev| record(&mut e, &mut attempts, ev))
                        .collect()
                }
                Step::Shutdown(reason, at) => {
                    e.on_shutdown(&ShutdownReason::parse(reason), EpochSeconds(at))
                }
            };
            docs.iter()
                .map(|d| {
                    let checked = parse_document(d.body.as_bytes()).unwrap();
                    assert_eq!(checked.id, d.id);
                    serde_json::from_str(d.body.text().unwrap()).unwrap()
                })
                .collect()
        })
        .collect()
}

fn done(t: f64, id: &str, h: &str, status: &str, error_type: Option<&str>) -> Value {
    rec(
        t,
        "runtimeDone",
        json!({"requestId": id, "status": status, "errorType": error_type, "tracing": tracing(h),
               "metrics": {"durationMs": 50.0},
               "spans": [{"name": "responseLatency", "start": iso(t - 0.05), "durationMs": 49.0}]}),
    )
}

fn on_demand_report(t: f64, id: &str, billed: u64, used: u64) -> Value {
    rec(
        t,
        "report",
        json!({"requestId": id, "status": "success",
               "metrics": {"durationMs": 60.0, "billedDurationMs": billed, "memorySizeMB": 128, "maxMemoryUsedMB": used},
               "spans": [{"name": "extensionOverhead", "start": iso(t - 0.01), "durationMs": 1.0}]}),
    )
}

/// Attempt 1 fails; Lambda retries under the same request id (new `Parent`) a minute later;
/// attempt 1's report arrives during attempt 2; a stale copy of attempt 1's runtimeDone is
/// delivered again. Each attempt keeps its own `Runtime` id, fault and figures.
#[test]
fn an_async_retry_reusing_the_request_id_keeps_both_attempts_apart() {
    let h1 = header(ROOT, PARENT);
    let h2 = header(ROOT, "1111111111111111");
    let t2 = T0 + 60.0;
    let steps = run(
        env("on-demand"),
        vec![
            Step::Invoke("r", h1.clone(), T0),
            Step::Telemetry(vec![
                rec(
                    T0,
                    "start",
                    json!({"requestId": "r", "tracing": tracing(&h1)}),
                ),
                done(T0 + 0.05, "r", &h1, "error", Some("Handled.Boom")),
            ]),
            Step::Invoke("r", h2.clone(), t2),
            Step::Telemetry(vec![on_demand_report(T0 + 0.06, "r", 61, 70)]),
            Step::Telemetry(vec![rec(
                t2,
                "start",
                json!({"requestId": "r", "tracing": tracing(&h2)}),
            )]),
            Step::Telemetry(vec![done(t2 + 0.05, "r", &h2, "success", None)]),
            // A redelivered runtimeDone of attempt 1: attempt 1 again, same id.
            Step::Telemetry(vec![done(
                T0 + 0.05,
                "r",
                &h1,
                "error",
                Some("Handled.Boom"),
            )]),
            Step::Telemetry(vec![on_demand_report(t2 + 0.06, "r", 99, 90)]),
        ],
    );
    let first = steps[1].iter().find(|d| d["name"] == "Runtime").unwrap();
    assert_eq!(first["fault"], true);
    assert_eq!(first["parent_id"], PARENT);
    // INVOKE 2 sends nothing yet; the report of attempt 1 re-sends attempt 1 only.
    assert!(steps[2].is_empty(), "{:?}", steps[2]);
    assert_eq!(names(&steps[3]), ["Runtime"]);
    let first_again = &steps[3][0];
    assert_eq!(first_again["id"], first["id"]);
    assert_eq!(first_again["fault"], true);
    assert_eq!(first_again["metadata"]["lambda"]["billedDurationMs"], 61);
    assert!(steps[4].is_empty());
    // Attempt 2: its own id, under its own parent, no fault, no figures of attempt 1.
    assert_eq!(names(&steps[5]), ["Runtime"]);
    let second = &steps[5][0];
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["parent_id"], "1111111111111111");
    assert!(second.get("fault").is_none(), "{second}");
    assert!(
        second["metadata"]["lambda"]
            .get("billedDurationMs")
            .is_none()
    );
    assert_eq!(second["annotations"]["ColdStart"], false);
    assert!(close(&second["start_time"], t2));
    // The redelivered runtimeDone re-sends attempt 1 (same id, still its fault).
    assert_eq!(names(&steps[6]), ["Runtime"]);
    assert_eq!(steps[6][0]["id"], first["id"]);
    assert_eq!(steps[6][0]["fault"], true);
    // Attempt 2's report: attempt 2's figures.
    assert_eq!(steps[7][0]["id"], second["id"]);
    assert_eq!(steps[7][0]["metadata"]["lambda"]["billedDurationMs"], 99);
    assert!(steps[7][0].get("fault").is_none());
}

fn lmi_start(t: f64, id: &str, h: &str) -> Value {
    rec(
        t,
        "start",
        json!({"requestId": id, "version": "$LATEST", "tracing": tracing(h)}),
    )
}

/// The report Lambda Managed Instances send: `durationMs` only, and two spans.
fn lmi_report(start: f64, id: &str, h: &str, status: &str, latency_ms: f64) -> Value {
    let duration = latency_ms + 2.0;
    let mut record = json!({"requestId": id, "status": status, "tracing": tracing(h),
        "metrics": {"durationMs": duration},
        "spans": [{"name": "responseLatency", "start": iso(start), "durationMs": latency_ms},
                  {"name": "responseDuration", "start": iso(start + latency_ms / 1e3), "durationMs": 2.0}]});
    if status != "success" {
        record["errorType"] = json!("Function.Boom");
    }
    rec(start + duration / 1e3, "report", record)
}

fn lmi_init() -> Vec<Value> {
    let init = json!({"initializationType": "lambda-managed-instances", "phase": "init",
                      "runtimeVersion": "python:3.13.v5", "functionName": "orders",
                      "functionVersion": "1", "instanceId": "i-1"});
    vec![
        rec(T0 - 30.0, "initStart", init),
        rec(
            T0 - 29.0,
            "initRuntimeDone",
            json!({"initializationType": "lambda-managed-instances", "phase": "init", "status": "success"}),
        ),
        rec(
            T0 - 29.0,
            "initReport",
            json!({"initializationType": "lambda-managed-instances", "phase": "init", "status": "success", "metrics": {"durationMs": 1000.0}}),
        ),
    ]
}

/// Many invocations at once, start and report in either order, interleaved: one `Runtime`
/// each, sent once both records are in, from the start to start + durationMs, with the report's
/// spans; an error in the report is a fault; never `Cold Start`.
#[test]
fn managed_instances_pair_start_and_report_in_any_order() {
    const N: usize = 40;
    let roots: Vec<String> = (0..N).map(|i| format!("1-62e900b2-{i:024x}")).collect();
    let hs: Vec<String> = roots.iter().map(|r| header(r, PARENT)).collect();
    let ids: Vec<String> = (0..N).map(|i| format!("req-{i}")).collect();
    let at = |i: usize| T0 + 0.01 * f64::from(u32::try_from(i).unwrap());
    let mut records = lmi_init();
    // Starts of all, then reports; every third request's report comes before its start.
    let mut late_starts = Vec::new();
    for i in 0..N {
        if i % 3 == 0 {
            late_starts.push(lmi_start(at(i), &ids[i], &hs[i]));
        } else {
            records.push(lmi_start(at(i), &ids[i], &hs[i]));
        }
    }
    for i in (0..N).rev() {
        let status = if i == 7 { "error" } else { "success" };
        records.push(lmi_report(at(i), &ids[i], &hs[i], status, 100.0));
    }
    records.extend(late_starts);
    // A start whose report never comes, and records after a long quiet spell.
    records.push(lmi_start(at(N), "lost", &header(ROOT, PARENT)));
    let steps = run(
        env("lambda-managed-instances"),
        vec![Step::Telemetry(records)],
    );
    let docs = &steps[0];
    assert_eq!(docs.len(), N, "{:?}", names(docs));
    assert!(docs.iter().all(|d| d["name"] == "Runtime"));
    for (i, root) in roots.iter().enumerate() {
        let d = docs.iter().find(|d| &d["trace_id"] == root).unwrap();
        assert!(close(&d["start_time"], at(i)), "{d}");
        assert!(close(&d["end_time"], at(i) + 0.102), "{d}");
        assert_eq!(children(d), ["Response Latency", "Response Duration"]);
        let a = &d["annotations"];
        assert_eq!(a["ColdStart"], false);
        assert_eq!(a["InitType"], "lambda-managed-instances");
        assert_eq!(d["metadata"]["lambda"]["requestId"], ids[i].as_str());
        assert_eq!(d.get("fault").is_some(), i == 7, "{d}");
    }
    let faulted = docs.iter().find(|d| d.get("fault").is_some()).unwrap();
    assert_eq!(faulted["cause"]["exceptions"][0]["type"], "Function.Boom");
    let unique: std::collections::HashSet<&str> =
        docs.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), N);
}

/// Pairs that never complete are forgotten by age (a report without its start is still sent,
/// placed by its spans); the table stays bounded under many concurrent requests.
#[test]
fn managed_instances_state_is_bounded_in_count_and_age() {
    let h = header(ROOT, PARENT);
    let mut e = Enricher::with_ids(
        Settings::default(),
        env("lambda-managed-instances"),
        IdSource::sequence(1),
    );
    let mut attempts = Attempts::new();
    let decode =
        |v: Vec<Value>| telemetry::decode(Value::Array(v).to_string().as_bytes(), RECEIVED).events;
    // A report whose start is lost, and a start whose report is lost.
    for ev in decode(vec![
        lmi_report(T0, "orphan-report", &h, "success", 10.0),
        lmi_start(T0, "orphan-start", &h),
    ]) {
        assert!(record(&mut e, &mut attempts, &ev).is_empty());
    }
    // Much later traffic: the orphans are forgotten; the report is still sent.
    let later = T0 + state::MAX_INVOCATION_AGE_SECONDS + 1.0;
    let docs: Vec<Document> = decode(vec![lmi_start(later, "new", &h)])
        .iter()
        .flat_map(|ev| record(&mut e, &mut attempts, ev))
        .collect();
    assert_eq!(docs.len(), 1);
    let orphan: Value = serde_json::from_str(docs[0].body.text().unwrap()).unwrap();
    assert_eq!(orphan["metadata"]["lambda"]["requestId"], "orphan-report");
    assert!(close(&orphan["start_time"], T0));
    assert_eq!(e.invocations.len(), 1);
    // Many open starts at once: never more than the bound.
    let starts: Vec<Value> = (0..(state::MAX_TRACKED_CONCURRENT_INVOCATIONS + 50))
        .map(|i| lmi_start(later + 1.0, &format!("c-{i}"), &h))
        .collect();
    for ev in decode(starts) {
        record(&mut e, &mut attempts, &ev);
    }
    assert_eq!(
        e.invocations.len(),
        state::MAX_TRACKED_CONCURRENT_INVOCATIONS
    );
}

fn stale_init() -> Vec<Value> {
    let day_before = T0 - 86_400.0;
    vec![
        rec(
            day_before,
            "initStart",
            json!({"initializationType": "snap-start", "phase": "init", "runtimeVersion": "java:21.v20", "functionName": "orders", "functionVersion": "3", "instanceId": "snapshot"}),
        ),
        rec(
            day_before + 2.4,
            "initRuntimeDone",
            json!({"initializationType": "snap-start", "phase": "init", "status": "success"}),
        ),
        rec(
            day_before + 2.41,
            "initReport",
            json!({"initializationType": "snap-start", "phase": "init", "status": "success", "metrics": {"durationMs": 2410.0}}),
        ),
    ]
}

fn restore() -> Vec<Value> {
    vec![
        rec(
            T0 - 0.2,
            "restoreStart",
            json!({"runtimeVersion": "java:21.v20", "functionName": "orders", "functionVersion": "3", "instanceId": "i-restored"}),
        ),
        rec(
            T0 - 0.05,
            "restoreRuntimeDone",
            json!({"status": "success"}),
        ),
        rec(
            T0 - 0.04,
            "restoreReport",
            json!({"status": "success", "metrics": {"durationMs": 160.0}}),
        ),
    ]
}

/// The stale init records of the snapshot's creation, delivered before, between and after the
/// restore records, and before or after the first invocation's records (with the initialization
/// type known from our variable or only from the records): never `Cold Start`, never any
/// subsegment of the snapshot's init; `Restore` once; `ColdStart=true` and `InitType=snap-start`
/// on the first invocation only.
#[test]
fn stale_init_records_never_make_a_cold_start_after_a_restore() {
    let h = header(ROOT, PARENT);
    let invocation = |id: &str, t: f64, h: &str| {
        vec![
            rec(t, "start", json!({"requestId": id, "tracing": tracing(h)})),
            done(t + 0.05, id, h, "success", None),
        ]
    };
    let (stale, restored) = (stale_init(), restore());
    // Where the stale records go among: restore[0], restore[1], restore[2], first invocation.
    for env_type in ["snap-start", ""] {
        for stale_at in 0..=4 {
            for (split, invocation_first) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let mut telemetry: Vec<Vec<Value>> = vec![
                    vec![restored[0].clone()],
                    vec![restored[1].clone()],
                    vec![restored[2].clone()],
                    invocation("r-1", T0, &h),
                ];
                if split {
                    // One stale record before, one between, one after.
                    telemetry[0].insert(0, stale[0].clone());
                    telemetry[2].insert(0, stale[1].clone());
                    telemetry[3].push(stale[2].clone());
                } else if stale_at == 4 {
                    telemetry.push(stale.clone());
                } else {
                    let mut group = stale.clone();
                    group.append(&mut telemetry[stale_at]);
                    telemetry[stale_at] = group;
                }
                if invocation_first {
                    // The first invocation's records before any restore record.
                    telemetry.rotate_right(1);
                }
                let mut steps: Vec<Step> = vec![Step::Invoke("r-1", h.clone(), T0)];
                steps.extend(telemetry.into_iter().map(Step::Telemetry));
                steps.push(Step::Invoke("r-2", h.clone(), T0 + 5.0));
                steps.push(Step::Telemetry(invocation("r-2", T0 + 5.0, &h)));
                steps.push(Step::Telemetry(stale.clone()));
                let mut environment = env(env_type);
                if env_type.is_empty() {
                    environment.initialization_type = None;
                }
                let all: Vec<Value> = run(environment, steps).into_iter().flatten().collect();
                let case = format!(
                    "env {env_type:?}, stale at {stale_at}, split {split}, invocation first {invocation_first}"
                );
                let kinds: std::collections::BTreeSet<&str> = names(&all).into_iter().collect();
                assert_eq!(
                    kinds,
                    ["Restore", "Runtime"].into_iter().collect(),
                    "{case}: {all:?}"
                );
                for d in &all {
                    assert!(d["start_time"].as_f64().unwrap() > T0 - 1.0, "{case}: {d}");
                }
                let restore_ids: std::collections::BTreeSet<&str> = all
                    .iter()
                    .filter(|d| d["name"] == "Restore")
                    .map(|d| d["id"].as_str().unwrap())
                    .collect();
                assert_eq!(restore_ids.len(), 1, "{case}");
                let runtimes: Vec<&Value> = all.iter().filter(|d| d["name"] == "Runtime").collect();
                let first = runtimes
                    .iter()
                    .rfind(|d| d["metadata"]["lambda"]["requestId"] == "r-1")
                    .unwrap();
                let second = runtimes
                    .iter()
                    .rfind(|d| d["metadata"]["lambda"]["requestId"] == "r-2")
                    .unwrap();
                assert_eq!(first["annotations"]["ColdStart"], true, "{case}");
                assert_eq!(first["annotations"]["InitType"], "snap-start", "{case}");
                assert_eq!(second["annotations"]["ColdStart"], false, "{case}");
                assert!(
                    first["annotations"].get("ProactiveInit").is_none(),
                    "{case}"
                );
            }
        }
    }
}

/// The function controls `errorType`: a megabyte of it still gives a document within limits.
#[test]
fn a_huge_error_type_is_clipped_to_a_valid_document() {
    let h = header(ROOT, PARENT);
    let huge = "E".repeat(1_000_000);
    let steps = run(
        env("on-demand"),
        vec![
            Step::Invoke("r", h.clone(), T0),
            Step::Telemetry(vec![
                rec(
                    T0,
                    "start",
                    json!({"requestId": "r", "tracing": tracing(&h)}),
                ),
                done(T0 + 0.05, "r", &h, "error", Some(&huge)),
            ]),
        ],
    );
    let runtime = steps[1].iter().find(|d| d["name"] == "Runtime").unwrap();
    assert!(runtime.to_string().len() < MAX_DOCUMENT_BYTES / 4);
    let kind = runtime["cause"]["exceptions"][0]["type"].as_str().unwrap();
    assert_eq!(kind.len(), document::MAX_FIELD_CHARS);
    assert_eq!(
        runtime["metadata"]["lambda"]["errorType"]
            .as_str()
            .unwrap()
            .len(),
        document::MAX_FIELD_CHARS
    );
}

/// SHUTDOWN with an invocation still running on Lambda Managed Instances: its `Runtime` goes
/// with the "did not finish" fault; should its report still come, the report replaces it.
#[test]
fn managed_instances_shutdown_reports_what_is_still_running() {
    let h = header(ROOT, PARENT);
    let steps = run(
        env("lambda-managed-instances"),
        vec![
            Step::Telemetry(vec![lmi_start(T0, "r", &h)]),
            Step::Shutdown("spindown", T0 + 1.0),
            Step::Telemetry(vec![lmi_report(T0, "r", &h, "success", 1200.0)]),
        ],
    );
    assert!(steps[0].is_empty());
    assert_eq!(names(&steps[1]), ["Runtime"]);
    assert_eq!(steps[1][0]["fault"], true);
    assert_eq!(names(&steps[2]), ["Runtime"]);
    assert_eq!(steps[2][0]["id"], steps[1][0]["id"]);
    assert!(steps[2][0].get("fault").is_none(), "{}", steps[2][0]);
    assert!(close(&steps[2][0]["end_time"], T0 + 1.202));
}

/// Lambda Managed Instances' reports as AWS's runtime core writes them for an invocation that
/// timed out or whose runtime exited: only `durationMs`, no spans, `errorType` set.
#[test]
fn managed_instances_reports_of_a_timeout_and_an_exit_fault_their_runtime() {
    let (h1, h2) = (header(ROOT, PARENT), header(ROOT, "1efbd19962d95b06"));
    let start = |t: f64, id: &str, h: &str| {
        rec(
            t,
            "start",
            json!({"requestId": id, "version": "$LATEST", "tracing": tracing(h)}),
        )
    };
    let report = |t: f64, id: &str, status: &str, error_type: &str, ms: f64| {
        rec(
            t,
            "report",
            json!({"requestId": id, "status": status, "errorType": error_type,
                   "metrics": {"durationMs": ms}}),
        )
    };
    let steps = run(
        env("lambda-managed-instances"),
        vec![Step::Telemetry(vec![
            start(T0 + 1.0, "timed-out", &h1),
            start(T0 + 1.5, "exited", &h2),
            report(T0 + 1.6, "exited", "error", "Runtime.ExitError", 12.5),
            report(
                T0 + 4.1,
                "timed-out",
                "timeout",
                "Sandbox.Timedout",
                3000.125,
            ),
        ])],
    );
    assert_eq!(names(&steps[0]), ["Runtime", "Runtime"]);
    let exited = &steps[0][0];
    assert_eq!(exited["fault"], true);
    assert_eq!(
        exited["cause"]["exceptions"][0]["type"],
        "Runtime.ExitError"
    );
    assert!(close(&exited["end_time"], T0 + 1.5125));
    let timed_out = &steps[0][1];
    assert_eq!(timed_out["fault"], true);
    assert_eq!(
        timed_out["cause"]["exceptions"][0]["type"],
        "Sandbox.Timedout"
    );
    assert!(close(&timed_out["end_time"], T0 + 4.000_125));
    for d in &steps[0] {
        assert_eq!(d["annotations"]["InitType"], "lambda-managed-instances");
        assert!(d.get("subsegments").is_none(), "no spans, no children: {d}");
    }
}
