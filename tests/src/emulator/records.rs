//! Builders of the `platform.*` telemetry records (contracts §2), pure: times come in.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::config::{EmulatorConfig, InitializationType};
use crate::clock::{Clock, millis_f64};

/// The `tracing` object of `platform.start`/`runtimeDone`/`report`.
pub(crate) fn tracing(span_id: &str, header: &str) -> Value {
    json!({"spanId": span_id, "type": "X-Amzn-Trace-Id", "value": header})
}

pub(crate) fn init_start(
    config: &EmulatorConfig,
    init_type: InitializationType,
    phase: &str,
    instance_id: &str,
) -> Value {
    let mut record = restore_start(config, instance_id);
    record["initializationType"] = json!(init_type.as_str());
    record["phase"] = json!(phase);
    // Beside the documented fields, as AWS's runtime core writes them.
    record["runtimeArn"] = json!(config.runtime_version_arn());
    record["functionArn"] = json!(config.function_arn());
    record
}

pub(crate) fn init_runtime_done(
    init_type: InitializationType,
    phase: &str,
    status: &str,
    error_type: Option<&str>,
) -> Value {
    let mut record = json!({
        "initializationType": init_type.as_str(),
        "phase": phase,
        "status": status,
    });
    if let Some(error_type) = error_type {
        record["errorType"] = json!(error_type);
    }
    record
}

pub(crate) fn init_report(
    init_type: InitializationType,
    phase: &str,
    status: &str,
    error_type: Option<&str>,
    duration: Duration,
) -> Value {
    let mut record = init_runtime_done(init_type, phase, status, error_type);
    record["metrics"] = json!({"durationMs": millis_f64(duration)});
    record
}

/// `platform.restoreStart` (SnapStart): who is restored, no initialization type or phase.
pub(crate) fn restore_start(config: &EmulatorConfig, instance_id: &str) -> Value {
    json!({
        "runtimeVersion": config.runtime_version,
        "runtimeVersionArn": config.runtime_version_arn(),
        "functionName": config.function_name,
        "functionVersion": config.function_version,
        "instanceId": instance_id,
        "instanceMaxMemory": u64::from(config.memory_mb) * 1024 * 1024,
    })
}

/// `platform.restoreRuntimeDone`.
pub(crate) fn restore_runtime_done() -> Value {
    json!({"status": "success"})
}

/// `platform.restoreReport`.
pub(crate) fn restore_report(duration: Duration) -> Value {
    json!({"status": "success", "metrics": {"durationMs": millis_f64(duration)}})
}

pub(crate) fn extension(name: &str, events: &[String]) -> Value {
    json!({"name": name, "state": "Ready", "events": events})
}

pub(crate) fn telemetry_subscription(name: &str, types: &[String]) -> Value {
    json!({"name": name, "state": "Subscribed", "types": types})
}

/// `platform.start`; `tenantId` only for a function with tenant isolation.
pub(crate) fn start(
    request_id: &str,
    version: &str,
    tracing: Option<&Value>,
    tenant_id: Option<&str>,
) -> Value {
    let mut record = json!({"requestId": request_id, "version": version});
    if let Some(tracing) = tracing {
        record["tracing"] = tracing.clone();
    }
    if let Some(tenant) = tenant_id {
        record["tenantId"] = json!(tenant);
    }
    record
}

/// What `platform.runtimeDone` reports.
pub(crate) struct RuntimeDone<'a> {
    pub request_id: &'a str,
    pub status: &'a str,
    pub error_type: Option<&'a str>,
    pub tracing: Option<&'a Value>,
    pub started_at: Instant,
    /// Response (or error) head received; `None` when the runtime never answered.
    pub response: Option<ResponseTiming>,
    pub done_at: Instant,
    pub produced_bytes: usize,
    /// The tenant (tenant isolation); runtimeDone says `""` without one, as AWS's runtime core
    /// writes it.
    pub tenant_id: Option<&'a str>,
}

/// When a response arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseTiming {
    pub head_at: Instant,
    pub body_done_at: Instant,
}

pub(crate) fn runtime_done(clock: &Clock, done: &RuntimeDone<'_>) -> Value {
    // From the invoke to the runtime's next, as AWS's emulator measures it.
    let duration = done.done_at.saturating_duration_since(done.started_at);
    let mut record = Map::new();
    record.insert("requestId".into(), json!(done.request_id));
    record.insert("status".into(), json!(done.status));
    record.insert("tenantId".into(), json!(done.tenant_id.unwrap_or_default()));
    if let Some(error_type) = done.error_type {
        record.insert("errorType".into(), json!(error_type));
    }
    if let Some(tracing) = done.tracing {
        record.insert("tracing".into(), tracing.clone());
    }
    record.insert(
        "metrics".into(),
        json!({"durationMs": millis_f64(duration), "producedBytes": done.produced_bytes}),
    );
    // AWS's runtime core writes an object here; its contents are not documented.
    record.insert("internalMetrics".into(), json!({}));
    if let Some(response) = done.response {
        let span = |name: &str, from: Instant, to: Instant| span(clock, name, from, to);
        record.insert(
            "spans".into(),
            json!([
                span("responseLatency", done.started_at, response.head_at),
                span("responseDuration", response.head_at, response.body_done_at),
                span("runtimeOverhead", response.body_done_at, done.done_at),
            ]),
        );
    }
    Value::Object(record)
}

/// `platform.end`, which AWS's runtime core writes after an invocation's runtimeDone.
pub(crate) fn end(request_id: &str) -> Value {
    json!({"requestId": request_id})
}

/// `platform.fault`, which AWS's runtime core writes when an invocation times out or fails, with
/// the field names Go gives its struct.
pub(crate) fn fault(request_id: &str, status: &str, error_type: Option<&str>) -> Value {
    json!({"InvokeID": request_id, "Status": status, "ErrorType": error_type})
}

/// A named span of a record: `from` → `to`.
fn span(clock: &Clock, name: &str, from: Instant, to: Instant) -> Value {
    json!({
        "name": name,
        "start": clock.iso8601(from),
        "durationMs": millis_f64(to.saturating_duration_since(from)),
    })
}

/// What `platform.report` reports.
pub(crate) struct Report<'a> {
    pub request_id: &'a str,
    pub status: &'a str,
    pub error_type: Option<&'a str>,
    pub tracing: Option<&'a Value>,
    pub duration: Duration,
    pub memory_mb: u32,
    pub max_memory_used_mb: u32,
    pub init_duration: Option<Duration>,
    /// From the runtime's done to the last extension's next.
    pub extension_overhead: Option<(Instant, Duration)>,
    /// The tenant (tenant isolation only).
    pub tenant_id: Option<&'a str>,
}

pub(crate) fn report(clock: &Clock, report: &Report<'_>) -> Value {
    let duration_ms = millis_f64(report.duration);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a duration in ms is non-negative and far below u64::MAX"
    )]
    let billed = duration_ms.ceil().max(1.0) as u64;
    let mut metrics = json!({
        "durationMs": duration_ms,
        "billedDurationMs": billed,
        "memorySizeMB": report.memory_mb,
        "maxMemoryUsedMB": report.max_memory_used_mb,
    });
    if let Some(init) = report.init_duration {
        metrics["initDurationMs"] = json!(millis_f64(init));
    }
    let mut record = json!({
        "requestId": report.request_id,
        "status": report.status,
        "metrics": metrics,
    });
    if let Some(error_type) = report.error_type {
        record["errorType"] = json!(error_type);
    }
    if let Some((start, duration)) = report.extension_overhead {
        record["spans"] = json!([{
            "name": "extensionOverhead",
            "start": clock.iso8601(start),
            "durationMs": millis_f64(duration),
        }]);
    }
    if let Some(tracing) = report.tracing {
        record["tracing"] = tracing.clone();
    }
    if let Some(tenant) = report.tenant_id {
        record["tenantId"] = json!(tenant);
    }
    record
}

/// `platform.report` on Lambda Managed Instances: `durationMs` only, and the spans
/// `responseLatency` / `responseDuration` (no runtimeDone precedes it).
pub(crate) fn managed_report(clock: &Clock, done: &RuntimeDone<'_>) -> Value {
    let mut record = json!({
        "requestId": done.request_id,
        "status": done.status,
        "metrics": {"durationMs": millis_f64(done.done_at.saturating_duration_since(done.started_at))},
    });
    if let Some(error_type) = done.error_type {
        record["errorType"] = json!(error_type);
    }
    if let Some(tracing) = done.tracing {
        record["tracing"] = tracing.clone();
    }
    if let Some(response) = done.response {
        let span = |name: &str, from: Instant, to: Instant| span(clock, name, from, to);
        record["spans"] = json!([
            span("responseLatency", done.started_at, response.head_at),
            span("responseDuration", response.head_at, response.body_done_at),
        ]);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_done_carries_metrics_and_spans() {
        let clock = Clock::new();
        let t0 = Instant::now();
        let tracing = tracing(
            "54565fb41ac79632",
            "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1",
        );
        let record = runtime_done(
            &clock,
            &RuntimeDone {
                request_id: "r1",
                status: "success",
                error_type: None,
                tracing: Some(&tracing),
                started_at: t0,
                response: Some(ResponseTiming {
                    head_at: t0 + Duration::from_millis(10),
                    body_done_at: t0 + Duration::from_millis(11),
                }),
                done_at: t0 + Duration::from_millis(12),
                produced_bytes: 8,
                tenant_id: None,
            },
        );
        assert_eq!(record["metrics"]["producedBytes"], 8);
        assert!((record["metrics"]["durationMs"].as_f64().unwrap() - 12.0).abs() < 1e-9);
        let spans = record["spans"].as_array().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["responseLatency", "responseDuration", "runtimeOverhead"]
        );
        assert_eq!(record["tracing"]["type"], "X-Amzn-Trace-Id");
        assert!(record.get("errorType").is_none());
        // As AWS's runtime core writes it for a function without tenant isolation.
        assert_eq!(record["tenantId"], "");
    }

    #[test]
    fn report_bills_whole_milliseconds_and_optional_init() {
        let clock = Clock::new();
        let base = Report {
            request_id: "r1",
            status: "success",
            error_type: None,
            tracing: None,
            duration: Duration::from_micros(693_920),
            memory_mb: 128,
            max_memory_used_mb: 20,
            init_duration: None,
            extension_overhead: None,
            tenant_id: None,
        };
        let warm = report(&clock, &base);
        assert_eq!(warm["metrics"]["billedDurationMs"], 694);
        assert!(warm["metrics"].get("initDurationMs").is_none());
        let cold = report(
            &clock,
            &Report {
                init_duration: Some(Duration::from_millis(397)),
                ..base
            },
        );
        assert!((cold["metrics"]["initDurationMs"].as_f64().unwrap() - 397.0).abs() < 1e-9);
    }
}
