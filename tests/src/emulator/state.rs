//! The emulator's shared state: one mutex-guarded [`State`] that the API handlers and the
//! lifecycle driver update, and a version counter that wakes every waiter on each change (so
//! waits are notifications with deadlines, never sleeps).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyper::body::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::config::{EmulatorConfig, InitializationType};
use super::telemetry::TelemetryHub;
use super::{DeliveredEvent, ExtensionInitTiming, InitRecord, ProcessExit};
use crate::clock::Clock;

/// Output lines kept per process name.
const OUTPUT_LINES_KEPT: usize = 5_000;
/// Events that may wait in a mailbox (one invoke or shutdown at a time in practice).
const MAILBOX_CAPACITY: usize = 8;

/// Where the environment is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No environment: the next invoke initializes one.
    Uninitialized,
    /// Init in progress.
    Initializing,
    /// Initialized and frozen between invokes.
    Ready,
    /// An invoke in progress.
    Invoking,
    /// Shutting down (spindown, or a reset after a timeout or crash).
    Resetting,
}

/// An invoke as handed to the runtime by `/runtime/invocation/next`.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeInvoke {
    pub request_id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub payload: Bytes,
    pub trace_header: Option<String>,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    /// `Lambda-Runtime-Aws-Tenant-Id` (tenant isolation).
    pub tenant_id: Option<String>,
}

/// An event for `/extension/event/next`.
#[derive(Debug, Clone)]
pub(crate) struct ExtensionEvent {
    pub body: Value,
}

/// A queue that a long-polling `next` handler takes from.
pub(crate) struct Mailbox<T> {
    pub sender: mpsc::Sender<T>,
    pub receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>,
    /// `next` calls currently blocked.
    pub waiting: u32,
    /// `next` calls made.
    pub next_calls: u64,
    pub first_next_at: Option<Instant>,
    pub last_next_at: Option<Instant>,
}

impl<T> Mailbox<T> {
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::channel(MAILBOX_CAPACITY);
        Self {
            sender,
            receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: 0,
            next_calls: 0,
            first_next_at: None,
            last_next_at: None,
        }
    }

    pub fn note_next(&mut self, at: Instant) {
        self.waiting += 1;
        self.next_calls += 1;
        self.first_next_at.get_or_insert(at);
        self.last_next_at = Some(at);
    }
}

/// A registered extension.
pub(crate) struct ExtensionState {
    pub id: String,
    pub name: String,
    /// Launched (or attached) by the emulator, as opposed to registered from inside the runtime.
    pub external: bool,
    pub events: Vec<String>,
    pub registered_at: Instant,
    pub mailbox: Mailbox<ExtensionEvent>,
    pub delivered: Vec<DeliveredEvent>,
}

impl ExtensionState {
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// Progress of the init in flight.
pub(crate) struct InitProgress {
    pub init_type: InitializationType,
    pub phase_label: &'static str,
    pub started_at: Instant,
    pub runtime_spawned_at: Option<Instant>,
    pub runtime_ready_at: Option<Instant>,
    pub spawned: BTreeMap<String, Instant>,
    /// `platform.initRuntimeDone` was emitted.
    pub runtime_done_emitted: bool,
    /// `(errorType, message)`, set by `/runtime/init/error` or `/extension/init/error`.
    pub failure: Option<(String, String)>,
}

/// The runtime's answer to an invoke.
#[derive(Debug, Clone)]
pub(crate) enum RuntimeAnswer {
    Response(Bytes),
    Error {
        error_type: Option<String>,
        body: Bytes,
        xray_cause: Option<String>,
    },
}

/// Progress of the invoke in flight.
pub(crate) struct InvocationProgress {
    pub request_id: String,
    pub started_at: Instant,
    pub trace_header: Option<String>,
    pub tracing: Option<Value>,
    pub runtime_received_at: Option<Instant>,
    pub answer: Option<(RuntimeAnswer, super::records::ResponseTiming)>,
    /// The response was streamed.
    pub streamed: bool,
    pub runtime_done_at: Option<Instant>,
    /// Extensions sent INVOKE, by id → name.
    pub expected: BTreeMap<String, String>,
    /// Extensions whose INVOKE was taken, by id.
    pub taken: BTreeMap<String, Instant>,
    /// Extensions that called next after taking INVOKE, by id.
    pub next_after: BTreeMap<String, Instant>,
    /// The invocation's tenant (tenant isolation).
    pub tenant_id: Option<String>,
}

impl InvocationProgress {
    pub fn finished(&self) -> bool {
        self.runtime_done_at.is_some()
            && self
                .expected
                .keys()
                .all(|id| self.next_after.contains_key(id))
    }
}

/// A child process's status.
#[derive(Debug, Clone)]
pub(crate) struct ProcessStatus {
    pub exit: Option<ProcessExit>,
}

/// A report posted to `/extension/{init,exit}/error` or `/runtime/init/error`.
#[derive(Debug, Clone)]
pub struct ApiErrorReport {
    /// `extension:<name>` or `runtime`.
    pub source: String,
    /// `init`, `exit`, or `restore`.
    pub kind: &'static str,
    /// The error-type header.
    pub error_type: Option<String>,
    /// The body.
    pub body: Value,
    /// When it was posted.
    pub at: Instant,
}

/// Everything that changes.
pub(crate) struct State {
    pub generation: u64,
    pub phase: Phase,
    /// Tenant isolation: the tenant this environment serves.
    pub tenant: Option<String>,
    pub instance_id: String,
    pub init: Option<InitProgress>,
    /// Names of the external extensions of this generation (launched or attached).
    pub external_names: Vec<String>,
    pub extensions: Vec<ExtensionState>,
    pub runtime: Mailbox<RuntimeInvoke>,
    pub invocation: Option<InvocationProgress>,
    pub processes: HashMap<u64, ProcessStatus>,
    pub api_errors: Vec<ApiErrorReport>,
    pub inits: Vec<InitRecord>,
    /// Every event delivered to an extension, by extension name, across generations.
    pub delivered_log: Vec<(String, DeliveredEvent)>,
    pub last_init_failed: bool,
    /// While a SnapStart snapshot is created, its platform records are kept here (delivered,
    /// stale, after the restore) instead of being emitted.
    pub snapshot_records: Option<Vec<HeldRecord>>,
    /// SnapStart: this generation was restored (`/runtime/restore/next` returns).
    pub restored: bool,
    /// Lambda Managed Instances: the invocations in flight, by request id, and for each the
    /// `platform.start` held back until its report (report before start).
    pub concurrent: BTreeMap<String, (InvocationProgress, Option<Value>)>,
}

/// A platform record kept back from delivery.
#[derive(Debug, Clone)]
pub(crate) struct HeldRecord {
    pub at: Instant,
    pub event_type: String,
    pub record: Value,
}

impl State {
    fn new() -> Self {
        Self {
            generation: 0,
            phase: Phase::Uninitialized,
            tenant: None,
            instance_id: String::new(),
            init: None,
            external_names: Vec::new(),
            extensions: Vec::new(),
            runtime: Mailbox::new(),
            invocation: None,
            processes: HashMap::new(),
            api_errors: Vec::new(),
            inits: Vec::new(),
            delivered_log: Vec::new(),
            last_init_failed: false,
            snapshot_records: None,
            restored: false,
            concurrent: BTreeMap::new(),
        }
    }

    /// Starts a new generation: fresh mailboxes, no extensions.
    pub fn begin_generation(&mut self, instance_id: String) -> u64 {
        self.generation += 1;
        self.instance_id = instance_id;
        self.extensions.clear();
        self.external_names.clear();
        self.runtime = Mailbox::new();
        self.invocation = None;
        self.restored = false;
        self.concurrent.clear();
        self.generation
    }

    pub fn extension(&self, id: &str) -> Option<&ExtensionState> {
        self.extensions.iter().find(|e| e.id == id)
    }

    pub fn extension_mut(&mut self, id: &str) -> Option<&mut ExtensionState> {
        self.extensions.iter_mut().find(|e| e.id == id)
    }

    pub fn process_exit(&self, id: u64) -> Option<&ProcessExit> {
        self.processes.get(&id).and_then(|p| p.exit.as_ref())
    }

    /// Per-extension init timings of the init in flight.
    pub fn extension_init_timings(&self) -> Vec<ExtensionInitTiming> {
        let Some(init) = &self.init else {
            return Vec::new();
        };
        let mut names: Vec<String> = self.external_names.clone();
        for ext in &self.extensions {
            if !names.contains(&ext.name) {
                names.push(ext.name.clone());
            }
        }
        names
            .into_iter()
            .map(|name| {
                let ext = self.extensions.iter().find(|e| e.name == name);
                ExtensionInitTiming {
                    spawned_at: init.spawned.get(&name).copied(),
                    registered_at: ext.map(|e| e.registered_at),
                    first_next_at: ext.and_then(|e| e.mailbox.first_next_at),
                    external: ext.is_none_or(|e| e.external),
                    name,
                }
            })
            .collect()
    }
}

/// State plus its change notifications, the telemetry hub, and captured output.
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub clock: Clock,
    pub api_addr: SocketAddr,
    pub telemetry: Arc<TelemetryHub>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    output: Mutex<HashMap<String, VecDeque<String>>>,
    event_deviation: DeviationSlot,
}

/// Changes JSON on its way to an extension, as a Lambda that departs from the documented shapes
/// would send it; what the emulator records stays as documented.
pub type Deviation = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// Changes each Extensions API event on its way to an extension (see [`Deviation`]).
pub type EventDeviation = Deviation;

/// Holds the [`Deviation`] in force, if any.
#[derive(Default)]
pub(crate) struct DeviationSlot(Mutex<Option<Deviation>>);

impl DeviationSlot {
    /// Sets (or with `None` removes) the deviation applied from now on.
    pub fn set(&self, deviation: Option<Deviation>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = deviation;
    }

    /// `wire`, deviated when a deviation is set.
    pub fn apply(&self, mut wire: Value) -> Value {
        let deviation = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(deviate) = deviation {
            deviate(&mut wire);
        }
        wire
    }
}

impl Shared {
    pub fn new(config: EmulatorConfig, api_addr: SocketAddr) -> Self {
        let clock = Clock::new();
        Self {
            config,
            clock,
            api_addr,
            telemetry: Arc::new(TelemetryHub::new(clock)),
            state: Mutex::new(State::new()),
            changed: watch::Sender::new(0),
            output: Mutex::new(HashMap::new()),
            event_deviation: DeviationSlot::default(),
        }
    }

    /// Sets (or with `None` removes) the deviation applied to events from now on.
    pub fn set_event_deviation(&self, deviation: Option<EventDeviation>) {
        self.event_deviation.set(deviation);
    }

    /// `event` as delivered: deviated when a deviation is set.
    pub fn delivered_event(&self, event: &Value) -> Value {
        self.event_deviation.apply(event.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Handlers never panic while holding the lock by design; if one did, the state is still
        // the best record of what happened, so keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        result
    }

    /// Waits until `check` returns `Some`, re-checking after every change; `None` at `deadline`.
    pub async fn wait_until<R>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&State) -> Option<R>,
    ) -> Option<R> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            changes.mark_unchanged();
            if let Some(result) = check(&self.lock()) {
                return Some(result);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Emits a platform (or log) record for the generation in `state`; keeps it back instead
    /// while a SnapStart snapshot is being created.
    pub fn emit(&self, state: &mut State, at: Instant, event_type: &str, record: Value) {
        if let Some(held) = state.snapshot_records.as_mut() {
            held.push(HeldRecord {
                at,
                event_type: event_type.to_owned(),
                record,
            });
            return;
        }
        self.telemetry
            .emit(state.generation, at, event_type, record);
    }

    pub fn push_output(&self, name: &str, line: String) {
        {
            let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
            let lines = output.entry(name.to_owned()).or_default();
            if lines.len() == OUTPUT_LINES_KEPT {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        // Wakes waiters on output lines too.
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Waits until a line of `name`'s output contains `needle`; `false` at `deadline`.
    pub async fn wait_for_output(&self, name: &str, needle: &str, deadline: Instant) -> bool {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            changes.mark_unchanged();
            if self.output(name).iter().any(|l| l.contains(needle)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    pub fn output(&self, name: &str) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}
