//! The invoke phase (contracts §1): the event to the runtime, INVOKE to the extensions, the
//! runtime's answer, and the invocation's closing records once every process has called next.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::{Value, json};

use super::config::InitializationType;
use super::init::crash;
use super::process;
use super::records::{self, Report, RuntimeDone};
use super::state::{ExtensionEvent, InvocationProgress, Phase, RuntimeAnswer, RuntimeInvoke};
use super::{
    Emulator, EmulatorError, FunctionError, InitRecord, Invocation, InvocationStatus, ProcessExit,
    ShutdownReason,
};
use crate::trace::{TraceHeader, new_segment_id, new_uuid};

/// An invoke request.
#[derive(Debug, Clone)]
pub struct Invoke {
    pub(super) payload: Bytes,
    pub(super) trace: Option<String>,
    pub(super) request_id: Option<String>,
    pub(super) client_context: Option<String>,
    pub(super) cognito_identity: Option<String>,
    pub(super) tenant: Option<String>,
}

impl Invoke {
    /// An invoke with a JSON event.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers pass a json! temporary"
    )]
    pub fn new(event: Value) -> Self {
        Self::raw(event.to_string())
    }

    /// An invoke with a raw payload.
    pub fn raw(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            trace: None,
            request_id: None,
            client_context: None,
            cognito_identity: None,
            tenant: None,
        }
    }

    /// For tenant `id` (`--tenant-id`): a function with tenant isolation
    /// ([`EmulatorBuilder::tenant_isolation`]) needs one.
    #[must_use]
    pub fn tenant(mut self, id: impl Into<String>) -> Self {
        self.tenant = Some(id.into());
        self
    }

    /// Traced with `header` (the runtime gets `Lambda-Runtime-Trace-Id`, extensions `tracing`).
    #[must_use]
    #[expect(clippy::needless_pass_by_value, reason = "callers pass a fresh header")]
    pub fn traced(mut self, header: TraceHeader) -> Self {
        self.trace = Some(header.to_string());
        self
    }

    /// Traced with a raw header value, passed on verbatim.
    #[must_use]
    pub fn traced_raw(mut self, header: impl Into<String>) -> Self {
        self.trace = Some(header.into());
        self
    }

    /// A chosen request id (default: a random UUID).
    #[must_use]
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// `Lambda-Runtime-Client-Context`.
    #[must_use]
    pub fn client_context(mut self, value: impl Into<String>) -> Self {
        self.client_context = Some(value.into());
        self
    }

    /// `Lambda-Runtime-Cognito-Identity`.
    #[must_use]
    pub fn cognito_identity(mut self, value: impl Into<String>) -> Self {
        self.cognito_identity = Some(value.into());
        self
    }
}

/// How an invocation's wait ended.
enum Outcome {
    Finished,
    TimedOut,
    RuntimeCrashed(ProcessExit),
    ExtensionCrashed(String),
}

/// The `tracing` of the platform records of a sampled invocation, as AWS's emulator builds it:
/// `spanId` is the caller's `Parent`, and `value` carries the trace with `Parent` set to the
/// segment Lambda records for the invocation.
pub(crate) struct PlatformTracing {
    pub span_id: String,
    pub lambda_segment_id: String,
    pub value: String,
}

impl PlatformTracing {
    /// `None` unless the header has a root and says `Sampled=1`.
    pub(crate) fn of(header: &str) -> Option<Self> {
        let caller = TraceHeader::parse(header).filter(TraceHeader::is_sampled)?;
        let lambda_segment_id = new_segment_id();
        let value = TraceHeader {
            parent: Some(lambda_segment_id.clone()),
            ..caller.clone()
        }
        .to_string();
        Some(Self {
            span_id: caller.parent.unwrap_or_else(|| lambda_segment_id.clone()),
            lambda_segment_id,
            value,
        })
    }
}

impl Emulator {
    /// Invokes the function; initializes first when no environment is ready (a cold start).
    ///
    /// Returns once the invocation is finished: the runtime and every extension called next,
    /// or the function timed out or crashed (then the environment was reset and
    /// [`Invocation::reset`] says how).
    pub async fn invoke(&mut self, invoke: Invoke) -> Result<Invocation, EmulatorError> {
        self.place_tenant(invoke.tenant.as_deref()).await?;
        let init = if self.shared.read(|s| s.phase) == Phase::Ready {
            None
        } else {
            Some(self.run_init(InitializationType::OnDemand).await?)
        };
        let shared = std::sync::Arc::clone(&self.shared);
        let config = &shared.config;
        let started_at = Instant::now();
        let deadline = started_at + config.function_timeout;
        let deadline_ms = shared.clock.epoch_millis(deadline);
        let request_id = invoke.request_id.clone().unwrap_or_else(new_uuid);
        let platform_tracing = invoke.trace.as_deref().and_then(PlatformTracing::of);
        let tracing = platform_tracing
            .as_ref()
            .map(|t| records::tracing(&t.span_id, &t.value));
        let function_arn = config.function_arn();

        shared.update(|s| {
            s.phase = Phase::Invoking;
            let start = records::start(
                &request_id,
                &config.function_version,
                tracing.as_ref(),
                invoke.tenant.as_deref(),
            );
            shared.emit(s, started_at, "platform.start", start);
            let _ = s.runtime.sender.try_send(RuntimeInvoke {
                request_id: request_id.clone(),
                deadline_ms,
                function_arn: function_arn.clone(),
                payload: invoke.payload.clone(),
                trace_header: invoke.trace.clone(),
                client_context: invoke.client_context.clone(),
                cognito_identity: invoke.cognito_identity.clone(),
                tenant_id: invoke.tenant.clone(),
            });
            let mut expected = BTreeMap::new();
            for ext in s.extensions.iter().filter(|e| e.wants("INVOKE")) {
                let mut body = json!({
                    "eventType": "INVOKE",
                    "deadlineMs": deadline_ms,
                    "requestId": request_id,
                    "invokedFunctionArn": function_arn,
                });
                // A local run's INVOKE never carries the trace.
                if let Some(header) = invoke.trace.as_ref().filter(|_| !config.local_run) {
                    body["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": header});
                }
                let _ = ext.mailbox.sender.try_send(ExtensionEvent { body });
                expected.insert(ext.id.clone(), ext.name.clone());
            }
            s.invocation = Some(InvocationProgress {
                request_id: request_id.clone(),
                started_at,
                trace_header: invoke.trace.clone(),
                tracing: tracing.clone(),
                runtime_received_at: None,
                answer: None,
                streamed: false,
                runtime_done_at: None,
                expected,
                taken: BTreeMap::new(),
                next_after: BTreeMap::new(),
                tenant_id: invoke.tenant.clone(),
            });
        });

        let runtime_id = self.runtime.as_ref().map(|h| h.id);
        let extension_processes: Vec<(u64, String)> = self
            .extensions
            .iter()
            .map(|h| (h.id, h.name.clone()))
            .collect();
        let outcome = shared
            .wait_until(deadline, |s| {
                let inv = s.invocation.as_ref()?;
                if inv.finished() {
                    return Some(Outcome::Finished);
                }
                if let Some(exit) = runtime_id.and_then(|id| s.process_exit(id)) {
                    return Some(Outcome::RuntimeCrashed(*exit));
                }
                extension_processes
                    .iter()
                    .find(|(id, name)| {
                        inv.expected.values().any(|n| n == name) && s.process_exit(*id).is_some()
                    })
                    .map(|(_, name)| Outcome::ExtensionCrashed(name.clone()))
            })
            .await
            .unwrap_or(Outcome::TimedOut);
        let progress = shared.update(|s| s.invocation.take()).ok_or_else(|| {
            EmulatorError::InvocationLost {
                request_id: request_id.clone(),
            }
        })?;
        Ok(self
            .finish_invocation(outcome, progress, init, platform_tracing)
            .await)
    }

    /// Tenant isolation: an invoke must name its tenant (and only then may name one), and an
    /// environment serves one tenant: an invoke for another ends this environment (`spindown`)
    /// so that it runs in a fresh one, as Lambda would run it in another.
    async fn place_tenant(&mut self, tenant: Option<&str>) -> Result<(), EmulatorError> {
        let isolated = self.shared.config.tenant_isolation;
        match tenant {
            None if isolated => return Err(EmulatorError::TenantRequired),
            Some(t) if !isolated || t.is_empty() => {
                return Err(EmulatorError::TenantNotAccepted {
                    tenant: t.to_owned(),
                });
            }
            _ => {}
        }
        let serving = self.shared.read(|s| s.tenant.clone());
        if let (Some(serving), Some(wanted)) = (serving, tenant)
            && serving != wanted
            && self.is_initialized()
        {
            self.reset(ShutdownReason::Spindown).await;
        }
        self.shared.update(|s| s.tenant = tenant.map(str::to_owned));
        Ok(())
    }

    async fn finish_invocation(
        &mut self,
        outcome: Outcome,
        progress: InvocationProgress,
        init: Option<InitRecord>,
        platform_tracing: Option<PlatformTracing>,
    ) -> Invocation {
        let now = Instant::now();
        let (status, error_type) =
            outcome_status(&outcome, progress.answer.as_ref().map(|(a, _)| a));
        let finished = matches!(outcome, Outcome::Finished);
        let extension_overhead =
            self.close_invocation(&progress, finished, status, error_type.as_deref(), now);
        let reset = match &outcome {
            Outcome::Finished => {
                self.shared.update(|s| s.phase = Phase::Ready);
                None
            }
            Outcome::TimedOut => Some(self.reset(ShutdownReason::Timeout).await),
            Outcome::RuntimeCrashed(_) | Outcome::ExtensionCrashed(_) => {
                Some(self.reset(ShutdownReason::Failure).await)
            }
        };
        let names: BTreeMap<&String, &String> = progress.expected.iter().collect();
        Invocation {
            cold: init.is_some(),
            init,
            runtime_done_at: progress.runtime_done_at,
            extension_next_at: progress
                .next_after
                .iter()
                .filter_map(|(id, at)| names.get(id).map(|n| ((*n).clone(), *at)))
                .collect(),
            post_runtime: extension_overhead
                .map(|(_, d)| d)
                .or_else(|| (finished && progress.expected.is_empty()).then_some(Duration::ZERO)),
            failure: failure_message(&outcome),
            reset,
            ..invocation_of(&progress, platform_tracing, status, now)
        }
    }

    /// Emits the invocation's closing records: `platform.runtimeDone` when the runtime never
    /// called next, then `platform.report` (only now: every extension has called next, or the
    /// invocation failed). Returns the extensions' overhead (runtime done, duration).
    fn close_invocation(
        &mut self,
        progress: &InvocationProgress,
        finished: bool,
        status: InvocationStatus,
        error_type: Option<&str>,
        now: Instant,
    ) -> Option<(Instant, Duration)> {
        let shared = &self.shared;
        let config = &shared.config;
        if progress.runtime_done_at.is_none() {
            let record = records::runtime_done(
                &shared.clock,
                &RuntimeDone {
                    request_id: &progress.request_id,
                    status: status.as_str(),
                    error_type,
                    tracing: progress.tracing.as_ref(),
                    started_at: progress.started_at,
                    response: progress.answer.as_ref().map(|(_, t)| *t),
                    done_at: now,
                    produced_bytes: 0,
                    tenant_id: progress.tenant_id.as_deref(),
                },
            );
            shared.update(|s| {
                shared.emit(s, now, "platform.runtimeDone", record);
                shared.emit(s, now, "platform.end", records::end(&progress.request_id));
            });
        }
        if !finished {
            let fault = records::fault(&progress.request_id, status.as_str(), error_type);
            shared.update(|s| shared.emit(s, now, "platform.fault", fault));
        }
        let last_next = progress.next_after.values().max().copied();
        let frozen_at = if finished {
            last_next
                .into_iter()
                .chain(progress.runtime_done_at)
                .max()
                .unwrap_or(now)
        } else {
            now
        };
        let extension_overhead = match (finished, progress.runtime_done_at, last_next) {
            (true, Some(done), Some(last)) => Some((done, last.saturating_duration_since(done))),
            _ => None,
        };
        let max_memory_used_mb = self
            .runtime
            .as_ref()
            .and_then(|h| h.pid)
            .and_then(process::peak_rss_mb)
            .unwrap_or(config.memory_mb / 2)
            .min(config.memory_mb);
        let report = records::report(
            &shared.clock,
            &Report {
                request_id: &progress.request_id,
                status: status.as_str(),
                error_type: error_type.filter(|_| status != InvocationStatus::Success),
                tracing: progress.tracing.as_ref(),
                duration: frozen_at.saturating_duration_since(progress.started_at),
                memory_mb: config.memory_mb,
                max_memory_used_mb,
                init_duration: self.pending_init_duration.take(),
                extension_overhead,
                tenant_id: progress.tenant_id.as_deref(),
            },
        );
        shared.update(|s| shared.emit(s, frozen_at.max(now), "platform.report", report));
        extension_overhead
    }
}

/// The invocation's `status` and `errorType`: the outcome decides, else the runtime's answer.
fn outcome_status(
    outcome: &Outcome,
    answer: Option<&RuntimeAnswer>,
) -> (InvocationStatus, Option<String>) {
    match (outcome, answer) {
        (Outcome::TimedOut, _) => (
            InvocationStatus::Timeout,
            Some("Sandbox.Timedout".to_owned()),
        ),
        (Outcome::RuntimeCrashed(_), _) => (
            InvocationStatus::Failure,
            Some("Runtime.ExitError".to_owned()),
        ),
        (Outcome::ExtensionCrashed(_), _) => (
            InvocationStatus::Failure,
            Some("Extension.Crash".to_owned()),
        ),
        (Outcome::Finished, Some(RuntimeAnswer::Response(_))) => (InvocationStatus::Success, None),
        (Outcome::Finished, Some(RuntimeAnswer::Error { error_type, .. })) => (
            InvocationStatus::Error,
            Some(error_type.clone().unwrap_or_else(|| "Unknown".to_owned())),
        ),
        // The runtime called next without answering.
        (Outcome::Finished, None) => (
            InvocationStatus::Failure,
            Some("Runtime.NoResponse".to_owned()),
        ),
    }
}

fn failure_message(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::RuntimeCrashed(exit) => Some(
            crash(
                "Runtime.ExitError",
                "the runtime",
                "during the invoke",
                exit,
            )
            .2,
        ),
        Outcome::ExtensionCrashed(name) => {
            Some(format!("extension {name} exited during the invoke"))
        }
        Outcome::Finished | Outcome::TimedOut => None,
    }
}

/// What a test reads of an invocation from its progress: a warm one that was not reset, with
/// nothing known of the extensions (the caller sets what it knows).
pub(super) fn invocation_of(
    progress: &InvocationProgress,
    platform_tracing: Option<PlatformTracing>,
    status: InvocationStatus,
    finished_at: Instant,
) -> Invocation {
    let (response, error) = answer_parts(progress.answer.as_ref().map(|(a, _)| a));
    Invocation {
        request_id: progress.request_id.clone(),
        trace: progress
            .trace_header
            .as_deref()
            .and_then(TraceHeader::parse),
        span_id: platform_tracing.as_ref().map(|t| t.span_id.clone()),
        lambda_segment_id: platform_tracing.map(|t| t.lambda_segment_id),
        cold: false,
        init: None,
        status,
        response,
        error,
        started_at: progress.started_at,
        response_at: progress.answer.as_ref().map(|(_, t)| t.body_done_at),
        runtime_done_at: None,
        extension_next_at: Vec::new(),
        post_runtime: None,
        finished_at,
        timed_out: status == InvocationStatus::Timeout,
        failure: None,
        reset: None,
        streamed: progress.streamed,
        response_started_at: progress.answer.as_ref().map(|(_, t)| t.head_at),
        runtime_received_at: progress.runtime_received_at,
    }
}

/// The response payload or the error, from the runtime's answer.
fn answer_parts(answer: Option<&RuntimeAnswer>) -> (Option<Bytes>, Option<FunctionError>) {
    match answer {
        Some(RuntimeAnswer::Response(body)) => (Some(body.clone()), None),
        Some(RuntimeAnswer::Error {
            error_type,
            body,
            xray_cause,
        }) => {
            let parsed: Option<Value> = serde_json::from_slice(body).ok();
            let field = |name: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let error = FunctionError {
                header_type: error_type.clone(),
                body_type: field("errorType"),
                message: field("errorMessage"),
                body: body.clone(),
                xray_cause: xray_cause.clone(),
            };
            (None, Some(error))
        }
        None => (None, None),
    }
}
