//! The Runtime API (`/2018-06-01/runtime`, contracts §3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode};
use serde_json::Value;

use super::api::{accepted, api_error};
use super::config::{MAX_RESPONSE_BYTES, MAX_STREAMED_RESPONSE_BYTES};
use super::records::{self, ResponseTiming, RuntimeDone};
use super::state::{ApiErrorReport, Phase, RuntimeAnswer, Shared, State};
use crate::http::{Request, Response, bytes_response};

/// Longest a snapshot waits for its restore (tests restore at once).
const RESTORE_WAIT_LIMIT: Duration = Duration::from_mins(10);

/// Decrements the blocked-`next` count when a long-poll ends, however it ends (answered, or the
/// connection dropped mid-wait).
struct Waiting<'a> {
    shared: &'a Shared,
    generation: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.update(|s| {
            if s.generation == self.generation {
                s.runtime.waiting = s.runtime.waiting.saturating_sub(1);
            }
        });
    }
}

/// `GET /runtime/invocation/next`: marks the end of init or of the current invocation, then
/// blocks until the next invoke.
pub(crate) async fn next(shared: Arc<Shared>) -> Response {
    let now = Instant::now();
    let (generation, receiver) = shared.update(|s| {
        s.runtime.note_next(now);
        runtime_called_next(&shared, s, now);
        (s.generation, Arc::clone(&s.runtime.receiver))
    });
    let waiting = Waiting {
        shared: &shared,
        generation,
    };
    let invoke = receiver.lock().await.recv().await;
    drop(waiting);
    let Some(invoke) = invoke else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.EnvironmentReset",
            "the execution environment was reset",
        );
    };
    let taken_at = Instant::now();
    shared.update(|s| {
        if let Some(inv) = s.invocation.as_mut()
            && inv.request_id == invoke.request_id
        {
            inv.runtime_received_at = Some(taken_at);
        }
        if let Some((inv, _)) = s.concurrent.get_mut(&invoke.request_id) {
            inv.runtime_received_at = Some(taken_at);
        }
    });
    let mut response = bytes_response(StatusCode::OK, "application/json", invoke.payload);
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("Lambda-Runtime-Aws-Request-Id", &invoke.request_id);
    set(
        "Lambda-Runtime-Deadline-Ms",
        &invoke.deadline_ms.to_string(),
    );
    set("Lambda-Runtime-Invoked-Function-Arn", &invoke.function_arn);
    if let Some(trace) = &invoke.trace_header {
        set("Lambda-Runtime-Trace-Id", trace);
    }
    if let Some(context) = &invoke.client_context {
        set("Lambda-Runtime-Client-Context", context);
    }
    if let Some(identity) = &invoke.cognito_identity {
        set("Lambda-Runtime-Cognito-Identity", identity);
    }
    if let Some(tenant) = &invoke.tenant_id {
        set("Lambda-Runtime-Aws-Tenant-Id", tenant);
    }
    response
}

/// `GET /runtime/restore/next` (SnapStart): the runtime is ready for the snapshot, which ends
/// its part of the init; the call returns once the environment is restored.
pub(crate) async fn restore_next(shared: Arc<Shared>) -> Response {
    let now = Instant::now();
    let generation = shared.update(|s| {
        runtime_called_next(&shared, s, now);
        s.generation
    });
    let restored = shared
        .wait_until(now + RESTORE_WAIT_LIMIT, |s| {
            (s.generation != generation || s.restored).then_some(s.generation == generation)
        })
        .await;
    if restored == Some(true) {
        bytes_response(StatusCode::OK, "application/json", "{}")
    } else {
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.EnvironmentReset",
            "the execution environment was reset before a restore",
        )
    }
}

/// `POST /runtime/restore/error`: the runtime's after-restore hooks failed.
pub(crate) fn restore_error(shared: &Shared, req: &Request) -> Response {
    let report = runtime_error_report(req, "restore", Instant::now());
    shared.update(|s| s.api_errors.push(report));
    accepted()
}

/// A runtime's `/…/error` post as the emulator keeps it.
fn runtime_error_report(req: &Request, kind: &'static str, at: Instant) -> ApiErrorReport {
    ApiErrorReport {
        source: "runtime".to_owned(),
        kind,
        error_type: Some(
            req.header("Lambda-Runtime-Function-Error-Type")
                .unwrap_or("Runtime.Unknown")
                .to_owned(),
        ),
        body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
        at,
    }
}

/// The runtime's next ends its init (`platform.initRuntimeDone`) or its part of the invocation
/// (`platform.runtimeDone`).
fn runtime_called_next(shared: &Shared, s: &mut State, now: Instant) {
    let generation = s.generation;
    if s.phase == Phase::Initializing
        && let Some(init) = s.init.as_mut()
        && init.runtime_ready_at.is_none()
        && !init.runtime_done_emitted
    {
        init.runtime_ready_at = Some(now);
        init.runtime_done_emitted = true;
        let record = records::init_runtime_done(init.init_type, init.phase_label, "success", None);
        shared.emit(s, now, "platform.initRuntimeDone", record);
    }
    let Some(inv) = s.invocation.as_mut() else {
        return;
    };
    if inv.runtime_received_at.is_none() || inv.runtime_done_at.is_some() {
        return;
    }
    inv.runtime_done_at = Some(now);
    let (status, error_type, produced, timing) = match &inv.answer {
        Some((RuntimeAnswer::Response(body), timing)) => {
            ("success", None, body.len(), Some(*timing))
        }
        Some((
            RuntimeAnswer::Error {
                error_type, body, ..
            },
            timing,
        )) => (
            "error",
            Some(error_type.clone().unwrap_or_else(|| "Unknown".to_owned())),
            body.len(),
            Some(*timing),
        ),
        // Next without an answer: Lambda fails the invocation.
        None => ("failure", Some("Runtime.NoResponse".to_owned()), 0, None),
    };
    let record = records::runtime_done(
        &shared.clock,
        &RuntimeDone {
            request_id: &inv.request_id,
            status,
            error_type: error_type.as_deref(),
            tracing: inv.tracing.as_ref(),
            started_at: inv.started_at,
            response: timing,
            done_at: now,
            produced_bytes: produced,
            tenant_id: inv.tenant_id.as_deref(),
        },
    );
    shared
        .telemetry
        .emit(generation, now, "platform.runtimeDone", record);
    shared.telemetry.emit(
        generation,
        now,
        "platform.end",
        records::end(&inv.request_id),
    );
}

/// Records the runtime's answer when `request_id` is the invocation in flight, handed to the
/// runtime and not yet answered.
fn answer(
    shared: &Shared,
    request_id: &str,
    req: &Request,
    answer: RuntimeAnswer,
) -> Result<(), Box<Response>> {
    let timing = ResponseTiming {
        head_at: req.received_at,
        body_done_at: req.body_done_at,
    };
    shared.update(|s| {
        if let Some(inv) = s.invocation.as_mut().filter(|inv| {
            inv.request_id == request_id
                && inv.runtime_received_at.is_some()
                && inv.answer.is_none()
        }) {
            inv.answer = Some((answer, timing));
            return Ok(());
        }
        if super::managed::answer(shared, s, request_id, answer, timing) {
            return Ok(());
        }
        Err(Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        )))
    })
}

/// `POST /runtime/invocation/{id}/response`, buffered or streamed (the body arrives over the
/// whole stream: its head starts the response, its end ends it).
pub(crate) fn response(shared: &Shared, request_id: &str, req: &Request) -> Response {
    let streamed = req
        .header("Lambda-Runtime-Function-Response-Mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("streaming"));
    let limit = if streamed {
        MAX_STREAMED_RESPONSE_BYTES
    } else {
        MAX_RESPONSE_BYTES
    };
    if streamed {
        shared.update(|s| {
            if let Some(inv) = s.invocation.as_mut()
                && inv.request_id == request_id
            {
                inv.streamed = true;
            }
        });
    }
    if req.body.len() > limit {
        let message = format!("Exceeded maximum allowed payload size ({limit} bytes).");
        let body = serde_json::json!({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"});
        let error = RuntimeAnswer::Error {
            error_type: Some("Function.ResponseSizeTooLarge".to_owned()),
            body: body.to_string().into(),
            xray_cause: None,
        };
        if let Err(rejected) = answer(shared, request_id, req, error) {
            return *rejected;
        }
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        );
    }
    match answer(
        shared,
        request_id,
        req,
        RuntimeAnswer::Response(req.body.clone()),
    ) {
        Ok(()) => accepted(),
        Err(rejected) => *rejected,
    }
}

/// `POST /runtime/invocation/{id}/error`.
pub(crate) fn error(shared: &Shared, request_id: &str, req: &Request) -> Response {
    let error = RuntimeAnswer::Error {
        error_type: req
            .header("Lambda-Runtime-Function-Error-Type")
            .map(str::to_owned),
        body: req.body.clone(),
        xray_cause: req
            .header("Lambda-Runtime-Function-XRay-Error-Cause")
            .map(str::to_owned),
    };
    match answer(shared, request_id, req, error) {
        Ok(()) => accepted(),
        Err(rejected) => *rejected,
    }
}

/// `POST /runtime/init/error`: the init fails with the runtime's error type.
pub(crate) fn init_error(shared: &Shared, req: &Request) -> Response {
    let now = Instant::now();
    let report = runtime_error_report(req, "init", now);
    let error_type = report.error_type.clone().unwrap_or_default();
    shared.update(|s| {
        let generation = s.generation;
        s.api_errors.push(report);
        match s.init.as_mut() {
            Some(init) if s.phase == Phase::Initializing => {
                if init.failure.is_none() {
                    init.failure = Some((
                        error_type.clone(),
                        "the runtime reported an init error".to_owned(),
                    ));
                }
                if !init.runtime_done_emitted {
                    init.runtime_done_emitted = true;
                    let record = records::init_runtime_done(
                        init.init_type,
                        init.phase_label,
                        "error",
                        Some(&error_type),
                    );
                    shared
                        .telemetry
                        .emit(generation, now, "platform.initRuntimeDone", record);
                }
                accepted()
            }
            _ => api_error(
                StatusCode::FORBIDDEN,
                "Runtime.InvalidStateTransition",
                "init errors are accepted during init only",
            ),
        }
    })
}
