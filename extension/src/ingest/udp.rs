//! The UDP reader: datagrams in, validated documents out on a bounded channel.
//!
//! The reader never waits on the lifecycle loop in normal operation (`try_send`; a full channel
//! counts the document as spilled). On a drain request it reads whatever the kernel still holds
//! without waiting, hands every document over (waiting for space: the loop is consuming), then
//! sends a [`Ingested::Drained`] marker so the loop knows everything sent before it is in.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::protocol::{self, Document, MAX_DATAGRAM_BYTES};
use crate::metrics::{self, LogLimiter, Metrics};

/// Kernel receive buffer we ask for, so bursts survive while the loop is busy.
pub const SOCKET_RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// One log line per this interval for rejected datagrams and spills.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes of documents allowed in the channel between the reader and the lifecycle loop, on top
/// of its slot count: with 64 KB documents the slots alone would not bound memory.
pub const CHANNEL_BYTE_BUDGET: usize = 1024 * 1024;

/// A byte budget shared by the reader (reserves) and the lifecycle loop (releases).
#[derive(Debug, Clone, Default)]
pub struct ChannelBudget(Arc<std::sync::atomic::AtomicUsize>);

impl ChannelBudget {
    /// Reserves `n` bytes; `false` when the budget would be exceeded.
    pub fn try_reserve(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= CHANNEL_BYTE_BUDGET).then_some(used + n)
            })
            .is_ok()
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// What the reader hands to the lifecycle loop.
#[derive(Debug)]
pub enum Ingested {
    /// A validated document.
    Document(Document),
    /// Everything received before the drain request has been handed over.
    Drained,
}

/// The bound socket: the async side for waiting, and a second handle on the same socket for
/// draining. Tokio's `try_recv` trusts its cached readiness and can report "empty" while the
/// kernel still holds datagrams; a drain must ask the kernel itself.
#[derive(Debug)]
pub struct BoundSocket {
    socket: UdpSocket,
    drain: std::net::UdpSocket,
}

impl BoundSocket {
    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Binds the UDP socket with a larger receive buffer. Call before registering, so a bind
/// failure is a startup error.
pub fn bind(addr: SocketAddr) -> io::Result<BoundSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_RECEIVE_BUFFER_BYTES) {
        debug!(error = %e, "could not enlarge the UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let std_socket: std::net::UdpSocket = socket.into();
    let drain = std_socket.try_clone()?;
    Ok(BoundSocket {
        socket: UdpSocket::from_std(std_socket)?,
        drain,
    })
}

/// Reads datagrams until `docs` closes.
pub async fn run(
    bound: BoundSocket,
    docs: mpsc::Sender<Ingested>,
    budget: ChannelBudget,
    mut drain_requests: mpsc::Receiver<()>,
    metrics: Arc<Metrics>,
) {
    let BoundSocket { socket, drain } = bound;
    let mut reader = Reader {
        buf: vec![0; MAX_DATAGRAM_BYTES],
        metrics,
        rejects: LogLimiter::new(LOG_INTERVAL),
        spills: LogLimiter::new(LOG_INTERVAL),
    };
    loop {
        tokio::select! {
            biased;
            request = drain_requests.recv() => {
                if request.is_none() {
                    return;
                }
                loop {
                    match drain.recv_from(&mut reader.buf) {
                        Ok((n, _)) => {
                            if let Some(doc) = reader.accept(n)
                                && reserve(&budget, &doc, &mut reader)
                                && docs.send(Ingested::Document(doc)).await.is_err()
                            {
                                    return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            debug!(error = %e, "UDP receive failed during drain");
                            break;
                        }
                    }
                }
                if docs.send(Ingested::Drained).await.is_err() {
                    return;
                }
            }
            received = socket.recv_from(&mut reader.buf) => {
                match received {
                    Ok((n, _)) => {
                        if let Some(doc) = reader.accept(n) && reserve(&budget, &doc, &mut reader) {
                            let weight = doc.weight();
                            match docs.try_send(Ingested::Document(doc)) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    budget.release(weight);
                                    reader.spilled();
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                    Err(e) => debug!(error = %e, "UDP receive failed"),
                }
            }
        }
    }
}

/// Reserves the document's bytes, or counts it as spilled.
fn reserve(budget: &ChannelBudget, doc: &Document, reader: &mut Reader) -> bool {
    let ok = budget.try_reserve(doc.weight());
    if !ok {
        reader.spilled();
    }
    ok
}

struct Reader {
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
    rejects: LogLimiter,
    spills: LogLimiter,
}

impl Reader {
    fn accept(&mut self, n: usize) -> Option<Document> {
        match protocol::parse_datagram(&self.buf[..n]) {
            Ok(doc) => {
                metrics::add(&self.metrics.received, 1);
                Some(doc)
            }
            Err(e) => {
                metrics::add(&self.metrics.rejected, 1);
                if let Some(suppressed) = self.rejects.allow(Instant::now()) {
                    warn!(reason = e.kind(), error = %e, bytes = n, suppressed, "datagram rejected");
                }
                None
            }
        }
    }

    fn spilled(&mut self) {
        metrics::add(&self.metrics.spilled, 1);
        if let Some(suppressed) = self.spills.allow(Instant::now()) {
            warn!(suppressed, "document dropped: ingest queue full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn valid_datagrams_pass_invalid_ones_are_counted_and_drain_ends_with_a_marker() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(run(
            socket,
            tx,
            ChannelBudget::default(),
            drain_rx,
            metrics.clone(),
        ));

        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = std::fs::read(format!(
            "{}/fixtures/datagrams/python_parent.bin",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        sender.send_to(b"no newline here", addr).unwrap();
        sender.send_to(&good, addr).unwrap();
        drain_tx.send(()).await.unwrap();

        let mut got = Vec::new();
        while let Ingested::Document(d) = rx.recv().await.unwrap() {
            got.push(d);
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id.as_str(), "1ad491840294b9ea");
        assert_eq!(metrics::get(&metrics.rejected), 1);
        assert_eq!(metrics::get(&metrics.received), 1);
    }

    #[test]
    fn the_channel_budget_bounds_bytes() {
        let b = ChannelBudget::default();
        assert!(b.try_reserve(CHANNEL_BYTE_BUDGET - 10));
        assert!(!b.try_reserve(11));
        assert!(b.try_reserve(10));
        b.release(CHANNEL_BYTE_BUDGET);
        assert!(b.try_reserve(CHANNEL_BYTE_BUDGET));
        b.release(usize::MAX);
        assert!(b.try_reserve(1));
    }
}
