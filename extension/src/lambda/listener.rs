//! The Telemetry API listener: Lambda POSTs record arrays here.
//!
//! It answers 200 to every POST, even to a body it cannot read: any other status makes Lambda
//! re-send the same batch. The 200 goes out once the records are handed to the lifecycle loop
//! (or, if the loop does not take them in time, counted as dropped). The socket is bound by the
//! caller and passed in. The one exception is a delivery that finds no room in the budget (see
//! [`handle`]).
//!
//! Other local processes can connect too, so no connection may keep Lambda's own POSTs out: the
//! connections are served by [`crate::serve`] (accepted at once, the head under a deadline, the
//! oldest idle one closed at the limit), and the body has a deadline of its own. What a delivery
//! holds (its body, then its records until the lifecycle loop has them) comes out of the
//! budget's telemetry slice, reserved before it is read or decoded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::telemetry::{self, Event};
use crate::export::budget::{BudgetError, HandOffBudget, ROOM_WAIT, Reservation};
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

/// The records of one delivery, with the room they hold in the budget's telemetry slice (given
/// back when the delivery is dropped, once the lifecycle loop has read them).
#[derive(Debug)]
pub struct Delivery {
    /// The records, in the order received.
    pub events: Vec<Event>,
    held: Reservation,
}

impl Delivery {
    /// `events`, holding the room `held` has.
    pub fn new(events: Vec<Event>, held: Reservation) -> Self {
        Self { events, held }
    }

    /// Bytes it holds in the budget.
    pub fn held_bytes(&self) -> usize {
        self.held.bytes()
    }
}

/// Serves the listener until the process ends, with the default [`Limits`].
pub async fn run(
    listener: impl serve::Accept,
    events: mpsc::Sender<Delivery>,
    budget: HandOffBudget,
    metrics: Arc<Metrics>,
) {
    run_with(listener, events, budget, metrics, Limits::default()).await;
}

/// What every request's handler shares.
struct Shared {
    events: mpsc::Sender<Delivery>,
    budget: HandOffBudget,
    metrics: Arc<Metrics>,
    limiter: Mutex<LogLimiter>,
    body_timeout: Duration,
}

/// Serves the listener until the process ends.
pub async fn run_with(
    listener: impl serve::Accept,
    events: mpsc::Sender<Delivery>,
    budget: HandOffBudget,
    metrics: Arc<Metrics>,
    limits: Limits,
) {
    let shared = Arc::new(Shared {
        events,
        budget,
        metrics,
        limiter: Mutex::new(LogLimiter::new(LOG_INTERVAL)),
        body_timeout: limits.body_timeout,
    });
    let bounds = serve::Bounds {
        max_connections: limits.max_connections,
        head_timeout: limits.head_timeout,
    };
    serve::serve(listener, bounds, "telemetry", move |req| {
        handle(req, shared.clone())
    })
    .await;
}

/// Why a delivery was not read or decoded.
enum Unread {
    /// No room in the telemetry slice now.
    NoRoom,
    /// Never readable: too large (for the limit or the whole slice), broken, or too slow.
    Failed(String),
}

impl Unread {
    fn of_budget(e: BudgetError, what: &str) -> Self {
        match e {
            BudgetError::NoRoom => Self::NoRoom,
            BudgetError::TooLarge => {
                Self::Failed(format!("{what} needs more than the whole telemetry budget"))
            }
        }
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`] into one buffer whose bytes `held` takes first:
/// sized by its `Content-Length`, so it is never copied whole once read; without one, room
/// for the largest body and the copy of its buffer as it doubles, the unused part given back
/// once read.
async fn read_body(
    mut body: Incoming,
    length: Option<usize>,
    held: &mut Reservation,
    room_deadline: Instant,
) -> Result<Vec<u8>, Unread> {
    let too_large = || Unread::Failed(format!("body larger than {MAX_BODY_BYTES} bytes"));
    let limit = length.unwrap_or(MAX_BODY_BYTES);
    if limit > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let room = length.unwrap_or(MAX_BODY_BYTES + MAX_BODY_BYTES / 2);
    held.grow_until(room, room_deadline, || {})
        .await
        .map_err(|e| Unread::of_budget(e, "the body"))?;
    let mut out = Vec::new();
    out.reserve_exact(length.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame
            .map_err(|e| Unread::Failed(e.to_string()))?
            .into_data()
        else {
            continue;
        };
        let needed = out.len() + data.len();
        if needed > limit {
            return Err(too_large());
        }
        if needed > out.capacity() {
            let target = (out.capacity() * 2).clamp(needed, limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&data);
    }
    held.release(room.saturating_sub(out.capacity()));
    Ok(out)
}

/// Answers a delivery. A delivery that finds no room in the budget's telemetry slice within
/// [`ROOM_WAIT`] (local processes posting large bodies, or deliveries the lifecycle loop has not
/// taken yet) gets 503, unread: Lambda keeps a delivery it was answered non-2xx for and sends it
/// again (contracts: Telemetry API), and the room comes back within the body and hand-off
/// timeouts, so it gets in then; a 200 would lose its records, and with them perhaps the
/// `platform.runtimeDone` that releases an invocation. A body that needs more than the whole
/// slice never could get in: it gets 200 and is counted as unreadable, as re-sending it would
/// loop.
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    let status = if req.method() == hyper::Method::POST {
        let length = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
        match take(req.into_body(), length, &shared).await {
            Ok(()) => StatusCode::OK,
            Err(Unread::NoRoom) => {
                metrics::add(&shared.metrics.telemetry_busy, 1);
                shared.log_limited(
                    1,
                    "telemetry delivery answered 503 (Lambda sends it again): no room in the telemetry budget",
                );
                StatusCode::SERVICE_UNAVAILABLE
            }
            Err(Unread::Failed(e)) => {
                metrics::add(&shared.metrics.telemetry_invalid, 1);
                shared.log_limited(1, &format!("telemetry body not read: {e}"));
                StatusCode::OK
            }
        }
    } else {
        StatusCode::OK
    };
    let mut res = Response::new(Empty::new());
    *res.status_mut() = status;
    Ok(res)
}

/// Reads, decodes and hands on one delivery, its bytes reserved before each step.
async fn take(body: Incoming, length: Option<usize>, shared: &Shared) -> Result<(), Unread> {
    let mut held = shared.budget.telemetry_reservation();
    let room_deadline = Instant::now() + ROOM_WAIT;
    let read = read_body(body, length, &mut held, room_deadline);
    let body = tokio::time::timeout(shared.body_timeout, read)
        .await
        .unwrap_or_else(|_| Err(Unread::Failed("timed out".into())))?;
    let cost = telemetry::decode_cost(&body);
    held.grow_until(cost.total(), room_deadline, || {})
        .await
        .map_err(|e| Unread::of_budget(e, "decoding the body"))?;
    let decoded = telemetry::decode(&body, received_now());
    // The records keep what `cost.records` covers; the body and the scratch are gone.
    held.release(body.len().saturating_add(cost.scratch));
    drop(body);
    if decoded.invalid > 0 {
        metrics::add(&shared.metrics.telemetry_invalid, decoded.invalid as u64);
        shared.log_limited(decoded.invalid, "unreadable telemetry records skipped");
    }
    if decoded.fields_ignored > 0 {
        metrics::add(
            &shared.metrics.telemetry_fields_ignored,
            decoded.fields_ignored as u64,
        );
        shared.log_limited(
            decoded.fields_ignored,
            "unreadable telemetry fields ignored; their records were kept",
        );
    }
    let records = decoded.events.len();
    if records > 0
        && shared
            .events
            .send_timeout(Delivery::new(decoded.events, held), HANDOFF_TIMEOUT)
            .await
            .is_err()
    {
        metrics::add(&shared.metrics.telemetry_dropped, records as u64);
        shared.log_limited(
            records,
            "telemetry records dropped: the lifecycle loop did not take them",
        );
    }
    Ok(())
}

impl Shared {
    fn log_limited(&self, count: usize, message: &str) {
        if let Some(suppressed) = LogLimiter::allow_shared(&self.limiter) {
            warn!(count, suppressed, "{message}");
        }
    }
}

/// The wall clock now, standing in for a record time Lambda did not give readably.
fn received_now() -> telemetry::EpochSeconds {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    telemetry::EpochSeconds(now.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::budget::ROOM_POLL;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn budget() -> HandOffBudget {
        HandOffBudget::new(1024 * 1024)
    }

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
        tokio::spawn(run(listener, tx, budget(), metrics.clone()));

        let res = post(addr, "this is not json").await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(metrics::get(&metrics.telemetry_invalid), 1);

        let body = r#"[{"time":"2023-01-01T00:00:00.000Z","type":"platform.unknownThing","record":{}},
                       {"time":"2023-01-01T00:00:00.030Z","type":"platform.runtimeDone","record":{"requestId":"r-2","status":"success"}}]"#;
        let res = post(addr, body).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let events = rx.recv().await.unwrap().events;
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
        tokio::spawn(run_with(listener, tx, budget(), metrics, limits));
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
        let events = rx.recv().await.unwrap().events;
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
        tokio::spawn(run_with(
            listener,
            tx,
            budget(),
            Arc::new(Metrics::default()),
            limits,
        ));
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
        tokio::spawn(run(listener, tx, budget(), metrics.clone()));
        let res = post(addr, RUNTIME_DONE).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(metrics::get(&metrics.telemetry_dropped), 1);
    }

    fn runtime_done(request_id: &str) -> String {
        RUNTIME_DONE.replace("r-9", request_id)
    }

    #[tokio::test]
    async fn a_delivery_without_room_gets_503_until_the_loop_has_read_the_one_holding_it() {
        let body = runtime_done("r-1");
        let cost = telemetry::decode_cost(body.as_bytes());
        // Room to read and decode one delivery while another's records wait for the loop,
        // short of one byte.
        let slice = body.len() + cost.total() + cost.records - 1;
        let budget = HandOffBudget::new(1024 * 1024).with_telemetry_slice(slice);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(run(listener, tx, budget.clone(), metrics.clone()));

        let res = post(addr, &body).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        // Its records hold their room until the loop has read them: the next finds none.
        let started = std::time::Instant::now();
        let res = post(addr, &runtime_done("r-2")).await;
        assert!(res.starts_with("HTTP/1.1 503"), "{res}");
        // It waited for room: it gives up when the next look would come past the wait.
        assert!(
            started.elapsed() + ROOM_POLL >= ROOM_WAIT,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(metrics::get(&metrics.telemetry_busy), 1);
        let first = rx.recv().await.unwrap();
        assert_eq!(first.held_bytes(), cost.records);
        assert!(rx.try_recv().is_err(), "the refused delivery was not read");
        drop(first);
        // Lambda sends it again: now it gets in.
        let res = post(addr, &runtime_done("r-2")).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let events = rx.recv().await.unwrap().events;
        assert!(
            matches!(&events[0].record, telemetry::Record::RuntimeDone(r) if r.request_id == "r-2")
        );
        assert_eq!(metrics::get(&metrics.telemetry_invalid), 0);
    }

    #[tokio::test]
    async fn a_delivery_larger_than_the_whole_slice_is_answered_200_and_counted() {
        let body = runtime_done("r-1");
        let budget = HandOffBudget::new(1024 * 1024).with_telemetry_slice(body.len());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(run(listener, tx, budget, metrics.clone()));
        // Read (its body fits), but decoding it never could: re-sending would not help.
        let res = post(addr, &body).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(metrics::get(&metrics.telemetry_invalid), 1);
        assert_eq!(metrics::get(&metrics.telemetry_busy), 0);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_documents_budget_never_keeps_a_delivery_out() {
        let budget = HandOffBudget::new(64 * 1024);
        let mut documents = budget.reservation();
        documents.try_grow(64 * 1024).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(run(listener, tx, budget, Arc::new(Metrics::default())));
        let res = post(addr, RUNTIME_DONE).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let delivery = rx.recv().await.unwrap();
        assert!(delivery.held_bytes() > 0);
        assert!(
            matches!(&delivery.events[0].record, telemetry::Record::RuntimeDone(r) if r.request_id == "r-9")
        );
        drop(documents);
    }
}
