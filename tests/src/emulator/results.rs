//! What a test reads back from the emulator: the records of inits, invocations and shutdowns,
//! the processes' exits, and the events delivered to extensions.

use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::Value;

use super::config::InitializationType;
use crate::trace::TraceHeader;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    /// The exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// When the emulator saw it end.
    pub at: Instant,
}

/// Init timings of one extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionInitTiming {
    /// Its name.
    pub name: String,
    /// Launched (or attached) rather than registered from inside the runtime.
    pub external: bool,
    /// When its process was started (`None` for attached and internal extensions).
    pub spawned_at: Option<Instant>,
    /// When it registered.
    pub registered_at: Option<Instant>,
    /// When it first called `/extension/event/next`.
    pub first_next_at: Option<Instant>,
}

impl ExtensionInitTiming {
    /// Spawn → first next: the extension's share of the init.
    pub fn init_duration(&self) -> Option<Duration> {
        Some(
            self.first_next_at?
                .saturating_duration_since(self.spawned_at?),
        )
    }

    /// Spawn → register.
    pub fn register_duration(&self) -> Option<Duration> {
        Some(
            self.registered_at?
                .saturating_duration_since(self.spawned_at?),
        )
    }
}

/// One init of an environment.
#[derive(Debug, Clone)]
pub struct InitRecord {
    /// The environment generation it created (1 for the first init).
    pub generation: u64,
    /// `initializationType`.
    pub initialization_type: InitializationType,
    /// `phase`: `init`, or `invoke` for an init retried after a failed one.
    pub phase: &'static str,
    /// `success`, `error`, `failure` or `timeout`.
    pub status: String,
    /// `errorType` when not successful.
    pub error_type: Option<String>,
    /// A description when not successful.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Instant,
    /// When it ended.
    pub finished_at: Instant,
    /// When the runtime process was started.
    pub runtime_spawned_at: Option<Instant>,
    /// When the runtime first called `/runtime/invocation/next`.
    pub runtime_ready_at: Option<Instant>,
    /// Per-extension timings.
    pub extensions: Vec<ExtensionInitTiming>,
}

impl InitRecord {
    /// Start → end.
    pub fn duration(&self) -> Duration {
        self.finished_at.saturating_duration_since(self.started_at)
    }

    /// The timings of the extension called `name`.
    pub fn extension(&self, name: &str) -> Option<&ExtensionInitTiming> {
        self.extensions.iter().find(|e| e.name == name)
    }
}

/// An event an extension received from `/extension/event/next`.
#[derive(Debug, Clone)]
pub struct DeliveredEvent {
    /// When it was handed over.
    pub at: Instant,
    /// The body.
    pub event: Value,
}

impl DeliveredEvent {
    /// `eventType`: `INVOKE` or `SHUTDOWN`.
    pub fn event_type(&self) -> &str {
        self.event
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `shutdownReason` of a SHUTDOWN.
    pub fn shutdown_reason(&self) -> Option<&str> {
        self.event.get("shutdownReason").and_then(Value::as_str)
    }

    /// `requestId` of an INVOKE.
    pub fn request_id(&self) -> Option<&str> {
        self.event.get("requestId").and_then(Value::as_str)
    }
}

/// The outcome `status` of an invocation, as in `platform.runtimeDone` and `platform.report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationStatus {
    /// The runtime posted a response.
    Success,
    /// The runtime posted an error.
    Error,
    /// The runtime or an extension crashed.
    Failure,
    /// The function timeout passed.
    Timeout,
}

impl InvocationStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
        }
    }
}

/// An error the runtime posted to `/runtime/invocation/{id}/error`.
#[derive(Debug, Clone)]
pub struct FunctionError {
    /// The `Lambda-Runtime-Function-Error-Type` header.
    pub header_type: Option<String>,
    /// `errorType` from the body, when it is JSON.
    pub body_type: Option<String>,
    /// `errorMessage` from the body, when it is JSON.
    pub message: Option<String>,
    /// The body.
    pub body: Bytes,
    /// The `Lambda-Runtime-Function-XRay-Error-Cause` header.
    pub xray_cause: Option<String>,
}

impl FunctionError {
    /// The error type: the body's `errorType`, else the header.
    pub fn error_type(&self) -> Option<&str> {
        self.body_type.as_deref().or(self.header_type.as_deref())
    }
}

/// The result of [`Emulator::invoke`].
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The request id.
    pub request_id: String,
    /// The trace header sent, parsed (when the invoke was traced).
    pub trace: Option<TraceHeader>,
    /// `tracing.spanId` of the platform records (sampled invokes only): the caller's `Parent`.
    pub span_id: Option<String>,
    /// The `Parent` in the platform records' `tracing.value` (sampled invokes only): the segment
    /// Lambda records for the invocation.
    pub lambda_segment_id: Option<String>,
    /// This invoke performed the environment's init (a cold start).
    pub cold: bool,
    /// The init it performed, when cold.
    pub init: Option<InitRecord>,
    /// `status`.
    pub status: InvocationStatus,
    /// The response payload, when the runtime posted one.
    pub response: Option<Bytes>,
    /// The error, when the runtime posted one.
    pub error: Option<FunctionError>,
    /// When the invoke started.
    pub started_at: Instant,
    /// When the runtime's response (or error) arrived.
    pub response_at: Option<Instant>,
    /// When the runtime called next after answering (`platform.runtimeDone`).
    pub runtime_done_at: Option<Instant>,
    /// When each extension called next after taking INVOKE, by name.
    pub extension_next_at: Vec<(String, Instant)>,
    /// Runtime done → last extension next (`PostRuntimeExtensionsDuration`), when finished.
    pub post_runtime: Option<Duration>,
    /// When the invocation ended (frozen, or reset begun).
    pub finished_at: Instant,
    /// The function timeout passed.
    pub timed_out: bool,
    /// What crashed, when the runtime or an extension exited during the invoke.
    pub failure: Option<String>,
    /// The reset this invocation caused (timeout or crash).
    pub reset: Option<ShutdownReport>,
    /// The runtime streamed its response (`Lambda-Runtime-Function-Response-Mode: streaming`).
    pub streamed: bool,
    /// When the response's first bytes arrived (its head); the stream ends at `response_at`.
    pub response_started_at: Option<Instant>,
    /// When a runtime process took the invocation from `/runtime/invocation/next`.
    pub runtime_received_at: Option<Instant>,
}

impl Invocation {
    /// The response parsed as JSON.
    pub fn response_json(&self) -> Option<Value> {
        serde_json::from_slice(self.response.as_ref()?).ok()
    }

    /// Start → response.
    pub fn response_latency(&self) -> Option<Duration> {
        Some(self.response_at?.saturating_duration_since(self.started_at))
    }

    /// When extension `name` called next after this invoke.
    pub fn extension_next(&self, name: &str) -> Option<Instant> {
        self.extension_next_at
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, at)| *at)
    }
}

/// Why an environment shuts down (`shutdownReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Normal end of the environment.
    Spindown,
    /// After a function timeout.
    Timeout,
    /// After a crash or failed init.
    Failure,
}

impl ShutdownReason {
    /// The wire value (lowercase, as Lambda sends it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spindown => "spindown",
            Self::Timeout => "timeout",
            Self::Failure => "failure",
        }
    }

    /// The wire value in a local run: AWS's runtime interface emulator names them
    /// `SandboxTerminated`, `Timeout` and `ReleaseFail`.
    pub fn as_local_str(self) -> &'static str {
        match self {
            Self::Spindown => "SandboxTerminated",
            Self::Timeout => "Timeout",
            Self::Failure => "ReleaseFail",
        }
    }
}

/// How the runtime ended at a shutdown.
#[derive(Debug, Clone)]
pub struct RuntimeExit {
    /// Its exit (`None` if it could not be observed).
    pub exit: Option<ProcessExit>,
    /// It had to be killed with SIGKILL (after its grace at spindown; always on timeout and failure).
    pub killed: bool,
}

/// How an extension ended at a shutdown.
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts a test asserts one by one"
)]
pub struct ExtensionExit {
    /// Its name.
    pub name: String,
    /// Attached (test-driven, no process).
    pub attached: bool,
    /// It was sent SHUTDOWN.
    pub shutdown_sent: bool,
    /// It took the SHUTDOWN event from next.
    pub shutdown_delivered: bool,
    /// Its process exit (`None` for attached extensions).
    pub exit: Option<ProcessExit>,
    /// It ended (exited, or for attached ones took SHUTDOWN) before the deadline.
    pub exited_before_deadline: bool,
    /// It was killed with SIGKILL past the deadline (or because it could not get SHUTDOWN).
    pub killed: bool,
    /// SHUTDOWN sent → exit.
    pub took: Option<Duration>,
}

impl ExtensionExit {
    /// The exit code, when it exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit.and_then(|e| e.code)
    }
}

/// The result of a shutdown or reset.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    /// Why.
    pub reason: ShutdownReason,
    /// When it began.
    pub started_at: Instant,
    /// The deadline of the whole phase.
    pub deadline: Instant,
    /// The same deadline as sent in SHUTDOWN (`deadlineMs`).
    pub deadline_ms: u64,
    /// The runtime, when one was running.
    pub runtime: Option<RuntimeExit>,
    /// Each external extension.
    pub extensions: Vec<ExtensionExit>,
    /// When it ended.
    pub finished_at: Instant,
}

impl ShutdownReport {
    /// The entry of extension `name`.
    pub fn extension(&self, name: &str) -> Option<&ExtensionExit> {
        self.extensions.iter().find(|e| e.name == name)
    }
}
