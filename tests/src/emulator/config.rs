//! What the emulator runs and how: the function, its extensions, the limits, and the environment
//! each process sees (contracts §1 and §3).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default function timeout.
pub const FUNCTION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default init limit (Lambda's on-demand limit).
pub const INIT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default shutdown phase: 2,000 ms in all when an external extension is registered.
pub const SHUTDOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// How long the runtime gets after SIGTERM at shutdown before SIGKILL.
pub const RUNTIME_SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_millis(300);
/// Default memory size, in MB.
pub const MEMORY_MB_DEFAULT: u32 = 128;
/// Most extensions Lambda accepts.
pub const MAX_EXTENSIONS: usize = 10;
/// How long before a SnapStart restore its snapshot was taken: the stale init records carry
/// times this far in the past (the wall clock jumps at restore).
pub const SNAPSHOT_AGE_DEFAULT: Duration = Duration::from_hours(24);
/// Largest synchronous response payload (6 MB as Lambda counts it).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Largest streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`): 200 MB.
pub const MAX_STREAMED_RESPONSE_BYTES: usize = 200 * 1024 * 1024;

/// Dummy credentials every process gets (the ones AWS documentation uses as examples).
pub const DUMMY_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
/// See [`DUMMY_ACCESS_KEY_ID`].
pub const DUMMY_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// See [`DUMMY_ACCESS_KEY_ID`].
pub const DUMMY_SESSION_TOKEN: &str = "emulator-session-token";

/// `AWS_LAMBDA_INITIALIZATION_TYPE` on Lambda Managed Instances (contracts §8).
pub const MANAGED_INSTANCES_INIT_TYPE: &str = "lambda-managed-instances";
/// Runtime processes (`AWS_LAMBDA_MAX_CONCURRENCY`) on Lambda Managed Instances by default.
pub const MAX_CONCURRENCY_DEFAULT: usize = 4;
/// The only Telemetry API schema Lambda Managed Instances accepts (contracts §8).
pub const MANAGED_INSTANCES_SCHEMA: &str = "2025-01-29";
/// The user AWS's runtime core runs the runtime and extensions as on Lambda Managed Instances.
pub const MANAGED_INSTANCES_UID: u32 = 993;
/// The group it runs them in.
pub const MANAGED_INSTANCES_GID: u32 = 990;

/// Host variables every child inherits (everything else is cleared).
const HOST_ENV_ALWAYS: [&str; 3] = ["PATH", "HOME", "LANG"];

/// How an environment is initialized (`initializationType` in telemetry and
/// `AWS_LAMBDA_INITIALIZATION_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitializationType {
    /// On-demand: at the first invoke (a cold start), or ahead of it (a proactive init).
    OnDemand,
    /// Provisioned concurrency: initialized before any invoke.
    ProvisionedConcurrency,
    /// SnapStart: the init creates a snapshot; environments are restored from it (contracts
    /// §8). No credentials in the environment, no log group or stream variables.
    SnapStart,
    /// Lambda Managed Instances: initialised before traffic, several invocations at once.
    ManagedInstances,
}

impl InitializationType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::ProvisionedConcurrency => "provisioned-concurrency",
            Self::SnapStart => "snap-start",
            Self::ManagedInstances => MANAGED_INSTANCES_INIT_TYPE,
        }
    }
}

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutput {
    /// Read line by line: kept (see `Observer::output`), turned into `function`/`extension`
    /// telemetry records, and written to stderr with a `[name]` prefix (captured by the test
    /// harness, shown when a test fails).
    Capture,
    /// Like [`ChildOutput::Capture`] but appended, prefixed, to a file instead of stderr.
    File(PathBuf),
    /// Like [`ChildOutput::Capture`] but not echoed anywhere.
    Quiet,
    /// Inherited from the emulator's process as they are (for demos); no lines are kept and no
    /// `function`/`extension` telemetry is produced.
    Inherit,
}

/// An external extension: an executable the emulator starts like a file in `/opt/extensions`.
#[derive(Debug, Clone)]
pub struct ExtensionSpec {
    pub(crate) name: String,
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: BTreeMap<String, String>,
}

impl ExtensionSpec {
    /// The executable at `path`; its file name is the name it must register with.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            name,
            program: Some(path.to_path_buf()),
            args: Vec::new(),
            env: BTreeMap::new(),
        }
    }

    /// An external extension driven by the test itself over HTTP (no process is started): the
    /// emulator expects it to register as `name` during init, waits for it like a launched one,
    /// sends it SHUTDOWN, and treats the SHUTDOWN's delivery as its exit.
    pub fn attached(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            program: None,
            args: Vec::new(),
            env: BTreeMap::new(),
        }
    }

    /// An extra variable for this extension only.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Command-line arguments (Lambda passes none; for wrappers and diagnostics).
    #[must_use]
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The name it registers with (the executable's file name).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The function: the runtime command and the function's configured environment variables.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub(crate) command: Vec<OsString>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) handler: String,
}

impl FunctionSpec {
    /// The runtime command: program then arguments (e.g. `[bootstrap]`).
    pub fn command(command: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            command: command.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            handler: "bootstrap".to_owned(),
        }
    }

    /// A configured environment variable. The extensions see it too unless contracts §1 hides
    /// it from them (`AWS_XRAY_DAEMON_ADDRESS`, `_*`, …). `AWS_LAMBDA_EXEC_WRAPPER` makes the
    /// emulator run `<wrapper> <command…>`.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The handler name (`_HANDLER`, and `handler` in the register response).
    #[must_use]
    pub fn handler(mut self, handler: impl Into<String>) -> Self {
        self.handler = handler.into();
        self
    }
}

/// The whole configuration (built by `EmulatorBuilder`).
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent modes of the environment (Telemetry API, Managed Instances, tenant isolation, local run)"
)]
pub struct EmulatorConfig {
    pub(crate) function: Option<FunctionSpec>,
    pub(crate) extensions: Vec<ExtensionSpec>,
    pub(crate) function_name: String,
    pub(crate) function_version: String,
    pub(crate) memory_mb: u32,
    pub(crate) region: String,
    pub(crate) account_id: String,
    pub(crate) runtime_version: String,
    pub(crate) function_timeout: Duration,
    pub(crate) init_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) runtime_shutdown_grace: Duration,
    pub(crate) telemetry_supported: bool,
    pub(crate) managed_instances: bool,
    pub(crate) tenant_isolation: bool,
    pub(crate) local_run: bool,
    pub(crate) run_as: Option<(u32, u32)>,
    pub(crate) max_concurrency: usize,
    pub(crate) xray_endpoint: Option<String>,
    pub(crate) output: ChildOutput,
    pub(crate) host_env: Vec<String>,
    pub(crate) listen: SocketAddr,
    pub(crate) snapshot_age: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            function: None,
            extensions: Vec::new(),
            function_name: "xray-test-function".to_owned(),
            function_version: "$LATEST".to_owned(),
            memory_mb: MEMORY_MB_DEFAULT,
            region: "us-east-1".to_owned(),
            account_id: "123456789012".to_owned(),
            runtime_version: "provided:al2023.v100".to_owned(),
            function_timeout: FUNCTION_TIMEOUT_DEFAULT,
            init_timeout: INIT_TIMEOUT_DEFAULT,
            shutdown_timeout: SHUTDOWN_TIMEOUT_DEFAULT,
            runtime_shutdown_grace: RUNTIME_SHUTDOWN_GRACE_DEFAULT,
            telemetry_supported: true,
            managed_instances: false,
            tenant_isolation: false,
            local_run: false,
            run_as: None,
            max_concurrency: MAX_CONCURRENCY_DEFAULT,
            xray_endpoint: None,
            output: ChildOutput::Capture,
            host_env: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            snapshot_age: SNAPSHOT_AGE_DEFAULT,
        }
    }
}

impl EmulatorConfig {
    /// `arn:aws:lambda:<region>:<account>:function:<name>`.
    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account_id, self.function_name
        )
    }

    pub(crate) fn handler(&self) -> &str {
        self.function
            .as_ref()
            .map_or("bootstrap", |f| f.handler.as_str())
    }

    pub(crate) fn log_group(&self) -> String {
        format!("/aws/lambda/{}", self.function_name)
    }

    pub(crate) fn runtime_version_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}::runtime:0000000000000000000000000000000000000000000000000000000000000000",
            self.region
        )
    }
}

/// Whether contracts §1 hides `key` from extensions.
pub fn hidden_from_extensions(key: &str) -> bool {
    key.starts_with('_')
        || matches!(
            key,
            "AWS_XRAY_DAEMON_ADDRESS"
                | "_X_AMZN_TRACE_ID"
                | "_HANDLER"
                | "AWS_EXECUTION_ENV"
                | "LAMBDA_TASK_ROOT"
        )
}

/// The variables every process gets: the kept host variables, the Lambda-provided ones, and
/// the credentials.
fn common_env(
    config: &EmulatorConfig,
    api: SocketAddr,
    init_type: InitializationType,
    host: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for key in HOST_ENV_ALWAYS
        .iter()
        .copied()
        .chain(config.host_env.iter().map(String::as_str))
    {
        if let Some(value) = host(key) {
            env.insert(key.to_owned(), value);
        }
    }
    if init_type != InitializationType::SnapStart {
        // SnapStart gives only the container credentials endpoint (the function's
        // configuration or the test provides it).
        for (key, value) in [
            ("AWS_ACCESS_KEY_ID", DUMMY_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET_ACCESS_KEY),
            ("AWS_SESSION_TOKEN", DUMMY_SESSION_TOKEN),
        ] {
            env.insert(key.to_owned(), value.to_owned());
        }
    }
    let pairs = [
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_REGION", config.region.clone()),
        ("AWS_DEFAULT_REGION", config.region.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", config.function_name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_VERSION",
            config.function_version.clone(),
        ),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_INITIALIZATION_TYPE",
            init_type.as_str().to_owned(),
        ),
        ("TZ", ":UTC".to_owned()),
    ];
    let pairs = pairs.map(|(key, value)| {
        if key == "AWS_LAMBDA_INITIALIZATION_TYPE" && config.managed_instances {
            (key, MANAGED_INSTANCES_INIT_TYPE.to_owned())
        } else {
            (key, value)
        }
    });
    for (key, value) in pairs {
        env.insert(key.to_owned(), value);
    }
    if config.local_run {
        // AWS's runtime interface emulator takes (and gives) the timeout in whole seconds.
        env.insert(
            "AWS_LAMBDA_FUNCTION_TIMEOUT".to_owned(),
            config.function_timeout.as_secs().to_string(),
        );
    }
    env
}

/// The environment of an external extension: common variables, the function's configured
/// variables minus the hidden ones, `AWS_ENDPOINT_URL_XRAY` when set, then the extension's own.
pub(crate) fn extension_env(
    config: &EmulatorConfig,
    spec: &ExtensionSpec,
    api: SocketAddr,
    init_type: InitializationType,
    host: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = common_env(config, api, init_type, host);
    if let Some(function) = &config.function {
        for (key, value) in &function.env {
            if !hidden_from_extensions(key) {
                env.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(endpoint) = &config.xray_endpoint {
        env.insert("AWS_ENDPOINT_URL_XRAY".to_owned(), endpoint.clone());
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The runtime's environment: common variables plus the runtime-only ones, then every
/// configured function variable.
pub(crate) fn runtime_env(
    config: &EmulatorConfig,
    api: SocketAddr,
    init_type: InitializationType,
    host: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = common_env(config, api, init_type, host);
    let task_root = config
        .function
        .as_ref()
        .and_then(|f| f.command.first())
        .and_then(|program| Path::new(program).parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let pairs = [
        ("_HANDLER", config.handler().to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.to_string_lossy().into_owned()),
        (
            "LAMBDA_RUNTIME_DIR",
            task_root.to_string_lossy().into_owned(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", config.log_group()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("2025/01/01/[{}]emulator", config.function_version),
        ),
        ("AWS_LAMBDA_LOG_FORMAT", "Text".to_owned()),
    ];
    for (key, value) in pairs {
        env.insert(key.to_owned(), value);
    }
    if config.managed_instances {
        env.insert(
            "AWS_LAMBDA_MAX_CONCURRENCY".to_owned(),
            config.max_concurrency.to_string(),
        );
    }
    if init_type == InitializationType::SnapStart {
        env.remove("AWS_LAMBDA_LOG_GROUP_NAME");
        env.remove("AWS_LAMBDA_LOG_STREAM_NAME");
    }
    if let Some(function) = &config.function {
        env.extend(function.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    env
}

/// The program and arguments that start the runtime: `<wrapper> <command…>` when the function
/// sets `AWS_LAMBDA_EXEC_WRAPPER`, else the command.
pub(crate) fn runtime_command(function: &FunctionSpec) -> Vec<OsString> {
    let mut command = Vec::with_capacity(function.command.len() + 1);
    if let Some(wrapper) = function.env.get("AWS_LAMBDA_EXEC_WRAPPER") {
        command.push(OsString::from(wrapper));
    }
    command.extend(function.command.iter().cloned());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(key: &str) -> Option<String> {
        match key {
            "PATH" => Some("/usr/bin".to_owned()),
            "SECRET_HOST_VAR" => Some("leak".to_owned()),
            _ => None,
        }
    }

    fn config() -> EmulatorConfig {
        EmulatorConfig {
            function: Some(
                FunctionSpec::command(["/var/task/bootstrap"])
                    .env("AWS_XRAY_DAEMON_ADDRESS", "127.0.0.1:2999")
                    .env("_PRIVATE", "x")
                    .env("MY_SETTING", "on"),
            ),
            xray_endpoint: Some("http://127.0.0.1:4000".to_owned()),
            ..EmulatorConfig::default()
        }
    }

    #[test]
    fn a_local_run_gives_the_timeout_in_whole_seconds() {
        let spec = ExtensionSpec::new("/opt/extensions/xray");
        let api = SocketAddr::from(([127, 0, 0, 1], 9001));
        let env = extension_env(&config(), &spec, api, InitializationType::OnDemand, &host);
        assert!(!env.contains_key("AWS_LAMBDA_FUNCTION_TIMEOUT"));
        let local = EmulatorConfig {
            local_run: true,
            function_timeout: std::time::Duration::from_secs(3),
            ..config()
        };
        let env = extension_env(&local, &spec, api, InitializationType::OnDemand, &host);
        assert_eq!(env["AWS_LAMBDA_FUNCTION_TIMEOUT"], "3");
    }

    #[test]
    fn extensions_get_the_documented_environment_only() {
        let config = config();
        let spec = ExtensionSpec::new("/opt/extensions/xray").env("EXTRA", "1");
        let api = SocketAddr::from(([127, 0, 0, 1], 9001));
        let env = extension_env(&config, &spec, api, InitializationType::OnDemand, &host);
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
        assert_eq!(env["AWS_ENDPOINT_URL_XRAY"], "http://127.0.0.1:4000");
        assert_eq!(env["MY_SETTING"], "on");
        assert_eq!(env["EXTRA"], "1");
        assert_eq!(env["PATH"], "/usr/bin");
        for hidden in [
            "AWS_XRAY_DAEMON_ADDRESS",
            "_PRIVATE",
            "_HANDLER",
            "AWS_EXECUTION_ENV",
            "LAMBDA_TASK_ROOT",
            "SECRET_HOST_VAR",
        ] {
            assert!(
                !env.contains_key(hidden),
                "{hidden} leaked to the extension"
            );
        }
        assert!(env.keys().all(|k| !k.starts_with('_')));
    }

    #[test]
    fn the_runtime_gets_its_own_variables() {
        let config = config();
        let api = SocketAddr::from(([127, 0, 0, 1], 9001));
        let env = runtime_env(
            &config,
            api,
            InitializationType::ProvisionedConcurrency,
            &host,
        );
        assert_eq!(env["_HANDLER"], "bootstrap");
        assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task");
        assert_eq!(env["AWS_XRAY_DAEMON_ADDRESS"], "127.0.0.1:2999");
        assert_eq!(
            env["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "provisioned-concurrency"
        );
        assert!(!env.contains_key("SECRET_HOST_VAR"));
    }

    #[test]
    fn snap_start_gives_no_credentials_nor_log_names() {
        let config = config();
        let api = SocketAddr::from(([127, 0, 0, 1], 9001));
        let env = runtime_env(&config, api, InitializationType::SnapStart, &host);
        assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "snap-start");
        for absent in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "AWS_LAMBDA_LOG_STREAM_NAME",
        ] {
            assert!(!env.contains_key(absent), "{absent}");
        }
        let spec = ExtensionSpec::new("/opt/extensions/xray");
        let env = extension_env(&config, &spec, api, InitializationType::SnapStart, &host);
        assert!(!env.contains_key("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn an_exec_wrapper_prefixes_the_command() {
        let plain = FunctionSpec::command(["/var/task/bootstrap", "--flag"]);
        assert_eq!(
            runtime_command(&plain),
            vec![
                OsString::from("/var/task/bootstrap"),
                OsString::from("--flag")
            ]
        );
        let wrapped = plain.env("AWS_LAMBDA_EXEC_WRAPPER", "/opt/wrapper");
        assert_eq!(runtime_command(&wrapped)[0], OsString::from("/opt/wrapper"));
        assert_eq!(runtime_command(&wrapped).len(), 3);
    }
}
