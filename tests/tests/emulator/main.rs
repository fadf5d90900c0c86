//! Self-tests of the emulator, with the real `sample-function` and `empty-extension` binaries.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed step fails the test"
)]

mod extensions_api;
mod local_run;
mod managed_instances;
mod runtime_api;
mod snapstart;
mod telemetry_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use xray_extension_tests::emulator::{
    Emulator, EmulatorBuilder, ExtensionSpec, FunctionSpec, Observer,
};
use xray_extension_tests::http::{self as h, Server};

const SAMPLE_FUNCTION: &str = env!("CARGO_BIN_EXE_sample-function");
const EMPTY_EXTENSION: &str = env!("CARGO_BIN_EXE_empty-extension");
const EMPTY_NAME: &str = "empty-extension";
const WAIT: Duration = Duration::from_secs(10);

fn function() -> FunctionSpec {
    FunctionSpec::command([SAMPLE_FUNCTION])
}

fn with_empty_extension() -> EmulatorBuilder {
    Emulator::builder()
        .extension(ExtensionSpec::new(EMPTY_EXTENSION))
        .function(function())
}

fn quiet_event() -> Value {
    json!({"subsegments": 0})
}

/// An HTTP listener standing in for an extension's telemetry endpoint.
struct Collector {
    _server: Server,
    port: u16,
    batches: mpsc::Receiver<(Instant, Vec<Value>)>,
    seen: Vec<(Instant, Value)>,
}

impl Collector {
    async fn start() -> Self {
        Self::failing_first(0).await
    }

    /// A collector that answers 500 to its first `failures` deliveries.
    async fn failing_first(failures: usize) -> Self {
        let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(failures));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, batches) = mpsc::channel(1024);
        let server = Server::start(
            listener,
            1 << 20,
            Arc::new(move |req: h::Request| {
                let tx = tx.clone();
                let remaining = Arc::clone(&remaining);
                Box::pin(async move {
                    let fail = remaining
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok();
                    if fail {
                        return h::empty_response(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    let batch: Vec<Value> = serde_json::from_slice(&req.body).unwrap_or_default();
                    let _ = tx.send((req.body_done_at, batch)).await;
                    h::empty_response(StatusCode::OK)
                })
            }),
        )
        .unwrap();
        Self {
            _server: server,
            port,
            batches,
            seen: Vec::new(),
        }
    }

    /// Receives batches until an event of `kind` (for `request_id`, when given) has arrived.
    async fn until(&mut self, kind: &str, request_id: Option<&str>) -> (Instant, Value) {
        let matches = |e: &Value| {
            e["type"] == kind && request_id.is_none_or(|id| e["record"]["requestId"] == id)
        };
        loop {
            if let Some(found) = self.seen.iter().find(|(_, e)| matches(e)) {
                return found.clone();
            }
            let (at, batch) = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}; seen {:?}", self.seen))
                .unwrap();
            self.seen.extend(batch.into_iter().map(|e| (at, e)));
        }
    }
}

fn subscription(port: u16, host: &str) -> Value {
    json!({
        "schemaVersion": "2022-12-13",
        "types": ["platform"],
        "buffering": {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25},
        "destination": {"protocol": "HTTP", "URI": format!("http://{host}:{port}/telemetry")},
    })
}

/// What a test-driven extension saw.
struct ProbeReport {
    /// Each subscription attempt: status and body.
    subscriptions: Vec<(StatusCode, Value)>,
}

/// A running probe: its report once registered and subscribed, and the events it took.
type Probe = (
    oneshot::Receiver<ProbeReport>,
    tokio::task::JoinHandle<Vec<Value>>,
);

/// [`spawn_probe`] named `probe`, subscribing `collector` at `sandbox.localdomain`.
fn subscribed_probe(observer: Observer, collector: &Collector) -> Probe {
    spawn_probe(
        observer,
        "probe",
        vec![subscription(collector.port, "sandbox.localdomain")],
    )
}

/// Runs an attached extension: registers during the next init, tries each subscription, then
/// takes events until SHUTDOWN.
fn spawn_probe(observer: Observer, name: &'static str, subscriptions: Vec<Value>) -> Probe {
    let (report_tx, report_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        observer.wait_for_init_start(WAIT).await.unwrap();
        let api = observer.runtime_api();
        let register = h::request(Method::POST, api, "/2020-01-01/extension/register")
            .header("Lambda-Extension-Name", name)
            .body(h::body(r#"{"events":["INVOKE","SHUTDOWN"]}"#))
            .unwrap();
        let registered = h::send(api, register, Some(WAIT)).await.unwrap();
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
        let id = registered
            .header("Lambda-Extension-Identifier")
            .unwrap()
            .to_owned();
        let mut results = Vec::new();
        for body in subscriptions {
            let put = h::request(Method::PUT, api, "/2022-07-01/telemetry")
                .header("Lambda-Extension-Identifier", &id)
                .header("Content-Type", "application/json")
                .body(h::body(body.to_string()))
                .unwrap();
            let answer = h::send(api, put, Some(WAIT)).await.unwrap();
            let parsed = answer
                .json()
                .unwrap_or_else(|_| Value::String(answer.text()));
            results.push((answer.status, parsed));
        }
        let _ = report_tx.send(ProbeReport {
            subscriptions: results,
        });
        let mut events = Vec::new();
        loop {
            let next = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
                .header("Lambda-Extension-Identifier", &id)
                .body(h::body(""))
                .unwrap();
            let event = h::send(api, next, None).await.unwrap().json().unwrap();
            let shutdown = event["eventType"] == "SHUTDOWN";
            events.push(event);
            if shutdown {
                return events;
            }
        }
    });
    (report_rx, task)
}

async fn udp_sink() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

async fn receive(socket: &UdpSocket) -> Value {
    let mut buf = vec![0u8; 65_536];
    let len = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = std::str::from_utf8(&buf[..len]).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    assert_eq!(header, r#"{"format":"json","version":1}"#);
    serde_json::from_str(body).unwrap()
}
