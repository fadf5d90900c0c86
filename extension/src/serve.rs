//! Bounded HTTP/1 serving for our local listeners (the Telemetry API listener and the OTLP/HTTP
//! receiver). The socket is bound by the caller and passed in.
//!
//! Other local processes can connect too, so no connection may keep the others out: connections
//! are accepted at once (nothing is reserved before `accept`), the request head has a deadline
//! (which also bounds an idle keep-alive connection waiting for its next request; the handlers
//! bound their bodies), and when the connection limit is reached the oldest connection that has
//! no request in progress is closed to make room (the oldest of all if every one is busy).
//!
//! A failing `accept` (out of file descriptors, `EMFILE`, is the usual one) is retried after a
//! pause that doubles with each consecutive failure ([`accept_backoff`]), never at once: the
//! error would come straight back and the loop would spin a core.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics::LogLimiter;
use crate::supervisor;

/// The pause after the first of consecutive `accept` failures.
pub const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between two `accept` attempts that failed.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// One log line per this interval for failing `accept`s.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The pause before the next `accept` after `failures` consecutive failures: doubling from
/// [`ACCEPT_BACKOFF_FIRST`], at most [`ACCEPT_BACKOFF_MAX`]. Pure.
pub fn accept_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    ACCEPT_BACKOFF_FIRST
        .saturating_mul(1_u32 << doublings)
        .min(ACCEPT_BACKOFF_MAX)
}

/// Where connections come from: a bound listener, or a shared one (a receiver started again
/// serves the socket it was given, which stays bound in between).
pub trait Accept: Send + Sync + 'static {
    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl<T: Accept> Accept for Arc<T> {
    fn accept(&self) -> impl Future<Output = io::Result<TcpStream>> + Send {
        T::accept(self)
    }
}

/// The largest read buffer of one connection (hyper's default is about 400 KiB): bodies stream
/// through it, so it only bounds what a connection holds besides what its handler reserved
/// (measured: 0.9 MB less peak RSS with 16 clients sending 4 MiB bodies at once).
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A listener's connection bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once; past it the oldest idle one is closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, counted from when it was accepted
    /// or finished its previous request.
    pub head_timeout: Duration,
}

/// One served connection, as the accept loop sees it.
#[derive(Debug, Default)]
struct Slot {
    id: u64,
    /// A request is being handled (its head was read).
    busy: AtomicBool,
    /// Told to close to make room.
    close: Notify,
}

/// The connections being served, oldest first.
#[derive(Debug, Default)]
struct Slots(Mutex<VecDeque<Arc<Slot>>>);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Slot>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection, first closing the oldest idle one (else the oldest) when full.
    fn admit(&self, id: u64, max: usize) -> (Arc<Slot>, Option<u64>) {
        let mut slots = self.lock();
        let mut evicted = None;
        if slots.len() >= max.max(1) {
            let victim = slots
                .iter()
                .position(|s| !s.busy.load(Ordering::Acquire))
                .unwrap_or(0);
            if let Some(slot) = slots.remove(victim) {
                slot.close.notify_one();
                evicted = Some(slot.id);
            }
        }
        let slot = Arc::new(Slot {
            id,
            ..Slot::default()
        });
        slots.push_back(slot.clone());
        (slot, evicted)
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.busy.store(true, Ordering::Release);
        Self(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Serves `listener` until the process ends, each request answered by `handle`; `name` labels
/// the debug lines.
///
/// The connections are tasks of this one: they end with it, and a panic in one (a request's)
/// is this task's panic, resumed here, so that its supervisor logs it and starts the listener
/// again (`crate::supervisor`).
pub async fn serve<L, H, F, B>(listener: L, bounds: Bounds, name: &'static str, handle: H)
where
    L: Accept,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Slots::default());
    let mut next_id = 0_u64;
    let mut failures = 0_u32;
    let mut failure_log = LogLimiter::new(ACCEPT_LOG_INTERVAL);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(ended) = connections.join_next() => {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok(stream) => {
                failures = 0;
                stream
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = accept_backoff(failures);
                if let Some(suppressed) = failure_log.allow(std::time::Instant::now()) {
                    warn!(listener = name, error = %e, failures, pause_ms = pause.as_millis(), suppressed, "accept failed; trying again after a pause");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        next_id += 1;
        let (slot, evicted) = slots.admit(next_id, bounds.max_connections);
        if let Some(evicted) = evicted {
            debug!(
                listener = name,
                connection = evicted,
                "connection limit reached; closed the oldest idle connection"
            );
        }
        let slots = slots.clone();
        let handle = handle.clone();
        connections.spawn(supervisor::in_current_task(async move {
            let busy_slot = slot.clone();
            let service = hyper::service::service_fn(move |req| {
                let busy = Busy::new(busy_slot.clone());
                let response = handle(req);
                async move {
                    let res = response.await;
                    drop(busy);
                    res
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .max_buf_size(READ_BUFFER_BYTES)
                .header_read_timeout(bounds.head_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        debug!(listener = name, error = %e, "connection ended with an error");
                    }
                }
                () = slot.close.notified() => {}
            }
            slots.remove(slot.id);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn accept_pauses_double_up_to_the_maximum() {
        let ms = Duration::from_millis;
        for (failures, pause) in [
            (0, ms(10)),
            (1, ms(10)),
            (2, ms(20)),
            (3, ms(40)),
            (7, ms(640)),
            (8, ACCEPT_BACKOFF_MAX),
            (40, ACCEPT_BACKOFF_MAX),
            (u32::MAX, ACCEPT_BACKOFF_MAX),
        ] {
            assert_eq!(accept_backoff(failures), pause, "after {failures} failures");
        }
    }

    /// A listener whose first `failures` accepts fail as when the process is out of file
    /// descriptors, each after a yield (a real error comes back at once, but from a future
    /// that yields), counting every call.
    struct Flaky {
        inner: TcpListener,
        failures: usize,
        calls: Arc<AtomicUsize>,
    }

    impl Accept for Flaky {
        async fn accept(&self) -> io::Result<TcpStream> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                tokio::task::yield_now().await;
                return Err(io::Error::from_raw_os_error(24)); // EMFILE
            }
            Accept::accept(&self.inner).await
        }
    }

    async fn answer(
        _req: Request<Incoming>,
    ) -> Result<Response<http_body_util::Empty<hyper::body::Bytes>>, Infallible> {
        Ok(Response::new(http_body_util::Empty::new()))
    }

    const BOUNDS: Bounds = Bounds {
        max_connections: 4,
        head_timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_failing_accept_is_retried_after_a_pause_not_at_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let listener = Flaky {
            inner: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            failures: usize::MAX,
            calls: calls.clone(),
        };
        let window = Duration::from_millis(300);
        let _ = tokio::time::timeout(window, serve(listener, BOUNDS, "test", answer)).await;
        // 10 + 20 + 40 + 80 + 160 ms of pauses fill the window: six attempts at most (a loop
        // retrying at once makes tens of thousands).
        let calls = calls.load(Ordering::SeqCst);
        assert!(
            (2..=6).contains(&calls),
            "{calls} accept calls in {window:?}"
        );
    }

    fn failing(
        _req: Request<Incoming>,
    ) -> std::future::Ready<Result<Response<http_body_util::Empty<hyper::body::Bytes>>, Infallible>>
    {
        panic!("request handler failed")
    }

    #[tokio::test]
    async fn a_panic_in_a_request_ends_the_listener_with_that_panic() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(serve(listener, BOUNDS, "test", failing));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the listener outlived the panic");
        let payload = ended.unwrap_err().into_panic();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"request handler failed")
        );
    }

    #[tokio::test]
    async fn connections_are_served_again_once_accept_recovers() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = Flaky {
            inner,
            failures: 3,
            calls: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(serve(listener, BOUNDS, "test", answer));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("not served after accept recovered")
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
}
