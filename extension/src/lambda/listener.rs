//! The Telemetry API listener: Lambda POSTs record arrays here.
//!
//! It answers 200 to every POST, even to a body it cannot read: any other status makes Lambda
//! re-send the same batch. The 200 goes out once the records are handed to the lifecycle loop
//! (or, if the loop does not take them in time, counted as dropped). The socket is bound by the
//! caller and passed in.
//!
//! Other local processes can connect too, so no connection may keep Lambda's own POSTs out: the
//! connections are served by [`crate::serve`] (accepted at once, the head under a deadline, the
//! oldest idle one closed at the limit), and the body has a deadline of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::warn;

use super::telemetry::{self, Event};
use crate::metrics::{self, LogLimiter, Metrics};
use crate::serve;

/// Largest body read (Lambda's largest delivery is 1 MiB of records).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Connections served at once; past it the oldest idle one is closed.
pub const MAX_CONNECTIONS: usize = 8;
/// How long a connection may take to send a request head, counted from when it was accepted or
/// finished its previous request: bounds slow clients and idle keep-alive connections.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a delivery may wait for the lifecycle loop to take its records.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);
/// One log line per this interval for unreadable deliveries.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`HEAD_TIMEOUT`].
    pub head_timeout: Duration,
    /// See [`BODY_TIMEOUT`].
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            head_timeout: HEAD_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
        }
    }
}

/// Serves the listener until the process ends, with the default [`Limits`].
pub async fn run(
    listener: impl serve::Accept,
    events: mpsc::Sender<Vec<Event>>,
    metrics: Arc<Metrics>,
) {
    run_with(listener, events, metrics, Limits::default()).await;
}

/// Serves the listener until the process ends.
pub async fn run_with(
    listener: impl serve::Accept,
    events: mpsc::Sender<Vec<Event>>,
    metrics: Arc<Metrics>,
    limits: Limits,
) {
    let limiter = Arc::new(Mutex::new(LogLimiter::new(LOG_INTERVAL)));
    let bounds = serve::Bounds {
        max_connections: limits.max_connections,
        head_timeout: limits.head_timeout,
    };
    serve::serve(listener, bounds, "telemetry", move |req| {
        handle(
            req,
            events.clone(),
            metrics.clone(),
            limiter.clone(),
            limits.body_timeout,
        )
    })
    .await;
}

/// Reads a body of at most [`MAX_BODY_BYTES`] into one buffer (sized by its `Content-Length`,
/// so it is never copied whole once read).
async fn read_body(mut body: Incoming, length: Option<usize>) -> Result<Vec<u8>, String> {
    let too_large = || format!("body larger than {MAX_BODY_BYTES} bytes");
    let mut out = Vec::new();
    if let Some(length) = length {
        if length > MAX_BODY_BYTES {
            return Err(too_large());
        }
        out.reserve_exact(length);
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
            continue;
        };
        if out.len() + data.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

async fn handle(
    req: Request<Incoming>,
    events: mpsc::Sender<Vec<Event>>,
    metrics: Arc<Metrics>,
    limiter: Arc<Mutex<LogLimiter>>,
    body_timeout: Duration,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    if req.method() == hyper::Method::POST {
        let length = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
        let body = tokio::time::timeout(body_timeout, read_body(req.into_body(), length))
            .await
            .map_err(|_| String::from("timed out"))
            .and_then(|r| r);
        match body {
            Ok(body) => {
                let decoded = telemetry::decode(&body, received_now());
                if decoded.invalid > 0 {
                    metrics::add(&metrics.telemetry_invalid, decoded.invalid as u64);
                    log_limited(
                        &limiter,
                        decoded.invalid,
                        "unreadable telemetry records skipped",
                    );
                }
                if decoded.fields_ignored > 0 {
                    metrics::add(
                        &metrics.telemetry_fields_ignored,
                        decoded.fields_ignored as u64,
                    );
                    log_limited(
                        &limiter,
                        decoded.fields_ignored,
                        "unreadable telemetry fields ignored; their records were kept",
                    );
                }
                let records = decoded.events.len();
                if records > 0
                    && events
                        .send_timeout(decoded.events, HANDOFF_TIMEOUT)
                        .await
                        .is_err()
                {
                    metrics::add(&metrics.telemetry_dropped, records as u64);
                    log_limited(
                        &limiter,
                        records,
                        "telemetry records dropped: the lifecycle loop did not take them",
                    );
                }
            }
            Err(e) => {
                metrics::add(&metrics.telemetry_invalid, 1);
                log_limited(&limiter, 1, &format!("telemetry body not read: {e}"));
            }
        }
    }
    let mut res = Response::new(Empty::new());
    *res.status_mut() = StatusCode::OK;
    Ok(res)
}

/// The wall clock now, standing in for a record time Lambda did not give readably.
fn received_now() -> telemetry::EpochSeconds {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    telemetry::EpochSeconds(now.as_secs_f64())
}

fn log_limited(limiter: &Mutex<LogLimiter>, count: usize, message: &str) {
    let allowed = limiter
        .lock()
        .ok()
        .and_then(|mut l| l.allow(std::time::Instant::now()));
    if let Some(suppressed) = allowed {
        warn!(count, suppressed, "{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn post(addr: std::net::SocketAddr, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /telemetry HTTP/1.1\r\nHost: sandbox.localdomain\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn answers_200_even_to_garbage_and_forwards_good_records() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(run(listener, tx, metrics.clone()));

        let res = post(addr, "this is not json").await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(metrics::get(&metrics.telemetry_invalid), 1);

        let body = r#"[{"time":"2023-01-01T00:00:00.000Z","type":"platform.unknownThing","record":{}},
                       {"time":"2023-01-01T00:00:00.030Z","type":"platform.runtimeDone","record":{"requestId":"r-2","status":"success"}}]"#;
        let res = post(addr, body).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let events = rx.recv().await.unwrap();
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[1].record, telemetry::Record::RuntimeDone(r) if r.request_id == "r-2")
        );
    }

    const RUNTIME_DONE: &str = r#"[{"time":"2023-01-01T00:00:00.030Z","type":"platform.runtimeDone","record":{"requestId":"r-9","status":"success"}}]"#;

    #[tokio::test]
    async fn idle_and_slow_local_connections_never_keep_a_delivery_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::default());
        // Timeouts far longer than the test: only the eviction can let the delivery in.
        let limits = Limits {
            max_connections: 8,
            head_timeout: Duration::from_mins(1),
            body_timeout: Duration::from_mins(1),
        };
        tokio::spawn(run_with(listener, tx, metrics, limits));
        let mut idle = Vec::new();
        for n in 0..12 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            if n % 2 == 0 {
                // Half a request head, never finished.
                s.write_all(b"POST /telemetry HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .unwrap();
            }
            idle.push(s);
        }
        let res = tokio::time::timeout(Duration::from_secs(5), post(addr, RUNTIME_DONE))
            .await
            .expect("the delivery was kept out");
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let events = rx.recv().await.unwrap();
        assert!(
            matches!(&events[0].record, telemetry::Record::RuntimeDone(r) if r.request_id == "r-9")
        );
        drop(idle);
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_head_is_closed_after_the_head_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let limits = Limits {
            head_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        tokio::spawn(run_with(listener, tx, Arc::new(Metrics::default()), limits));
        for partial in [&b""[..], b"POST /telemetry HTTP/1.1\r\n"] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(partial).await.unwrap();
            let started = std::time::Instant::now();
            let mut out = Vec::new();
            // The server closes it (EOF, possibly after an error answer).
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                .await
                .expect("still open")
                .ok();
            assert!(
                started.elapsed() >= Duration::from_millis(150),
                "{:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn records_the_loop_does_not_take_are_counted_and_still_answered_200() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(run(listener, tx, metrics.clone()));
        let res = post(addr, RUNTIME_DONE).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(metrics::get(&metrics.telemetry_dropped), 1);
    }
}
