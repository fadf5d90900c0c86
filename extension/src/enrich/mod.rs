//! Enrichment: a state machine from lifecycle events to our own subsegments.
//!
//! (state, INVOKE | telemetry record | SHUTDOWN, time) → (state, documents). No I/O, no clock:
//! times come from the Telemetry API records or are passed in. Ids come from one [`IdSource`]
//! the enricher holds (the kernel's random numbers in production, a sequence in tests).
//!
//! Three layers: [`state`] remembers what arrived, per invocation (one attempt, as
//! [`crate::attempt`] places every INVOKE and record, not one request id), bounded in count and
//! age; [`render`] turns that state into subsegments, purely;
//! [`document`] serialises them and keeps them within X-Ray's limits. This module decides when
//! to send.
//!
//! Two ways to correlate feed the same state and the same rendering:
//! - one invocation at a time (on-demand, provisioned concurrency, SnapStart): INVOKE +
//!   `platform.start` + `platform.runtimeDone` send a `Runtime` subsegment with `Response
//!   Latency` / `Response Duration` / `Runtime Overhead` children, fault and cause on error or
//!   timeout, and indexed annotations. The first invocation of an environment whose caller
//!   waited for init also gets `Cold Start` (with `Extension Init` and `Runtime Init`), or
//!   `Restore` under SnapStart (where the init records describe the snapshot's creation). When
//!   `platform.report` arrives (during the next invocation or at shutdown) `Runtime` is sent
//!   again under the same id with billing and memory figures and an `Extension Overhead` child.
//! - Lambda Managed Instances (many invocations at once, no runtimeDone): `platform.start` and
//!   `platform.report`, in either order, send one `Runtime` with the report's spans as children.

pub mod annotations;
pub mod document;
pub mod render;
pub mod state;

use serde_json::Value;
use tracing::warn;

use crate::attempt::AttemptId;
use crate::document::Document;
use crate::lambda::events::ShutdownReason;
use crate::lambda::telemetry::{
    EpochSeconds, Event, InitializationType, Record, TenantId, TracingContext,
};
use crate::trace::{IdSource, SegmentId, TraceHeader};
use annotations::BuiltinSet;
use render::Context;
pub use render::StartKind;
use state::{
    InitPhase, Invocation, Invocations, MAX_TRACKED_CONCURRENT_INVOCATIONS, MAX_TRACKED_INVOCATIONS,
};

/// An on-demand init followed by a first invoke more than this many seconds later was a
/// proactive initialisation: the caller did not wait for it.
pub const PROACTIVE_INIT_GAP_SECONDS: f64 = 10.0;
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
    pub initialization_type: Option<InitializationType>,
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

/// The enrichment state of one execution environment (one extension process).
#[derive(Debug)]
pub struct Enricher {
    settings: Settings,
    env: Environment,
    init: InitPhase,
    invocations: Invocations,
    ids: IdSource,
    /// Id of the `Cold Start`/`Restore` document, stable across re-sends.
    start_id: Option<SegmentId>,
    /// The `Cold Start`/`Restore` document was built (its records were in).
    start_sent: bool,
    /// Documents we could not build (too large), for the log.
    refused: u64,
    /// The environment's tenant: the first a record named. Lambda never shares an environment
    /// between tenants, so it stands for an invocation whose own records did not name one.
    tenant: Option<TenantId>,
}

impl Enricher {
    /// A fresh state; ids drawn from the operating system.
    pub fn new(settings: Settings, env: Environment) -> Self {
        Self::with_ids(settings, env, IdSource::os())
    }

    /// A fresh state with ids from `ids`.
    pub fn with_ids(settings: Settings, env: Environment, ids: IdSource) -> Self {
        let managed = env.initialization_type == Some(InitializationType::LambdaManagedInstances);
        Self {
            settings,
            env,
            init: InitPhase::default(),
            invocations: Invocations::new(if managed {
                MAX_TRACKED_CONCURRENT_INVOCATIONS
            } else {
                MAX_TRACKED_INVOCATIONS
            }),
            ids,
            start_id: None,
            start_sent: false,
            refused: 0,
            tenant: None,
        }
    }

    /// Documents of ours refused for their size so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn context(&self) -> Context<'_> {
        Context {
            settings: &self.settings,
            env: &self.env,
            init: &self.init,
            tenant: self.tenant.as_ref(),
        }
    }

    /// The invocation of `attempt` (of `request_id`), remembered from now if it was not;
    /// returns its index and the documents of invocations forgotten to make room or for their
    /// age.
    fn place(
        &mut self,
        attempt: AttemptId,
        request_id: &str,
        at: EpochSeconds,
    ) -> (usize, Vec<Document>) {
        let mut out = Vec::new();
        for gone in self.invocations.expire(at) {
            out.extend(self.render_forgotten(&gone));
        }
        let ids = &mut self.ids;
        let (index, evicted) = self
            .invocations
            .entry(attempt, request_id, at, || ids.next_id());
        if let Some(gone) = evicted {
            out.extend(self.render_forgotten(&gone));
        }
        (index, out)
    }

    /// An invocation pushed out before it was reported, though it finished (a report whose
    /// start never came): what is known is sent.
    fn render_forgotten(&mut self, inv: &Invocation) -> Vec<Document> {
        if inv.emitted || !inv.finished() {
            return Vec::new();
        }
        self.render(inv, false)
    }

    /// An INVOKE event; `attempt` is the attempt [`crate::attempt`] placed it on.
    pub fn on_invoke(&mut self, invoke: &Invoke, attempt: AttemptId) -> Vec<Document> {
        let (index, mut out) = self.place(attempt, &invoke.request_id, invoke.received_at);
        let Some(inv) = self.invocations.get_mut(index) else {
            return out;
        };
        // The INVOKE's header is the one the runtime (and so the SDK) got: our subsegments go
        // under the same parent. Telemetry records may carry another parent (Lambda's own
        // segment), and may be handled first.
        let changed = invoke.trace.is_some() && inv.trace != invoke.trace;
        if invoke.trace.is_some() {
            inv.trace = invoke.trace;
        }
        inv.invoked = true;
        inv.deadline = Some(invoke.deadline);
        inv.received_at = Some(invoke.received_at);
        if inv.emitted {
            // Records came first and we already reported: send again (same ids) only if the
            // trace context differs.
            if changed {
                out.extend(self.emit(index, true));
            }
            return out;
        }
        out.extend(self.emit_if_ready(index));
        out
    }

    /// One Telemetry API record; `attempt` is the attempt [`crate::attempt`] placed it on (a
    /// record of an invocation without one is not used).
    pub fn on_telemetry(&mut self, event: &Event, attempt: Option<AttemptId>) -> Vec<Document> {
        let t = event.time;
        let tenant = event.record.tenant_id();
        if self.tenant.is_none() {
            self.tenant = tenant.cloned();
        }
        match &event.record {
            Record::InitStart(s) => {
                if s.initialization_type == Some(InitializationType::LambdaManagedInstances) {
                    self.invocations
                        .set_capacity(MAX_TRACKED_CONCURRENT_INVOCATIONS);
                }
                self.init.start = Some((t, s.clone()));
            }
            Record::InitRuntimeDone(d) => self.init.runtime_done = Some((t, d.clone())),
            Record::InitReport(r) => self.init.report = Some((t, r.clone())),
            Record::RestoreStart(s) => {
                self.init.restore_start = Some((t, s.clone()));
                return self.restore_arrived();
            }
            Record::RestoreRuntimeDone(d) => {
                self.init.restore_done = Some((t, d.clone()));
                return self.restore_arrived();
            }
            Record::RestoreReport(r) => {
                self.init.restore_report = Some((t, r.clone()));
                return self.restore_arrived();
            }
            Record::Start(s) => {
                let Some((index, mut out)) =
                    self.place_record(attempt, &s.request_id, s.tracing.as_ref(), tenant, t)
                else {
                    return Vec::new();
                };
                if let Some(inv) = self.invocations.get_mut(index) {
                    inv.start = Some(t);
                }
                out.extend(self.emit_if_ready(index));
                return out;
            }
            Record::RuntimeDone(d) => {
                let Some((index, mut out)) =
                    self.place_record(attempt, &d.request_id, d.tracing.as_ref(), tenant, t)
                else {
                    return Vec::new();
                };
                if let Some(inv) = self.invocations.get_mut(index) {
                    inv.done = Some((t, d.clone()));
                    // SHUTDOWN can come before a finished invocation's runtimeDone is delivered
                    // (telemetry is buffered; with background flushing we are already past it):
                    // the runtime did finish, so its status, not the shutdown, says how.
                    inv.killed_at_shutdown = None;
                }
                out.extend(self.emit_if_ready(index));
                return out;
            }
            Record::Report(r) => {
                let Some((index, mut out)) =
                    self.place_record(attempt, &r.request_id, r.tracing.as_ref(), tenant, t)
                else {
                    return Vec::new();
                };
                let Some(inv) = self.invocations.get_mut(index) else {
                    return out;
                };
                inv.report = Some((t, r.clone()));
                if inv.done.is_none() {
                    // No runtimeDone (Lambda Managed Instances): the report says how it ended.
                    inv.killed_at_shutdown = None;
                }
                if inv.emitted {
                    out.extend(self.emit(index, false));
                } else {
                    out.extend(self.emit_if_ready(index));
                }
                return out;
            }
            Record::Other(_) => {}
        }
        Vec::new()
    }

    /// A platform record of `request_id` on the invocation of its `attempt` (see
    /// [`Self::place`]; none without an attempt); the invocation takes the record's trace unless
    /// it has one, and its tenant when it names one.
    fn place_record(
        &mut self,
        attempt: Option<AttemptId>,
        request_id: &str,
        tracing: Option<&TracingContext>,
        tenant: Option<&TenantId>,
        at: EpochSeconds,
    ) -> Option<(usize, Vec<Document>)> {
        let trace = trace_of(tracing.map(|c| c.value.as_str()));
        let (index, out) = self.place(attempt?, request_id, at);
        if let Some(inv) = self.invocations.get_mut(index) {
            if inv.trace.is_none() {
                inv.trace = trace;
            }
            if tenant.is_some() {
                inv.tenant_id = tenant.cloned();
            }
        }
        Some((index, out))
    }

    /// A restore record arrived: if the first invocation was reported before the restore was
    /// known, its `Restore` subsegment goes now.
    fn restore_arrived(&mut self) -> Vec<Document> {
        if self.start_sent {
            return Vec::new();
        }
        let first = self
            .invocations
            .positions(|i| i.first && i.emitted)
            .first()
            .copied();
        match first {
            Some(index) => self.emit(index, true),
            None => Vec::new(),
        }
    }

    /// SHUTDOWN: an invocation that never finished (the function timed out or crashed) still
    /// gets its `Runtime` subsegment, with the fault; one that finished but was never reported
    /// (its `platform.start` never came) is reported with what is known.
    pub fn on_shutdown(&mut self, reason: &ShutdownReason, at: EpochSeconds) -> Vec<Document> {
        let pending = self.invocations.positions(|i| !i.emitted);
        let mut out = Vec::new();
        for index in pending {
            let Some(inv) = self.invocations.get_mut(index) else {
                continue;
            };
            if !inv.finished() {
                inv.killed_at_shutdown = Some((at, reason.clone()));
            }
            out.extend(self.emit(index, false));
        }
        out
    }

    /// Whether an invocation we reported on still waits for its `platform.report`.
    pub fn awaiting_report(&self) -> bool {
        self.invocations
            .iter()
            .any(|i| i.emitted && i.report.is_none())
    }

    fn emit_if_ready(&mut self, index: usize) -> Vec<Document> {
        let Some(inv) = self.invocations.get(index) else {
            return Vec::new();
        };
        // The runtime said it is done, or SHUTDOWN did; on Lambda Managed Instances the report
        // says so, once the start is known too (whichever came first waits for the other).
        let ready = inv.done.is_some()
            || inv.killed_at_shutdown.is_some()
            || (inv.report.is_some() && inv.start.is_some());
        if ready {
            self.emit(index, false)
        } else {
            Vec::new()
        }
    }

    /// Builds the invocation's documents: `Runtime`, and on the environment's first invocation
    /// the start subsegment the first time (or again when `resend_start`).
    fn emit(&mut self, index: usize, resend_start: bool) -> Vec<Document> {
        let Some(inv) = self.invocations.get_mut(index) else {
            return Vec::new();
        };
        let first_emission = !std::mem::replace(&mut inv.emitted, true);
        // The start subsegment goes with the first emission, when asked again, and as soon as
        // its records are in if they were not at first (a restore record after the invocation).
        let with_start = first_emission || resend_start || !self.start_sent;
        if inv.first && self.start_id.is_none() {
            self.start_id = Some(self.ids.next_id());
        }
        let Some(inv) = self.invocations.get(index) else {
            return Vec::new();
        };
        let (docs, start_built, refused) =
            render_documents(self.context(), inv, self.start_id, with_start);
        self.start_sent |= start_built;
        self.note_refused(refused);
        docs
    }

    fn render(&mut self, inv: &Invocation, with_start: bool) -> Vec<Document> {
        if inv.first && self.start_id.is_none() {
            self.start_id = Some(self.ids.next_id());
        }
        let (docs, start_built, refused) =
            render_documents(self.context(), inv, self.start_id, with_start);
        self.start_sent |= start_built;
        self.note_refused(refused);
        docs
    }

    fn note_refused(&mut self, errors: Vec<document::DocumentError>) {
        for e in errors {
            self.refused += 1;
            // Rate-limited without a clock: the 1st, 2nd, 4th, 8th, ... refusal is logged.
            if self.refused.is_power_of_two() {
                warn!(error = %e, refused = self.refused, "one of our documents was not built");
            }
        }
    }
}

/// The documents of `inv`: its start subsegment when `with_start` and it is the first
/// invocation (and the records are in), then `Runtime`. Returns them, whether the start
/// subsegment was built, and what had to be refused. Pure.
fn render_documents(
    ctx: Context<'_>,
    inv: &Invocation,
    start_id: Option<SegmentId>,
    with_start: bool,
) -> (Vec<Document>, bool, Vec<document::DocumentError>) {
    let mut out = Vec::with_capacity(2);
    let mut refused = Vec::new();
    let mut start_built = false;
    let sampled = inv.trace.filter(TraceHeader::is_sampled);
    // A subsegment needs a parent: without one in the header there is nowhere to attach.
    let Some((trace, parent)) = sampled.and_then(|t| Some((t, t.parent?))) else {
        return (out, start_built, refused);
    };
    let kind = ctx.classify(inv);
    if with_start
        && inv.first
        && let (Some(sub), Some(id)) = (ctx.start_subsegment(kind, inv), start_id)
    {
        start_built = true;
        match document::independent(trace.root, parent, &sub, id) {
            Ok(doc) => out.push(doc),
            Err(e) => refused.push(e),
        }
    }
    let runtime = ctx.runtime_subsegment(inv, kind);
    if runtime.start.is_some() {
        match document::independent(trace.root, parent, &runtime, inv.runtime_id) {
            Ok(doc) => out.push(doc),
            Err(e) => refused.push(e),
        }
    }
    (out, start_built, refused)
}

fn trace_of(value: Option<&str>) -> Option<TraceHeader> {
    value.and_then(|v| TraceHeader::parse(v).ok())
}

#[cfg(test)]
mod deviation_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tenant_tests;
#[cfg(test)]
mod tests;
