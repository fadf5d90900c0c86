//! The Telemetry API (contracts §2): the record log, and delivery to each subscriber with its
//! buffering, in order, retried with a capped backoff (the subscription's validation is in
//! [`super::subscription`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::api::api_error;
use super::config::MANAGED_INSTANCES_SCHEMA;
use super::extensions_api::identify;
use super::records;
use super::state::{Deviation, DeviationSlot, Phase, Shared};
use super::subscription::{
    MANAGED_INSTANCES_HOSTS, SANDBOX_HOST, Subscription, parse_subscription_for,
};
use crate::clock::Clock;
use crate::http::{Request, Response, body, bytes_response, json_response, request, send};

/// Records queued for one subscriber before new ones are dropped (and counted).
const SUBSCRIBER_QUEUE: usize = 20_000;
/// Delivery attempts per batch before it is dropped.
const DELIVERY_ATTEMPTS: u32 = 12;
/// First retry delay; doubles up to [`RETRY_DELAY_MAX`].
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(20);
/// Cap of the retry delay.
const RETRY_DELAY_MAX: Duration = Duration::from_millis(500);
/// Limit of one delivery POST.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Changes records on their way to subscribers, as a Lambda that departs from the documented
/// shapes would send them (the log keeps them as documented): called with each record's wire
/// form `{"time","type","record"}`; may change anything in it.
pub type RecordDeviation = Deviation;

/// One telemetry event as Lambda sends it: `{"time","type","record"}`.
#[derive(Debug, Clone)]
pub struct TelemetryEvent {
    /// The environment generation (incremented by every init) it belongs to.
    pub generation: u64,
    /// When it happened.
    pub at: Instant,
    /// `time`: ISO-8601 UTC with milliseconds.
    pub time: String,
    /// `type`: `platform.start`, `function`, …
    pub event_type: String,
    /// `record`.
    pub record: Value,
}

impl TelemetryEvent {
    /// The wire form.
    pub fn to_json(&self) -> Value {
        json!({"time": self.time, "type": self.event_type, "record": self.record})
    }

    /// `record.requestId`, when present.
    pub fn request_id(&self) -> Option<&str> {
        self.record.get("requestId").and_then(Value::as_str)
    }
}

/// One delivery attempt to a subscriber.
#[derive(Debug, Clone)]
pub struct TelemetryDelivery {
    /// The subscribing extension's name.
    pub extension: String,
    /// When the attempt finished.
    pub at: Instant,
    /// 1 for the first attempt of a batch.
    pub attempt: u32,
    /// The batch, as sent.
    pub events: Vec<Value>,
    /// The status answered, or why nothing was.
    pub outcome: Result<u16, String>,
}

impl TelemetryDelivery {
    /// Whether the subscriber answered 2xx.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Ok(status) if (200..300).contains(&status))
    }
}

/// A subscription that was accepted.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    /// The extension's name.
    pub extension: String,
    /// The generation it belongs to.
    pub generation: u64,
    /// When it was accepted.
    pub at: Instant,
    /// Whether it came during init (Lambda accepts subscriptions during init only).
    pub during_init: bool,
    /// The request.
    pub subscription: Subscription,
}

struct Subscriber {
    generation: u64,
    extension: String,
    subscription: Subscription,
    queue: mpsc::Sender<Value>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct HubState {
    log: Vec<TelemetryEvent>,
    subscribers: Vec<Subscriber>,
    subscriptions: Vec<SubscriptionRecord>,
    deliveries: Vec<TelemetryDelivery>,
    dropped: u64,
}

/// The record log and the subscribers.
pub(crate) struct TelemetryHub {
    state: Mutex<HubState>,
    changed: watch::Sender<u64>,
    clock: Clock,
    deviation: DeviationSlot,
}

impl TelemetryHub {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            state: Mutex::new(HubState::default()),
            changed: watch::Sender::new(0),
            clock,
            deviation: DeviationSlot::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets (or with `None` removes) the deviation applied to records from now on.
    pub(crate) fn set_deviation(&self, deviation: Option<RecordDeviation>) {
        self.deviation.set(deviation);
    }

    /// The wire form of `event` as delivered: deviated when a deviation is set.
    fn delivered(&self, event: &TelemetryEvent) -> Value {
        self.deviation.apply(event.to_json())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Logs an event and queues it for every subscriber of `generation` that wants it.
    pub(crate) fn emit(&self, generation: u64, at: Instant, event_type: &str, record: Value) {
        self.emit_dated(generation, at, self.clock.iso8601(at), event_type, record);
    }

    /// Like [`TelemetryHub::emit`], with the record's `time` given: a stale record delivered
    /// now carries the time it happened.
    pub(crate) fn emit_dated(
        &self,
        generation: u64,
        at: Instant,
        time: String,
        event_type: &str,
        record: Value,
    ) {
        let event = TelemetryEvent {
            generation,
            at,
            time,
            event_type: event_type.to_owned(),
            record,
        };
        {
            let wire = self.delivered(&event);
            let mut state = self.state();
            let mut dropped = 0;
            for sub in &state.subscribers {
                if sub.generation == generation
                    && sub.subscription.wants(event_type)
                    && sub.queue.try_send(wire.clone()).is_err()
                {
                    dropped += 1;
                }
            }
            if dropped > 0 {
                if state.dropped == 0 {
                    tracing::warn!(
                        event_type,
                        "telemetry subscriber queue full; dropping records"
                    );
                }
                state.dropped += dropped;
            }
            state.log.push(event);
        }
        self.bump();
    }

    /// Adds a subscriber, queues the generation's earlier records it wants (Lambda delivers
    /// events from before the subscription after it), and starts its delivery task.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        generation: u64,
        extension: &str,
        subscription: Subscription,
        during_init: bool,
    ) {
        let (queue, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        {
            let mut state = self.state();
            // Re-subscribing replaces the extension's previous subscription.
            state.subscribers.retain(|s| {
                let replaced = s.generation == generation && s.extension == extension;
                if replaced {
                    s.task.abort();
                }
                !replaced
            });
            for event in &state.log {
                if event.generation == generation && subscription.wants(&event.event_type) {
                    let _ = queue.try_send(self.delivered(event));
                }
            }
            let task = tokio::spawn(deliver(
                Arc::clone(self),
                extension.to_owned(),
                subscription.clone(),
                receiver,
            ));
            state.subscriptions.push(SubscriptionRecord {
                extension: extension.to_owned(),
                generation,
                at: Instant::now(),
                during_init,
                subscription: subscription.clone(),
            });
            state.subscribers.push(Subscriber {
                generation,
                extension: extension.to_owned(),
                subscription,
                queue,
                task,
            });
        }
        self.bump();
    }

    /// Stops delivering to the subscribers of `generation` (their extensions have exited).
    pub(crate) fn close_generation(&self, generation: u64) {
        let mut state = self.state();
        state.subscribers.retain(|s| {
            if s.generation == generation {
                s.task.abort();
                false
            } else {
                true
            }
        });
    }

    pub(crate) fn log(&self) -> Vec<TelemetryEvent> {
        self.state().log.clone()
    }

    pub(crate) fn deliveries(&self) -> Vec<TelemetryDelivery> {
        self.state().deliveries.clone()
    }

    pub(crate) fn subscriptions(&self) -> Vec<SubscriptionRecord> {
        self.state().subscriptions.clone()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.state().dropped
    }

    fn record_delivery(&self, delivery: TelemetryDelivery) {
        self.state().deliveries.push(delivery);
        self.bump();
    }

    /// Waits until `check` over the log and the deliveries returns `Some`, woken by each change.
    pub(crate) async fn wait_until<R>(
        &self,
        deadline: tokio::time::Instant,
        mut check: impl FnMut(&[TelemetryEvent], &[TelemetryDelivery]) -> Option<R>,
    ) -> Option<R> {
        let mut changes = self.changed.subscribe();
        loop {
            changes.mark_unchanged();
            {
                let state = self.state();
                if let Some(result) = check(&state.log, &state.deliveries) {
                    return Some(result);
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}

impl Drop for TelemetryHub {
    fn drop(&mut self) {
        for sub in &self.state().subscribers {
            sub.task.abort();
        }
    }
}

/// The delivery loop of one subscriber: buffer per its settings, then POST in order.
async fn deliver(
    hub: Arc<TelemetryHub>,
    extension: String,
    subscription: Subscription,
    mut receiver: mpsc::Receiver<Value>,
) {
    let max_items = usize::try_from(subscription.max_items).unwrap_or(usize::MAX);
    let max_bytes = usize::try_from(subscription.max_bytes).unwrap_or(usize::MAX);
    let mut batch: Vec<Value> = Vec::new();
    let mut batch_bytes = 0;
    let mut flush_at: Option<tokio::time::Instant> = None;
    loop {
        let timer = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next_event = receiver.recv() => {
                let Some(event) = next_event else {
                    post_batch(&hub, &extension, &subscription, std::mem::take(&mut batch)).await;
                    return;
                };
                let size = event.to_string().len();
                if !batch.is_empty() && batch_bytes + size > max_bytes {
                    post_batch(&hub, &extension, &subscription, std::mem::take(&mut batch)).await;
                    batch_bytes = 0;
                    flush_at = None;
                }
                batch.push(event);
                batch_bytes += size;
                flush_at.get_or_insert_with(|| tokio::time::Instant::now() + subscription.timeout);
                if batch.len() >= max_items || batch_bytes >= max_bytes {
                    post_batch(&hub, &extension, &subscription, std::mem::take(&mut batch)).await;
                    batch_bytes = 0;
                    flush_at = None;
                }
            }
            () = timer => {
                post_batch(&hub, &extension, &subscription, std::mem::take(&mut batch)).await;
                batch_bytes = 0;
                flush_at = None;
            }
        }
    }
}

async fn post_batch(
    hub: &TelemetryHub,
    extension: &str,
    subscription: &Subscription,
    batch: Vec<Value>,
) {
    if batch.is_empty() {
        return;
    }
    let payload = Value::Array(batch.clone()).to_string();
    let addr = subscription.destination();
    let mut delay = RETRY_DELAY_FIRST;
    for attempt in 1..=DELIVERY_ATTEMPTS {
        let outcome = match request(Method::POST, addr, &subscription.path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body(payload.clone()))
        {
            Ok(req) => send(addr, req, Some(DELIVERY_TIMEOUT))
                .await
                .map(|r| r.status.as_u16())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let ok = matches!(outcome, Ok(status) if StatusCode::from_u16(status).is_ok_and(|s| s.is_success()));
        hub.record_delivery(TelemetryDelivery {
            extension: extension.to_owned(),
            at: Instant::now(),
            attempt,
            events: batch.clone(),
            outcome,
        });
        if ok {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_DELAY_MAX);
    }
    tracing::warn!(
        extension,
        events = batch.len(),
        "telemetry batch dropped after retries"
    );
}

/// `PUT /2022-07-01/telemetry`.
pub(crate) fn subscribe(shared: &Shared, req: &Request) -> Response {
    if !shared.config.telemetry_supported {
        return json_response(
            StatusCode::ACCEPTED,
            &json!({"errorMessage": "Telemetry API is not supported", "errorType": "Telemetry.NotSupported"}),
        );
    }
    let (id, name) = match identify(shared, req) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let hosts: &[&str] = if shared.config.managed_instances {
        &MANAGED_INSTANCES_HOSTS
    } else {
        &[SANDBOX_HOST]
    };
    let subscription = match parse_subscription_for(&req.body, hosts) {
        Ok(subscription) => subscription,
        Err(message) => return api_error(StatusCode::BAD_REQUEST, "ValidationError", &message),
    };
    if shared.config.managed_instances && subscription.schema_version != MANAGED_INSTANCES_SCHEMA {
        return api_error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &format!(
                "schemaVersion {:?} is not supported on Lambda Managed Instances; use {MANAGED_INSTANCES_SCHEMA:?}",
                subscription.schema_version
            ),
        );
    }
    let now = Instant::now();
    shared.update(|s| {
        // Still this generation's extension: subscribe under the state lock so no record of
        // the generation can slip between the history replay and the live queue.
        if s.extension(&id).is_none() {
            return;
        }
        let during_init = s.phase == Phase::Initializing;
        let types = subscription.types.clone();
        shared
            .telemetry
            .subscribe(s.generation, &name, subscription.clone(), during_init);
        shared.telemetry.emit(
            s.generation,
            now,
            "platform.telemetrySubscription",
            records::telemetry_subscription(&name, &types),
        );
    });
    bytes_response(StatusCode::OK, "text/plain", "OK")
}
