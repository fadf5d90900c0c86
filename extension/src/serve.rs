//! Bounded HTTP/1 serving for our local listeners (the Telemetry API listener and the OTLP/HTTP
//! receiver). The socket is bound by the caller and passed in.
//!
//! Other local processes can connect too, so no connection may keep the others out: connections
//! are accepted at once (nothing is reserved before `accept`), the request head has a deadline
//! (which also bounds an idle keep-alive connection waiting for its next request; the handlers
//! bound their bodies), and when the connection limit is reached the oldest connection that has
//! no request in progress is closed to make room (the oldest of all if every one is busy).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::debug;

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
pub async fn serve<H, F, B>(listener: TcpListener, bounds: Bounds, name: &'static str, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Slots::default());
    let mut next_id = 0_u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                debug!(listener = name, error = %e, "accept failed");
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
        tokio::spawn(async move {
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
        });
    }
}
