//! Wiring only: configuration, logging, sockets, registration, then the lifecycle loop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use xray_extension::app::{self, ClientCell, Inputs, LifecycleEvent, Setup};
use xray_extension::config::{Config, SpanDestination, vars};
use xray_extension::enrich::{Enricher, Environment};
use xray_extension::export::budget::HandOffBudget;
use xray_extension::export::policy::Strategy;
use xray_extension::fault;
use xray_extension::ingest::{otlp_http, udp};
use xray_extension::lambda::api::{ApiError, EVENT_RETRY_DELAY, LambdaApi, Telemetry};
use xray_extension::lambda::events::{self, EventSet, NextEvent, Shutdown, ShutdownReason};
use xray_extension::lambda::listener;
use xray_extension::lambda::telemetry::{EpochSeconds, InitializationType};
use xray_extension::logging;
use xray_extension::metrics::{LogLimiter, Metrics, emf};
use xray_extension::otlp::Packing;
use xray_extension::supervisor::{self, Supervisor, Task};

/// Documents waiting between the UDP reader and the lifecycle loop.
const DOCUMENT_CHANNEL_CAPACITY: usize = 1_024;
/// Telemetry deliveries waiting for the lifecycle loop.
const TELEMETRY_CHANNEL_CAPACITY: usize = 64;
/// Our name when the executable's cannot be read (Lambda starts `/opt/extensions/<name>`).
const DEFAULT_EXTENSION_NAME: &str = "xray-extension";
/// One log line per this interval for failed or undecodable `/event/next` answers.
const EVENT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    let started = app::epoch_seconds_now();
    let (config, warnings) = Config::from_lookup(xray_extension::env::process);
    logging::init(config.log_level, config.log_format);
    supervisor::install_panic_hook();
    fault::announce();
    for w in &warnings {
        warn!(variable = w.variable, "{w}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(config, started)) {
        Ok(()) => 0,
        Err(e) => {
            error!(error = format!("{e:#}"), "extension stopped");
            1
        }
    };
    // Exit at once: dropping the runtime would wait for its blocking threads (a DNS lookup that
    // never answers), past the SHUTDOWN deadline, where Lambda kills us. Everything worth
    // keeping (the counters line) is written; stderr is unbuffered, stdout is flushed here.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
}

/// What Lambda tells every extension through its environment (contracts §1).
fn environment(started: EpochSeconds) -> Environment {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Environment {
        function_name: var("AWS_LAMBDA_FUNCTION_NAME"),
        function_version: var("AWS_LAMBDA_FUNCTION_VERSION"),
        memory_size_mb: var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse().ok()),
        initialization_type: initialization_type(),
        extension_started: Some(started),
        extension_ready: None,
    }
}

/// `AWS_LAMBDA_INITIALIZATION_TYPE`, when set.
fn initialization_type() -> Option<InitializationType> {
    std::env::var("AWS_LAMBDA_INITIALIZATION_TYPE")
        .ok()
        .and_then(|v| events::initialization_type(&v))
}

/// The name to register with: the executable's file name (contracts §1).
fn extension_name() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_EXTENSION_NAME.to_owned())
}

#[expect(
    clippy::too_many_lines,
    reason = "the wiring in its order (bind, register, spawn, subscribe, run) reads best in one place"
)]
async fn run(mut config: Config, started: EpochSeconds) -> anyhow::Result<()> {
    let runtime_api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .context("AWS_LAMBDA_RUNTIME_API is not set: not running inside Lambda")?;
    let api = LambdaApi::new(&runtime_api)?;

    // Bind first, register second: a port we cannot bind is logged below and degrades us.
    let udp_socket = udp::bind(config.udp_address);
    publish_udp_address(&config, udp_socket.as_ref().ok());
    let telemetry_addr = SocketAddr::from(([0, 0, 0, 0], config.telemetry_port));
    let telemetry_socket = tokio::net::TcpListener::bind(telemetry_addr).await;
    let otlp_socket = bind_otlp(config.otlp_address).await;

    // SHUTDOWN only on Lambda Managed Instances, or wherever INVOKE is refused.
    let wanted = EventSet::for_initialization_type(initialization_type().as_ref());
    let registered = api
        .register_or_fall_back(&extension_name(), wanted)
        .await
        .context("registration failed")?;
    let extension_id = registered.extension_id.clone();
    debug!(function = %registered.function_name, events = ?registered.events, "registered");
    if registered.events == EventSet::ShutdownOnly {
        // No INVOKE, so no flush point can hold anything: send on a timer and at SHUTDOWN.
        config.policy.strategy = Strategy::Background;
    }

    // A port we cannot bind degrades us, never the function: one error naming the port and the
    // variable that moves it; we keep registering, calling /event/next and exporting what we can.
    let udp_socket = udp_socket
        .inspect_err(|e| {
            error!(address = %config.udp_address, variable = vars::UDP_ADDRESS, error = %e, "cannot bind the UDP address: no X-Ray SDK documents will be received; set {} to a free address", vars::UDP_ADDRESS);
        })
        .ok();
    let telemetry_socket = telemetry_socket
        .inspect_err(|e| {
            error!(port = config.telemetry_port, variable = vars::TELEMETRY_PORT, error = %e, "cannot bind the telemetry listener: no enrichment, flushing on a timer and at shutdown; set {} to a free port", vars::TELEMETRY_PORT);
        })
        .ok();

    // Spawn second, every task under the supervisor.
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Supervisor::new(metrics.clone());
    let emf = emf_reporter(&config, &metrics, &registered.function_name, &mut tasks);
    let client: ClientCell = Arc::default();
    let (documents_tx, documents_rx) = mpsc::channel(DOCUMENT_CHANNEL_CAPACITY);
    // Without a reader both ends close at once: a flush point then skips the drain.
    let (drain_tx, drain_rx) = mpsc::channel(1);
    let budget = HandOffBudget::new(config.buffer_bytes);
    let packing = match config.span_destination {
        SpanDestination::Segments => &Packing::DOCUMENTS,
        SpanDestination::Otlp => &xray_extension::export::otlp::request::PACKING,
    };
    if let Some(otlp_socket) = otlp_socket {
        let (listener, docs) = (Arc::new(otlp_socket), documents_tx.clone());
        let (budget, metrics) = (budget.clone(), metrics.clone());
        tasks.spawn(Task::OtlpReceiver, move || {
            otlp_http::run(
                listener.clone(),
                docs.clone(),
                packing,
                budget.clone(),
                metrics.clone(),
            )
        });
    }
    if let Some(udp_socket) = udp_socket {
        let inputs = udp::Inputs {
            socket: Arc::new(udp_socket),
            docs: documents_tx,
            budget: budget.clone(),
            drain_requests: Arc::new(tokio::sync::Mutex::new(drain_rx)),
            metrics: metrics.clone(),
            form: packing.form,
        };
        tasks.spawn(Task::UdpReader, move || udp::run(inputs.clone()));
    } else {
        drop((documents_tx, drain_rx));
    }
    let (telemetry_tx, telemetry_rx) = mpsc::channel(TELEMETRY_CHANNEL_CAPACITY);
    let listening = telemetry_socket.is_some();
    if let Some(telemetry_socket) = telemetry_socket {
        let (listener, metrics) = (Arc::new(telemetry_socket), metrics.clone());
        tasks.spawn(Task::TelemetryListener, move || {
            listener::run(
                listener.clone(),
                telemetry_tx.clone(),
                budget.clone(),
                metrics.clone(),
            )
        });
    }

    // Subscribe third (not without our listener: Lambda would deliver to whoever holds the port).
    let telemetry = if listening {
        subscribe(&api, &extension_id, config.telemetry_port).await
    } else {
        Telemetry::NotSupported
    };
    // The one line at the default level during init: every event formatted at start is paid
    // for in the function's cold start.
    info!(function = %registered.function_name, pid = std::process::id(), udp = %config.udp_address, otlp = ?config.otlp_address, telemetry = ?telemetry, flush = config.policy.strategy.as_str(), "ready");

    let enricher = match (&config.enrich, telemetry) {
        (Some(settings), Telemetry::Subscribed) => {
            let mut env = environment(started);
            env.extension_ready = Some(app::epoch_seconds_now());
            Some(Enricher::new(settings.clone(), env))
        }
        _ => None,
    };
    let (lifecycle_tx, lifecycle_rx) = mpsc::channel::<LifecycleEvent>(1);
    tasks.spawn_once(
        Task::Lifecycle,
        app::run(
            Setup {
                config,
                telemetry,
                metrics,
                client,
                enricher,
            },
            Inputs {
                lifecycle: lifecycle_rx,
                documents: documents_rx,
                telemetry: telemetry_rx,
                drain: drain_tx,
            },
        ),
    );
    let (api, extension_id) = (Arc::new(api), Arc::<str>::from(extension_id));
    let events = lifecycle_tx.clone();
    tasks.spawn(Task::EventLoop, move || {
        let (api, extension_id, events) = (api.clone(), extension_id.clone(), events.clone());
        async move { event_loop(&api, &extension_id, &events).await }
    });
    tasks.spawn(Task::Sigterm, move || {
        let events = lifecycle_tx.clone();
        async move { on_sigterm(&events).await }
    });
    // Until the SHUTDOWN (or SIGTERM) has been handled.
    let supervised = tasks.run().await;
    if let Some(emf) = emf {
        emf.finish(std::time::SystemTime::now());
    }
    Ok(supervised?)
}

/// Binds the OTLP/HTTP receiver when it is on. A failure degrades, never fails init: one error
/// naming the address and the variable that moves it.
async fn bind_otlp(address: Option<SocketAddr>) -> Option<tokio::net::TcpListener> {
    let address = address?;
    tokio::net::TcpListener::bind(address)
        .await
        .inspect_err(|e| {
            error!(%address, variable = vars::OTLP_ADDRESS, error = %e, "cannot bind the OTLP/HTTP receiver: OTLP/HTTP exporters will not reach X-Ray; set {} to a free address, or to off", vars::OTLP_ADDRESS);
        })
        .ok()
}

/// SIGTERM (not part of Lambda's contract with extensions, but sent by some hosts and tools)
/// is handled as a SHUTDOWN with Lambda's usual phase: flush, log the counters, exit 0.
async fn on_sigterm(lifecycle: &mpsc::Sender<LifecycleEvent>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        warn!("cannot install the SIGTERM handler");
        return std::future::pending().await;
    };
    sigterm.recv().await;
    info!("SIGTERM received: shutting down");
    let shutdown = Shutdown {
        deadline_ms: None,
        reason: ShutdownReason::Sigterm,
    };
    app::forward(lifecycle, NextEvent::Shutdown(shutdown)).await;
}

/// Calls `/event/next` and hands each event to the lifecycle loop, until SHUTDOWN has been
/// handled. An answer we cannot use is logged and skipped: the function never stalls because
/// of us.
async fn event_loop(api: &LambdaApi, extension_id: &str, lifecycle: &mpsc::Sender<LifecycleEvent>) {
    let mut failures = LogLimiter::new(EVENT_LOG_INTERVAL);
    loop {
        match api.next_event(extension_id).await {
            Ok(event) => {
                let shutdown = matches!(event, NextEvent::Shutdown(_));
                app::forward(lifecycle, event).await;
                if shutdown {
                    return;
                }
            }
            Err(ApiError::Event(e)) => {
                if let Some(suppressed) = failures.allow(std::time::Instant::now()) {
                    warn!(error = %e, suppressed, "event from /event/next ignored");
                }
            }
            Err(e) => {
                if let Some(suppressed) = failures.allow(std::time::Instant::now()) {
                    warn!(error = %e, suppressed, "/event/next failed; calling it again");
                }
                tokio::time::sleep(EVENT_RETRY_DELAY).await;
            }
        }
    }
}

/// The EMF metrics lines, periodic from now on, unless turned off.
fn emf_reporter(
    config: &Config,
    metrics: &Arc<Metrics>,
    function_name: &str,
    tasks: &mut Supervisor,
) -> Option<Arc<emf::Reporter>> {
    let settings = config.metrics.clone()?;
    let reporter = Arc::new(emf::Reporter::new(
        metrics.clone(),
        settings,
        function_name,
        std::time::SystemTime::now(),
    ));
    let periodic = reporter.clone();
    tasks.spawn(Task::MetricsTimer, move || {
        emf::run_periodic(periodic.clone())
    });
    Some(reporter)
}

/// Subscribes to the Telemetry API; without it we still work (flushing on a timer).
async fn subscribe(api: &LambdaApi, extension_id: &str, port: u16) -> Telemetry {
    match api.subscribe_telemetry(extension_id, port).await {
        Ok(Telemetry::Subscribed) => Telemetry::Subscribed,
        Ok(Telemetry::NotSupported) => {
            info!("Telemetry API not supported here: flushing on a timer and at shutdown");
            Telemetry::NotSupported
        }
        Err(e) => {
            warn!(error = %e, "Telemetry API subscription failed: flushing on a timer and at shutdown");
            Telemetry::NotSupported
        }
    }
}

/// Writes the address the SDKs must send to for the layer's wrapper script, or removes a stale
/// one when nothing is bound (the wrapper then falls back to the variables). Called before
/// registering: the runtime, and the wrapper reading the file, start after registration.
fn publish_udp_address(config: &Config, socket: Option<&udp::BoundSocket>) {
    let path = &config.address_file;
    let result = match socket.map(udp::BoundSocket::local_addr) {
        Some(Ok(local)) => udp::publish_address(path, udp::send_address(local)),
        _ => match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "cannot write the UDP address for the wrapper script; it falls back to the variables");
    }
}
