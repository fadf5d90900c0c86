//! Shared set-up for the end-to-end tests: the real extension binary and the sample function
//! in the emulator, with the embedded X-Ray sink (or another X-Ray endpoint).

#![allow(dead_code, reason = "each test file uses a different part")]
#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "test support: a failed set-up is a failed test"
)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use xray_extension_tests::emulator::{
    Emulator, ExtensionSpec, FunctionSpec, Invocation, Invoke, Observer,
};
use xray_extension_tests::net;
use xray_extension_tests::sink::{ReceivedDocument, XraySink};
use xray_extension_tests::trace::TraceHeader;

pub use xray_extension_tests::extension_log::EXTENSION;
/// Generous bound for waits on the sink.
pub const WAIT: Duration = Duration::from_secs(10);
/// The extension's default `XRAY_EXTENSION_FLUSH_TIMEOUT_MS`: the longest a flush may hold the
/// function after its runtime is done.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// How much slower than native the extension runs: `XRAY_TEST_TIME_SCALE` (at least 1; the
/// layer's arm64 binary under qemu-user sets 4). The extension's flush timeout and the tests'
/// bounds on it are scaled together, so the property checked stays "held no longer than the
/// flush timeout"; native runs check the real default.
pub fn time_scale() -> f64 {
    std::env::var("XRAY_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(1.0)
}

/// The flush timeout the harness gives the extension: the default, scaled by [`time_scale`].
pub fn flush_timeout() -> Duration {
    DEFAULT_FLUSH_TIMEOUT.mul_f64(time_scale())
}

/// A binary of the workspace, next to the test executable's directory (`target/<profile>`).
/// `XRAY_EXTENSION_BIN` overrides the extension (e.g. an arm64 build run under qemu).
pub fn workspace_binary(name: &str) -> PathBuf {
    if name == EXTENSION
        && let Ok(path) = std::env::var("XRAY_EXTENSION_BIN")
    {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`make build`, which `make test` runs)",
        path.display()
    );
    path
}

/// Options for [`Harness::start`].
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches of the emulator and the harness, each a plain on or off"
)]
pub struct Options {
    /// Answer the Telemetry API subscription with 202 `Telemetry.NotSupported`.
    pub telemetry: bool,
    /// The function timeout.
    pub function_timeout: Duration,
    /// Extra variables for the extension.
    pub extension_env: Vec<(String, String)>,
    /// X-Ray endpoint; the embedded sink when `None`.
    pub xray_endpoint: Option<String>,
    /// The function command; the sample function when `None`.
    pub function: Option<FunctionSpec>,
    /// Start the runtime through the layer's `AWS_LAMBDA_EXEC_WRAPPER` script, which points the
    /// SDK at the extension, instead of setting `AWS_XRAY_DAEMON_ADDRESS` on the function.
    pub wrapper: bool,
    /// With `wrapper`: the `XRAY_EXTENSION_UDP_ADDRESS` set on the function, `{port}` standing
    /// for the UDP port (default `127.0.0.1:{port}`).
    pub wrapper_address: Option<&'static str>,
    /// Lambda Managed Instances' refusals in the emulator (`EmulatorBuilder::managed_instances`).
    pub managed_instances: bool,
    /// Runtime processes on Managed Instances (`EmulatorBuilder::max_concurrency`).
    pub max_concurrency: usize,
    /// Tenant isolation (`EmulatorBuilder::tenant_isolation`): every invoke names its tenant.
    pub tenant_isolation: bool,
    /// A local run inside AWS's runtime interface emulator, as `sam local invoke` does it
    /// (`EmulatorBuilder::local_run`).
    pub local_run: bool,
    /// The user and group the runtime and extensions run as (`EmulatorBuilder::run_as`).
    pub run_as: Option<(u32, u32)>,
}

impl Options {
    /// Defaults with `XRAY_EXTENSION_FLUSH_STRATEGY` set.
    pub fn strategy(strategy: &str) -> Options {
        Options {
            extension_env: vec![(
                "XRAY_EXTENSION_FLUSH_STRATEGY".to_owned(),
                strategy.to_owned(),
            )],
            ..Options::default()
        }
    }
}

impl Options {
    /// These options with `key=value` added to the extension's variables.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Options {
        self.extension_env.push((key.to_owned(), value.into()));
        self
    }

    /// These options with the extension's OTLP/HTTP receiver on `127.0.0.1:port`.
    pub fn otlp_port(self, port: u16) -> Options {
        self.env("XRAY_EXTENSION_OTLP_ADDRESS", format!("127.0.0.1:{port}"))
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            telemetry: true,
            function_timeout: Duration::from_secs(3),
            extension_env: Vec::new(),
            xray_endpoint: None,
            function: None,
            wrapper: false,
            wrapper_address: None,
            managed_instances: false,
            max_concurrency: xray_extension_tests::emulator::MAX_CONCURRENCY_DEFAULT,
            tenant_isolation: false,
            local_run: false,
            run_as: None,
        }
    }
}

/// A running environment: the emulator, the sink and the ports in use.
pub struct Harness {
    /// The local Lambda.
    pub lambda: Emulator,
    /// The embedded X-Ray API.
    pub sink: XraySink,
    /// Where the extension listens for datagrams.
    pub udp_port: u16,
}

impl Harness {
    /// Starts the sink and the emulator with the real extension and the function.
    pub async fn start(options: Options) -> Harness {
        let sink = XraySink::start().await.expect("sink");
        let udp_port = net::free_udp_port().expect("udp port");
        let telemetry_port = net::free_tcp_port().expect("tcp port");
        let mut extension = ExtensionSpec::new(workspace_binary(EXTENSION))
            .env(
                "XRAY_EXTENSION_UDP_ADDRESS",
                format!("127.0.0.1:{udp_port}"),
            )
            .env("XRAY_EXTENSION_TELEMETRY_PORT", telemetry_port.to_string())
            .env("XRAY_EXTENSION_LOG_LEVEL", "debug")
            // Tests run side by side: each extension's OTLP/HTTP receiver gets its own port
            // (a test that uses it sets its own in `extension_env`).
            .env(
                "XRAY_EXTENSION_OTLP_ADDRESS",
                format!("127.0.0.1:{}", net::free_tcp_port().expect("tcp port")),
            );
        if time_scale() > 1.0 {
            extension = extension.env(
                "XRAY_EXTENSION_FLUSH_TIMEOUT_MS",
                flush_timeout().as_millis().to_string(),
            );
        }
        for (k, v) in &options.extension_env {
            extension = extension.env(k, v);
        }
        let function = options
            .function
            .unwrap_or_else(|| FunctionSpec::command([workspace_binary("sample-function")]));
        let function = if options.wrapper {
            let wrapper = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../layer/xray-extension-wrapper")
                .canonicalize()
                .expect("layer/xray-extension-wrapper");
            // A function setting: the runtime (through the wrapper) and the extension both see it.
            let address = options
                .wrapper_address
                .unwrap_or("127.0.0.1:{port}")
                .replace("{port}", &udp_port.to_string());
            function
                .env("AWS_LAMBDA_EXEC_WRAPPER", wrapper.to_string_lossy())
                .env("XRAY_EXTENSION_UDP_ADDRESS", address)
        } else {
            function.env("AWS_XRAY_DAEMON_ADDRESS", format!("127.0.0.1:{udp_port}"))
        };
        // Where the extension writes its address for the wrapper: one file per environment, as
        // tests (and their extensions) run side by side on one machine.
        let address_file = std::env::temp_dir().join(format!(
            "xray-extension-udp-address-{}-{udp_port}",
            std::process::id()
        ));
        let function = function.env(
            "XRAY_EXTENSION_ADDRESS_FILE",
            address_file.to_string_lossy(),
        );
        let mut builder = Emulator::builder();
        if let Some((uid, gid)) = options.run_as {
            builder = builder.run_as(uid, gid);
        }
        let lambda = builder
            .extension(extension)
            .function(function)
            .function_name("orders")
            .function_timeout(options.function_timeout)
            .telemetry_supported(options.telemetry)
            .managed_instances(options.managed_instances)
            .max_concurrency(options.max_concurrency)
            .tenant_isolation(options.tenant_isolation)
            .local_run(options.local_run)
            .xray_endpoint(options.xray_endpoint.unwrap_or_else(|| sink.endpoint()))
            .start()
            .await
            .expect("emulator");
        Harness {
            lambda,
            sink,
            udp_port,
        }
    }
}

/// Invokes the function with `event` under a new sampled trace header: the header and the
/// invocation.
pub async fn invoke_traced(lambda: &mut Emulator, event: Value) -> (TraceHeader, Invocation) {
    let trace = TraceHeader::sampled();
    let inv = lambda
        .invoke(Invoke::new(event).traced(trace.clone()))
        .await
        .expect("invoke");
    (trace, inv)
}

/// Returns once the platform reports that the invocation `request_id` started.
pub async fn invocation_started(observer: &Observer, request_id: &str) {
    observer
        .wait_for_telemetry("platform.start", WAIT, |log| {
            log.iter().any(|e| {
                e.event_type == "platform.start" && e.record["requestId"] == json!(request_id)
            })
        })
        .await
        .expect("the invocation started");
}

/// The test functions of `tests/functions/<name>`.
pub fn functions_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("functions")
        .join(name)
}

/// A Python function of `tests/functions/<dir>` run by AWS's runtime interface client, its
/// handler `<module>.handler`.
pub fn python_function(dir: &str, module: &str) -> FunctionSpec {
    let handler = format!("{module}.handler");
    FunctionSpec::command([
        venv().join("bin/python").into_os_string(),
        "-m".into(),
        "awslambdaric".into(),
        handler.clone().into(),
    ])
    .handler(handler)
    .env("PYTHONPATH", functions_dir(dir).to_string_lossy())
}

/// The X-Ray SDK function of `tests/functions/python`, run by AWS's runtime interface client; a
/// missing trace context is logged, not raised.
pub fn python_sdk_function() -> FunctionSpec {
    python_function("python", "app").env("AWS_XRAY_CONTEXT_MISSING", "LOG_ERROR")
}

/// The ids the sample function reports it sent.
pub fn sent_ids(inv: &Invocation) -> Vec<String> {
    inv.response_json()
        .and_then(|v| v.get("sent_ids").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Documents of one trace.
pub fn in_trace<'a>(docs: &'a [ReceivedDocument], root: &str) -> Vec<&'a ReceivedDocument> {
    docs.iter().filter(|d| d.trace_id == root).collect()
}

/// Our documents of one trace, by name.
pub fn named<'a>(
    docs: &'a [ReceivedDocument],
    root: &str,
    name: &str,
) -> Vec<&'a ReceivedDocument> {
    in_trace(docs, root)
        .into_iter()
        .filter(|d| d.name() == name)
        .collect()
}

/// The extension's log lines (stderr and stdout, captured by the emulator).
pub fn extension_log(lambda: &Emulator) -> Vec<String> {
    lambda.output(EXTENSION)
}

/// The extension's shutdown counters.
pub fn counters(lambda: &Emulator) -> Option<std::collections::HashMap<String, u64>> {
    xray_extension_tests::extension_log::counters(lambda)
}

/// A field of a JSON document as a list of strings (empty when it is not one).
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    serde_json::from_value(v.get(key).cloned().unwrap_or(Value::Null)).unwrap_or_default()
}

/// A field of a JSON document as f64.
pub fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The project's Python virtualenv (`make venv`), where moto, awslambdaric and aws-xray-sdk live.
pub fn venv() -> PathBuf {
    let dir = std::env::var("XRAY_TEST_VENV").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"),
        PathBuf::from,
    );
    assert!(
        dir.join("bin/python").exists(),
        "{} has no Python: run `make venv` (make test does)",
        dir.display()
    );
    dir
}

/// moto's X-Ray server on a free loopback port, stopped when dropped.
pub struct Moto {
    child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` and waits until it answers.
    pub async fn start() -> Moto {
        let port = net::free_tcp_port().expect("tcp port");
        let child = tokio::process::Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // moto is an external process: its readiness can only be observed by connecting.
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The process id (for diagnostics).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A container credentials endpoint (what SnapStart and Lambda Managed Instances give instead of
/// key variables): serves one key id to requests carrying its token, counts what it served and
/// refused. Stopped when dropped.
pub struct ContainerCredentials {
    _server: xray_extension_tests::http::Server,
    /// Requests answered with credentials.
    pub served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests refused for a wrong token.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    port: u16,
}

impl ContainerCredentials {
    /// The token the endpoint expects.
    pub const TOKEN: &'static str = "container-token-1";
    /// The access key id it serves.
    pub const KEY_ID: &'static str = "ASIACONTAINER0001";

    /// Starts the endpoint on a free loopback port.
    pub async fn start() -> ContainerCredentials {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use xray_extension_tests::http as h;
        let served = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handler: h::Handler = {
            let (served, refused) = (served.clone(), refused.clone());
            Arc::new(move |req: h::Request| {
                let authorized = req.header("authorization") == Some(Self::TOKEN);
                let (served, refused) = (served.clone(), refused.clone());
                Box::pin(async move {
                    if !authorized {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return h::empty_response(http::StatusCode::UNAUTHORIZED);
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                    h::json_response(
                        http::StatusCode::OK,
                        &serde_json::json!({"AccessKeyId": Self::KEY_ID,
                            "SecretAccessKey": "container-secret", "Token": "container-session",
                            "Expiration": "2099-01-01T00:00:00Z"}),
                    )
                })
            })
        };
        let endpoint = h::Server::start(listener, 1 << 16, handler).expect("credentials server");
        ContainerCredentials {
            _server: endpoint,
            served,
            refused,
            port,
        }
    }

    /// The variables that point the extension at this endpoint.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
                format!("http://127.0.0.1:{}/2021-04-23/credentials", self.port),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned(),
                Self::TOKEN.to_owned(),
            ),
        ]
    }
}

/// Checks the extension is alive: it still serves an invocation (traced by `trace`), and exits
/// 0 at the shutdown.
pub async fn assert_serves_and_exits_cleanly(
    lambda: &mut Emulator,
    trace: xray_extension_tests::trace::TraceHeader,
) {
    let inv = lambda
        .invoke(
            xray_extension_tests::emulator::Invoke::new(serde_json::json!({"subsegments": 1}))
                .traced(trace),
        )
        .await
        .expect("invoke");
    assert_eq!(
        inv.status,
        xray_extension_tests::emulator::InvocationStatus::Success,
        "{:?}",
        inv.error
    );
    let report = lambda.shutdown().await.expect("shutdown");
    assert!(
        report.extensions.iter().all(|e| e.exit_code() == Some(0)),
        "{:?}",
        report.extensions
    );
}

/// The extension variable that makes a peak RSS measure the extension: the layer's binary is
/// static musl, whose allocator maps each large block on its own and unmaps it when freed. A
/// glibc build (the tests' debug binary) raises its mmap threshold to the largest block freed
/// and keeps up to twice that per arena (measured in `hostile_otlp.rs`: 4 to 7 MB more peak);
/// pinning the threshold at glibc's default measures the extension rather than the test
/// build's allocator.
pub fn pinned_mmap_threshold() -> (String, String) {
    (
        "GLIBC_TUNABLES".into(),
        "glibc.malloc.mmap_threshold=131072".into(),
    )
}

/// The extension's process id: the process running [`EXTENSION`] whose environment holds
/// `var=value` (tests run in parallel, each with its own ports).
pub fn extension_pid(var: &str, value: &str) -> u32 {
    let wanted = format!("{var}={value}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(EXTENSION)
                && environ.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes())
        })
        .expect("the extension's process")
}
