//! The supervisor: one owner for every long-lived task, so that none ends silently.
//!
//! Every task runs in one [`JoinSet`] under a name ([`Task`]). When one ends or panics, the
//! supervisor logs it once, at error level, with the panic's message and location and the
//! counters, and the extension degrades on purpose, as the task's [`Task::backoff`] says: a
//! receiver (UDP reader, OTLP/HTTP receiver, telemetry listener), the event loop and the metrics
//! timer are started again after a pause that doubles (a bounded number of times in a window;
//! their sockets stay bound in between, so what arrives meanwhile waits in the kernel), or
//! closed with that one line. The lifecycle loop keeps its state through a panic itself (it
//! catches the unwind around each step, see `app`); should it still end, the receivers, which
//! feed only it, are closed with it and the event loop goes on releasing every invocation.
//!
//! The end of the event loop (SHUTDOWN handled) or of the SIGTERM handler ends the run.
//!
//! Panics: [`install_panic_hook`] keeps the message and location of a panic inside a
//! supervised task for that one line, instead of Rust's default message on stderr (several
//! lines, not in the function's log format). Panics anywhere else go to the previous hook.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::Duration;

use tokio::task::{AbortHandle, Id, JoinSet};
use tokio::time::Instant;

use crate::metrics::{self, Metrics};

/// Failures further apart than this do not add up: the count of restarts starts again.
pub const RESTART_WINDOW: Duration = Duration::from_mins(10);

/// A supervised task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// `/event/next` calls, each event handed to the lifecycle loop.
    EventLoop,
    /// SIGTERM, handled as a SHUTDOWN.
    Sigterm,
    /// The lifecycle loop: flush points, enrichment, the exporter.
    Lifecycle,
    /// The UDP reader.
    UdpReader,
    /// The OTLP/HTTP receiver (its connections included).
    OtlpReceiver,
    /// The Telemetry API listener (its connections included).
    TelemetryListener,
    /// The periodic EMF metrics lines.
    MetricsTimer,
    /// A send to X-Ray (owned by the exporter, which settles it).
    Send,
    /// The export backends' client warm-up (owned by the exporter, which reaps it).
    WarmUp,
}

/// How a task is started again after it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause before the first restart.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
    /// Restarts allowed within [`RESTART_WINDOW`]; the failure after them closes the task.
    pub restarts: u32,
}

/// Receivers and timers: 100 ms doubling to 5 s, five times.
const RECEIVER_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
    restarts: 5,
};

/// The event loop: it must call `/event/next` again quickly, or the function waits.
const EVENT_LOOP_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(10),
    max: Duration::from_secs(1),
    restarts: 20,
};

impl Task {
    /// The task's name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventLoop => "event_loop",
            Self::Sigterm => "sigterm",
            Self::Lifecycle => "lifecycle",
            Self::UdpReader => "udp_reader",
            Self::OtlpReceiver => "otlp_receiver",
            Self::TelemetryListener => "telemetry_listener",
            Self::MetricsTimer => "metrics_timer",
            Self::Send => "send",
            Self::WarmUp => "warm_up",
        }
    }

    /// How it is started again; `None`: never (its end is final).
    pub fn backoff(self) -> Option<Backoff> {
        match self {
            Self::EventLoop => Some(EVENT_LOOP_BACKOFF),
            Self::Sigterm
            | Self::UdpReader
            | Self::OtlpReceiver
            | Self::TelemetryListener
            | Self::MetricsTimer => Some(RECEIVER_BACKOFF),
            Self::Lifecycle | Self::Send | Self::WarmUp => None,
        }
    }

    /// Whether its normal end ends the run (SHUTDOWN or SIGTERM handled).
    fn ends_run(self) -> bool {
        matches!(self, Self::EventLoop | Self::Sigterm)
    }

    /// Whether it only feeds the lifecycle loop (pointless without it).
    fn feeds_lifecycle(self) -> bool {
        matches!(
            self,
            Self::UdpReader | Self::OtlpReceiver | Self::TelemetryListener
        )
    }

    /// What its restart means, for the one error line.
    fn while_restarting(self) -> &'static str {
        match self {
            Self::EventLoop => "the function waits for our next /event/next until then",
            Self::Sigterm => "SIGTERM is not handled until then",
            Self::Lifecycle | Self::Send | Self::WarmUp => "",
            Self::UdpReader => {
                "datagrams wait in the socket until then (the kernel drops them once it is full)"
            }
            Self::OtlpReceiver => {
                "its connections were closed (the SDKs retry); new ones wait until then"
            }
            Self::TelemetryListener => "Lambda retries its telemetry deliveries until then",
            Self::MetricsTimer => "no periodic metrics line until then",
        }
    }

    /// What its closing means, for the one error line.
    pub fn once_closed(self) -> &'static str {
        match self {
            Self::EventLoop => "nothing calls /event/next: the extension exits",
            Self::Sigterm => "SIGTERM is no longer handled",
            Self::Lifecycle => {
                "invocations are released at once; nothing more is enriched or sent; the receivers are closed"
            }
            Self::UdpReader => "no more X-Ray SDK documents are received",
            Self::OtlpReceiver => "its port is closed: OTLP/HTTP exporters no longer reach X-Ray",
            Self::TelemetryListener => {
                "no more telemetry: no enrichment, and invocations are no longer held (sent in the background)"
            }
            Self::MetricsTimer => "no periodic metrics line (the one at SHUTDOWN is still written)",
            Self::Send => "its documents X-Ray had not taken are lost (send_failed)",
            Self::WarmUp => "the first send prepares the client itself",
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the task again after this pause.
    Restart(Duration),
    /// Leave it closed.
    Close,
}

/// A task's failures: how many in the current window, and the last one. Pure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    count: u32,
    last: Option<Instant>,
}

impl Failures {
    /// Records a failure at `now` and decides: restart after a pause doubling from
    /// `backoff.first` (at most `backoff.max`), or close once `backoff.restarts` restarts were
    /// made within [`RESTART_WINDOW`] of each other.
    pub fn record(&mut self, backoff: Backoff, now: Instant) -> Decision {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) > RESTART_WINDOW)
        {
            self.count = 0;
        }
        self.last = Some(now);
        self.count = self.count.saturating_add(1);
        if self.count > backoff.restarts {
            return Decision::Close;
        }
        let doublings = (self.count - 1).min(31);
        Decision::Restart(
            backoff
                .first
                .saturating_mul(1_u32 << doublings)
                .min(backoff.max),
        )
    }
}

/// How a task ended.
#[derive(Debug)]
pub enum Ending {
    /// It returned.
    Returned,
    /// It panicked.
    Panicked(Panic),
}

/// A panic's message and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    /// The panic's message.
    pub message: String,
    /// `file:line`, when known.
    pub location: String,
}

impl Panic {
    /// The panic `task` last recorded (through the hook), else what `payload` says.
    pub fn of(task: Task, payload: &(dyn Any + Send)) -> Self {
        take_recorded(task).unwrap_or_else(|| Self {
            message: payload_message(payload),
            location: String::new(),
        })
    }
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

tokio::task_local! {
    /// The supervised task a future belongs to (its connections included).
    static CURRENT: Task;
}

/// Panics recorded by the hook, the last one per task.
static RECORDED: Mutex<Vec<(Task, Panic)>> = Mutex::new(Vec::new());

fn take_recorded(task: Task) -> Option<Panic> {
    let mut recorded = RECORDED.lock().unwrap_or_else(PoisonError::into_inner);
    let i = recorded.iter().position(|(t, _)| *t == task)?;
    Some(recorded.swap_remove(i).1)
}

/// Installs (once) the panic hook that keeps the panics of supervised tasks for their one log
/// line; any other panic goes to the hook installed before.
pub fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let Ok(task) = CURRENT.try_with(|t| *t) else {
                previous(info);
                return;
            };
            let panic = Panic {
                message: info.payload_as_str().unwrap_or("(no message)").to_owned(),
                location: info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default(),
            };
            let mut recorded = RECORDED.lock().unwrap_or_else(PoisonError::into_inner);
            recorded.retain(|(t, _)| *t != task);
            recorded.push((task, panic));
        }));
    });
}

/// `future` as (part of) `task`: its panics are recorded for that task's line. For a task
/// owned elsewhere than in the supervisor (a send, owned by the exporter).
pub fn scope<F: Future>(task: Task, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(task, future)
}

/// `future`, as part of the supervised task it is created in (a receiver's connection): its
/// panics are recorded for that task's line. Outside any, `future` as it is.
pub fn in_current_task<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let task = CURRENT.try_with(|t| *t).ok();
    async move {
        match task {
            Some(task) => CURRENT.scope(task, future).await,
            None => future.await,
        }
    }
}

/// [`log_ending`] for `task`'s panic, caught where it ran (its payload in hand).
pub fn log_panic(
    metrics: &Metrics,
    task: Task,
    payload: &(dyn Any + Send),
    next: &str,
    effect: &str,
) {
    let panic = Panic::of(task, payload);
    log_ending(metrics, task, &Ending::Panicked(panic), next, effect);
}

/// The one error line for a task that ended: its name, how, what happens next and what that
/// means, and the counters.
pub fn log_ending(metrics: &Metrics, task: Task, ending: &Ending, next: &str, effect: &str) {
    metrics::add(&metrics.task_failures, 1);
    let (how, message, location) = match ending {
        Ending::Returned => ("returned", "", ""),
        Ending::Panicked(p) => ("panicked", p.message.as_str(), p.location.as_str()),
    };
    crate::log_counters!(
        ERROR,
        metrics,
        task = task.as_str(),
        ended = how,
        panic = message,
        location,
        next,
        effect,
        "task stopped"
    );
}

type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Factory = Box<dyn FnMut() -> TaskFuture + Send>;

struct Entry {
    task: Task,
    /// Starts it again; `None` once it is closed, or when it cannot be.
    factory: Option<Factory>,
    failures: Failures,
    abort: AbortHandle,
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// The event loop failed more often than it may be restarted: nothing calls `/event/next`.
    #[error("the event loop failed too often")]
    EventLoopClosed,
}

/// Owns every task (see the module documentation).
pub struct Supervisor {
    set: JoinSet<()>,
    entries: HashMap<Id, Entry>,
    metrics: Arc<Metrics>,
    /// The lifecycle loop finished the shutdown: tasks ending now are not failures.
    stopping: bool,
}

impl Supervisor {
    /// A supervisor with no task yet; ended tasks are logged with `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            set: JoinSet::new(),
            entries: HashMap::new(),
            metrics,
            stopping: false,
        }
    }

    /// Runs `task`, started again by `factory` after a failure (as [`Task::backoff`] says).
    pub fn spawn<F, Fut>(&mut self, task: Task, mut factory: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut factory: Factory = Box::new(move || Box::pin(factory()));
        let first = factory();
        let restartable = task.backoff().is_some();
        self.start(
            task,
            first,
            restartable.then_some(factory),
            Failures::default(),
        );
    }

    /// Runs `task` once: its end is final (the lifecycle loop, which owns its inputs).
    pub fn spawn_once<Fut>(&mut self, task: Task, future: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start(task, Box::pin(future), None, Failures::default());
    }

    fn start(
        &mut self,
        task: Task,
        future: TaskFuture,
        factory: Option<Factory>,
        failures: Failures,
    ) {
        let abort = self.set.spawn(CURRENT.scope(task, future));
        self.entries.insert(
            abort.id(),
            Entry {
                task,
                factory,
                failures,
                abort,
            },
        );
    }

    /// Supervises until the event loop (or the SIGTERM handler) has handled the shutdown.
    pub async fn run(mut self) -> Result<(), SupervisorError> {
        while let Some(joined) = self.set.join_next_with_id().await {
            let (id, ending) = match joined {
                Ok((id, ())) => (id, Ending::Returned),
                Err(e) if e.is_panic() => {
                    let id = e.id();
                    let task = self.entries.get(&id).map(|e| e.task);
                    let payload = e.into_panic();
                    let panic = match task {
                        Some(task) => Panic::of(task, payload.as_ref()),
                        None => Panic {
                            message: payload_message(payload.as_ref()),
                            location: String::new(),
                        },
                    };
                    (id, Ending::Panicked(panic))
                }
                // Aborted by us.
                Err(e) => {
                    self.entries.remove(&e.id());
                    continue;
                }
            };
            let Some(entry) = self.entries.remove(&id) else {
                continue;
            };
            if entry.task.ends_run() && matches!(ending, Ending::Returned) {
                return Ok(());
            }
            if entry.task == Task::Lifecycle && matches!(ending, Ending::Returned) {
                // The shutdown is over; the receivers may now see their channels close.
                self.stopping = true;
                continue;
            }
            if self.stopping {
                continue;
            }
            self.on_failure(entry, &ending)?;
        }
        Ok(())
    }

    fn on_failure(&mut self, mut entry: Entry, ending: &Ending) -> Result<(), SupervisorError> {
        let decision = match (entry.task.backoff(), entry.factory.is_some()) {
            (Some(backoff), true) => entry.failures.record(backoff, Instant::now()),
            _ => Decision::Close,
        };
        if let (Decision::Restart(pause), Some(mut factory)) = (decision, entry.factory.take()) {
            let next = format!("starting it again in {} ms", pause.as_millis());
            let effect = entry.task.while_restarting();
            log_ending(&self.metrics, entry.task, ending, &next, effect);
            let future = factory();
            let delayed: TaskFuture = Box::pin(async move {
                tokio::time::sleep(pause).await;
                future.await;
            });
            self.start(entry.task, delayed, Some(factory), entry.failures);
            return Ok(());
        }
        let effect = entry.task.once_closed();
        log_ending(&self.metrics, entry.task, ending, "closed for good", effect);
        match entry.task {
            Task::EventLoop => return Err(SupervisorError::EventLoopClosed),
            Task::Lifecycle => self.close_receivers(),
            _ => {}
        }
        Ok(())
    }

    /// The lifecycle loop is gone: what only fed it is closed (sockets released) without a
    /// line each.
    fn close_receivers(&mut self) {
        for entry in self.entries.values_mut() {
            if entry.task.feeds_lifecycle() {
                entry.factory = None;
                entry.abort.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests;
