//! The lifecycle loop: the async shell that moves data between the Lambda events, the UDP
//! reader, the telemetry listener, the flush-point machine ([`crate::lifecycle`], where every
//! decision is made) and the exporter ([`crate::export::exporter`]).
//!
//! Inputs: Extensions API events (each carries a `done` channel: the event loop calls
//! `/event/next` only once we answer), validated documents from the UDP reader, and Telemetry
//! API records. Each is turned into an [`Input`] for the machine, whose [`Action`]s this loop
//! carries out: answer an event, drain the socket, start a send, record the post-runtime time,
//! and at the end of the shutdown abandon what is left, log the counters and stop.
//!
//! A panic in one of these steps does not lose the buffer: each step runs under
//! `catch_unwind`, and after a panic the loop carries on degraded ([`App::degrade`]): the
//! flush-point machine and the enricher, whose state the panic may have left half-updated, are
//! dropped; every held invocation is released; a fresh machine that never holds (as
//! `background`) takes over, with the exporter as it was (its buffer and any send in flight),
//! so what is buffered is still sent, in the background and at SHUTDOWN. After
//! [`MAX_PANICS`] the panic is let through and the supervisor closes the loop.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::attempt::{AttemptId, Attempts};
use crate::config::{Config, SpanDestination};
use crate::document::Document;
use crate::enrich::{self, Enricher};
use crate::export::exporter::Exporter;
use crate::export::otlp::OtlpBackend;
use crate::export::policy::Strategy;
pub use crate::export::xray::ClientCell;
use crate::export::xray::XrayBackend;
use crate::ingest::udp::Ingested;
use crate::lambda::api::Telemetry;
use crate::lambda::events::{self, NextEvent};
use crate::lambda::listener::Delivery;
use crate::lambda::telemetry::{EpochSeconds, Event, Record, TenantId};
use crate::lifecycle::{Action, FlushPoints, Input, Settings};
use crate::metrics::{self, Metrics};
use crate::supervisor::{self, Task};
use crate::trace::TraceHeader;

/// When the function is not held (no telemetry, `background`, busy `adaptive`, or after a lost
/// runtimeDone), send buffered documents this often while the environment runs (the daemon's
/// idle interval).
pub const IDLE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// At SHUTDOWN, how long to wait for the `platform.report` of the last invocation (Lambda
/// emits it once every extension has called next; it arrives within the 25 ms buffering).
pub const REPORT_WAIT: Duration = Duration::from_millis(150);
/// Without its runtimeDone, an invocation is released this long before its deadline, so Lambda
/// does not time it out (and reset the environment) because of us.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(200);
/// The shutdown phase when a SHUTDOWN event carries no `deadlineMs` (Lambda's 2,000 ms with an
/// external extension registered), and after SIGTERM.
pub const SHUTDOWN_PHASE: Duration = Duration::from_secs(2);
/// Panics the loop carries on after (degraded); the next one ends it.
pub const MAX_PANICS: u32 = 3;
/// What the degraded loop still does, for the panic's one error line.
const DEGRADED: &str = "invocations are no longer held and nothing more is enriched; what is buffered is kept and sent in the background and at SHUTDOWN";

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
    /// Telemetry records from the listener (their room in the budget given back once read).
    pub telemetry: mpsc::Receiver<Delivery>,
    /// Asks the UDP reader to drain the socket.
    pub drain: mpsc::Sender<()>,
}

struct App {
    machine: FlushPoints,
    /// Which attempt each INVOKE and invocation record belongs to: asked once per event, the
    /// answer given to both the machine and the enricher.
    attempts: Attempts,
    /// The machine's settings, for a fresh one after a panic or once telemetry is gone.
    settings: Settings,
    /// The SHUTDOWN's deadline once one arrived, for a fresh machine.
    shutdown_deadline: Option<Instant>,
    /// Panics carried on after.
    panics: u32,
    exporter: Exporter,
    enricher: Option<Enricher>,
    metrics: Arc<Metrics>,
    drain: mpsc::Sender<()>,
    /// INVOKEs not answered yet, by the machine's handle.
    held: Vec<(u64, oneshot::Sender<()>)>,
    /// SHUTDOWNs (and SIGTERM's) answered when the shutdown ends.
    shutdowns: Vec<oneshot::Sender<()>>,
    next_seq: u64,
    shutdown_margin: Duration,
    guard_logged: bool,
    /// The environment's tenant, once a record named one: our log lines about an invocation
    /// carry it as `tenantId`, as Lambda's do (an environment serves one tenant only).
    tenant: Option<TenantId>,
}

/// Runs the loop until the shutdown has ended.
pub async fn run(setup: Setup, inputs: Inputs) {
    let Setup {
        config,
        telemetry,
        metrics,
        client,
        enricher,
    } = setup;
    let Inputs {
        mut lifecycle,
        mut documents,
        telemetry: mut records,
        drain,
    } = inputs;
    let settings = Settings {
        flush_timeout: config.flush_timeout,
        shutdown_margin: config.shutdown_margin,
        report_wait: REPORT_WAIT,
        deadline_margin: DEADLINE_MARGIN,
        policy: config.policy,
        telemetry: telemetry == Telemetry::Subscribed,
    };
    let mut app = App {
        machine: FlushPoints::new(settings),
        attempts: Attempts::new(),
        settings,
        shutdown_deadline: None,
        panics: 0,
        exporter: Exporter::routed(
            config.buffer_bytes,
            Arc::new(XrayBackend::new(client, config.tls_roots)),
            span_backend(&config, &metrics),
            metrics.clone(),
        ),
        enricher,
        metrics,
        drain,
        held: Vec::new(),
        shutdowns: Vec::new(),
        next_seq: 0,
        shutdown_margin: config.shutdown_margin,
        guard_logged: false,
        tenant: None,
    };
    let mut idle_tick = tokio::time::interval(IDLE_FLUSH_INTERVAL);
    idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut listening = true;
    while !app.machine.has_exited() {
        let wake_at = app.machine.wake_at();
        let idle = !app.machine.is_active() && app.machine.idle_sends();
        tokio::select! {
            event = lifecycle.recv() => match event {
                Some(event) => app.step(|app| app.on_lifecycle(event)),
                None => return,
            },
            Some(item) = documents.recv() => app.step(|app| app.on_ingested(item)),
            events = records.recv(), if listening => {
                if let Some(delivery) = events {
                    app.step(|app| app.on_telemetry(&delivery.events));
                } else {
                    // The listener is closed for good (or was never started).
                    listening = false;
                    app.step(App::telemetry_lost);
                }
            }
            report = app.exporter.finished(), if app.exporter.in_flight() => app.step(|app| {
                app.exporter.settle(report);
                app.feed(Input::SendDone);
            }),
            () = sleep_until_opt(wake_at) => app.step(|app| app.feed(Input::Wake)),
            _ = idle_tick.tick(), if idle => app.step(|app| app.feed(Input::Tick)),
        }
    }
}

/// The backend sampled OpenTelemetry spans go to instead of PutTraceSegments: the OTLP
/// endpoint when `XRAY_EXTENSION_SPAN_DESTINATION=otlp`.
fn span_backend(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Option<Arc<dyn crate::export::backend::Backend>> {
    match config.span_destination {
        SpanDestination::Segments => None,
        SpanDestination::Otlp => Some(Arc::new(OtlpBackend::new(
            config.tls_roots,
            metrics.clone(),
        ))),
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

impl App {
    /// Runs one step; after a panic in it, carries on degraded (see the module documentation),
    /// or, past [`MAX_PANICS`], lets the panic through to the supervisor.
    fn step(&mut self, step: impl FnOnce(&mut Self)) {
        // The state a panic may leave half-updated (the machine, the enricher) is dropped
        // below; the exporter's buffer and send in flight are kept on purpose.
        let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| step(self))) else {
            return;
        };
        self.panics += 1;
        if self.panics > MAX_PANICS {
            std::panic::resume_unwind(payload);
        }
        supervisor::log_panic(
            &self.metrics,
            Task::Lifecycle,
            payload.as_ref(),
            "carrying on degraded",
            DEGRADED,
        );
        self.degrade();
    }

    /// After a panic: no enrichment, a fresh machine that never holds, every held invocation
    /// released; the exporter as it was.
    fn degrade(&mut self) {
        self.enricher = None;
        self.settings.policy.strategy = Strategy::Background;
        self.restart_machine();
    }

    /// The telemetry listener is gone for good: no runtimeDone will come, so nothing may be
    /// held for one (it would wait for the lost-runtimeDone guard, near the deadline).
    fn telemetry_lost(&mut self) {
        if !self.settings.telemetry {
            return;
        }
        self.enricher = None;
        self.settings.telemetry = false;
        self.restart_machine();
    }

    /// A fresh machine with the current settings: held invocations are released, and a
    /// shutdown under way starts again in it.
    fn restart_machine(&mut self) {
        self.machine = FlushPoints::new(self.settings);
        self.attempts = Attempts::new();
        for (_, done) in self.held.drain(..) {
            let _ = done.send(());
        }
        if let Some(deadline) = self.shutdown_deadline {
            self.feed(Input::Shutdown {
                deadline,
                awaiting_report: false,
            });
        }
    }

    /// Feeds the machine one input now and carries out what it decides.
    fn feed(&mut self, input: Input) {
        let actions = self.machine.on(input, Instant::now(), self.exporter.view());
        for action in actions {
            self.apply(action);
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Release(seq) => {
                if let Some(i) = self.held.iter().position(|(s, _)| *s == seq) {
                    let (_, done) = self.held.swap_remove(i);
                    let _ = done.send(());
                }
            }
            Action::Drain => {
                // A drain already queued sends its marker anyway; without a reader there is
                // nothing to drain.
                if self.drain.try_send(()).is_err() && self.drain.is_closed() {
                    self.feed(Input::Drained);
                }
            }
            Action::Send { deadline } => self.exporter.start(deadline, Instant::now()),
            Action::PostRuntime(added) => self.metrics.observe_post_runtime(added),
            Action::GuardTripped { request_id } => {
                if std::mem::replace(&mut self.guard_logged, true) {
                    warn!(requestId = %request_id, tenantId = self.tenant_id(), "no platform.runtimeDone before the invocation's deadline again: not holding invocations until telemetry arrives");
                } else {
                    error!(requestId = %request_id, tenantId = self.tenant_id(), "no platform.runtimeDone before the invocation's deadline: not holding invocations (sending in the background) until telemetry arrives again");
                }
            }
            Action::GuardCleared => {
                info!("platform.runtimeDone arrives again: holding invocations as configured");
            }
            Action::Exit => self.exit(),
        }
    }

    fn on_lifecycle(&mut self, event: LifecycleEvent) {
        self.exporter.warm();
        let now = Instant::now();
        let LifecycleEvent { next, done } = event;
        match next {
            NextEvent::Invoke(invoke) => {
                // The one wall-clock read for this INVOKE: its attempt, its deadline and the
                // enricher's arrival time all come from it.
                let epoch = epoch_now();
                let received_at = EpochSeconds(epoch.as_secs_f64());
                let trace = invoke
                    .trace_header
                    .as_deref()
                    .and_then(|h| TraceHeader::parse(h).ok());
                let placed = self
                    .attempts
                    .place_invoke(&invoke.request_id, trace, received_at);
                // Without a deadline nothing bounds a hold: it is not held.
                let deadline_ms = invoke
                    .deadline_ms
                    .unwrap_or_else(|| u64::try_from(epoch.as_millis()).unwrap_or(u64::MAX));
                let deadline = invoke
                    .deadline_ms
                    .map(|ms| deadline_instant(ms, now, epoch));
                debug!(requestId = %invoke.request_id, tenantId = self.tenant_id(), "INVOKE");
                self.enrich_invoke(&invoke, placed.id, trace, deadline_ms, received_at);
                self.next_seq += 1;
                let seq = self.next_seq;
                self.held.push((seq, done));
                self.feed(Input::Invoke {
                    seq,
                    attempt: placed.id,
                    request_id: invoke.request_id,
                    runtime_done: placed.had_runtime_done,
                    deadline,
                });
            }
            NextEvent::Shutdown(shutdown) => {
                self.shutdowns.push(done);
                if self.shutdowns.len() > 1 {
                    // A second SHUTDOWN (SIGTERM, then Lambda's) joins the one under way.
                    return;
                }
                // One wall-clock read: the deadline and the enricher's time of the shutdown.
                let epoch = epoch_now();
                let deadline = shutdown
                    .deadline_ms
                    .map_or(now + SHUTDOWN_PHASE, |ms| deadline_instant(ms, now, epoch));
                self.shutdown_deadline = Some(deadline);
                info!(reason = %shutdown.reason, remaining_ms = deadline.saturating_duration_since(now).saturating_sub(self.shutdown_margin).as_millis(), "SHUTDOWN");
                if let Some(enricher) = self.enricher.as_mut() {
                    let docs =
                        enricher.on_shutdown(&shutdown.reason, EpochSeconds(epoch.as_secs_f64()));
                    self.enqueue_generated(docs);
                }
                let awaiting_report = self
                    .enricher
                    .as_ref()
                    .is_some_and(Enricher::awaiting_report);
                self.feed(Input::Shutdown {
                    deadline,
                    awaiting_report,
                });
            }
        }
    }

    fn enrich_invoke(
        &mut self,
        invoke: &events::Invoke,
        attempt: AttemptId,
        trace: Option<TraceHeader>,
        deadline_ms: u64,
        received_at: EpochSeconds,
    ) {
        let Some(enricher) = self.enricher.as_mut() else {
            return;
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "epoch milliseconds fit f64's 53 bits"
        )]
        let deadline = EpochSeconds(deadline_ms as f64 / 1e3);
        let docs = enricher.on_invoke(
            &enrich::Invoke {
                request_id: invoke.request_id.clone(),
                trace,
                deadline,
                received_at,
            },
            attempt,
        );
        self.enqueue_generated(docs);
    }

    fn enqueue_generated(&mut self, docs: Vec<Document>) {
        metrics::add(&self.metrics.generated, docs.len() as u64);
        if let Some(enricher) = &self.enricher {
            metrics::set(&self.metrics.generated_refused, enricher.refused());
        }
        let now = Instant::now();
        for doc in docs {
            self.exporter.enqueue(doc, now);
        }
        self.relieve_pressure();
    }

    /// A full batch (or half the buffer) waiting and no send in flight: the machine decides
    /// whether it can go now.
    fn relieve_pressure(&mut self) {
        if self.exporter.under_pressure() {
            self.feed(Input::Pressure);
        }
    }

    fn on_ingested(&mut self, item: Ingested) {
        match item {
            Ingested::Document(admitted) => {
                // The hand-off permit stays with the document until it is sent, refused or dropped.
                let (doc, permit) = admitted.into_parts();
                crate::fault::check(crate::fault::Site::Lifecycle, doc.body.as_bytes());
                self.exporter.enqueue_reserved(doc, permit, Instant::now());
                self.relieve_pressure();
            }
            Ingested::Drained => self.feed(Input::Drained),
            Ingested::RoomWanted => {
                if !self.exporter.in_flight() && self.exporter.view().queued > 0 {
                    self.feed(Input::Pressure);
                }
            }
        }
    }

    fn tenant_id(&self) -> Option<&str> {
        self.tenant.as_ref().map(TenantId::as_str)
    }

    fn on_telemetry(&mut self, events: &[Event]) {
        if self.tenant.is_none() {
            self.tenant = events.iter().find_map(|e| e.record.tenant_id()).cloned();
        }
        // Each invocation record placed once; the enricher and the machine take the attempt.
        let attempts: Vec<_> = events
            .iter()
            .map(|e| self.attempts.place_event(e).map(|placed| placed.id))
            .collect();
        if let Some(enricher) = self.enricher.as_mut() {
            let docs: Vec<_> = events
                .iter()
                .zip(&attempts)
                .flat_map(|(e, attempt)| enricher.on_telemetry(e, *attempt))
                .collect();
            self.enqueue_generated(docs);
        }
        for (event, attempt) in events.iter().zip(attempts) {
            if let (Record::RuntimeDone(done), Some(attempt)) = (&event.record, attempt) {
                let tenant = done.tenant_id.as_ref().map(TenantId::as_str);
                debug!(requestId = %done.request_id, tenantId = tenant.or(self.tenant_id()), status = ?done.status, "platform.runtimeDone");
                self.feed(Input::RuntimeDone(attempt));
            }
        }
        if !self
            .enricher
            .as_ref()
            .is_some_and(Enricher::awaiting_report)
        {
            self.feed(Input::ReportArrived);
        }
    }

    /// The end of the shutdown: whatever is still buffered or in flight is counted as dropped,
    /// the counters are logged, and the SHUTDOWN is answered so the process can exit.
    fn exit(&mut self) {
        let dropped = self.exporter.abandon();
        if dropped > 0 {
            metrics::add(&self.metrics.dropped_at_shutdown, dropped);
            warn!(dropped, "documents not sent before the shutdown deadline");
        }
        self.log_counters();
        for (_, done) in self.held.drain(..) {
            let _ = done.send(());
        }
        for done in self.shutdowns.drain(..) {
            let _ = done.send(());
        }
    }

    fn log_counters(&self) {
        crate::log_counters!(INFO, self.metrics, "counters");
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

    /// The loop, flushing at each invocation's end, as if subscribed to telemetry; its
    /// lifecycle and telemetry senders.
    fn start_loop() -> (mpsc::Sender<LifecycleEvent>, mpsc::Sender<Delivery>) {
        let (config, _) = Config::from_lookup(|k| {
            (k == crate::config::vars::FLUSH_STRATEGY).then(|| "end".to_owned())
        });
        let (lifecycle_tx, lifecycle) = mpsc::channel(1);
        let (documents_tx, documents) = mpsc::channel(1);
        let (telemetry_tx, telemetry) = mpsc::channel(1);
        // No UDP reader: a flush point skips the drain.
        let (drain, _) = mpsc::channel(1);
        tokio::spawn(async move {
            let _documents_tx = documents_tx;
            run(
                Setup {
                    config,
                    telemetry: Telemetry::Subscribed,
                    metrics: Arc::default(),
                    client: ClientCell::default(),
                    enricher: None,
                },
                Inputs {
                    lifecycle,
                    documents,
                    telemetry,
                    drain,
                },
            )
            .await;
        });
        (lifecycle_tx, telemetry_tx)
    }

    #[tokio::test]
    async fn once_the_telemetry_listener_is_gone_no_invocation_waits_for_its_runtime_done() {
        let (lifecycle, telemetry) = start_loop();
        let deadline_ms = u64::try_from(epoch_now().as_millis()).unwrap() + 60_000;
        let invoke = NextEvent::Invoke(crate::lambda::events::Invoke {
            request_id: "r-1".into(),
            deadline_ms: Some(deadline_ms),
            trace_header: None,
        });
        let held = tokio::spawn(async move { forward(&lifecycle, invoke).await });
        // Held for its runtimeDone (a minute away from its deadline).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished());
        // The listener is closed for good: no runtimeDone can come.
        drop(telemetry);
        tokio::time::timeout(Duration::from_secs(1), held)
            .await
            .expect("still held for a runtimeDone that cannot come")
            .unwrap();
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

    #[test]
    fn a_wall_clock_jump_after_a_snapshot_restore_moves_no_deadline() {
        // Init: both clocks read together. The snapshot is taken; six hours later a copy is
        // restored: the monotonic clock goes on from where it stopped (2 s later here), the
        // wall clock jumps. An INVOKE's deadline (3 s away on the wall clock) must become 3 s
        // on the monotonic clock: each event converts with both clocks read at that moment.
        let init = Instant::now();
        let init_epoch = Duration::from_secs(1_795_605_001);
        let restored = init + Duration::from_secs(2);
        let restored_epoch = init_epoch + Duration::from_hours(6);
        let deadline_ms = u64::try_from((restored_epoch + Duration::from_secs(3)).as_millis())
            .expect("epoch milliseconds fit u64");
        assert_eq!(
            deadline_instant(deadline_ms, restored, restored_epoch),
            restored + Duration::from_secs(3)
        );
        // What an offset kept from init would give: a hold of six hours.
        let stale = deadline_instant(deadline_ms, init, init_epoch);
        assert!(stale.saturating_duration_since(restored) > Duration::from_secs(6 * 3_600 - 5));
    }
}
