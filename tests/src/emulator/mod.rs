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
mod builder;
mod config;
mod extensions_api;
mod init;
mod invoke;
mod managed;
mod process;
mod query;
mod records;
mod restore;
mod results;
mod runtime_api;
mod shutdown;
mod state;
mod subscription;
mod telemetry;

pub use builder::EmulatorBuilder;

pub use config::{
    ChildOutput, DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, DUMMY_SESSION_TOKEN, EmulatorConfig,
    ExtensionSpec, FUNCTION_TIMEOUT_DEFAULT, FunctionSpec, INIT_TIMEOUT_DEFAULT,
    InitializationType, MANAGED_INSTANCES_GID, MANAGED_INSTANCES_INIT_TYPE,
    MANAGED_INSTANCES_SCHEMA, MANAGED_INSTANCES_UID, MAX_CONCURRENCY_DEFAULT, MAX_EXTENSIONS,
    MAX_RESPONSE_BYTES, MAX_STREAMED_RESPONSE_BYTES, MEMORY_MB_DEFAULT,
    RUNTIME_SHUTDOWN_GRACE_DEFAULT, SHUTDOWN_TIMEOUT_DEFAULT, SNAPSHOT_AGE_DEFAULT,
    hidden_from_extensions,
};
pub use invoke::Invoke;
pub use query::Observer;
pub use restore::StaleInit;
pub use results::{
    DeliveredEvent, ExtensionExit, ExtensionInitTiming, FunctionError, InitRecord, Invocation,
    InvocationStatus, ProcessExit, RuntimeExit, ShutdownReason, ShutdownReport,
};
pub use state::{ApiErrorReport, EventDeviation};
pub use subscription::{Subscription, parse_subscription};
pub use telemetry::{RecordDeviation, SubscriptionRecord, TelemetryDelivery, TelemetryEvent};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http::Server;
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
