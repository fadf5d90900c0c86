//! The UDP reader: datagrams in, validated documents out on a bounded channel.
//!
//! The reader never waits on the lifecycle loop in normal operation (`try_send`). Each document
//! takes permits for its bytes from a semaphore as large as the export buffer; the permit
//! travels with the document into the buffer and into the send, and is given back when that send
//! settles. So the hand-off spills (counts the document as spilled) exactly when the buffer is
//! full, and a document it handed over is never dropped later for space. On a drain request it reads whatever the
//! kernel still holds without waiting, hands every document over (waiting for space: the loop
//! is consuming), then sends a [`Ingested::Drained`] marker so the loop knows everything sent
//! before it is in.
//!
//! Losses in the kernel are not silent either: the receive buffer the kernel really granted is
//! read back, and `SO_RXQ_OVFL` makes every datagram carry the socket's drop counter.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::protocol::{self, MAX_DATAGRAM_BYTES};
use crate::document::Document;
use crate::document::DocumentKind;
use crate::export::budget::{Admitted, HandOffBudget};
use crate::metrics::{self, LogLimiter, Metrics};
use crate::otlp::Form;

/// Kernel receive buffer we ask for, so bursts survive while the loop is busy.
pub const SOCKET_RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// One log line per this interval for rejected datagrams, spills and kernel drops.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the reader hands to the lifecycle loop.
#[derive(Debug)]
pub enum Ingested {
    /// A validated document, with its hand-off permit.
    Document(Admitted),
    /// Everything received before the drain request has been handed over.
    Drained,
    /// A receiver waits for room in the budget: what is queued should be sent now, where the
    /// flush points allow (the budget also holds requests being read and decoded, which the
    /// buffer's own fill does not show).
    RoomWanted,
}

/// The bound socket: the async side for waiting, and a second handle on the same socket for
/// draining. Tokio's `try_recv` trusts its cached readiness and can report "empty" while the
/// kernel still holds datagrams; a drain must ask the kernel itself.
#[derive(Debug)]
pub struct BoundSocket {
    socket: UdpSocket,
    drain: std::net::UdpSocket,
    /// The receive buffer the kernel granted (Linux reports twice what it books for data).
    pub receive_buffer_bytes: Option<usize>,
    /// Whether datagrams carry the socket's drop counter (`SO_RXQ_OVFL`).
    pub counts_drops: bool,
    /// The drop counter as last read (cumulative since the socket was created), kept with the
    /// socket so a reader started again does not count the same drops twice.
    drops_seen: Arc<AtomicU32>,
}

impl BoundSocket {
    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Binds the UDP socket with a larger receive buffer, reads back what the kernel granted and
/// asks for its drop counter. Call before registering, so a bind failure is a startup error.
pub fn bind(addr: SocketAddr) -> io::Result<BoundSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_RECEIVE_BUFFER_BYTES) {
        debug!(error = %e, "could not enlarge the UDP receive buffer");
    }
    let receive_buffer_bytes = socket.recv_buffer_size().ok();
    let counts_drops = match setsockopt(&socket, sockopt::RxqOvfl, &1) {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "SO_RXQ_OVFL not available: kernel drops are not counted");
            false
        }
    };
    debug!(
        requested = SOCKET_RECEIVE_BUFFER_BYTES,
        granted = receive_buffer_bytes,
        counts_drops,
        "UDP receive buffer"
    );
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let std_socket: std::net::UdpSocket = socket.into();
    let drain = std_socket.try_clone()?;
    Ok(BoundSocket {
        socket: UdpSocket::from_std(std_socket)?,
        drain,
        receive_buffer_bytes,
        counts_drops,
        drops_seen: Arc::default(),
    })
}

/// How long X-Ray keeps a trace: documents of older traces are rejected (`InvalidTraceId`), so
/// they are dropped (and counted as rejected) at ingest.
pub const MAX_TRACE_AGE: Duration = Duration::from_hours(30 * 24);

/// Whether `trace` started more than [`MAX_TRACE_AGE`] before `now` (epoch seconds). Pure.
pub fn too_old(trace: &crate::trace::TraceId, now: u64) -> bool {
    now.saturating_sub(trace.epoch_seconds()) > MAX_TRACE_AGE.as_secs()
}

/// Whether `doc` is rejected at ingest for its trace's age: only segment documents, whose X-Ray
/// trace id starts with its epoch seconds. An OTLP document's trace id may be a random W3C id
/// with no time in it, and the daemon forwards OTLP documents unchanged. Pure.
pub fn expired(doc: &Document, now: u64) -> bool {
    doc.kind == DocumentKind::Segment && too_old(&doc.trace_id, now)
}

fn epoch_now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The address the SDKs must send to for a socket bound to `local`: a wildcard host cannot be
/// sent to portably, so loopback on the same port. Pure.
pub fn send_address(local: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, local.port())
    } else {
        local
    }
}

/// Writes the address the SDKs must send to into `path`, for the layer's wrapper script: the
/// runtime starts only after every extension has registered, so the wrapper always finds the
/// address this extension really bound. Written to a temporary file and renamed, so a reader
/// never sees half of it.
pub fn publish_address(path: &std::path::Path, addr: SocketAddr) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Reads one datagram into `buf` without waiting, with the socket's drop counter when the
/// kernel attached it. `WouldBlock` when nothing is queued.
fn receive(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    let mut control = nix::cmsg_space!(u32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let drops = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::RxqOvfl(n) => Some(n),
            _ => None,
        })
    });
    Ok((msg.bytes, drops))
}

/// What the reader works with. The supervisor keeps it across restarts: the socket stays
/// bound (datagrams wait in the kernel while no reader runs) and a drain request not taken yet
/// waits for the next reader.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The bound socket.
    pub socket: Arc<BoundSocket>,
    /// Where documents go.
    pub docs: mpsc::Sender<Ingested>,
    /// The bytes documents may hold until their send settles.
    pub budget: HandOffBudget,
    /// Drain requests from the lifecycle loop (one reader at a time holds them).
    pub drain_requests: Arc<tokio::sync::Mutex<mpsc::Receiver<()>>>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// How sampled spans are held: `T1S` text, or their request when spans go to the OTLP
    /// endpoint ([`crate::otlp::parse_document`]).
    pub form: Form,
}

/// Reads datagrams until `docs` closes. It starts with a drain and its marker: a reader started
/// again after a failure thereby answers a drain its predecessor may have taken and not finished
/// (the lifecycle loop ignores a marker it did not wait for).
pub async fn run(inputs: Inputs) {
    let Inputs {
        socket: bound,
        docs,
        budget,
        drain_requests,
        metrics,
        form,
    } = inputs;
    let mut drain_requests = drain_requests.lock_owned().await;
    metrics::set(
        &metrics.udp_receive_buffer_bytes,
        bound.receive_buffer_bytes.unwrap_or(0) as u64,
    );
    let mut reader = Reader {
        buf: vec![0; MAX_DATAGRAM_BYTES],
        metrics,
        rejects: LogLimiter::new(LOG_INTERVAL),
        spills: LogLimiter::new(LOG_INTERVAL),
        kernel_drops: LogLimiter::new(LOG_INTERVAL),
        drops_seen: bound.drops_seen.clone(),
        form,
    };
    if !reader.drain(&bound, &budget, &docs).await {
        return;
    }
    let socket = &bound.socket;
    loop {
        tokio::select! {
            biased;
            request = drain_requests.recv() => {
                if request.is_none() || !reader.drain(&bound, &budget, &docs).await {
                    return;
                }
            }
            received = socket.async_io(Interest::READABLE, || receive(socket, &mut reader.buf)) => {
                match received {
                    Ok((n, drops)) => {
                        reader.kernel_dropped(drops);
                        if let Some(doc) = reader.accept(n)
                            && let Some(admitted) = reader.admit(&budget, doc)
                        {
                            match docs.try_send(Ingested::Document(admitted)) {
                                Ok(()) => {}
                                // Dropping the document gives its permits back.
                                Err(mpsc::error::TrySendError::Full(_)) => reader.spilled(),
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

struct Reader {
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
    rejects: LogLimiter,
    spills: LogLimiter,
    kernel_drops: LogLimiter,
    /// The socket's drop counter as last seen (cumulative since the socket was created).
    drops_seen: Arc<AtomicU32>,
    form: Form,
}

impl Reader {
    /// Reads whatever the kernel holds without waiting, hands every document over (waiting for
    /// room in the channel: the loop is consuming), then the [`Ingested::Drained`] marker.
    /// `false` when the lifecycle loop is gone.
    async fn drain(
        &mut self,
        bound: &BoundSocket,
        budget: &HandOffBudget,
        docs: &mpsc::Sender<Ingested>,
    ) -> bool {
        loop {
            match receive(&bound.drain, &mut self.buf) {
                Ok((n, drops)) => {
                    self.kernel_dropped(drops);
                    if let Some(doc) = self.accept(n)
                        && let Some(admitted) = self.admit(budget, doc)
                        && docs.send(Ingested::Document(admitted)).await.is_err()
                    {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "UDP receive failed during drain");
                    break;
                }
            }
        }
        docs.send(Ingested::Drained).await.is_ok()
    }

    /// Hands `doc` its permits, or counts it as spilled.
    fn admit(&mut self, budget: &HandOffBudget, doc: Document) -> Option<Admitted> {
        let admitted = budget.admit(doc).ok();
        if admitted.is_none() {
            self.spilled();
        }
        admitted
    }

    /// Counts datagrams the kernel dropped since the last one we read.
    fn kernel_dropped(&mut self, counter: Option<u32>) {
        let Some(counter) = counter else {
            return;
        };
        let new = counter.wrapping_sub(self.drops_seen.swap(counter, Ordering::Relaxed));
        if new == 0 {
            return;
        }
        metrics::add(&self.metrics.kernel_dropped, u64::from(new));
        if let Some(suppressed) = self.kernel_drops.allow(Instant::now()) {
            warn!(
                dropped = new,
                total = counter,
                suppressed,
                "datagrams dropped by the kernel: the UDP receive buffer was full"
            );
        }
    }

    fn accept(&mut self, n: usize) -> Option<Document> {
        crate::fault::check(crate::fault::Site::UdpReader, &self.buf[..n]);
        match protocol::parse_datagram_as(&self.buf[..n], self.form) {
            Ok(doc) if expired(&doc, epoch_now_seconds()) => {
                metrics::add(&self.metrics.rejected, 1);
                if let Some(suppressed) = self.rejects.allow(Instant::now()) {
                    warn!(reason = "trace_too_old", trace_id = %doc.trace_id, suppressed, "document rejected: its trace is older than X-Ray keeps (30 days)");
                }
                None
            }
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

    /// The captured datagram as it was (its trace started in 2016).
    fn captured() -> Vec<u8> {
        std::fs::read(format!(
            "{}/fixtures/datagrams/python_parent.bin",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// The captured datagram with its trace started now.
    fn fixture() -> Vec<u8> {
        String::from_utf8(captured())
            .unwrap()
            .replace("1-5759e988-", &format!("1-{:08x}-", epoch_now_seconds()))
            .into_bytes()
    }

    /// A valid datagram of about `size` bytes (the fixture with a padded name).
    fn padded(size: usize) -> Vec<u8> {
        let good = String::from_utf8(fixture()).unwrap();
        let (header, body) = good.split_once('\n').unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(body).unwrap();
        doc["metadata"] = serde_json::json!({"pad": "x".repeat(size.saturating_sub(good.len()))});
        format!("{header}\n{doc}").into_bytes()
    }

    /// Starts a reader and collects what its first drain (every reader starts with one) hands
    /// over, up to its marker.
    async fn start_collecting(
        socket: BoundSocket,
        budget: HandOffBudget,
    ) -> (
        mpsc::Receiver<Ingested>,
        mpsc::Sender<()>,
        Arc<Metrics>,
        Vec<Admitted>,
    ) {
        let (tx, mut rx) = mpsc::channel(1024);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(run(Inputs {
            socket: Arc::new(socket),
            docs: tx,
            budget,
            drain_requests: Arc::new(tokio::sync::Mutex::new(drain_rx)),
            metrics: metrics.clone(),
            form: Form::Text,
        }));
        let mut first = Vec::new();
        while let Ingested::Document(d) = rx.recv().await.unwrap() {
            first.push(d);
        }
        (rx, drain_tx, metrics, first)
    }

    async fn start(
        socket: BoundSocket,
        budget: HandOffBudget,
    ) -> (mpsc::Receiver<Ingested>, mpsc::Sender<()>, Arc<Metrics>) {
        let (rx, drain_tx, metrics, first) = start_collecting(socket, budget).await;
        assert!(first.is_empty());
        (rx, drain_tx, metrics)
    }

    /// Asks for a drain and collects the documents up to its marker.
    async fn drain(
        rx: &mut mpsc::Receiver<Ingested>,
        drain_tx: &mpsc::Sender<()>,
    ) -> Vec<Admitted> {
        drain_tx.send(()).await.unwrap();
        let mut got = Vec::new();
        while let Ingested::Document(d) = rx.recv().await.unwrap() {
            got.push(d);
        }
        got
    }

    #[tokio::test]
    async fn valid_datagrams_pass_invalid_ones_are_counted_and_drain_ends_with_a_marker() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (mut rx, drain_tx, metrics) = start(socket, HandOffBudget::new(1 << 20)).await;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"no newline here", addr).unwrap();
        sender.send_to(&fixture(), addr).unwrap();
        let got = drain(&mut rx, &drain_tx).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].doc().id.as_str(), "1ad491840294b9ea");
        assert_eq!(metrics::get(&metrics.rejected), 1);
        assert_eq!(metrics::get(&metrics.received), 1);
    }

    #[tokio::test]
    async fn the_hand_off_holds_what_its_budget_allows_and_permits_return_on_drop() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        // Small enough that 41 fit in any kernel receive buffer (the default rmem_max is
        // 208 KiB): only the budget may refuse one.
        let datagram = padded(1_000);
        let weight = protocol::parse_datagram(&datagram).unwrap().weight();
        // Room for 40 such documents, not 41.
        let budget = HandOffBudget::new(weight * 40 + weight / 2);
        let (mut rx, drain_tx, metrics) = start(socket, budget.clone()).await;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..41 {
            sender.send_to(&datagram, addr).unwrap();
        }
        let got = drain(&mut rx, &drain_tx).await;
        assert_eq!(got.len(), 40);
        assert_eq!(metrics::get(&metrics.spilled), 1);
        assert_eq!(budget.available(), weight / 2);
        drop(got);
        assert_eq!(budget.available(), weight * 40 + weight / 2);
    }

    #[tokio::test]
    async fn kernel_drops_are_counted_from_the_sockets_drop_counter() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(socket.counts_drops);
        let granted = socket.receive_buffer_bytes.unwrap();
        assert!(granted > 0);
        let addr = socket.local_addr().unwrap();
        // Nobody reads yet: far more than the receive buffer holds.
        let datagram = padded(60_000);
        let sent = (granted / datagram.len()) * 2 + 20;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..sent {
            sender.send_to(&datagram, addr).unwrap();
        }
        let (mut rx, drain_tx, metrics, first) =
            start_collecting(socket, HandOffBudget::new(usize::MAX)).await;
        let mut received = first.len();
        assert!(received < sent, "{received} of {sent}: nothing was dropped");
        // The counter comes with the next datagram the kernel queues.
        sender.send_to(&datagram, addr).unwrap();
        received += drain(&mut rx, &drain_tx).await.len();
        assert_eq!(
            metrics::get(&metrics.kernel_dropped),
            (sent + 1 - received) as u64
        );
    }

    #[tokio::test]
    async fn a_reader_started_again_reads_what_arrived_meanwhile_and_answers_a_waiting_drain() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let inputs = Inputs {
            socket: Arc::new(socket),
            docs: tx,
            budget: HandOffBudget::new(1 << 20),
            drain_requests: Arc::new(tokio::sync::Mutex::new(drain_rx)),
            metrics: Arc::new(Metrics::default()),
            form: Form::Text,
        };
        let first = tokio::spawn(run(inputs.clone()));
        assert!(matches!(rx.recv().await.unwrap(), Ingested::Drained));
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        // No reader: the datagrams wait in the socket, the drain request in its channel.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            sender.send_to(&fixture(), addr).unwrap();
        }
        drain_tx.send(()).await.unwrap();
        tokio::spawn(run(inputs));
        let mut documents = 0;
        for _ in 0..2 {
            while let Ingested::Document(_) = rx.recv().await.unwrap() {
                documents += 1;
            }
        }
        assert_eq!(documents, 3);
    }

    #[test]
    fn the_published_address_is_where_the_sdks_can_send() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(send_address(addr("0.0.0.0:2000")), addr("127.0.0.1:2000"));
        assert_eq!(send_address(addr("[::]:2001")), addr("[::1]:2001"));
        assert_eq!(send_address(addr("127.0.0.1:2002")), addr("127.0.0.1:2002"));
        assert_eq!(send_address(addr("10.0.0.7:2003")), addr("10.0.0.7:2003"));
        let dir = std::env::temp_dir().join(format!("xray-ext-addr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("udp-address");
        publish_address(&path, addr("127.0.0.1:2999")).unwrap();
        publish_address(&path, addr("127.0.0.1:3001")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "127.0.0.1:3001\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn traces_older_than_thirty_days_are_too_old() {
        let t = crate::trace::TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap();
        let start = 0x5759_e988_u64;
        let limit = MAX_TRACE_AGE.as_secs();
        assert!(!too_old(&t, start));
        assert!(!too_old(&t, start + limit));
        assert!(too_old(&t, start + limit + 1));
        // A trace id from the future (a skewed clock) is not old.
        assert!(!too_old(&t, start - 10));
    }

    #[test]
    fn only_segment_documents_are_judged_by_their_trace_age() {
        // OpenTelemetry trace ids need not carry a time (W3C ids are random), and the daemon
        // forwards OTLP documents as they are: an "old-looking" one is not rejected.
        let trace = crate::trace::TraceId::parse("1-00000001-bd862e3fe1be46a994272793").unwrap();
        let id = crate::trace::SegmentId::parse("53995c3f42cd8ad8").unwrap();
        let now = 0x5759_e988_u64;
        let doc = |body: &str, kind| Document {
            body: body.into(),
            id,
            trace_id: trace,
            kind,
        };
        assert!(expired(
            &doc("{\"id\":\"53995c3f42cd8ad8\"}", DocumentKind::Segment),
            now
        ));
        assert!(!expired(&doc("T1SCgA=", DocumentKind::SampledSpans), now));
        assert!(!expired(&doc("T1UCgA=", DocumentKind::UnsampledSpans), now));
    }

    #[tokio::test]
    async fn documents_of_expired_traces_are_rejected_at_ingest() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (mut rx, drain_tx, metrics) = start(socket, HandOffBudget::new(1 << 20)).await;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&captured(), addr).unwrap();
        sender.send_to(&fixture(), addr).unwrap();
        let got = drain(&mut rx, &drain_tx).await;
        assert_eq!(got.len(), 1);
        assert_eq!(metrics::get(&metrics.rejected), 1);
        assert_eq!(metrics::get(&metrics.received), 1);
    }

    #[tokio::test]
    async fn when_spans_go_to_the_otlp_endpoint_sampled_ones_are_held_as_their_request() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        tokio::spawn(run(Inputs {
            socket: Arc::new(socket),
            docs: tx,
            budget: HandOffBudget::new(1 << 20),
            drain_requests: Arc::new(tokio::sync::Mutex::new(drain_rx)),
            metrics: Arc::new(Metrics::default()),
            form: Form::Protobuf,
        }));
        assert!(matches!(rx.recv().await.unwrap(), Ingested::Drained));
        let dir = format!("{}/fixtures/datagrams", env!("CARGO_MANIFEST_DIR"));
        let t1s = std::fs::read(format!("{dir}/adot_python_fast_start_t1s.bin")).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&t1s, addr).unwrap();
        sender.send_to(&fixture(), addr).unwrap();
        let got = drain(&mut rx, &drain_tx).await;
        assert_eq!(got.len(), 2);
        let text = protocol::parse_datagram(&t1s).unwrap();
        assert_eq!(
            got[0].doc(),
            &protocol::parse_datagram_as(&t1s, Form::Protobuf).unwrap()
        );
        assert!(matches!(got[0].doc().body, crate::document::Body::Spans(_)));
        assert!(got[0].doc().weight() < text.weight());
        // A segment document stays text.
        assert!(got[1].doc().body.text().is_some());
    }
}
