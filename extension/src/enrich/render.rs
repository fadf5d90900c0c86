//! Our subsegments from the enricher's state: pure functions, no ids, no clock. Both ways of
//! correlating (INVOKE + runtimeDone + report; `platform.start` + `platform.report` on Lambda
//! Managed Instances) feed the same [`Invocation`] and so the same rendering.

use serde_json::{Map, Value, json};

use super::annotations::Builtin;
use super::document::{Cause, Child, Subsegment, clip};
use super::state::{InitPhase, Invocation, max_time};
use super::{Environment, METADATA_NAMESPACE, PROACTIVE_INIT_GAP_SECONDS, Settings};
use crate::lambda::events::ShutdownReason;
use crate::lambda::telemetry::{EpochSeconds, InitializationType, Span, Status, TenantId};

/// How an invocation started, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartKind {
    /// Not the first invocation.
    Warm,
    /// On-demand init the caller waited for.
    Cold,
    /// Provisioned concurrency: init happened ahead of time.
    Provisioned,
    /// On-demand init done long before the first invoke.
    Proactive {
        /// Seconds between the end of init and the invocation's start.
        idle_seconds: f64,
    },
    /// SnapStart restore.
    Restore,
    /// Init retried inside the first invoke (`phase: "invoke"`).
    SuppressedInit,
    /// Lambda Managed Instances: initialised before traffic, never a cold start.
    Managed,
}

impl StartKind {
    /// Whether the caller waited for an init or restore.
    pub fn is_cold(self) -> bool {
        matches!(self, Self::Cold | Self::Restore | Self::SuppressedInit)
    }
}

/// What rendering reads besides the invocation: settings, startup facts, the init records.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// What users chose to add.
    pub settings: &'a Settings,
    /// Facts known at startup.
    pub env: &'a Environment,
    /// The init and restore records.
    pub init: &'a InitPhase,
    /// The environment's tenant, when a record named one.
    pub tenant: Option<&'a TenantId>,
}

impl Context<'_> {
    /// The environment's initialization type: our variable, else the init records'.
    pub fn init_type(&self) -> InitializationType {
        let env = self.env.initialization_type.clone();
        let records = self.init.init_type().cloned();
        match (env, records) {
            (Some(t), _) if !matches!(t, InitializationType::Unknown(_)) => t,
            (_, Some(t)) | (Some(t), None) => t,
            (None, None) => InitializationType::Unknown(String::new()),
        }
    }

    /// How `inv` started. On SnapStart the init records describe the snapshot's creation,
    /// whatever their order relative to the restore records: they never make a cold start.
    pub fn classify(&self, inv: &Invocation) -> StartKind {
        let init_type = self.init_type();
        if init_type == InitializationType::LambdaManagedInstances {
            return StartKind::Managed;
        }
        if !inv.first {
            return StartKind::Warm;
        }
        if self.init.init_is_stale(&init_type) {
            return StartKind::Restore;
        }
        if self.init.suppressed() {
            return StartKind::SuppressedInit;
        }
        if init_type == InitializationType::ProvisionedConcurrency {
            return StartKind::Provisioned;
        }
        let began = inv.start.or(inv.received_at);
        match (self.init.end(), began) {
            (Some(end), Some(began)) if began.0 - end.0 > PROACTIVE_INIT_GAP_SECONDS => {
                StartKind::Proactive {
                    idle_seconds: began.0 - end.0,
                }
            }
            _ => StartKind::Cold,
        }
    }

    /// `Cold Start` or `Restore` for the first invocation `inv` of `kind`, when its records
    /// are in; it carries the tenant's annotation, as the environment serves that tenant only.
    pub fn start_subsegment(&self, kind: StartKind, inv: &Invocation) -> Option<Subsegment> {
        let mut sub = match kind {
            StartKind::Cold | StartKind::SuppressedInit => self.cold_start(kind),
            StartKind::Restore => self.restore(),
            StartKind::Warm
            | StartKind::Provisioned
            | StartKind::Proactive { .. }
            | StartKind::Managed => None,
        }?;
        self.annotate_tenant(&mut sub.annotations, inv);
        Some(sub)
    }

    /// The invocation's tenant: its records', else the environment's.
    fn tenant_of<'i>(&'i self, inv: &'i Invocation) -> Option<&'i TenantId> {
        inv.tenant_id.as_ref().or(self.tenant)
    }

    fn annotate_tenant(&self, a: &mut Map<String, Value>, inv: &Invocation) {
        if let (true, Some(tenant)) = (
            self.settings.builtins.contains(Builtin::TenantId),
            self.tenant_of(inv),
        ) {
            // Checked at decoding: X-Ray indexes it as it is.
            a.insert(Builtin::TenantId.key().into(), json!(tenant.as_str()));
        }
    }

    fn cold_start(&self, kind: StartKind) -> Option<Subsegment> {
        let (start, _) = self.init.start.as_ref()?;
        let end = self.init.end()?;
        let mut children = Vec::new();
        if let (Some(s), Some(r)) = (self.env.extension_started, self.env.extension_ready) {
            // Our own cost, shown plainly. Clamp into the init window: the clocks differ.
            let s = max_time(Some(s), Some(*start)).unwrap_or(s);
            children.push(Child {
                name: "Extension Init",
                start: s,
                end: max_time(Some(r), Some(s)).unwrap_or(r),
            });
        }
        if let Some((done, _)) = &self.init.runtime_done {
            children.push(Child {
                name: "Runtime Init",
                start: *start,
                end: *done,
            });
        }
        let mut init_meta = self.init_metadata();
        if kind == StartKind::SuppressedInit {
            init_meta.insert("suppressed".into(), json!(true));
        }
        Some(Subsegment {
            name: "Cold Start",
            start: Some(*start),
            end: Some(end),
            metadata: namespace(init_meta),
            children,
            ..Subsegment::default()
        })
    }

    fn restore(&self) -> Option<Subsegment> {
        let (start, _) = self.init.restore_start.as_ref()?;
        let end = self.init.restore_end().unwrap_or(*start);
        let mut meta = Map::new();
        if let Some((_, r)) = &self.init.restore_report {
            meta.insert("restoreDurationMs".into(), json!(r.metrics.duration_ms));
        }
        if let Some((_, d)) = &self.init.restore_done
            && let Some(status) = &d.status
        {
            meta.insert("restoreStatus".into(), json!(clip(status.as_str())));
        }
        Some(Subsegment {
            name: "Restore",
            start: Some(*start),
            end: Some(end),
            metadata: namespace(meta),
            ..Subsegment::default()
        })
    }

    fn init_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some((t, s)) = &self.init.start {
            m.insert("initStart".into(), json!(t.0));
            if let Some(kind) = &s.initialization_type {
                m.insert("initializationType".into(), json!(clip(kind.as_str())));
            }
            if let Some(phase) = &s.phase {
                m.insert("initPhase".into(), json!(clip(phase.as_str())));
            }
        }
        if let Some((_, r)) = &self.init.report {
            m.insert("initDurationMs".into(), json!(r.metrics.duration_ms));
        }
        if let (Some((s, _)), Some((d, done))) = (&self.init.start, &self.init.runtime_done) {
            m.insert("runtimeInitMs".into(), json!(round_ms((d.0 - s.0) * 1e3)));
            if let Some(status) = &done.status {
                m.insert("initStatus".into(), json!(clip(status.as_str())));
            }
            if let Some(e) = &done.error_type {
                m.insert("initErrorType".into(), json!(clip(e)));
            }
        }
        if let (Some(s), Some(r)) = (self.env.extension_started, self.env.extension_ready) {
            m.insert("extensionInitMs".into(), json!(round_ms((r.0 - s.0) * 1e3)));
        }
        m
    }

    /// The `Runtime` subsegment of `inv`: `platform.start` → end of the runtime's work, with
    /// the spans as children (from runtimeDone, or from the report on Lambda Managed
    /// Instances), fault and cause, annotations and metadata.
    pub fn runtime_subsegment(&self, inv: &Invocation, kind: StartKind) -> Subsegment {
        let done = inv.done.as_ref();
        let report = inv.report.as_ref().map(|(_, r)| r);
        // runtimeDone's spans; without one (Lambda Managed Instances), the report's.
        let spans: &[Span] = match (done, report) {
            (Some((_, d)), _) if !d.spans.is_empty() => &d.spans,
            (None, Some(r)) => &r.spans,
            _ => &[],
        };
        let span_start = spans
            .iter()
            .map(|s| s.start)
            .reduce(|a, b| if b.0 < a.0 { b } else { a });
        // No platform.start, span or INVOKE seen: the runtime's own duration, counted back from
        // runtimeDone.
        let from_done = done.and_then(|(t, d)| Some(t.plus_ms(-d.metrics.as_ref()?.duration_ms)));
        let start = inv
            .start
            .or(span_start)
            .or(inv.received_at)
            .or(from_done)
            .filter(|t| t.0 > 0.0);
        let (status, _) = inv.outcome();
        let timed_out = status == Some(&Status::Timeout)
            || inv
                .killed_at_shutdown
                .as_ref()
                .is_some_and(|(_, r)| *r == ShutdownReason::Timeout);
        let span_end = spans
            .iter()
            .map(|s| s.start.plus_ms(s.duration_ms))
            .reduce(|a, b| if b.0 > a.0 { b } else { a });
        // Without runtimeDone the report's duration (start → response sent) ends it.
        let by_report = match (done, report, start) {
            (None, Some(r), Some(s)) => Some(s.plus_ms(r.metrics.duration_ms)),
            _ => None,
        };
        let mut end = max_time(max_time(done.map(|(t, _)| *t), span_end), by_report);
        if timed_out {
            end = inv
                .deadline
                .or(end)
                .or(inv.killed_at_shutdown.as_ref().map(|(t, _)| *t));
        } else if end.is_none() {
            end = inv.killed_at_shutdown.as_ref().map(|(t, _)| *t);
        }

        let mut sub = Subsegment {
            name: "Runtime",
            start,
            end,
            ..Subsegment::default()
        };
        sub.children = spans
            .iter()
            .filter_map(|s| {
                let name = match s.name.as_str() {
                    "responseLatency" => "Response Latency",
                    "responseDuration" => "Response Duration",
                    "runtimeOverhead" => "Runtime Overhead",
                    _ => return None,
                };
                Some(Child {
                    name,
                    start: s.start,
                    end: s.start.plus_ms(s.duration_ms),
                })
            })
            .collect();
        if let Some(report) = report
            && let Some(s) = report.spans.iter().find(|s| s.name == "extensionOverhead")
        {
            sub.children.push(Child {
                name: "Extension Overhead",
                start: s.start,
                end: s.start.plus_ms(s.duration_ms),
            });
        }

        sub.cause = cause(inv, timed_out, start, sub.end);
        sub.fault = sub.cause.is_some();
        sub.annotations = self.annotations(inv, kind);
        sub.metadata = namespace(self.runtime_metadata(inv, kind));
        sub
    }

    fn annotations(&self, inv: &Invocation, kind: StartKind) -> Map<String, Value> {
        let on = |b| self.settings.builtins.contains(b);
        let mut a = Map::new();
        if on(Builtin::ColdStart) {
            a.insert(Builtin::ColdStart.key().into(), json!(kind.is_cold()));
        }
        let info = self.init.info();
        let name = info
            .and_then(|i| i.function_name.as_deref())
            .or(self.env.function_name.as_deref());
        if let (true, Some(name)) = (on(Builtin::FunctionName), name) {
            a.insert(Builtin::FunctionName.key().into(), json!(clip(name)));
        }
        let version = info
            .and_then(|i| i.function_version.as_deref())
            .or(self.env.function_version.as_deref());
        if let (true, Some(version)) = (on(Builtin::FunctionVersion), version) {
            a.insert(Builtin::FunctionVersion.key().into(), json!(clip(version)));
        }
        let init_type = match kind {
            StartKind::Restore => Some("snap-start"),
            StartKind::Managed => Some("lambda-managed-instances"),
            _ => self
                .init
                .start
                .as_ref()
                .and_then(|(_, s)| s.initialization_type.as_ref())
                .or(self.env.initialization_type.as_ref())
                .map(InitializationType::as_str),
        };
        if let (true, Some(t)) = (on(Builtin::InitType), init_type) {
            a.insert(Builtin::InitType.key().into(), json!(clip(t)));
        }
        if on(Builtin::ProactiveInit) && matches!(kind, StartKind::Proactive { .. }) {
            a.insert(Builtin::ProactiveInit.key().into(), json!(true));
        }
        if on(Builtin::SuppressedInit) && kind == StartKind::SuppressedInit {
            a.insert(Builtin::SuppressedInit.key().into(), json!(true));
        }
        if let Some((_, report)) = &inv.report
            && on(Builtin::OutOfMemory)
            && let (Some(used), Some(size)) = (
                report.metrics.max_memory_used_mb,
                report.metrics.memory_size_mb,
            )
            && used >= size
        {
            a.insert(Builtin::OutOfMemory.key().into(), json!(true));
        }
        self.annotate_tenant(&mut a, inv);
        for (k, v) in &self.settings.static_annotations {
            a.insert(k.clone(), v.clone());
        }
        a
    }

    fn runtime_metadata(&self, inv: &Invocation, kind: StartKind) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("requestId".into(), json!(clip(&inv.request_id)));
        let (status, error_type) = inv.outcome();
        if let Some(status) = status {
            m.insert("status".into(), json!(clip(status.as_str())));
        }
        if let Some(info) = self.init.info() {
            for (key, value) in [
                ("runtimeVersion", &info.runtime_version),
                ("runtimeVersionArn", &info.runtime_version_arn),
                ("instanceId", &info.instance_id),
            ] {
                if let Some(v) = value {
                    m.insert(key.into(), json!(clip(v)));
                }
            }
        }
        if let Some(mb) = self.env.memory_size_mb {
            m.insert("memorySizeMB".into(), json!(mb));
        }
        if let Some((_, d)) = &inv.done
            && let Some(metrics) = &d.metrics
        {
            m.insert("runtimeDurationMs".into(), json!(metrics.duration_ms));
            if let Some(b) = metrics.produced_bytes {
                m.insert("producedBytes".into(), json!(b));
            }
        }
        if let Some(e) = error_type {
            m.insert("errorType".into(), json!(clip(e)));
        }
        if let Some((_, r)) = &inv.report {
            let x = &r.metrics;
            m.insert("durationMs".into(), json!(x.duration_ms));
            for (key, value) in [
                ("billedDurationMs", x.billed_duration_ms),
                ("maxMemoryUsedMB", x.max_memory_used_mb),
                ("memorySizeMB", x.memory_size_mb),
            ] {
                if let Some(v) = value {
                    m.insert(key.into(), json!(v));
                }
            }
            if let Some(v) = x.init_duration_ms {
                m.insert("initDurationMs".into(), json!(v));
            }
            if let Some(v) = x.restore_duration_ms {
                m.insert("restoreDurationMs".into(), json!(v));
            }
        }
        match kind {
            StartKind::Provisioned => {
                m.insert("init".into(), Value::Object(self.init_metadata()));
            }
            StartKind::Proactive { idle_seconds } => {
                let mut init = self.init_metadata();
                init.insert(
                    "idleBeforeInvokeSeconds".into(),
                    json!(round_ms(idle_seconds * 1e3) / 1e3),
                );
                m.insert("init".into(), Value::Object(init));
            }
            _ => {}
        }
        m
    }
}

/// Fault and cause: a timeout, a runtime that never finished, or an error it reported.
fn cause(
    inv: &Invocation,
    timed_out: bool,
    start: Option<EpochSeconds>,
    end: Option<EpochSeconds>,
) -> Option<Cause> {
    if timed_out {
        let seconds = match (start, end) {
            (Some(s), Some(e)) => e.0 - s.0,
            _ => 0.0,
        };
        return Some(Cause {
            kind: "Sandbox.Timedout".into(),
            message: format!("Task timed out after {seconds:.2} seconds"),
        });
    }
    if let Some((_, reason)) = &inv.killed_at_shutdown {
        return Some(Cause {
            kind: "Runtime.ExitError".into(),
            message: format!(
                "The runtime did not finish the invocation (shutdown reason: {})",
                clip(reason.as_str())
            ),
        });
    }
    let (status, error_type) = inv.outcome();
    if status.is_some_and(Status::is_fault) {
        let error_type = clip(error_type.unwrap_or("Unknown"));
        return Some(Cause {
            kind: error_type.to_owned(),
            message: format!("The function returned an error: {error_type}"),
        });
    }
    None
}

fn namespace(m: Map<String, Value>) -> Map<String, Value> {
    let mut outer = Map::new();
    if !m.is_empty() {
        outer.insert(METADATA_NAMESPACE.into(), Value::Object(m));
    }
    outer
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}
