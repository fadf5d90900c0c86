//! The Telemetry API listener: Lambda POSTs record arrays here.
//!
//! It answers 200 to every POST, even to a body it cannot read: any other status makes Lambda
//! re-send the same batch. Bodies and connections are bounded. The socket is bound by the caller
//! (so a bind failure is a startup error) and passed in.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::telemetry::{self, Event};
use crate::metrics::{self, LogLimiter, Metrics};

/// Largest body read (Lambda's largest delivery is 1 MiB of records).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// How long a delivery may wait for the lifecycle loop to take its records.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);
/// One log line per this interval for unreadable deliveries.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves the listener until the process ends.
pub async fn run(listener: TcpListener, events: mpsc::Sender<Vec<Event>>, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let limiter = Arc::new(std::sync::Mutex::new(LogLimiter::new(LOG_INTERVAL)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                debug!(error = %e, "telemetry accept failed");
                continue;
            }
        };
        let events = events.clone();
        let metrics = metrics.clone();
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                handle(req, events.clone(), metrics.clone(), limiter.clone())
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "telemetry connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    events: mpsc::Sender<Vec<Event>>,
    metrics: Arc<Metrics>,
    limiter: Arc<std::sync::Mutex<LogLimiter>>,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    if req.method() == hyper::Method::POST {
        match Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => {
                let decoded = telemetry::decode(&body.to_bytes(), received_now());
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
                if !decoded.events.is_empty()
                    && events
                        .send_timeout(decoded.events, HANDOFF_TIMEOUT)
                        .await
                        .is_err()
                {
                    warn!("telemetry records dropped: the lifecycle loop did not take them");
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

fn log_limited(limiter: &std::sync::Mutex<LogLimiter>, count: usize, message: &str) {
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
}
