//! Lambda Managed Instances (contracts §8): several invocations at once, one per runtime
//! process, never frozen; no `platform.runtimeDone`; `platform.start` and `platform.report` per
//! request in no guaranteed order (here every third request's start comes after its report).

use std::collections::BTreeMap;
use std::time::Instant;

use super::invoke::{PlatformTracing, invocation_of};
use super::records::{self, ResponseTiming, RuntimeDone};
use super::state::{InvocationProgress, Phase, RuntimeAnswer, RuntimeInvoke, Shared, State};
use super::{Emulator, EmulatorError, InitializationType, Invocation, InvocationStatus, Invoke};
use crate::trace::new_uuid;

/// Every this many requests, the `platform.start` is emitted only after the report.
const REPORT_FIRST_EVERY: usize = 3;

impl Emulator {
    /// Lambda Managed Instances ([`super::EmulatorBuilder::managed_instances`]): hands every
    /// invoke to the runtime processes at once (each process takes one at a time) and returns
    /// when all have answered or the function timeout passed. Initializes first when needed.
    /// Extensions get no INVOKE and nothing is frozen; each answer emits its `platform.report`.
    pub async fn invoke_concurrently(
        &mut self,
        invokes: Vec<Invoke>,
    ) -> Result<Vec<Invocation>, EmulatorError> {
        if self.shared.read(|s| s.phase) != Phase::Ready {
            self.init(InitializationType::OnDemand).await?;
        }
        let shared = std::sync::Arc::clone(&self.shared);
        let config = &shared.config;
        let started_at = Instant::now();
        let deadline = started_at + config.function_timeout;
        let deadline_ms = shared.clock.epoch_millis(deadline);
        let mut order = Vec::with_capacity(invokes.len());
        let mut dispatch = Vec::with_capacity(invokes.len());
        let sender = shared.update(|s| {
            s.phase = Phase::Invoking;
            for (i, invoke) in invokes.iter().enumerate() {
                let request_id = invoke.request_id.clone().unwrap_or_else(new_uuid);
                let platform = invoke.trace.as_deref().and_then(PlatformTracing::of);
                let tracing = platform
                    .as_ref()
                    .map(|t| records::tracing(&t.span_id, &t.value));
                let start = records::start(
                    &request_id,
                    &config.function_version,
                    tracing.as_ref(),
                    None,
                );
                let held_start = if i % REPORT_FIRST_EVERY == 1 {
                    Some(start)
                } else {
                    shared.emit(s, started_at, "platform.start", start);
                    None
                };
                let progress = InvocationProgress {
                    request_id: request_id.clone(),
                    started_at,
                    trace_header: invoke.trace.clone(),
                    tracing,
                    runtime_received_at: None,
                    answer: None,
                    streamed: false,
                    runtime_done_at: None,
                    expected: BTreeMap::new(),
                    taken: BTreeMap::new(),
                    next_after: BTreeMap::new(),
                    tenant_id: None,
                };
                s.concurrent
                    .insert(request_id.clone(), (progress, held_start));
                dispatch.push(RuntimeInvoke {
                    request_id: request_id.clone(),
                    deadline_ms,
                    function_arn: config.function_arn(),
                    payload: invoke.payload.clone(),
                    trace_header: invoke.trace.clone(),
                    client_context: invoke.client_context.clone(),
                    cognito_identity: invoke.cognito_identity.clone(),
                    tenant_id: None,
                });
                order.push((request_id, platform));
            }
            s.runtime.sender.clone()
        });
        for invoke in dispatch {
            if sender.send(invoke).await.is_err() {
                break;
            }
        }
        let ids: Vec<String> = order.iter().map(|(id, _)| id.clone()).collect();
        let _ = shared
            .wait_until(deadline, |s| {
                ids.iter()
                    .all(|id| s.concurrent.get(id).is_none_or(|(p, _)| p.answer.is_some()))
                    .then_some(())
            })
            .await;
        let now = Instant::now();
        let finished = settle(&shared, &ids, now);
        Ok(finished
            .into_iter()
            .zip(order)
            .map(|(progress, (_, platform))| result(&progress, platform, now))
            .collect())
    }
}

/// Records the runtime's answer when `request_id` is a concurrent invocation handed to a
/// runtime and not yet answered, and emits its report (and its start, if held back). Returns
/// whether it was one.
pub(crate) fn answer(
    shared: &Shared,
    s: &mut State,
    request_id: &str,
    answer: RuntimeAnswer,
    timing: ResponseTiming,
) -> bool {
    let Some((progress, held_start)) = s.concurrent.get_mut(request_id) else {
        return false;
    };
    if progress.runtime_received_at.is_none() || progress.answer.is_some() {
        return false;
    }
    let (status, error_type) = match &answer {
        RuntimeAnswer::Response(_) => ("success", None),
        RuntimeAnswer::Error { error_type, .. } => (
            "error",
            Some(error_type.clone().unwrap_or_else(|| "Unknown".to_owned())),
        ),
    };
    let record = records::managed_report(
        &shared.clock,
        &RuntimeDone {
            request_id,
            status,
            error_type: error_type.as_deref(),
            tracing: progress.tracing.as_ref(),
            started_at: progress.started_at,
            response: Some(timing),
            done_at: timing.body_done_at,
            produced_bytes: 0,
            tenant_id: None,
        },
    );
    progress.answer = Some((answer, timing));
    let held_start = held_start.take();
    shared.emit(s, timing.body_done_at, "platform.report", record);
    if let Some(start) = held_start {
        shared.emit(s, timing.body_done_at, "platform.start", start);
    }
    true
}

/// Takes the invocations `ids` out of the state; those without an answer get their report
/// (status `timeout`) now.
fn settle(shared: &Shared, ids: &[String], now: Instant) -> Vec<InvocationProgress> {
    shared.update(|s| {
        s.phase = Phase::Ready;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some((progress, held_start)) = s.concurrent.remove(id) else {
                continue;
            };
            if progress.answer.is_none() {
                let record = records::managed_report(
                    &shared.clock,
                    &RuntimeDone {
                        request_id: id,
                        status: "timeout",
                        error_type: Some("Sandbox.Timedout"),
                        tracing: progress.tracing.as_ref(),
                        started_at: progress.started_at,
                        response: None,
                        done_at: now,
                        produced_bytes: 0,
                        tenant_id: None,
                    },
                );
                shared.emit(s, now, "platform.report", record);
                if let Some(start) = held_start {
                    shared.emit(s, now, "platform.start", start);
                }
            }
            out.push(progress);
        }
        out
    })
}

fn result(
    progress: &InvocationProgress,
    platform: Option<PlatformTracing>,
    now: Instant,
) -> Invocation {
    let answer = progress.answer.as_ref().map(|(a, _)| a);
    let status = match answer {
        Some(RuntimeAnswer::Response(_)) => InvocationStatus::Success,
        Some(RuntimeAnswer::Error { .. }) => InvocationStatus::Error,
        None => InvocationStatus::Timeout,
    };
    invocation_of(progress, platform, status, now)
}
