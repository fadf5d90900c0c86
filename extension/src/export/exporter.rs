//! The exporter: the bounded buffer, at most one send in flight, and the backend it sends
//! through. It does what the flush points decide (enqueue, start a send, settle it, abandon
//! everything at the end) and counts every document it loses, exactly: from what the send
//! reports, or, for a send that ends without a report, from its [`Progress`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::backend::Backend;
use super::buffer::{self, Buffer, Entry, Permit};
use super::send::{FlushReport, Progress, Sender};

use crate::document::Document;
use crate::metrics::{self, LogLimiter, Metrics};
use crate::supervisor::{self, Task};

/// Room past the limit for documents without a permit (our own subsegments, a few small ones
/// per invocation), so that receivers filling the buffer to its limit never crowd them out.
/// Documents with one are bounded by the hand-off budget, also while a send keeps them.
pub const OWN_DOCUMENTS_RESERVE: usize = 256 * 1024;
/// One log line per this interval for buffer overflows.
pub const SPILL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the flush-point machine (`lifecycle`) needs to know of the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportView {
    /// Documents queued (not in flight).
    pub queued: usize,
    /// When the oldest queued document was buffered.
    pub oldest: Option<Instant>,
    /// A send is in flight.
    pub in_flight: bool,
}

/// A send in flight. Its entries (and their permits) are the send's: a document gives its
/// permit back once sent, refused, superseded or lost, and a kept one brings it back to the
/// buffer.
struct Flight {
    handle: JoinHandle<FlushReport<Entry>>,
    bytes: usize,
    started: Instant,
    docs: usize,
    /// What it has settled so far, for when it ends without a report.
    progress: Arc<Progress>,
}

impl Flight {
    /// Documents it has neither delivered nor settled otherwise yet.
    fn unsettled(&self) -> u64 {
        self.docs.saturating_sub(self.progress.settled()) as u64
    }
}

/// The export side of the extension.
pub struct Exporter {
    buffer: Buffer,
    limit_bytes: usize,
    flight: Option<Flight>,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
    spills: LogLimiter,
    warm_up: WarmUp,
}

/// The backends' client warm-up: a supervised task of the exporter's, reaped at the next send.
enum WarmUp {
    NotStarted,
    Running(JoinHandle<()>),
    Done,
}

impl Exporter {
    /// An exporter with a buffer of `limit_bytes` (queued plus in flight), sending through
    /// `backend`.
    pub fn new(limit_bytes: usize, backend: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Self::routed(limit_bytes, backend, None, metrics)
    }

    /// The same, sending sampled OpenTelemetry spans through `spans` when given (the OTLP
    /// endpoint), in the same flushes.
    pub fn routed(
        limit_bytes: usize,
        backend: Arc<dyn Backend>,
        spans: Option<Arc<dyn Backend>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sender = Sender::new(backend, metrics.clone());
        let sender = match spans {
            Some(spans) => sender.with_spans(spans),
            None => sender,
        };
        Self {
            buffer: Buffer::new(limit_bytes.saturating_add(OWN_DOCUMENTS_RESERVE)),
            limit_bytes,
            flight: None,
            sender: Arc::new(sender),
            metrics,
            spills: LogLimiter::new(SPILL_LOG_INTERVAL),
            warm_up: WarmUp::NotStarted,
        }
    }

    /// Starts preparing the backends' clients (reading the AWS configuration) in the
    /// background, once: a supervised task, whose end the next [`Exporter::start`] (or the
    /// [`Exporter::abandon`] at the end) reaps.
    pub fn warm(&mut self) {
        if !matches!(self.warm_up, WarmUp::NotStarted) {
            return;
        }
        let work: Vec<_> = self.sender.backends().filter_map(Backend::warm).collect();
        if work.is_empty() {
            self.warm_up = WarmUp::Done;
            return;
        }
        let all = async move {
            crate::fault::check_site(crate::fault::Site::WarmUp);
            futures_util::future::join_all(work).await;
        };
        self.warm_up = WarmUp::Running(tokio::spawn(supervisor::scope(Task::WarmUp, all)));
    }

    /// Takes the warm-up's end once it has ended: a panic gives the task's one error line (the
    /// first send then prepares the client itself).
    fn reap_warm_up(&mut self) {
        let WarmUp::Running(handle) = &mut self.warm_up else {
            return;
        };
        if !handle.is_finished() {
            return;
        }
        let ended = futures_util::FutureExt::now_or_never(handle);
        self.warm_up = WarmUp::Done;
        if let Some(Err(e)) = ended
            && let Ok(payload) = e.try_into_panic()
        {
            supervisor::log_panic(
                &self.metrics,
                Task::WarmUp,
                payload.as_ref(),
                "not started again",
                Task::WarmUp.once_closed(),
            );
        }
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

    /// Queues a document a receiver accepted: `permit` holds its bytes, so it is never dropped
    /// for space (the receiver refused what the budget could not hold).
    pub fn enqueue_reserved(&mut self, doc: Document, permit: Permit, now: Instant) {
        self.buffer.push_reserved(doc, permit, now);
    }

    /// Whether a full batch, or half the buffer's bytes, is queued and no send is in flight.
    pub fn under_pressure(&self) -> bool {
        self.flight.is_none()
            && (self.buffer.len() >= self.sender.backend().max_batch()
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

    /// Starts a send of everything queued, under `deadline` (nothing when one is in flight or
    /// nothing is queued).
    pub fn start(&mut self, deadline: Instant, now: Instant) {
        self.reap_warm_up();
        if self.flight.is_some() || self.buffer.is_empty() {
            return;
        }
        let entries = self.buffer.take(usize::MAX);
        let bytes = buffer::weight_of(&entries);
        let count = entries.len();
        let sender = self.sender.clone();
        let progress = Arc::new(Progress::default());
        let settled = progress.clone();
        debug!(documents = count, "flush");
        let handle = tokio::spawn(supervisor::scope(Task::Send, async move {
            sender.flush(entries, deadline, &settled).await
        }));
        self.flight = Some(Flight {
            handle,
            bytes,
            started: now,
            docs: count,
            progress,
        });
    }

    /// Waits for the send in flight to end (forever when there is none).
    pub async fn finished(&mut self) -> Result<FlushReport<Entry>, JoinError> {
        match self.flight.as_mut() {
            Some(f) => (&mut f.handle).await,
            None => std::future::pending().await,
        }
    }

    /// Takes the outcome of the send in flight: what was kept goes back to the buffer; if the
    /// send itself failed, its documents it had not settled are counted as lost.
    pub fn settle(&mut self, report: Result<FlushReport<Entry>, JoinError>) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        match report {
            Ok(report) => {
                debug!(
                    sent = report.sent,
                    refused = report.refused,
                    superseded = report.superseded,
                    kept = report.kept.len(),
                    calls = report.calls,
                    "flush done"
                );
                self.buffer
                    .settle(flight.bytes, report.kept, flight.started);
            }
            Err(e) => {
                let lost = flight.unsettled();
                metrics::add(&self.metrics.send_failed, lost);
                match e.try_into_panic() {
                    Ok(payload) => {
                        let effect = format!(
                            "{lost} documents X-Ray had not taken are lost (send_failed); the next flush point sends what is buffered"
                        );
                        supervisor::log_panic(
                            &self.metrics,
                            Task::Send,
                            payload.as_ref(),
                            "settled as failed",
                            &effect,
                        );
                    }
                    Err(e) => {
                        warn!(error = %e, documents = lost, "send failed; its documents are lost");
                    }
                }
                self.buffer.settle(flight.bytes, Vec::new(), flight.started);
            }
        }
    }

    /// The end: aborts the send in flight and empties the buffer. Returns how many documents
    /// were not delivered: everything queued, and of the send in flight only what it had not
    /// settled before the abort.
    pub fn abandon(&mut self) -> u64 {
        self.reap_warm_up();
        let in_flight = self.flight.take().map_or(0, |f| {
            f.handle.abort();
            f.unsettled()
        });
        self.buffer.clear() as u64 + in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::memory::{MemoryBackend, Reply, doc};

    fn exporter(script: Vec<Reply>, metrics: &Arc<Metrics>) -> (Exporter, Arc<MemoryBackend>) {
        let backend = Arc::new(MemoryBackend::new(50, script));
        let exporter = Exporter::new(1 << 20, backend.clone(), metrics.clone());
        (exporter, backend)
    }

    /// Lets the send in flight run (time is paused: it advances only while all wait) until the
    /// backend has answered `calls` calls.
    async fn until_calls(backend: &MemoryBackend, calls: usize) {
        while backend.calls().len() < calls {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_settles_into_the_buffer_what_it_kept() {
        let metrics = Arc::new(Metrics::default());
        let (mut exporter, backend) = exporter(
            vec![
                Reply::Store,
                Reply::Fail(crate::export::backend::ExportError::Auth {
                    status: 403,
                    code: "ExpiredTokenException".into(),
                    message: String::new(),
                }),
            ],
            &metrics,
        );
        let now = Instant::now();
        for n in 1..=70 {
            exporter.enqueue(doc(n), now);
        }
        exporter.start(now + Duration::from_secs(1), now);
        let report = exporter.finished().await;
        exporter.settle(report);
        assert_eq!(backend.stored().len(), 50);
        // The 20 refused with the credentials are queued again, first.
        assert_eq!(exporter.view().queued, 20);
        assert!(!exporter.in_flight());
        assert_eq!(exporter.abandon(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_counts_only_what_the_backend_has_not_settled() {
        let metrics = Arc::new(Metrics::default());
        let refuse_all = (0..50).map(|i| (i, "InvalidTraceId", false)).collect();
        let (mut exporter, backend) = exporter(
            vec![Reply::Store, Reply::Unprocessed(refuse_all), Reply::Hang],
            &metrics,
        );
        let now = Instant::now();
        for n in 1..=120 {
            exporter.enqueue(doc(n), now);
        }
        exporter.start(now + Duration::from_secs(1), now);
        assert!(exporter.view().in_flight);
        for n in 121..=125 {
            exporter.enqueue(doc(n), now);
        }
        // Two calls of the send are answered before the shutdown aborts it: 50 stored, 50
        // refused for their content; the third never is.
        until_calls(&backend, 3).await;
        // 20 of the send in flight and the 5 queued are lost.
        assert_eq!(exporter.abandon(), 25);
        assert_eq!(exporter.view(), ExportView::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_up_that_panics_is_one_task_failure_and_the_send_still_goes() {
        let metrics = Arc::new(Metrics::default());
        let backend = Arc::new(MemoryBackend::new(50, []).with_panicking_warm_up());
        let mut exporter = Exporter::new(1 << 20, backend.clone(), metrics.clone());
        exporter.warm();
        exporter.warm();
        // Let it run (and panic).
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        exporter.enqueue(doc(1), now);
        // The next send reaps it: one task failure, counted once.
        exporter.start(now + Duration::from_secs(1), now);
        assert_eq!(metrics::get(&metrics.task_failures), 1);
        let report = exporter.finished().await;
        exporter.settle(report);
        assert_eq!(backend.stored().len(), 1);
        exporter.enqueue(doc(2), now);
        exporter.start(now + Duration::from_secs(1), now);
        assert_eq!(metrics::get(&metrics.task_failures), 1);
    }

    /// A budget with room for exactly three documents, and three documents queued under it; the
    /// budget and one document's weight.
    fn three_reserved(exporter: &mut Exporter) -> (crate::export::budget::HandOffBudget, usize) {
        let weight = doc(0).weight();
        let budget = crate::export::budget::HandOffBudget::new(weight * 3);
        for n in 1..=3 {
            let (d, permit) = budget.admit(doc(n)).unwrap().into_parts();
            exporter.enqueue_reserved(d, permit, Instant::now());
        }
        (budget, weight)
    }

    #[tokio::test(start_paused = true)]
    async fn received_documents_keep_their_room_until_their_send_settles() {
        let metrics = Arc::new(Metrics::default());
        let (mut exporter, _backend) = exporter(vec![Reply::Panic], &metrics);
        let (budget, weight) = three_reserved(&mut exporter);
        let now = Instant::now();
        // Queued, they still hold the budget: a receiver refuses the next one...
        assert_eq!(budget.available(), 0);
        assert!(budget.admit(doc(4)).is_err());
        // ...and the send keeps holding it while in flight.
        exporter.start(now + Duration::from_secs(1), now);
        assert_eq!(budget.available(), 0);
        // The send fails: its documents are lost, their room given back.
        let report = exporter.finished().await;
        assert!(report.as_ref().is_err_and(JoinError::is_panic));
        exporter.settle(report);
        assert_eq!(metrics::get(&metrics.send_failed), 3);
        assert_eq!(budget.available(), weight * 3);
        assert_eq!(metrics::get(&metrics.spilled), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn kept_documents_keep_their_room_while_the_backend_fails() {
        use crate::export::backend::ExportError;
        let metrics = Arc::new(Metrics::default());
        let timeouts = vec![Reply::Fail(ExportError::Timeout); 3];
        let (mut exporter, backend) = exporter(timeouts, &metrics);
        let (budget, weight) = three_reserved(&mut exporter);
        let now = Instant::now();
        exporter.start(now + Duration::from_secs(1), now);
        let report = exporter.finished().await;
        exporter.settle(report);
        assert_eq!(backend.calls().len(), 3);
        // Kept for the next flush point, they still hold their room: while the backend keeps
        // failing, receivers cannot add to them (before, each failed send let the budget
        // admit a whole buffer more, and the buffer grew without bound).
        assert_eq!(exporter.view().queued, 3);
        assert_eq!(budget.available(), 0);
        assert!(budget.admit(doc(4)).is_err());
        // Sent at last, they give it back.
        exporter.start(now + Duration::from_secs(2), now);
        let report = exporter.finished().await;
        exporter.settle(report);
        assert_eq!(backend.stored().len(), 3);
        assert_eq!(budget.available(), weight * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn received_documents_filling_the_buffer_never_crowd_out_ours() {
        use crate::export::budget::HandOffBudget;
        let metrics = Arc::new(Metrics::default());
        let limit = 64 * 1024;
        let backend = Arc::new(MemoryBackend::new(50, []));
        let mut exporter = Exporter::new(limit, backend, metrics.clone());
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

    #[tokio::test(start_paused = true)]
    async fn a_send_that_panics_is_a_task_failure_and_its_unsettled_documents_are_counted() {
        crate::supervisor::install_panic_hook();
        let metrics = Arc::new(Metrics::default());
        let (mut exporter, backend) = exporter(vec![Reply::Store, Reply::Panic], &metrics);
        let now = Instant::now();
        for n in 1..=70 {
            exporter.enqueue(doc(n), now);
        }
        exporter.start(now + Duration::from_secs(1), now);
        // The send task dies after its first call was answered, before settling the rest.
        let report = exporter.finished().await;
        assert!(report.as_ref().is_err_and(JoinError::is_panic));
        assert_eq!(backend.calls().len(), 2);
        assert_eq!(backend.stored().len(), 50);
        exporter.settle(report);
        assert_eq!(metrics::get(&metrics.send_failed), 20);
        assert_eq!(metrics::get(&metrics.task_failures), 1);
        assert!(!exporter.in_flight());
        assert_eq!(exporter.view().queued, 0);
    }
}
