//! Reading a record's optional fields one by one: a field that is missing or `null` is simply
//! absent; one present but unreadable is left out and counted. Pure.

use serde_json::{Map, Value};

use super::{
    EpochSeconds, InitStart, InitializationType, Phase, PhaseDone, PhaseMetrics, PhaseReport,
    ReportMetrics, Span, Status, TenantId, TracingContext,
};

/// Reads optional fields one by one, counting those present (not `null`) but unreadable.
#[derive(Debug, Default)]
pub(super) struct Fields {
    /// Fields present but unreadable.
    pub(super) ignored: usize,
}

impl Fields {
    pub(super) fn field<'m, T>(
        &mut self,
        m: &'m Map<String, Value>,
        key: &str,
        read: impl FnOnce(&'m Value) -> Option<T>,
    ) -> Option<T> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let got = read(v);
                if got.is_none() {
                    self.ignored += 1;
                }
                got
            }
        }
    }

    pub(super) fn string(&mut self, m: &Map<String, Value>, key: &str) -> Option<String> {
        self.field(m, key, |v| v.as_str().map(str::to_owned))
    }

    pub(super) fn float(&mut self, m: &Map<String, Value>, key: &str) -> Option<f64> {
        self.field(m, key, |v| v.as_f64().filter(|x| x.is_finite()))
    }

    /// A non-negative integer; an integral float (`2.0`) counts as one.
    pub(super) fn count(&mut self, m: &Map<String, Value>, key: &str) -> Option<u64> {
        self.field(m, key, |v| {
            v.as_u64().or_else(|| {
                let x = v.as_f64()?;
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "checked: integral, non-negative and below 2^53"
                )]
                (x.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&x))
                    .then_some(x as u64)
            })
        })
    }

    pub(super) fn object<'m>(
        &mut self,
        m: &'m Map<String, Value>,
        key: &str,
    ) -> Option<&'m Map<String, Value>> {
        self.field(m, key, Value::as_object)
    }

    /// `tenantId`: `""` is the documented "no tenant" of functions without tenant isolation,
    /// not a deviation; a value X-Ray would refuse as an annotation is one (left out, counted).
    pub(super) fn tenant_id(&mut self, m: &Map<String, Value>) -> Option<TenantId> {
        match m.get("tenantId") {
            Some(Value::String(s)) if s.is_empty() => None,
            _ => self.field(m, "tenantId", |v| v.as_str().and_then(TenantId::parse)),
        }
    }

    pub(super) fn status(&mut self, m: &Map<String, Value>) -> Option<Status> {
        self.field(m, "status", |v| v.as_str().map(Status::parse))
    }

    pub(super) fn init_type(&mut self, m: &Map<String, Value>) -> Option<InitializationType> {
        self.field(m, "initializationType", |v| {
            v.as_str().map(InitializationType::parse)
        })
    }

    pub(super) fn phase(&mut self, m: &Map<String, Value>) -> Option<Phase> {
        self.field(m, "phase", |v| v.as_str().map(Phase::parse))
    }

    pub(super) fn tracing(&mut self, m: &Map<String, Value>) -> Option<TracingContext> {
        let t = self.object(m, "tracing")?;
        // Without its value the context says nothing: left out as a whole.
        let Some(value) = t.get("value").and_then(Value::as_str) else {
            self.ignored += 1;
            return None;
        };
        Some(TracingContext {
            span_id: self.string(t, "spanId"),
            kind: self.string(t, "type"),
            value: value.to_owned(),
        })
    }

    /// The spans that can be read; one unreadable span is left out, not the others.
    pub(super) fn spans(&mut self, m: &Map<String, Value>) -> Vec<Span> {
        let Some(items) = self.field(m, "spans", Value::as_array) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                let span = item.as_object().and_then(|s| {
                    Some(Span {
                        name: s.get("name")?.as_str()?.to_owned(),
                        start: EpochSeconds::parse_rfc3339(s.get("start")?.as_str()?)?,
                        duration_ms: s.get("durationMs")?.as_f64().filter(|x| x.is_finite())?,
                    })
                });
                if span.is_none() {
                    self.ignored += 1;
                }
                span
            })
            .collect()
    }

    pub(super) fn init_start(&mut self, m: &Map<String, Value>) -> InitStart {
        InitStart {
            initialization_type: self.init_type(m),
            phase: self.phase(m),
            runtime_version: self.string(m, "runtimeVersion"),
            runtime_version_arn: self.string(m, "runtimeVersionArn"),
            function_name: self.string(m, "functionName"),
            function_version: self.string(m, "functionVersion"),
            instance_id: self.string(m, "instanceId"),
            instance_max_memory: self.count(m, "instanceMaxMemory"),
        }
    }

    pub(super) fn phase_done(&mut self, m: &Map<String, Value>) -> PhaseDone {
        PhaseDone {
            initialization_type: self.init_type(m),
            phase: self.phase(m),
            status: self.status(m),
            error_type: self.string(m, "errorType"),
        }
    }

    pub(super) fn phase_report(&mut self, m: &Map<String, Value>) -> PhaseReport {
        PhaseReport {
            initialization_type: self.init_type(m),
            phase: self.phase(m),
            status: self.status(m),
            metrics: PhaseMetrics {
                duration_ms: self
                    .object(m, "metrics")
                    .and_then(|x| self.float(x, "durationMs"))
                    .unwrap_or_default(),
            },
            spans: self.spans(m),
        }
    }

    pub(super) fn report_metrics(&mut self, x: &Map<String, Value>) -> ReportMetrics {
        ReportMetrics {
            duration_ms: self.float(x, "durationMs").unwrap_or_default(),
            billed_duration_ms: self.count(x, "billedDurationMs"),
            memory_size_mb: self.count(x, "memorySizeMB"),
            max_memory_used_mb: self.count(x, "maxMemoryUsedMB"),
            init_duration_ms: self.float(x, "initDurationMs"),
            restore_duration_ms: self.float(x, "restoreDurationMs"),
        }
    }
}
