//! [`EmulatorBuilder`]: the environment's configuration ([`EmulatorConfig`]) set step by step,
//! then the API bound by [`EmulatorBuilder::start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::config::{ChildOutput, EmulatorConfig, ExtensionSpec, FunctionSpec};
use super::state::Shared;
use super::{Emulator, EmulatorError, api};

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
