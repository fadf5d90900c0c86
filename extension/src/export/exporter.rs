//! The exporter: the bounded buffer, at most one send in flight, and the X-Ray client. It does
//! what the flush points decide (enqueue, start a send, settle it, abandon everything at the
//! end) and counts every document it loses, exactly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::batcher::MAX_DOCUMENTS_PER_CALL;
use super::buffer::{self, Buffer, Reservation};
use super::xray::{self, FlushReport, TlsRoots, XrayClient};

use crate::ingest::protocol::Document;
use crate::lifecycle::ExportView;
use crate::metrics::{self, LogLimiter, Metrics};

/// Room past the limit for documents without a reservation (our own subsegments, a few small
/// ones per invocation, and what a send gave back), so that receivers filling the buffer to its
/// limit never crowd them out. Documents with one are bounded by the hand-off budget.
pub const OWN_DOCUMENTS_RESERVE: usize = 256 * 1024;
/// One log line per this interval for buffer overflows.
pub const SPILL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Shared, lazily built X-Ray client: built in the background at the first event (after our
/// first `/event/next`, so off the init path), awaited at the first send.
pub type ClientCell = Arc<OnceCell<Arc<XrayClient>>>;

struct Flight {
    handle: JoinHandle<FlushReport>,
    bytes: usize,
    started: Instant,
    docs: usize,
    /// `sent + unprocessed` when it started: what it settled so far is the growth since.
    settled_before: u64,
    /// The hand-off reservations of its documents, released when it settles (what comes back
    /// unsent is then bounded by the buffer's limit, like our own documents).
    _reservations: Vec<Reservation>,
}

/// The export side of the extension.
pub struct Exporter {
    buffer: Buffer,
    limit_bytes: usize,
    flight: Option<Flight>,
    client: ClientCell,
    tls_roots: TlsRoots,
    metrics: Arc<Metrics>,
    spills: LogLimiter,
    warming: bool,
}

impl Exporter {
    /// An exporter with a buffer of `limit_bytes` (queued plus in flight).
    pub fn new(
        limit_bytes: usize,
        client: ClientCell,
        tls_roots: TlsRoots,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            buffer: Buffer::new(limit_bytes.saturating_add(OWN_DOCUMENTS_RESERVE)),
            limit_bytes,
            flight: None,
            client,
            tls_roots,
            metrics,
            spills: LogLimiter::new(SPILL_LOG_INTERVAL),
            warming: false,
        }
    }

    /// Starts building the X-Ray client (reading the AWS configuration) in the background.
    pub fn warm(&mut self) {
        if std::mem::replace(&mut self.warming, true) {
            return;
        }
        let cell = self.client.clone();
        let roots = self.tls_roots;
        tokio::spawn(async move {
            cell.get_or_init(|| async { Arc::new(XrayClient::from_env(roots)) })
                .await;
        });
    }

    /// Queues a document; past the buffer's bound it is dropped and counted as spilled.
    pub fn enqueue(&mut self, doc: Document, now: Instant) {
        if self.buffer.push(doc, now).is_err() {
            metrics::add(&self.metrics.spilled, 1);
            if let Some(suppressed) = self.spills.allow(std::time::Instant::now()) {
                warn!(
                    limit_bytes = self.limit_bytes,
                    suppressed, "export buffer full; document dropped"
                );
            }
        }
    }

    /// Queues a document a receiver accepted: `reservation` holds its bytes, so it is never
    /// dropped for space (the receiver refused what the budget could not reserve).
    pub fn enqueue_reserved(&mut self, doc: Document, reservation: Reservation, now: Instant) {
        self.buffer.push_reserved(doc, reservation, now);
    }

    /// Whether a full batch, or half the buffer's bytes, is queued and no send is in flight.
    pub fn under_pressure(&self) -> bool {
        self.flight.is_none()
            && (self.buffer.len() >= MAX_DOCUMENTS_PER_CALL
                || self.buffer.bytes().saturating_mul(2) >= self.limit_bytes)
    }

    /// What the flush points need to know.
    pub fn view(&self) -> ExportView {
        ExportView {
            queued: self.buffer.len(),
            oldest: self.buffer.oldest(),
            in_flight: self.flight.is_some(),
        }
    }

    /// Whether a send is in flight.
    pub fn in_flight(&self) -> bool {
        self.flight.is_some()
    }

    fn settled_so_far(&self) -> u64 {
        metrics::get(&self.metrics.sent) + metrics::get(&self.metrics.unprocessed)
    }

    /// Starts a send of everything queued, under `deadline` (nothing when one is in flight or
    /// nothing is queued).
    pub fn start(&mut self, deadline: Instant, now: Instant) {
        if self.flight.is_some() || self.buffer.is_empty() {
            return;
        }
        let (docs, reservations) = self.buffer.take(usize::MAX);
        let bytes = buffer::weight_of(&docs);
        let count = docs.len();
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let tls_roots = self.tls_roots;
        debug!(documents = count, "flush");
        let handle = tokio::spawn(async move {
            let client = client
                .get_or_init(|| async { Arc::new(XrayClient::from_env(tls_roots)) })
                .await
                .clone();
            xray::flush(client, docs, deadline, metrics).await
        });
        self.flight = Some(Flight {
            handle,
            bytes,
            started: now,
            docs: count,
            settled_before: self.settled_so_far(),
            _reservations: reservations,
        });
    }

    /// Waits for the send in flight to end (forever when there is none).
    pub async fn finished(&mut self) -> Result<FlushReport, JoinError> {
        match self.flight.as_mut() {
            Some(f) => (&mut f.handle).await,
            None => std::future::pending().await,
        }
    }

    /// Takes the outcome of the send in flight: what was not sent goes back to the buffer; if
    /// the send itself failed, its documents that X-Ray had not settled are counted as dropped.
    pub fn settle(&mut self, report: Result<FlushReport, JoinError>) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        match report {
            Ok(report) => {
                debug!(
                    sent = report.sent,
                    unsent = report.unsent.len(),
                    unprocessed = report.unprocessed,
                    calls = report.calls,
                    "flush done"
                );
                self.buffer
                    .settle(flight.bytes, report.unsent, flight.started);
            }
            Err(e) => {
                let lost = self.unsettled(&flight);
                warn!(error = %e, documents = lost, "send failed; its documents are lost");
                metrics::add(&self.metrics.send_failed, lost);
                self.buffer.settle(flight.bytes, Vec::new(), flight.started);
            }
        }
    }

    /// Documents of `flight` X-Ray has neither accepted nor refused yet.
    fn unsettled(&self, flight: &Flight) -> u64 {
        let settled = self.settled_so_far().saturating_sub(flight.settled_before);
        (flight.docs as u64).saturating_sub(settled)
    }

    /// The end: aborts the send in flight and empties the buffer. Returns how many documents
    /// were not delivered: everything queued, and of the send in flight only what X-Ray had not
    /// accepted (or refused) before the abort.
    pub fn abandon(&mut self) -> u64 {
        let in_flight = self.flight.take().map_or(0, |f| {
            f.handle.abort();
            self.unsettled(&f)
        });
        self.buffer.clear() as u64 + in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SegmentId, TraceId};

    fn doc(n: u64) -> Document {
        Document {
            body: "{}".into(),
            id: SegmentId::from_u64(n),
            trace_id: TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
        }
    }

    /// An exporter whose sends never end: the client is being built forever, so a send stays
    /// in flight until it is abandoned or aborted.
    fn stuck_exporter(metrics: &Arc<Metrics>) -> Exporter {
        let client: ClientCell = Arc::default();
        let building = client.clone();
        tokio::spawn(async move {
            building
                .get_or_init(std::future::pending::<Arc<XrayClient>>)
                .await;
        });
        Exporter::new(1 << 20, client, TlsRoots::Amazon, metrics.clone())
    }

    #[tokio::test]
    async fn abandon_counts_only_what_x_ray_has_not_settled() {
        let metrics = Arc::new(Metrics::default());
        let mut exporter = stuck_exporter(&metrics);
        let now = Instant::now();
        for n in 1..=120 {
            exporter.enqueue(doc(n), now);
        }
        exporter.start(now + Duration::from_secs(1), now);
        assert!(exporter.view().in_flight);
        for n in 121..=125 {
            exporter.enqueue(doc(n), now);
        }
        // Two calls of the send were answered before the shutdown aborts it: 50 accepted,
        // 50 refused for their content.
        metrics::add(&metrics.sent, 50);
        metrics::add(&metrics.unprocessed, 50);
        // 20 of the send in flight and the 5 queued are lost.
        assert_eq!(exporter.abandon(), 25);
        assert_eq!(exporter.view(), ExportView::default());
    }

    #[tokio::test]
    async fn received_documents_keep_their_room_until_their_send_settles() {
        use crate::export::budget::HandOffBudget;
        let metrics = Arc::new(Metrics::default());
        let mut exporter = stuck_exporter(&metrics);
        let weight = doc(0).weight();
        let budget = HandOffBudget::new(weight * 3);
        let now = Instant::now();
        for n in 1..=3 {
            let (d, permit) = budget.admit(doc(n)).unwrap().into_parts();
            exporter.enqueue_reserved(d, permit, now);
        }
        // Queued, they still hold the budget: a receiver refuses the next one...
        assert_eq!(budget.available(), 0);
        assert!(budget.admit(doc(4)).is_err());
        // ...and the send keeps holding it while in flight.
        exporter.start(now + Duration::from_secs(1), now);
        assert_eq!(budget.available(), 0);
        let failed = tokio::spawn(std::future::pending::<FlushReport>());
        failed.abort();
        exporter.settle(Err(failed.await.unwrap_err()));
        assert_eq!(budget.available(), weight * 3);
        assert_eq!(metrics::get(&metrics.spilled), 0);
    }

    #[tokio::test]
    async fn received_documents_filling_the_buffer_never_crowd_out_ours() {
        use crate::export::budget::HandOffBudget;
        let metrics = Arc::new(Metrics::default());
        let limit = 64 * 1024;
        let client: ClientCell = Arc::default();
        let mut exporter = Exporter::new(limit, client, TlsRoots::Amazon, metrics.clone());
        let budget = HandOffBudget::new(limit);
        let now = Instant::now();
        let mut received = 0_usize;
        while let Ok(admitted) = budget.admit(doc(received as u64)) {
            let (d, permit) = admitted.into_parts();
            exporter.enqueue_reserved(d, permit, now);
            received += 1;
        }
        // The buffer is at its limit; our own subsegments still go in.
        for k in 0..10 {
            exporter.enqueue(doc(1_000_000 + k), now);
        }
        assert_eq!(metrics::get(&metrics.spilled), 0);
        assert_eq!(exporter.view().queued, received + 10);
    }

    #[tokio::test]
    async fn a_failed_send_counts_its_unsettled_documents() {
        let metrics = Arc::new(Metrics::default());
        let mut exporter = stuck_exporter(&metrics);
        let now = Instant::now();
        for n in 1..=70 {
            exporter.enqueue(doc(n), now);
        }
        exporter.start(now + Duration::from_secs(1), now);
        metrics::add(&metrics.sent, 50);
        // The send task dies (here: aborted) before settling the rest.
        let failed = tokio::spawn(std::future::pending::<FlushReport>());
        failed.abort();
        let error = failed.await.unwrap_err();
        exporter.settle(Err(error));
        assert_eq!(metrics::get(&metrics.send_failed), 20);
        assert!(!exporter.in_flight());
        // Their bytes are released: the buffer takes as much as before.
        assert_eq!(exporter.view().queued, 0);
    }
}
