//! The Telemetry API (contracts §2): subscription validation, the record log, and delivery to
//! each subscriber with its buffering, in order, retried with a capped backoff.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Uri};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::api::api_error;
use super::config::MANAGED_INSTANCES_SCHEMA;
use super::extensions_api::identify;
use super::records;
use super::state::{Deviation, DeviationSlot, Phase, Shared};
use crate::clock::Clock;
use crate::http::{Request, Response, body, bytes_response, json_response, request, send};

/// Accepted `schemaVersion` values.
pub const SCHEMA_VERSIONS: [&str; 3] = ["2022-07-01", "2022-12-13", "2025-01-29"];
/// Accepted `types`.
pub const TELEMETRY_TYPES: [&str; 3] = ["platform", "function", "extension"];
/// The only destination host Lambda accepts.
pub const SANDBOX_HOST: &str = "sandbox.localdomain";
/// The destination hosts AWS's runtime core accepts on Lambda Managed Instances.
pub const MANAGED_INSTANCES_HOSTS: [&str; 2] = [SANDBOX_HOST, "sandbox"];
/// `buffering.timeoutMs` range and default.
pub const TIMEOUT_MS_RANGE: (u64, u64) = (25, 30_000);
/// See [`TIMEOUT_MS_RANGE`].
pub const TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// `buffering.maxBytes` range and default.
pub const MAX_BYTES_RANGE: (u64, u64) = (262_144, 1_048_576);
/// See [`MAX_BYTES_RANGE`].
pub const MAX_BYTES_DEFAULT: u64 = 262_144;
/// `buffering.maxItems` range and default.
pub const MAX_ITEMS_RANGE: (u64, u64) = (1_000, 10_000);
/// See [`MAX_ITEMS_RANGE`].
pub const MAX_ITEMS_DEFAULT: u64 = 10_000;

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

/// A validated subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `schemaVersion`.
    pub schema_version: String,
    /// `types`.
    pub types: Vec<String>,
    /// `buffering.timeoutMs`.
    pub timeout: Duration,
    /// `buffering.maxBytes`.
    pub max_bytes: u64,
    /// `buffering.maxItems`.
    pub max_items: u64,
    /// `destination.URI` as given.
    pub uri: String,
    /// The destination port (the name maps to loopback here).
    pub port: u16,
    /// The destination path and query.
    pub path: String,
}

impl Subscription {
    /// Whether records of `event_type` (`platform.start`, `function`, …) go to this subscriber.
    pub fn wants(&self, event_type: &str) -> bool {
        let category = event_type.split('.').next().unwrap_or(event_type);
        self.types.iter().any(|t| t == category)
    }

    /// Where deliveries go: `127.0.0.1:<port>`.
    pub fn destination(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// Validates a `PUT /2022-07-01/telemetry` body; the error is the `ValidationError` message.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, String> {
    parse_subscription_for(body, &[SANDBOX_HOST])
}

/// [`parse_subscription`] with the destination hosts accepted (Lambda Managed Instances also
/// take `sandbox`).
pub fn parse_subscription_for(body: &[u8], hosts: &[&str]) -> Result<Subscription, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let schema_version = value
        .get("schemaVersion")
        .and_then(Value::as_str)
        .ok_or("schemaVersion is required")?;
    if !SCHEMA_VERSIONS.contains(&schema_version) {
        return Err(format!(
            "schemaVersion {schema_version:?} is not one of {SCHEMA_VERSIONS:?}"
        ));
    }
    let types = value
        .get("types")
        .and_then(Value::as_array)
        .ok_or("types must be a list")?
        .iter()
        .map(|t| match t.as_str() {
            Some(t) if TELEMETRY_TYPES.contains(&t) => Ok(t.to_owned()),
            _ => Err(format!("type {t} is not one of {TELEMETRY_TYPES:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let buffering = value.get("buffering").cloned().unwrap_or(Value::Null);
    let field = |name: &str, (min, max): (u64, u64), default: u64| -> Result<u64, String> {
        match buffering.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!("buffering.{name} {v} is outside {min}..={max}")),
            },
        }
    };
    let timeout_ms = field("timeoutMs", TIMEOUT_MS_RANGE, TIMEOUT_MS_DEFAULT)?;
    let max_bytes = field("maxBytes", MAX_BYTES_RANGE, MAX_BYTES_DEFAULT)?;
    let max_items = field("maxItems", MAX_ITEMS_RANGE, MAX_ITEMS_DEFAULT)?;
    let destination = value.get("destination").ok_or("destination is required")?;
    let protocol = destination.get("protocol").and_then(Value::as_str);
    if protocol != Some("HTTP") {
        return Err(format!("destination.protocol {protocol:?} is not \"HTTP\""));
    }
    let uri_text = destination
        .get("URI")
        .and_then(Value::as_str)
        .ok_or("destination.URI is required")?;
    let uri: Uri = uri_text
        .parse()
        .map_err(|e| format!("destination.URI {uri_text:?} is invalid: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("destination.URI {uri_text:?} must use http"));
    }
    if !uri.host().is_some_and(|h| hosts.contains(&h)) {
        return Err(format!(
            "destination.URI host must be one of {hosts:?}, not {:?}",
            uri.host().unwrap_or("")
        ));
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Subscription {
        schema_version: schema_version.to_owned(),
        types,
        timeout: Duration::from_millis(timeout_ms),
        max_bytes,
        max_items,
        uri: uri_text.to_owned(),
        port: uri.port_u16().unwrap_or(80),
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path
        },
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &Value) -> Result<Subscription, String> {
        parse_subscription(value.to_string().as_bytes())
    }

    fn valid() -> Value {
        json!({
            "schemaVersion": "2022-12-13",
            "types": ["platform"],
            "buffering": {"maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25},
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/telemetry"},
        })
    }

    #[test]
    fn accepts_the_documented_subscription() {
        let sub = parse(&valid()).unwrap();
        assert_eq!(sub.port, 4243);
        assert_eq!(sub.path, "/telemetry");
        assert_eq!(sub.timeout, Duration::from_millis(25));
        assert!(sub.wants("platform.runtimeDone"));
        assert!(!sub.wants("function"));
    }

    #[test]
    fn buffering_defaults_apply_when_absent() {
        let mut body = valid();
        body.as_object_mut().unwrap().remove("buffering");
        let sub = parse(&body).unwrap();
        assert_eq!(sub.timeout, Duration::from_millis(TIMEOUT_MS_DEFAULT));
        assert_eq!(sub.max_items, MAX_ITEMS_DEFAULT);
    }

    #[test]
    fn rejects_out_of_range_and_unknown_values() {
        let cases = [
            ("/buffering/timeoutMs", json!(24)),
            ("/buffering/timeoutMs", json!(30_001)),
            ("/buffering/maxBytes", json!(262_143)),
            ("/buffering/maxItems", json!(10_001)),
            ("/schemaVersion", json!("2021-03-18")),
            ("/types", json!(["platform", "logs"])),
            ("/destination/protocol", json!("TCP")),
            ("/destination/URI", json!("http://localhost:4243/telemetry")),
            ("/destination/URI", json!("http://sandbox:4243")),
            (
                "/destination/URI",
                json!("https://sandbox.localdomain:4243"),
            ),
        ];
        for (pointer, bad) in cases {
            let mut body = valid();
            *body.pointer_mut(pointer).unwrap() = bad.clone();
            assert!(parse(&body).is_err(), "{pointer} = {bad} was accepted");
        }
    }

    #[test]
    fn managed_instances_also_take_the_host_sandbox() {
        let mut body = valid();
        body["destination"]["URI"] = json!("http://sandbox:4243/telemetry");
        let text = body.to_string();
        assert!(parse_subscription(text.as_bytes()).is_err());
        let sub = parse_subscription_for(text.as_bytes(), &MANAGED_INSTANCES_HOSTS).unwrap();
        assert_eq!(sub.port, 4243);
        body["destination"]["URI"] = json!("http://localhost:4243/telemetry");
        let text = body.to_string();
        assert!(parse_subscription_for(text.as_bytes(), &MANAGED_INSTANCES_HOSTS).is_err());
    }
}
