//! A local Lambda execution environment written from the AWS contracts (`contracts.md` §1–3).
//!
//! One HTTP server on `127.0.0.1:<port>` serves, under the address every process gets as
//! `AWS_LAMBDA_RUNTIME_API`:
//! - the Runtime API (`/2018-06-01/runtime/…`): `invocation/next`, `invocation/{id}/response`,
//!   `invocation/{id}/error`, `init/error`;
//! - the Extensions API (`/2020-01-01/extension/…`): `register`, `event/next`, `init/error`,
//!   `exit/error`;
//! - the Telemetry API (`PUT /2022-07-01/telemetry`), with delivery of `platform.*`, `function`
//!   and `extension` records to each subscriber (or `202 Telemetry.NotSupported`, like AWS's own
//!   emulator, when [`EmulatorBuilder::telemetry_supported`] is off).
//!
//! The [`Emulator`] drives the lifecycle with real processes:
//! - **init** ([`Emulator::prewarm`], [`Emulator::init_ahead`], or implicitly by the first
//!   [`Emulator::invoke`]): every [`ExtensionSpec`] is started in parallel, all must register,
//!   then the function's runtime starts; init ends when the runtime and every extension have
//!   called next (limit [`EmulatorBuilder::init_timeout`]).
//! - **invoke**: the event goes to the runtime and INVOKE to the extensions; the runtime's
//!   response is recorded the moment it is posted, and the invocation finishes ("freezes") when
//!   the runtime and every extension have called next again. Past the function timeout, or when
//!   the runtime crashes, the environment is reset (SHUTDOWN `timeout`/`failure`) and the next
//!   invoke performs a fresh init.
//! - **SnapStart** ([`Emulator::snap_start`]): an init of type `snap-start` creates the
//!   "snapshot" (its platform records are kept back), then the environment is restored:
//!   `platform.restoreStart` / `restoreRuntimeDone` / `restoreReport` now, and the stale
//!   `initStart` / `initRuntimeDone` / `initReport` with their old times (the snapshot's age in
//!   the past), before, between or after the restore records ([`StaleInit`]). The processes
//!   cannot be copied here: they carry on from the init, and every restore is of a new
//!   environment. No credentials in the environment (the container endpoint provides them).
//! - **response streaming**: a response posted with `Lambda-Runtime-Function-Response-Mode:
//!   streaming` may be up to [`MAX_STREAMED_RESPONSE_BYTES`]; `responseDuration` spans the
//!   stream and `platform.runtimeDone` comes only when the runtime calls next after it
//!   ([`Invocation::streamed`], [`Invocation::response_started_at`]).
//! - **shutdown** ([`Emulator::shutdown`]): SIGTERM to the runtime (SIGKILL after 300 ms),
//!   SHUTDOWN `spindown` to the extensions with a 2,000 ms deadline for the whole phase, SIGKILL
//!   for whoever is still running at the deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use serde_json::json;
//! use xray_extension_tests::emulator::{Emulator, ExtensionSpec, FunctionSpec, Invoke};
//! use xray_extension_tests::trace::TraceHeader;
//! let mut lambda = Emulator::builder()
//!     .extension(ExtensionSpec::new("target/debug/xray-extension").env("RUST_LOG", "debug"))
//!     .function(FunctionSpec::command(["target/debug/sample-function"]))
//!     .function_timeout(Duration::from_secs(3))
//!     .start()
//!     .await?;
//! let first = lambda.invoke(Invoke::new(json!({})).traced(TraceHeader::sampled())).await?;
//! assert!(first.cold);
//! let report = lambda.shutdown().await?;
//! assert!(report.extensions.iter().all(|e| e.exit_code() == Some(0)));
//! # Ok(()) }
//! ```
//!
//! Every wait is bounded and woken by state changes; child processes are killed when the
//! emulator is dropped.

mod api;
mod config;
mod extensions_api;
mod lifecycle;
mod managed;
mod process;
mod records;
mod runtime_api;
mod state;
mod telemetry;

pub use config::{
    ChildOutput, DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, DUMMY_SESSION_TOKEN, EmulatorConfig,
    ExtensionSpec, FUNCTION_TIMEOUT_DEFAULT, FunctionSpec, INIT_TIMEOUT_DEFAULT,
    InitializationType, MANAGED_INSTANCES_GID, MANAGED_INSTANCES_INIT_TYPE,
    MANAGED_INSTANCES_SCHEMA, MANAGED_INSTANCES_UID, MAX_CONCURRENCY_DEFAULT, MAX_EXTENSIONS,
    MAX_RESPONSE_BYTES, MAX_STREAMED_RESPONSE_BYTES, MEMORY_MB_DEFAULT,
    RUNTIME_SHUTDOWN_GRACE_DEFAULT, SHUTDOWN_TIMEOUT_DEFAULT, SNAPSHOT_AGE_DEFAULT,
    hidden_from_extensions,
};
pub use lifecycle::StaleInit;
pub use state::{ApiErrorReport, EventDeviation};
pub use telemetry::{
    RecordDeviation, Subscription, SubscriptionRecord, TelemetryDelivery, TelemetryEvent,
    parse_subscription,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::http::Server;
use crate::trace::TraceHeader;
use process::ProcessHandle;
use state::{Phase, Shared};

/// Errors of the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The API listener could not be bound.
    #[error("bind the Lambda API on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("start {name}: {source}")]
    Spawn {
        /// The process's name.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No function was configured.
    #[error("no function configured (EmulatorBuilder::function)")]
    NoFunction,
    /// `init` was called on an initialized environment.
    #[error("the environment is already initialized")]
    AlreadyInitialized,
    /// Init failed or timed out; the environment was reset.
    #[error("init failed ({}): {}: {}", record.status, record.error_type.as_deref().unwrap_or("-"), record.message.as_deref().unwrap_or("-"))]
    InitFailed {
        /// The failed init.
        record: Box<InitRecord>,
        /// The reset that followed.
        reset: Box<ShutdownReport>,
    },
    /// The state of an invocation in flight disappeared (an emulator bug).
    #[error("the state of invocation {request_id} was lost")]
    InvocationLost {
        /// The invocation.
        request_id: String,
    },
    /// An invoke of a function with tenant isolation named no tenant (Lambda answers 400).
    #[error("the function has tenant isolation: an invoke must name its tenant")]
    TenantRequired,
    /// An invoke named a tenant the function cannot take (no tenant isolation, or empty).
    #[error(
        "tenant {tenant:?} not accepted: the function has no tenant isolation, or the id is empty"
    )]
    TenantNotAccepted {
        /// The tenant named.
        tenant: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
}

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

/// An invoke request.
#[derive(Debug, Clone)]
pub struct Invoke {
    payload: Bytes,
    trace: Option<String>,
    request_id: Option<String>,
    client_context: Option<String>,
    cognito_identity: Option<String>,
    tenant: Option<String>,
}

impl Invoke {
    /// An invoke with a JSON event.
    #[allow(
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
    #[allow(clippy::needless_pass_by_value, reason = "callers pass a fresh header")]
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
#[allow(
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

/// Builds an [`Emulator`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct EmulatorBuilder {
    config: EmulatorConfig,
}

impl EmulatorBuilder {
    /// Adds an external extension.
    pub fn extension(mut self, spec: ExtensionSpec) -> Self {
        self.config.extensions.push(spec);
        self
    }

    /// Sets the function.
    pub fn function(mut self, spec: FunctionSpec) -> Self {
        self.config.function = Some(spec);
        self
    }

    /// `AWS_LAMBDA_FUNCTION_NAME` (default `xray-test-function`).
    pub fn function_name(mut self, name: impl Into<String>) -> Self {
        self.config.function_name = name.into();
        self
    }

    /// `AWS_LAMBDA_FUNCTION_VERSION` (default `$LATEST`).
    pub fn function_version(mut self, version: impl Into<String>) -> Self {
        self.config.function_version = version.into();
        self
    }

    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` in MB (default 128).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.config.memory_mb = mb;
        self
    }

    /// `AWS_REGION` (default `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = region.into();
        self
    }

    /// The account id in ARNs and the register response (default `123456789012`).
    pub fn account_id(mut self, account: impl Into<String>) -> Self {
        self.config.account_id = account.into();
        self
    }

    /// `runtimeVersion` in `platform.initStart`.
    pub fn runtime_version(mut self, version: impl Into<String>) -> Self {
        self.config.runtime_version = version.into();
        self
    }

    /// The function timeout (default 3 s); it covers the runtime and the extensions' next.
    pub fn function_timeout(mut self, timeout: Duration) -> Self {
        self.config.function_timeout = timeout;
        self
    }

    /// The init limit (default 10 s).
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.config.init_timeout = timeout;
        self
    }

    /// The whole shutdown phase (default 2,000 ms).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// The runtime's share of a spindown, after SIGTERM (default 300 ms).
    pub fn runtime_shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.runtime_shutdown_grace = grace;
        self
    }

    /// Whether the Telemetry API works (default) or answers `202 Telemetry.NotSupported`.
    pub fn telemetry_supported(mut self, supported: bool) -> Self {
        self.config.telemetry_supported = supported;
        self
    }

    /// Lambda Managed Instances: runtime processes started, each taking one invocation at a time
    /// (`AWS_LAMBDA_MAX_CONCURRENCY`; default [`MAX_CONCURRENCY_DEFAULT`]).
    pub fn max_concurrency(mut self, processes: usize) -> Self {
        self.config.max_concurrency = processes.max(1);
        self
    }

    /// Lambda Managed Instances (contracts §8): `AWS_LAMBDA_INITIALIZATION_TYPE` and the init
    /// records say `lambda-managed-instances`, registering for `INVOKE` is refused (403
    /// `Extension.InvalidEventType`), a Telemetry API `schemaVersion` other than `2025-01-29` is
    /// refused (400 `ValidationError`), [`EmulatorBuilder::max_concurrency`] runtime processes
    /// are started, and [`Emulator::invoke_concurrently`] runs invocations at once: no
    /// `platform.runtimeDone`, `platform.report` (only `durationMs` and two spans) as each
    /// response arrives, every third invocation's `platform.start` only after its report, and
    /// nothing frozen.
    pub fn managed_instances(mut self, on: bool) -> Self {
        self.config.managed_instances = on;
        self
    }

    /// Tenant isolation (`TenancyConfig.TenantIsolationMode=PER_TENANT`, contracts §8): every
    /// invoke names its tenant ([`Invoke::tenant`]), which `platform.start`, `runtimeDone` and
    /// `report` carry as `tenantId` and the runtime gets as `Lambda-Runtime-Aws-Tenant-Id`; an
    /// environment serves one tenant, so an invoke for another runs in a fresh environment (this
    /// one ends with `spindown`). Without it `runtimeDone` says `"tenantId": ""`, as AWS's
    /// runtime core writes it.
    pub fn tenant_isolation(mut self, on: bool) -> Self {
        self.config.tenant_isolation = on;
        self
    }

    /// A local run, as `sam local invoke` runs the function inside AWS's runtime interface
    /// emulator (contracts §8 "Local runs"): the Telemetry API answers `202
    /// Telemetry.NotSupported` (and the Logs API `202 Logs.NotSupported`, as always), INVOKE
    /// events carry no `tracing` (the runtime still gets `Lambda-Runtime-Trace-Id` when the
    /// caller sent a header), SHUTDOWN reasons are `SandboxTerminated`, `Timeout` and
    /// `ReleaseFail`, the function timeout is whole seconds (rounded up) and the processes see
    /// it as `AWS_LAMBDA_FUNCTION_TIMEOUT`. After a timeout the runtime is killed, the extensions
    /// get SHUTDOWN, and the next invoke initialises again (same ports).
    pub fn local_run(mut self, on: bool) -> Self {
        self.config.local_run = on;
        self
    }

    /// Runs the runtime and the extensions as user `uid`, group `gid`, as AWS's runtime core does
    /// on Lambda Managed Instances ([`MANAGED_INSTANCES_UID`], [`MANAGED_INSTANCES_GID`]). Only a
    /// root emulator can: otherwise starting them fails (`EmulatorError::Spawn`, permission
    /// denied).
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.config.run_as = Some((uid, gid));
        self
    }

    /// `AWS_ENDPOINT_URL_XRAY` for the extensions.
    pub fn xray_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.config.xray_endpoint = Some(endpoint.into());
        self
    }

    /// Where the children's output goes (default [`ChildOutput::Capture`]).
    pub fn output(mut self, output: ChildOutput) -> Self {
        self.config.output = output;
        self
    }

    /// Passes the host's `name` variable (when set) to every child, beside PATH, HOME and LANG.
    pub fn pass_host_env(mut self, name: impl Into<String>) -> Self {
        self.config.host_env.push(name.into());
        self
    }

    /// SnapStart: how long before the restore its snapshot was taken (default one day): the
    /// stale init records delivered after the restore carry times that far back.
    pub fn snapshot_age(mut self, age: Duration) -> Self {
        self.config.snapshot_age = age;
        self
    }

    /// Where the API listens (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Binds the API and returns the emulator; nothing runs until an init or invoke.
    pub async fn start(mut self) -> Result<Emulator, EmulatorError> {
        if self.config.local_run {
            self.config.telemetry_supported = false;
            let seconds = self.config.function_timeout.as_secs_f64().ceil().max(1.0);
            self.config.function_timeout = Duration::from_secs_f64(seconds);
        }
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(self.config, api_addr));
        let server =
            api::serve(listener, &shared).map_err(|source| EmulatorError::Bind { addr, source })?;
        Ok(Emulator {
            shared,
            _server: server,
            runtime: None,
            more_runtimes: Vec::new(),
            extensions: Vec::new(),
            pending_init_duration: None,
        })
    }
}

/// The local Lambda environment. Dropping it kills every process it started.
pub struct Emulator {
    shared: Arc<Shared>,
    _server: Server,
    runtime: Option<ProcessHandle>,
    /// Lambda Managed Instances: the runtime processes besides `runtime`.
    more_runtimes: Vec<ProcessHandle>,
    extensions: Vec<ProcessHandle>,
    /// Set by an on-demand init; reported as `initDurationMs` by the next invocation.
    pending_init_duration: Option<Duration>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("api", &self.shared.api_addr)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder with the defaults.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The `AWS_LAMBDA_RUNTIME_API` address.
    pub fn runtime_api(&self) -> SocketAddr {
        self.shared.api_addr
    }

    /// A cloneable view for use while `invoke`/`init` runs (e.g. from a test-driven extension).
    pub fn observer(&self) -> Observer {
        Observer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether an environment is initialized (the next invoke is warm).
    pub fn is_initialized(&self) -> bool {
        self.shared.read(|s| s.phase == Phase::Ready)
    }

    /// The function's ARN.
    pub fn function_arn(&self) -> String {
        self.shared.config.function_arn()
    }

    /// The extensions' init timings of the latest init.
    pub fn extension_init_times(&self) -> Vec<ExtensionInitTiming> {
        self.observer()
            .inits()
            .pop()
            .map(|i| i.extensions)
            .unwrap_or_default()
    }

    /// Every init so far.
    pub fn inits(&self) -> Vec<InitRecord> {
        self.observer().inits()
    }

    /// Every telemetry event so far (all generations).
    pub fn telemetry_log(&self) -> Vec<TelemetryEvent> {
        self.observer().telemetry_log()
    }

    /// Events delivered to extension `name` (all generations).
    pub fn extension_events(&self, name: &str) -> Vec<DeliveredEvent> {
        self.observer().extension_events(name)
    }

    /// Output lines of process `name` (an extension's name, or the runtime command's file name).
    pub fn output(&self, name: &str) -> Vec<String> {
        self.shared.output(name)
    }

    /// Makes Extensions API events deviate from the documented shapes on their way to the
    /// extensions (`None` restores them); what is recorded as delivered stays as documented.
    pub fn deviate_events(&self, deviation: Option<EventDeviation>) {
        self.shared.set_event_deviation(deviation);
    }

    /// Makes telemetry records deviate from the documented shapes on their way to subscribers
    /// (`None` restores them); the telemetry log keeps them as documented.
    pub fn deviate_telemetry(&self, deviation: Option<RecordDeviation>) {
        self.shared.telemetry.set_deviation(deviation);
    }
}

/// A cloneable, read-mostly view of an [`Emulator`].
#[derive(Clone)]
pub struct Observer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("api", &self.shared.api_addr)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// The `AWS_LAMBDA_RUNTIME_API` address.
    pub fn runtime_api(&self) -> SocketAddr {
        self.shared.api_addr
    }

    /// Waits until a captured output line of `name` contains `needle` (woken by each line).
    pub async fn wait_for_output(
        &self,
        name: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), EmulatorError> {
        if self
            .shared
            .wait_for_output(name, needle, Instant::now() + timeout)
            .await
        {
            Ok(())
        } else {
            Err(EmulatorError::Timeout {
                what: format!("{name} to print {needle:?}"),
                waited: timeout,
            })
        }
    }

    /// Waits until an init is in progress and returns its generation.
    pub async fn wait_for_init_start(&self, timeout: Duration) -> Result<u64, EmulatorError> {
        self.shared
            .wait_until(Instant::now() + timeout, |s| {
                (s.phase == Phase::Initializing).then_some(s.generation)
            })
            .await
            .ok_or_else(|| EmulatorError::Timeout {
                what: "an init to start".to_owned(),
                waited: timeout,
            })
    }

    /// Every init so far.
    pub fn inits(&self) -> Vec<InitRecord> {
        self.shared.read(|s| s.inits.clone())
    }

    /// Every telemetry event so far (all generations), in order.
    pub fn telemetry_log(&self) -> Vec<TelemetryEvent> {
        self.shared.telemetry.log()
    }

    /// Every delivery attempt to a telemetry subscriber.
    pub fn telemetry_deliveries(&self) -> Vec<TelemetryDelivery> {
        self.shared.telemetry.deliveries()
    }

    /// Every accepted telemetry subscription.
    pub fn telemetry_subscriptions(&self) -> Vec<SubscriptionRecord> {
        self.shared.telemetry.subscriptions()
    }

    /// Records dropped because a subscriber's queue was full.
    pub fn telemetry_dropped(&self) -> u64 {
        self.shared.telemetry.dropped()
    }

    /// Waits until `predicate` holds over the telemetry log, woken by each new event.
    pub async fn wait_for_telemetry(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&[TelemetryEvent]) -> bool,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared
            .telemetry
            .wait_until(deadline, |log, _| predicate(log).then(|| log.to_vec()))
            .await
            .ok_or_else(|| EmulatorError::Timeout {
                what: what.to_owned(),
                waited: timeout,
            })
    }

    /// Waits until `predicate` holds over the telemetry delivery attempts.
    pub async fn wait_for_deliveries(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&[TelemetryDelivery]) -> bool,
    ) -> Result<Vec<TelemetryDelivery>, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared
            .telemetry
            .wait_until(deadline, |_, deliveries| {
                predicate(deliveries).then(|| deliveries.to_vec())
            })
            .await
            .ok_or_else(|| EmulatorError::Timeout {
                what: what.to_owned(),
                waited: timeout,
            })
    }

    /// Events delivered to extension `name` (all generations), in order.
    pub fn extension_events(&self, name: &str) -> Vec<DeliveredEvent> {
        self.shared.read(|s| {
            s.delivered_log
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
                .collect()
        })
    }

    /// Reports posted to the `init/error` and `exit/error` endpoints.
    pub fn api_errors(&self) -> Vec<ApiErrorReport> {
        self.shared.read(|s| s.api_errors.clone())
    }

    /// Output lines of process `name`.
    pub fn output(&self, name: &str) -> Vec<String> {
        self.shared.output(name)
    }
}
