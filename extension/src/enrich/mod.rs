//! Enrichment: a pure state machine from lifecycle events to our own subsegments.
//!
//! (state, INVOKE | telemetry record | SHUTDOWN, time) → (state, documents). No I/O, no clock:
//! times come from the Telemetry API records or are passed in; ids come from a caller-supplied
//! source so tests are deterministic.
//!
//! Per sampled invocation we send a `Runtime` subsegment (`platform.start` → end of
//! `platform.runtimeDone`) with `Response Latency` / `Response Duration` / `Runtime Overhead`
//! children, fault and cause on error or timeout, and indexed annotations. The first invocation
//! of an environment whose caller waited for init also gets `Cold Start` (with `Extension Init`
//! and `Runtime Init`), or `Restore` under SnapStart. When `platform.report` arrives (during the
//! next invocation or at shutdown) `Runtime` is sent again under the same id with billing and
//! memory figures and an `Extension Overhead` child.

pub mod annotations;
pub mod document;

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use crate::ingest::protocol::Document;
use crate::lambda::telemetry::{
    EpochSeconds, Event, InitStart, Phase, PhaseDone, PhaseReport, Record, Report, RuntimeDone,
    Span, Status,
};
use crate::trace::{SegmentId, TraceHeader};
use annotations::{Builtin, BuiltinSet};
use document::{Child, Subsegment};

/// An on-demand init followed by a first invoke more than this many seconds later was a
/// proactive initialisation: the caller did not wait for it.
pub const PROACTIVE_INIT_GAP_SECONDS: f64 = 10.0;
/// Invocations remembered (waiting for their report or late records).
pub const MAX_TRACKED_INVOCATIONS: usize = 8;
/// Metadata namespace of our figures.
pub const METADATA_NAMESPACE: &str = "lambda";

/// What users chose to add.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Built-in annotations enabled.
    pub builtins: BuiltinSet,
    /// Static annotations added to every `Runtime` subsegment.
    pub static_annotations: Vec<(String, Value)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            builtins: BuiltinSet::all(),
            static_annotations: Vec::new(),
        }
    }
}

/// Facts known at startup.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Environment {
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: Option<String>,
    /// `AWS_LAMBDA_FUNCTION_VERSION`.
    pub function_version: Option<String>,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`.
    pub memory_size_mb: Option<u64>,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE`.
    pub initialization_type: Option<String>,
    /// When our process started.
    pub extension_started: Option<EpochSeconds>,
    /// When we were ready (registered, subscribed, about to wait for events).
    pub extension_ready: Option<EpochSeconds>,
}

/// An INVOKE event as the lifecycle loop saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoke {
    /// The request.
    pub request_id: String,
    /// Its trace header, when traced.
    pub trace: Option<TraceHeader>,
    /// `deadlineMs` as epoch seconds.
    pub deadline: EpochSeconds,
    /// When we received the event.
    pub received_at: EpochSeconds,
}

/// How this environment's first invocation started.
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
}

impl StartKind {
    /// Whether the caller waited for an init or restore.
    pub fn is_cold(self) -> bool {
        matches!(self, Self::Cold | Self::Restore | Self::SuppressedInit)
    }
}

#[derive(Debug, Default)]
struct InitPhase {
    start: Option<(EpochSeconds, InitStart)>,
    runtime_done: Option<(EpochSeconds, PhaseDone)>,
    report: Option<(EpochSeconds, PhaseReport)>,
    restore_start: Option<(EpochSeconds, InitStart)>,
    restore_done: Option<(EpochSeconds, PhaseDone)>,
    restore_report: Option<(EpochSeconds, PhaseReport)>,
}

impl InitPhase {
    fn info(&self) -> Option<&InitStart> {
        self.restore_start
            .as_ref()
            .or(self.start.as_ref())
            .map(|(_, s)| s)
    }

    fn end(&self) -> Option<EpochSeconds> {
        let (start, _) = self.start.as_ref()?;
        let by_report = self
            .report
            .as_ref()
            .map(|(_, r)| start.plus_ms(r.metrics.duration_ms));
        let by_done = self.runtime_done.as_ref().map(|(t, _)| *t);
        max_time(by_report, by_done).or(Some(*start))
    }

    fn suppressed(&self) -> bool {
        self.start
            .as_ref()
            .is_some_and(|(_, s)| s.phase == Some(Phase::Invoke))
    }
}

#[derive(Debug)]
struct Invocation {
    request_id: String,
    trace: Option<TraceHeader>,
    deadline: Option<EpochSeconds>,
    received_at: Option<EpochSeconds>,
    start: Option<EpochSeconds>,
    done: Option<(EpochSeconds, RuntimeDone)>,
    report: Option<Report>,
    killed_at_shutdown: Option<(EpochSeconds, String)>,
    runtime_id: SegmentId,
    first: bool,
    kind: Option<StartKind>,
    emitted: bool,
}

/// The enrichment state of one execution environment (one extension process).
#[derive(Debug)]
pub struct Enricher {
    settings: Settings,
    env: Environment,
    init: InitPhase,
    invocations: VecDeque<Invocation>,
    seen_first: bool,
    /// Id of the `Cold Start`/`Restore` document, stable across re-sends.
    start_id: Option<SegmentId>,
}

impl Enricher {
    /// A fresh state.
    pub fn new(settings: Settings, env: Environment) -> Self {
        Self {
            settings,
            env,
            init: InitPhase::default(),
            invocations: VecDeque::with_capacity(MAX_TRACKED_INVOCATIONS),
            seen_first: false,
            start_id: None,
        }
    }

    /// Records when we became ready (the end of our own init).
    pub fn extension_ready(&mut self, at: EpochSeconds) {
        self.env.extension_ready = Some(at);
    }

    /// An INVOKE event.
    pub fn on_invoke(
        &mut self,
        invoke: &Invoke,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Document> {
        let inv = self.invocation(&invoke.request_id, next_id);
        // The INVOKE's header is the one the runtime (and so the SDK) got: our subsegments go
        // under the same parent. Telemetry records may carry another parent (Lambda's own
        // segment), and may be handled first.
        let changed = invoke.trace.is_some() && inv.trace != invoke.trace;
        if invoke.trace.is_some() {
            inv.trace = invoke.trace;
        }
        inv.deadline = Some(invoke.deadline);
        inv.received_at = Some(invoke.received_at);
        if inv.emitted {
            // Records came first and we already reported: send again (same ids) only if the
            // trace context differs.
            return if changed {
                self.emit(&invoke.request_id, true, next_id)
            } else {
                Vec::new()
            };
        }
        self.emit_if_ready(&invoke.request_id, next_id)
    }

    /// One Telemetry API record.
    pub fn on_telemetry(
        &mut self,
        event: &Event,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Document> {
        let t = event.time;
        match &event.record {
            Record::InitStart(s) => self.init.start = Some((t, s.clone())),
            Record::InitRuntimeDone(d) => self.init.runtime_done = Some((t, d.clone())),
            Record::InitReport(r) => self.init.report = Some((t, r.clone())),
            Record::RestoreStart(s) => self.init.restore_start = Some((t, s.clone())),
            Record::RestoreRuntimeDone(d) => self.init.restore_done = Some((t, d.clone())),
            Record::RestoreReport(r) => self.init.restore_report = Some((t, r.clone())),
            Record::Start(s) => {
                let trace = trace_of(s.tracing.as_ref().map(|c| c.value.as_str()));
                let inv = self.invocation(&s.request_id, next_id);
                inv.start = Some(t);
                if inv.trace.is_none() {
                    inv.trace = trace;
                }
                return self.emit_if_ready(&s.request_id, next_id);
            }
            Record::RuntimeDone(d) => {
                let trace = trace_of(d.tracing.as_ref().map(|c| c.value.as_str()));
                let inv = self.invocation(&d.request_id, next_id);
                inv.done = Some((t, d.clone()));
                // SHUTDOWN can come before a finished invocation's runtimeDone is delivered
                // (telemetry is buffered; with background flushing we are already past it):
                // the runtime did finish, so its status, not the shutdown, says how.
                inv.killed_at_shutdown = None;
                if inv.trace.is_none() {
                    inv.trace = trace;
                }
                return self.emit_if_ready(&d.request_id, next_id);
            }
            Record::Report(r) => {
                let Some(inv) = self
                    .invocations
                    .iter_mut()
                    .find(|i| i.request_id == r.request_id)
                else {
                    return Vec::new();
                };
                inv.report = Some(r.clone());
                if inv.emitted {
                    return self.emit(&r.request_id, false, next_id);
                }
            }
            Record::Other(_) => {}
        }
        Vec::new()
    }

    /// SHUTDOWN: an invocation that never finished (the function timed out or crashed) still
    /// gets its `Runtime` subsegment, with the fault.
    pub fn on_shutdown(
        &mut self,
        reason: &str,
        at: EpochSeconds,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Document> {
        let unfinished: Vec<String> = self
            .invocations
            .iter_mut()
            .filter(|i| i.done.is_none() && !i.emitted)
            .map(|i| {
                i.killed_at_shutdown = Some((at, reason.to_ascii_lowercase()));
                i.request_id.clone()
            })
            .collect();
        unfinished
            .iter()
            .flat_map(|id| self.emit_if_ready(id, next_id))
            .collect()
    }

    /// Whether an invocation we reported on still waits for its `platform.report`.
    pub fn awaiting_report(&self) -> bool {
        self.invocations
            .iter()
            .any(|i| i.emitted && i.report.is_none())
    }

    fn invocation(
        &mut self,
        request_id: &str,
        next_id: &mut dyn FnMut() -> u64,
    ) -> &mut Invocation {
        if let Some(pos) = self
            .invocations
            .iter()
            .position(|i| i.request_id == request_id)
        {
            return &mut self.invocations[pos];
        }
        if self.invocations.len() == MAX_TRACKED_INVOCATIONS {
            self.invocations.pop_front();
        }
        let first = !self.seen_first;
        self.seen_first = true;
        self.invocations.push_back(Invocation {
            request_id: request_id.to_owned(),
            trace: None,
            deadline: None,
            received_at: None,
            start: None,
            done: None,
            report: None,
            killed_at_shutdown: None,
            runtime_id: SegmentId::from_u64(next_id()),
            first,
            kind: None,
            emitted: false,
        });
        let last = self.invocations.len() - 1;
        &mut self.invocations[last]
    }

    fn emit_if_ready(
        &mut self,
        request_id: &str,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Document> {
        let Some(inv) = self.invocations.iter().find(|i| i.request_id == request_id) else {
            return Vec::new();
        };
        let finished = inv.done.is_some() || inv.killed_at_shutdown.is_some();
        // A late platform.start after we reported updates the start time: send again.
        if finished {
            self.emit(request_id, false, next_id)
        } else {
            Vec::new()
        }
    }

    /// Builds the invocation's documents: `Runtime`, and on the environment's first invocation
    /// the start subsegment the first time (or again when `resend_start`).
    fn emit(
        &mut self,
        request_id: &str,
        resend_start: bool,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Document> {
        let Some(pos) = self
            .invocations
            .iter()
            .position(|i| i.request_id == request_id)
        else {
            return Vec::new();
        };
        let sampled = self.invocations[pos].trace.filter(TraceHeader::is_sampled);
        // A subsegment needs a parent: without one in the header there is nowhere to attach.
        let Some((trace, parent)) = sampled.and_then(|t| Some((t, t.parent?))) else {
            return Vec::new();
        };
        let kind = if let Some(k) = self.invocations[pos].kind {
            k
        } else {
            let k = self.classify(&self.invocations[pos]);
            self.invocations[pos].kind = Some(k);
            k
        };
        let first_emission = !self.invocations[pos].emitted;
        self.invocations[pos].emitted = true;
        let start_id = if self.invocations[pos].first {
            *self
                .start_id
                .get_or_insert_with(|| SegmentId::from_u64(next_id()))
        } else {
            SegmentId::from_u64(0)
        };
        let inv = &self.invocations[pos];
        let mut out = Vec::with_capacity(2);
        if (first_emission || resend_start)
            && inv.first
            && let Some(sub) = self.start_subsegment(kind)
        {
            out.push(document::independent(
                trace.root, parent, &sub, start_id, next_id,
            ));
        }
        let runtime = self.runtime_subsegment(inv, kind, next_id);
        if runtime.start.is_some() {
            out.push(document::independent(
                trace.root,
                parent,
                &runtime,
                inv.runtime_id,
                next_id,
            ));
        }
        out
    }

    fn classify(&self, inv: &Invocation) -> StartKind {
        if !inv.first {
            return StartKind::Warm;
        }
        if self.init.restore_start.is_some() {
            return StartKind::Restore;
        }
        if self.init.suppressed() {
            return StartKind::SuppressedInit;
        }
        let init_type = self
            .init
            .start
            .as_ref()
            .and_then(|(_, s)| s.initialization_type.as_ref())
            .map(|t| t.as_str().to_owned())
            .or_else(|| self.env.initialization_type.clone());
        match init_type.as_deref() {
            Some("provisioned-concurrency") => StartKind::Provisioned,
            Some("snap-start") => StartKind::Restore,
            _ => {
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
        }
    }

    fn start_subsegment(&self, kind: StartKind) -> Option<Subsegment> {
        match kind {
            StartKind::Cold | StartKind::SuppressedInit => {
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
            StartKind::Restore => {
                let (start, _) = self.init.restore_start.as_ref()?;
                let by_report = self
                    .init
                    .restore_report
                    .as_ref()
                    .map(|(_, r)| start.plus_ms(r.metrics.duration_ms));
                let by_done = self.init.restore_done.as_ref().map(|(t, _)| *t);
                let end = max_time(by_report, by_done).unwrap_or(*start);
                let mut meta = Map::new();
                if let Some((_, r)) = &self.init.restore_report {
                    meta.insert("restoreDurationMs".into(), json!(r.metrics.duration_ms));
                }
                if let Some((_, d)) = &self.init.restore_done
                    && let Some(status) = &d.status
                {
                    meta.insert("restoreStatus".into(), json!(status));
                }
                Some(Subsegment {
                    name: "Restore",
                    start: Some(*start),
                    end: Some(end),
                    metadata: namespace(meta),
                    ..Subsegment::default()
                })
            }
            StartKind::Warm | StartKind::Provisioned | StartKind::Proactive { .. } => None,
        }
    }

    fn init_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some((t, s)) = &self.init.start {
            m.insert("initStart".into(), json!(t.0));
            if let Some(kind) = &s.initialization_type {
                m.insert("initializationType".into(), json!(kind));
            }
            if let Some(phase) = &s.phase {
                m.insert("initPhase".into(), json!(phase));
            }
        }
        if let Some((_, r)) = &self.init.report {
            m.insert("initDurationMs".into(), json!(r.metrics.duration_ms));
        }
        if let (Some((s, _)), Some((d, done))) = (&self.init.start, &self.init.runtime_done) {
            m.insert("runtimeInitMs".into(), json!(round_ms((d.0 - s.0) * 1e3)));
            if let Some(status) = &done.status {
                m.insert("initStatus".into(), json!(status));
            }
            if let Some(e) = &done.error_type {
                m.insert("initErrorType".into(), json!(e));
            }
        }
        if let (Some(s), Some(r)) = (self.env.extension_started, self.env.extension_ready) {
            m.insert("extensionInitMs".into(), json!(round_ms((r.0 - s.0) * 1e3)));
        }
        m
    }

    fn runtime_subsegment(
        &self,
        inv: &Invocation,
        kind: StartKind,
        next_id: &mut dyn FnMut() -> u64,
    ) -> Subsegment {
        let done = inv.done.as_ref();
        let spans: &[Span] = done.map_or(&[], |(_, d)| d.spans.as_slice());
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
        let status = done.and_then(|(_, d)| d.status.clone());
        let timed_out = status == Some(Status::Timeout)
            || inv
                .killed_at_shutdown
                .as_ref()
                .is_some_and(|(_, r)| r == "timeout");
        let span_end = spans
            .iter()
            .map(|s| s.start.plus_ms(s.duration_ms))
            .reduce(|a, b| if b.0 > a.0 { b } else { a });
        let mut end = max_time(done.map(|(t, _)| *t), span_end);
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
        if let Some(report) = &inv.report
            && let Some(s) = report.spans.iter().find(|s| s.name == "extensionOverhead")
        {
            sub.children.push(Child {
                name: "Extension Overhead",
                start: s.start,
                end: s.start.plus_ms(s.duration_ms),
            });
        }

        // Fault and cause.
        if timed_out {
            sub.fault = true;
            let seconds = match (start, sub.end) {
                (Some(s), Some(e)) => e.0 - s.0,
                _ => 0.0,
            };
            sub.cause = Some(document::cause(
                "Sandbox.Timedout",
                &format!("Task timed out after {seconds:.2} seconds"),
                SegmentId::from_u64(next_id()),
            ));
        } else if let Some((reason_at, reason)) = &inv.killed_at_shutdown {
            let _ = reason_at;
            sub.fault = true;
            sub.cause = Some(document::cause(
                "Runtime.ExitError",
                &format!("The runtime did not finish the invocation (shutdown reason: {reason})"),
                SegmentId::from_u64(next_id()),
            ));
        } else if status.as_ref().is_some_and(Status::is_fault) {
            sub.fault = true;
            let error_type = done
                .and_then(|(_, d)| d.error_type.clone())
                .unwrap_or_else(|| String::from("Unknown"));
            sub.cause = Some(document::cause(
                &error_type,
                &format!("The function returned an error: {error_type}"),
                SegmentId::from_u64(next_id()),
            ));
        }

        sub.annotations = self.annotations(inv, kind);
        sub.metadata =
            namespace(self.runtime_metadata(inv, kind, status.as_ref().map(Status::as_str)));
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
            .and_then(|i| i.function_name.clone())
            .or_else(|| self.env.function_name.clone());
        if let (true, Some(name)) = (on(Builtin::FunctionName), name) {
            a.insert(Builtin::FunctionName.key().into(), json!(name));
        }
        let version = info
            .and_then(|i| i.function_version.clone())
            .or_else(|| self.env.function_version.clone());
        if let (true, Some(version)) = (on(Builtin::FunctionVersion), version) {
            a.insert(Builtin::FunctionVersion.key().into(), json!(version));
        }
        let init_type = match kind {
            StartKind::Restore => Some(String::from("snap-start")),
            _ => self
                .init
                .start
                .as_ref()
                .and_then(|(_, s)| s.initialization_type.as_ref())
                .map(|t| t.as_str().to_owned())
                .or_else(|| self.env.initialization_type.clone()),
        };
        if let (true, Some(t)) = (on(Builtin::InitType), init_type) {
            a.insert(Builtin::InitType.key().into(), json!(t));
        }
        if on(Builtin::ProactiveInit) && matches!(kind, StartKind::Proactive { .. }) {
            a.insert(Builtin::ProactiveInit.key().into(), json!(true));
        }
        if on(Builtin::SuppressedInit) && kind == StartKind::SuppressedInit {
            a.insert(Builtin::SuppressedInit.key().into(), json!(true));
        }
        if let Some(report) = &inv.report
            && on(Builtin::OutOfMemory)
            && let (Some(used), Some(size)) = (
                report.metrics.max_memory_used_mb,
                report.metrics.memory_size_mb,
            )
            && used >= size
        {
            a.insert(Builtin::OutOfMemory.key().into(), json!(true));
        }
        for (k, v) in &self.settings.static_annotations {
            a.insert(k.clone(), v.clone());
        }
        a
    }

    fn runtime_metadata(
        &self,
        inv: &Invocation,
        kind: StartKind,
        status: Option<&str>,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("requestId".into(), json!(inv.request_id));
        if let Some(status) = status {
            m.insert("status".into(), json!(status));
        }
        if let Some(info) = self.init.info() {
            if let Some(v) = &info.runtime_version {
                m.insert("runtimeVersion".into(), json!(v));
            }
            if let Some(v) = &info.runtime_version_arn {
                m.insert("runtimeVersionArn".into(), json!(v));
            }
            if let Some(v) = &info.instance_id {
                m.insert("instanceId".into(), json!(v));
            }
        }
        if let Some(mb) = self.env.memory_size_mb {
            m.insert("memorySizeMB".into(), json!(mb));
        }
        if let Some((_, d)) = &inv.done {
            if let Some(metrics) = &d.metrics {
                m.insert("runtimeDurationMs".into(), json!(metrics.duration_ms));
                if let Some(b) = metrics.produced_bytes {
                    m.insert("producedBytes".into(), json!(b));
                }
            }
            if let Some(e) = &d.error_type {
                m.insert("errorType".into(), json!(e));
            }
        }
        if let Some(r) = &inv.report {
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

fn namespace(m: Map<String, Value>) -> Map<String, Value> {
    let mut outer = Map::new();
    if !m.is_empty() {
        outer.insert(METADATA_NAMESPACE.into(), Value::Object(m));
    }
    outer
}

fn trace_of(value: Option<&str>) -> Option<TraceHeader> {
    value.and_then(|v| TraceHeader::parse(v).ok())
}

fn max_time(a: Option<EpochSeconds>, b: Option<EpochSeconds>) -> Option<EpochSeconds> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

#[cfg(test)]
mod tests;
