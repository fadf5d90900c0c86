//! The lifecycle loop: one task that owns the export buffer and decides when to flush.
//!
//! Inputs: Extensions API events (each carries a `done` channel: the event loop calls
//! `/event/next` only once we answer), validated documents from the UDP reader, and Telemetry
//! API records. The flush policy (`export::policy`) decides per INVOKE:
//! - hold (`end`, and `adaptive` while invocations are rare): wait for `platform.runtimeDone` of
//!   that request (or its deadline), drain the UDP socket (the SDK sent its last subsegments
//!   before the runtime answered), flush under `min(flush timeout, invocation deadline)`, then
//!   answer. Without telemetry, flush what earlier invocations left, then answer.
//! - don't hold (`background`, busy `adaptive`): answer at once, start a background send when the
//!   policy says so; a timer keeps sending while the environment runs.
//! - SHUTDOWN: wait briefly for the last `platform.report`, drain, flush everything under
//!   `deadlineMs - margin`, count what is left, answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::enrich::{self, Enricher};
use crate::export::buffer::{self, Buffer};
use crate::export::policy::{BufferState, Policy, Strategy};
use crate::export::xray::{self, FlushReport, XrayClient};
use crate::ingest::protocol::Document;
use crate::ingest::udp::{ChannelBudget, Ingested};
use crate::lambda::api::Telemetry;
use crate::lambda::events::NextEvent;
use crate::lambda::telemetry::{EpochSeconds, Event, Record};
use crate::metrics::{self, LogLimiter, Metrics};
use crate::trace::TraceHeader;

/// When the function is not held (no telemetry, `background`, busy `adaptive`), send buffered
/// documents this often while the environment runs (the daemon's idle interval).
pub const IDLE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Request ids whose `platform.runtimeDone` we remember (it may arrive before the INVOKE event
/// is handled).
pub const RECENT_RUNTIME_DONE: usize = 16;
/// Extra time past an invocation's deadline before we answer no matter what.
pub const HARD_DEADLINE_SLACK: Duration = Duration::from_secs(1);
/// At SHUTDOWN, how long to wait for the `platform.report` of the last invocation (Lambda
/// emits it once every extension has called next; it arrives within the 25 ms buffering).
pub const REPORT_WAIT: Duration = Duration::from_millis(150);
/// One log line per this interval for buffer overflows.
pub const SPILL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The shutdown phase when a SHUTDOWN event carries no `deadlineMs` (Lambda's 2,000 ms with an
/// external extension registered).
pub const SHUTDOWN_PHASE: Duration = Duration::from_secs(2);

/// An Extensions API event and the channel that releases the next `/event/next` call.
#[derive(Debug)]
pub struct LifecycleEvent {
    /// The event.
    pub next: NextEvent,
    /// Answer when done with it.
    pub done: oneshot::Sender<()>,
}

/// Hands an Extensions API event to the lifecycle loop and waits until it is done with it, so
/// the event loop calls `/event/next` only then. If the loop is gone (it failed), returns at
/// once: the event loop then simply keeps calling `/event/next` and the function is never held.
pub async fn forward(lifecycle: &mpsc::Sender<LifecycleEvent>, next: NextEvent) {
    let (done, released) = oneshot::channel();
    if lifecycle.send(LifecycleEvent { next, done }).await.is_ok() {
        let _ = released.await;
    }
}

/// Shared, lazily built X-Ray client: built in the background at the first event (after our
/// first `/event/next`, so off the init path), awaited at the first flush.
pub type ClientCell = Arc<OnceCell<Arc<XrayClient>>>;

/// What the loop owns from the start.
pub struct Setup {
    /// Settings.
    pub config: Config,
    /// Whether telemetry records will arrive.
    pub telemetry: Telemetry,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The X-Ray client, built lazily.
    pub client: ClientCell,
    /// Our own subsegments; `None` when turned off or without telemetry.
    pub enricher: Option<Enricher>,
}

/// Everything the loop reads from.
pub struct Inputs {
    /// Extensions API events.
    pub lifecycle: mpsc::Receiver<LifecycleEvent>,
    /// Documents from the UDP reader.
    pub documents: mpsc::Receiver<Ingested>,
    /// Telemetry records from the listener.
    pub telemetry: mpsc::Receiver<Vec<Event>>,
    /// Asks the UDP reader to drain the socket.
    pub drain: mpsc::Sender<()>,
    /// Bytes of documents in the channel, released as they are taken.
    pub budget: ChannelBudget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitRuntimeDone,
    AwaitReport,
    Draining,
    Flushing,
}

#[derive(Debug)]
struct Pending {
    request_id: Option<String>,
    flush_deadline: Option<Instant>,
    deadline: Instant,
    hard_deadline: Instant,
    wait_until: Option<Instant>,
    stage: Stage,
    done: oneshot::Sender<()>,
    /// Further events answered when this one is (a SHUTDOWN during a shutdown).
    joined: Vec<oneshot::Sender<()>>,
    shutdown: bool,
}

struct Flight {
    handle: JoinHandle<FlushReport>,
    bytes: usize,
    started: Instant,
    docs: usize,
    /// Started by the pending flush point (not a background send it must wait out first).
    for_pending: bool,
}

struct App {
    config: Config,
    telemetry: Telemetry,
    metrics: Arc<Metrics>,
    client: ClientCell,
    buffer: Buffer,
    flight: Option<Flight>,
    pending: Option<Pending>,
    runtime_done: VecDeque<String>,
    drain: mpsc::Sender<()>,
    spills: LogLimiter,
    finished: bool,
    enricher: Option<Enricher>,
    policy: Policy,
    budget: ChannelBudget,
    client_warming: bool,
    /// When the pending invocation's post-runtime phase began (its runtimeDone reached us).
    post_runtime_from: Option<Instant>,
}

/// Runs the loop until SHUTDOWN has been handled.
pub async fn run(setup: Setup, inputs: Inputs) {
    let Setup {
        config,
        telemetry,
        metrics,
        client,
        enricher,
    } = setup;
    let config_policy = config.policy;
    let Inputs {
        mut lifecycle,
        mut documents,
        telemetry: mut records,
        drain,
        budget,
    } = inputs;
    let mut app = App {
        buffer: Buffer::new(config.buffer_bytes),
        config,
        telemetry,
        metrics,
        client,
        flight: None,
        pending: None,
        runtime_done: VecDeque::with_capacity(RECENT_RUNTIME_DONE),
        drain,
        spills: LogLimiter::new(SPILL_LOG_INTERVAL),
        finished: false,
        enricher,
        policy: Policy::new(config_policy),
        budget,
        client_warming: false,
        post_runtime_from: None,
    };
    let mut idle_tick = tokio::time::interval(IDLE_FLUSH_INTERVAL);
    idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while !app.finished {
        let wake_at = app.pending.as_ref().map(|p| match p.stage {
            Stage::AwaitRuntimeDone => p.deadline,
            Stage::AwaitReport => p.wait_until.unwrap_or(p.hard_deadline),
            // An invocation's flush point ends at its flush deadline, counted from
            // runtimeDone; the shutdown's lets a call ending at the deadline be counted.
            _ if p.shutdown => p.hard_deadline,
            _ => p
                .flush_deadline
                .map_or(p.hard_deadline, |d| d.min(p.hard_deadline)),
        });
        tokio::select! {
            event = lifecycle.recv() => match event {
                Some(event) => app.on_lifecycle(event),
                None => return,
            },
            Some(item) = documents.recv() => app.on_ingested(item),
            Some(events) = records.recv() => app.on_telemetry(&events),
            report = join_flight(&mut app.flight), if app.flight.is_some() => app.on_flush_done(report),
            () = sleep_until_opt(wake_at) => app.on_deadline(),
            _ = idle_tick.tick(), if app.pending.is_none() && (app.telemetry == Telemetry::NotSupported || app.policy.strategy() != Strategy::End) => {
                if !app.buffer.is_empty() && app.flight.is_none() {
                    app.start_flush(Instant::now() + app.config.flush_timeout, false);
                }
            }
        }
    }
}

async fn join_flight(flight: &mut Option<Flight>) -> Result<FlushReport, tokio::task::JoinError> {
    match flight {
        Some(f) => (&mut f.handle).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Converts an epoch-milliseconds deadline into an [`Instant`], given the current time on both
/// clocks. Pure.
pub fn deadline_instant(deadline_ms: u64, now: Instant, now_epoch: Duration) -> Instant {
    let deadline = Duration::from_millis(deadline_ms);
    match deadline.checked_sub(now_epoch) {
        Some(remaining) => now + remaining,
        None => now,
    }
}

fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The wall clock as X-Ray times it.
pub fn epoch_seconds_now() -> EpochSeconds {
    EpochSeconds(epoch_now().as_secs_f64())
}

/// This process's peak resident set size (`VmHWM`), for the shutdown counters line.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn random_id() -> u64 {
    fastrand::u64(1..)
}

impl App {
    /// Starts building the X-Ray client (reading the AWS configuration) in the background.
    fn warm_client(&mut self) {
        if std::mem::replace(&mut self.client_warming, true) {
            return;
        }
        let cell = self.client.clone();
        let roots = self.config.tls_roots;
        tokio::spawn(async move {
            cell.get_or_init(|| async { Arc::new(XrayClient::from_env(roots)) })
                .await;
        });
    }

    fn on_lifecycle(&mut self, event: LifecycleEvent) {
        self.warm_client();
        let now = Instant::now();
        let LifecycleEvent { next, done } = event;
        match next {
            NextEvent::Invoke(invoke) => {
                // Without a deadline, the invocation's is now: the hold is the flush timeout.
                let epoch = epoch_now();
                let deadline_ms = invoke
                    .deadline_ms
                    .unwrap_or_else(|| u64::try_from(epoch.as_millis()).unwrap_or(u64::MAX));
                let deadline = deadline_instant(deadline_ms, now, epoch);
                debug!(request_id = %invoke.request_id, "INVOKE");
                self.enrich_invoke(&invoke, deadline_ms);
                let decision = self.policy.on_invoke(now, self.buffer_state());
                if decision.send && self.flight.is_none() {
                    self.start_flush(self.flush_deadline(now, deadline), false);
                }
                if !decision.hold {
                    // Our /event/next goes in at once: the function never waits for us.
                    let _ = done.send(());
                    return;
                }
                let stage = if self.telemetry == Telemetry::Subscribed {
                    Stage::AwaitRuntimeDone
                } else {
                    Stage::Flushing
                };
                self.pending = Some(Pending {
                    request_id: Some(invoke.request_id),
                    flush_deadline: None,
                    deadline,
                    hard_deadline: deadline.max(now)
                        + self.config.flush_timeout
                        + HARD_DEADLINE_SLACK,
                    wait_until: None,
                    stage,
                    done,
                    joined: Vec::new(),
                    shutdown: false,
                });
                if stage == Stage::Flushing {
                    self.begin_flush_stage(now);
                } else if self.runtime_done_seen() {
                    self.begin_drain();
                }
            }
            NextEvent::Shutdown(shutdown) => {
                let deadline = shutdown
                    .deadline_ms
                    .map_or(now + SHUTDOWN_PHASE, |ms| {
                        deadline_instant(ms, now, epoch_now())
                    })
                    .checked_sub(self.config.shutdown_margin)
                    .unwrap_or(now)
                    .max(now);
                if let Some(p) = self.pending.as_mut().filter(|p| p.shutdown) {
                    // A second SHUTDOWN (SIGTERM, then Lambda's) joins the one under way.
                    p.joined.push(done);
                    return;
                }
                info!(reason = %shutdown.reason, remaining_ms = deadline.saturating_duration_since(now).as_millis(), "SHUTDOWN");
                // A pending invoke cannot exist here (the event loop waits for our answer), but if
                // it did, release it.
                if let Some(p) = self.pending.take() {
                    let _ = p.done.send(());
                }
                let mut awaiting_report = false;
                if let Some(enricher) = self.enricher.as_mut() {
                    let docs =
                        enricher.on_shutdown(&shutdown.reason, epoch_seconds_now(), &mut random_id);
                    self.enqueue_generated(docs);
                    awaiting_report = self
                        .enricher
                        .as_ref()
                        .is_some_and(Enricher::awaiting_report);
                }
                self.pending = Some(Pending {
                    request_id: None,
                    flush_deadline: Some(deadline),
                    deadline,
                    // The flush's own timeouts end at `deadline`; this lets a call finishing
                    // right then settle, and still leaves half the margin.
                    hard_deadline: deadline + self.config.shutdown_margin / 2,
                    wait_until: Some((now + REPORT_WAIT).min(deadline)),
                    stage: Stage::AwaitReport,
                    done,
                    joined: Vec::new(),
                    shutdown: true,
                });
                if !awaiting_report {
                    self.begin_drain();
                }
            }
        }
    }

    fn enrich_invoke(&mut self, invoke: &crate::lambda::events::Invoke, deadline_ms: u64) {
        let Some(enricher) = self.enricher.as_mut() else {
            return;
        };
        let trace = invoke
            .trace_header
            .as_deref()
            .and_then(|h| TraceHeader::parse(h).ok());
        #[allow(
            clippy::cast_precision_loss,
            reason = "epoch milliseconds fit f64's 53 bits"
        )]
        let deadline = EpochSeconds(deadline_ms as f64 / 1e3);
        let docs = enricher.on_invoke(
            &enrich::Invoke {
                request_id: invoke.request_id.clone(),
                trace,
                deadline,
                received_at: epoch_seconds_now(),
            },
            &mut random_id,
        );
        self.enqueue_generated(docs);
    }

    fn runtime_done_seen(&self) -> bool {
        self.pending
            .as_ref()
            .and_then(|p| p.request_id.as_ref())
            .is_some_and(|id| self.runtime_done.iter().any(|d| d == id))
    }

    fn enqueue(&mut self, doc: Document) {
        if self.buffer.push(doc, Instant::now()).is_err() {
            metrics::add(&self.metrics.spilled, 1);
            if let Some(suppressed) = self.spills.allow(std::time::Instant::now()) {
                warn!(
                    limit_bytes = self.config.buffer_bytes,
                    suppressed, "export buffer full; document dropped"
                );
            }
        }
    }

    fn enqueue_generated(&mut self, docs: Vec<Document>) {
        metrics::add(&self.metrics.generated, docs.len() as u64);
        for doc in docs {
            self.enqueue(doc);
        }
    }

    fn on_ingested(&mut self, item: Ingested) {
        match item {
            Ingested::Document(doc) => {
                self.budget.release(doc.weight());
                self.enqueue(doc);
            }
            Ingested::Drained => self.drained(Instant::now()),
        }
    }

    fn on_telemetry(&mut self, events: &[Event]) {
        if let Some(enricher) = self.enricher.as_mut() {
            let docs: Vec<_> = events
                .iter()
                .flat_map(|e| enricher.on_telemetry(e, &mut random_id))
                .collect();
            self.enqueue_generated(docs);
        }
        for event in events {
            if let Record::RuntimeDone(done) = &event.record {
                debug!(request_id = %done.request_id, status = ?done.status, "platform.runtimeDone");
                if self.runtime_done.len() == RECENT_RUNTIME_DONE {
                    self.runtime_done.pop_front();
                }
                self.runtime_done.push_back(done.request_id.clone());
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.stage == Stage::AwaitRuntimeDone)
            && self.runtime_done_seen()
        {
            self.begin_drain();
        }
        let report_arrived = self
            .pending
            .as_ref()
            .is_some_and(|p| p.stage == Stage::AwaitReport)
            && !self
                .enricher
                .as_ref()
                .is_some_and(Enricher::awaiting_report);
        if report_arrived {
            self.begin_drain();
        }
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        let Some(p) = self.pending.as_ref() else {
            return;
        };
        match p.stage {
            Stage::AwaitRuntimeDone => {
                debug!(request_id = ?p.request_id, "invocation deadline passed without runtimeDone");
                self.begin_drain();
            }
            Stage::AwaitReport => {
                debug!("no platform.report before the wait ended");
                self.begin_drain();
            }
            _ if !p.shutdown && p.flush_deadline.is_some_and(|d| now >= d) => {
                // The send goes on in the background; what it cannot deliver is requeued.
                debug!(stage = ?p.stage, "flush timeout reached; calling next");
                self.finish_pending();
            }
            _ if now >= p.hard_deadline => {
                if p.shutdown {
                    self.finish_shutdown();
                } else {
                    warn!(stage = ?p.stage, "flush point overran its deadline; releasing the event loop");
                    self.finish_pending();
                }
            }
            _ => {}
        }
    }

    fn begin_drain(&mut self) {
        if let Some(p) = self.pending.as_mut() {
            p.stage = Stage::Draining;
            if !p.shutdown {
                self.post_runtime_from.get_or_insert_with(Instant::now);
            }
        }
        // The flush timeout bounds the whole post-runtime phase: it starts now, at
        // runtimeDone, and covers the drain, a send already in flight, and ours.
        self.pending_flush_deadline(Instant::now());
        if self.drain.try_send(()).is_err() {
            // A drain is already queued (its marker will arrive) or the reader is gone.
            if self.drain.is_closed() {
                self.begin_flush_stage(Instant::now());
            }
        }
    }

    /// The UDP socket has been drained for the pending flush point.
    fn drained(&mut self, now: Instant) {
        let Some(p) = self.pending.as_ref() else {
            return;
        };
        if p.stage != Stage::Draining {
            return;
        }
        self.begin_flush_stage(now);
    }

    fn buffer_state(&self) -> BufferState {
        BufferState {
            queued: self.buffer.len(),
            oldest: self.buffer.oldest(),
        }
    }

    /// A flush's deadline: the flush timeout, capped by the invocation's deadline when it is
    /// still ahead.
    fn flush_deadline(&self, now: Instant, invocation_deadline: Instant) -> Instant {
        let cap = now + self.config.flush_timeout;
        if invocation_deadline > now {
            cap.min(invocation_deadline)
        } else {
            cap
        }
    }

    /// The pending flush point's deadline, fixed the first time it is asked for: when the
    /// drain begins at runtimeDone, or when a flush starts without one. SHUTDOWN sets its own.
    fn pending_flush_deadline(&mut self, now: Instant) -> Option<Instant> {
        let cap = self
            .pending
            .as_ref()
            .map(|p| self.flush_deadline(now, p.deadline))?;
        let p = self.pending.as_mut()?;
        Some(*p.flush_deadline.get_or_insert(cap))
    }

    fn begin_flush_stage(&mut self, now: Instant) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.stage = Stage::Flushing;
        if let Some(deadline) = self.pending_flush_deadline(now) {
            self.continue_flushing(deadline);
        }
    }

    /// Starts another flush round, or finishes the flush point when nothing is left to do.
    fn continue_flushing(&mut self, deadline: Instant) {
        if self.flight.is_some() {
            return; // resumes in on_flush_done
        }
        let now = Instant::now();
        let shutdown = self.pending.as_ref().is_some_and(|p| p.shutdown);
        if self.buffer.is_empty() || now >= deadline {
            if shutdown {
                self.finish_shutdown();
            } else {
                self.finish_pending();
            }
            return;
        }
        self.start_flush(deadline, true);
    }

    fn start_flush(&mut self, deadline: Instant, for_pending: bool) {
        let now = Instant::now();
        self.policy.sent(now);
        let docs = self.buffer.take(usize::MAX);
        let bytes = buffer::weight_of(&docs);
        let count = docs.len();
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let tls_roots = self.config.tls_roots;
        debug!(documents = docs.len(), "flush");
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
            docs: count,
            started: now,
            for_pending,
        });
    }

    fn on_flush_done(&mut self, report: Result<FlushReport, tokio::task::JoinError>) {
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
                warn!(error = %e, "flush task failed; its documents are lost");
                metrics::add(&self.metrics.spilled, 1);
                self.buffer.settle(flight.bytes, Vec::new(), flight.started);
            }
        }
        let round_deadline = self
            .pending
            .as_ref()
            .filter(|p| p.stage == Stage::Flushing)
            .and_then(|p| p.flush_deadline);
        if let Some(deadline) = round_deadline {
            let shutdown = self.pending.as_ref().is_some_and(|p| p.shutdown);
            if shutdown || !flight.for_pending {
                // Shutdown sends until empty; a background send we waited out is followed by
                // this flush point's own round.
                self.continue_flushing(deadline);
            } else {
                // One round per invocation: whatever failed stays for the next flush point.
                self.finish_pending();
            }
        }
    }

    /// The end of SHUTDOWN: whatever is still buffered or in flight is counted as dropped, the
    /// counters are logged, and the event loop is released so the process can exit.
    fn finish_shutdown(&mut self) {
        let in_flight = self.flight.take().map_or(0, |f| {
            f.handle.abort();
            f.docs
        });
        let dropped = self.buffer.clear() + in_flight;
        if dropped > 0 {
            metrics::add(&self.metrics.dropped_at_shutdown, dropped as u64);
            warn!(dropped, "documents not sent before the shutdown deadline");
        }
        self.log_counters();
        self.finish_pending();
    }

    fn finish_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            if p.shutdown {
                self.finished = true;
            }
            let _ = p.done.send(());
            for done in p.joined {
                let _ = done.send(());
            }
            if let Some(from) = self.post_runtime_from.take() {
                self.metrics.observe_post_runtime(from.elapsed());
            }
        }
    }

    fn log_counters(&self) {
        let m = &self.metrics;
        info!(
            received = metrics::get(&m.received),
            sent = metrics::get(&m.sent),
            spilled = metrics::get(&m.spilled),
            rejected = metrics::get(&m.rejected),
            unprocessed = metrics::get(&m.unprocessed),
            generated = metrics::get(&m.generated),
            dropped_at_shutdown = metrics::get(&m.dropped_at_shutdown),
            api_calls = metrics::get(&m.api_calls),
            backend_timeout = metrics::get(&m.backend_timeout),
            backend_refused = metrics::get(&m.backend_refused),
            backend_4xx = metrics::get(&m.backend_4xx),
            backend_5xx = metrics::get(&m.backend_5xx),
            backend_unknown_host = metrics::get(&m.backend_unknown_host),
            backend_other = metrics::get(&m.backend_other),
            telemetry_invalid = metrics::get(&m.telemetry_invalid),
            post_runtime_count = metrics::get(&m.post_runtime_count),
            post_runtime_us_sum = metrics::get(&m.post_runtime_us_sum),
            post_runtime_us_max = metrics::get(&m.post_runtime_us_max),
            telemetry_fields_ignored = metrics::get(&m.telemetry_fields_ignored),
            peak_rss_kb = peak_rss_kb().unwrap_or(0),
            "counters"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoke() -> NextEvent {
        NextEvent::Invoke(crate::lambda::events::Invoke {
            request_id: "r-1".into(),
            deadline_ms: Some(1),
            trace_header: None,
        })
    }

    #[tokio::test]
    async fn forward_waits_for_the_loop_to_release_the_event() {
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(async move { forward(&tx, invoke()).await });
        let event = rx.recv().await.unwrap();
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "must wait until the loop answers");
        event.done.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn forward_falls_through_when_the_loop_is_gone() {
        // The loop failed: every event returns at once, so /event/next keeps being called.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        forward(&tx, invoke()).await;
    }

    #[tokio::test]
    async fn forward_returns_when_the_loop_drops_the_event() {
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(async move { forward(&tx, invoke()).await });
        drop(rx.recv().await.unwrap());
        task.await.unwrap();
    }

    #[test]
    fn deadlines_convert_between_clocks() {
        let now = Instant::now();
        let epoch = Duration::from_secs(1_795_605_001);
        assert_eq!(
            deadline_instant(1_795_605_001_123, now, epoch),
            now + Duration::from_millis(123)
        );
        // A deadline in the past is now.
        assert_eq!(deadline_instant(1_795_605_000_000, now, epoch), now);
    }
}
