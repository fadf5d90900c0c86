//! The Extensions API (`/2020-01-01/extension`, contracts §1).

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::DeliveredEvent;
use super::api::{accepted, api_error};
use super::config::MAX_EXTENSIONS;
use super::records;
use super::state::{ApiErrorReport, ExtensionState, Mailbox, Phase, Shared};
use crate::http::{Request, Response, json_response};
use crate::trace::new_uuid;

pub(crate) const IDENTIFIER_HEADER: &str = "Lambda-Extension-Identifier";
const NAME_HEADER: &str = "Lambda-Extension-Name";
const ACCEPT_FEATURE_HEADER: &str = "Lambda-Extension-Accept-Feature";
const ERROR_TYPE_HEADER: &str = "Lambda-Extension-Function-Error-Type";
const EVENT_IDENTIFIER_HEADER: &str = "Lambda-Extension-Event-Identifier";

fn forbidden(error_type: &str, message: &str) -> Response {
    api_error(StatusCode::FORBIDDEN, error_type, message)
}

/// The extension named by the identifier header, in the current generation: `(id, name)`.
pub(crate) fn identify(shared: &Shared, req: &Request) -> Result<(String, String), Box<Response>> {
    let Some(id) = req.header(IDENTIFIER_HEADER).filter(|v| !v.is_empty()) else {
        return Err(Box::new(forbidden(
            "Extension.MissingExtensionIdentifier",
            "Missing Lambda-Extension-Identifier header",
        )));
    };
    shared
        .read(|s| s.extension(id).map(|e| (e.id.clone(), e.name.clone())))
        .ok_or_else(|| {
            Box::new(forbidden(
                "Extension.UnknownExtensionIdentifier",
                &format!("Unknown extension {id}"),
            ))
        })
}

/// `POST /extension/register`.
pub(crate) fn register(shared: &Shared, req: &Request) -> Response {
    let name = req.header(NAME_HEADER).unwrap_or("").to_owned();
    if name.is_empty() {
        return forbidden("Extension.InvalidExtensionName", "Empty extension name");
    }
    let events = match parse_events(&req.body) {
        Ok(events) => events,
        Err(message) => return forbidden("InvalidRequestFormat", &message),
    };
    // Lambda Managed Instances accept SHUTDOWN only, with this exact answer (contracts §8).
    if shared.config.managed_instances && events.iter().any(|e| e == "INVOKE") {
        return forbidden(
            "Extension.InvalidEventType",
            "INVOKE: ErrorInvalidEventType",
        );
    }
    let wants_account = req
        .header(ACCEPT_FEATURE_HEADER)
        .is_some_and(|v| v.split(',').any(|f| f.trim() == "accountId"));
    let now = Instant::now();
    let registered = shared.update(|s| {
        if s.phase != Phase::Initializing {
            return Err((
                "Extension.RegistrationClosed",
                "Extension registration closed already".to_owned(),
            ));
        }
        // A name that matches no launched executable is an internal extension.
        let external = s.external_names.contains(&name);
        if let Some(bad) = events.iter().find(|e| *e != "INVOKE" && *e != "SHUTDOWN") {
            return Err((
                "Extension.InvalidEventType",
                format!("{bad}: unknown event"),
            ));
        }
        if !external && events.iter().any(|e| e == "SHUTDOWN") {
            return Err((
                "Extension.InvalidEventType",
                "SHUTDOWN: internal extensions cannot register for SHUTDOWN".to_owned(),
            ));
        }
        if s.extensions.iter().any(|e| e.name == name) {
            return Err((
                "Extension.InvalidExtensionState",
                "Extension with this name already registered".to_owned(),
            ));
        }
        if s.extensions.len() >= MAX_EXTENSIONS {
            return Err((
                "Extension.TooManyExtensions",
                format!("Extension limit ({MAX_EXTENSIONS}) reached"),
            ));
        }
        let id = new_uuid();
        s.extensions.push(ExtensionState {
            id: id.clone(),
            name: name.clone(),
            external,
            events: events.clone(),
            registered_at: now,
            mailbox: Mailbox::new(),
            delivered: Vec::new(),
        });
        shared.telemetry.emit(
            s.generation,
            now,
            "platform.extension",
            records::extension(&name, &events),
        );
        Ok(id)
    });
    let id = match registered {
        Ok(id) => id,
        Err((error_type, message)) => return forbidden(error_type, &message),
    };
    let config = &shared.config;
    let mut body = json!({
        "functionName": config.function_name,
        "functionVersion": config.function_version,
        "handler": config.handler(),
    });
    if wants_account {
        body["accountId"] = json!(config.account_id);
    }
    let mut response = json_response(StatusCode::OK, &body);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(IDENTIFIER_HEADER, value);
    }
    response
}

fn parse_events(body: &[u8]) -> Result<Vec<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if value
        .get("configurationKeys")
        .is_some_and(|k| k.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(
            "configurationKeys are deprecated; use environment variables instead".to_owned(),
        );
    }
    match value.get("events") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(events)) => events
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("event {e} is not a string"))
            })
            .collect(),
        Some(other) => Err(format!("events must be a list, not {other}")),
    }
}

/// Decrements the blocked-`next` count of an extension when its long-poll ends.
struct Waiting<'a> {
    shared: &'a Shared,
    generation: u64,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.update(|s| {
            if s.generation == self.generation
                && let Some(ext) = s.extension_mut(self.id)
            {
                ext.mailbox.waiting = ext.mailbox.waiting.saturating_sub(1);
            }
        });
    }
}

/// `GET /extension/event/next`: marks the extension done with its previous event, then blocks
/// until the next one.
pub(crate) async fn next(shared: Arc<Shared>, req: &Request) -> Response {
    let (id, name) = match identify(&shared, req) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let now = Instant::now();
    let Some((generation, receiver)) = shared.update(|s| {
        let generation = s.generation;
        let ext = s.extension_mut(&id)?;
        ext.mailbox.note_next(now);
        let receiver = Arc::clone(&ext.mailbox.receiver);
        if let Some(inv) = s.invocation.as_mut()
            && inv.taken.contains_key(&id)
        {
            inv.next_after.entry(id.clone()).or_insert(now);
        }
        Some((generation, receiver))
    }) else {
        return forbidden(
            "Extension.UnknownExtensionIdentifier",
            &format!("Unknown extension {id}"),
        );
    };
    let waiting = Waiting {
        shared: &shared,
        generation,
        id: &id,
    };
    let event = receiver.lock().await.recv().await;
    drop(waiting);
    let Some(event) = event else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Extension.EnvironmentReset",
            "the execution environment was reset",
        );
    };
    let taken_at = Instant::now();
    let delivered = DeliveredEvent {
        at: taken_at,
        event: event.body.clone(),
    };
    shared.update(|s| {
        if s.generation != generation {
            return;
        }
        if let Some(ext) = s.extension_mut(&id) {
            ext.delivered.push(delivered.clone());
        }
        s.delivered_log.push((name.clone(), delivered.clone()));
        let request_id = delivered.request_id();
        if let Some(inv) = s.invocation.as_mut()
            && delivered.event_type() == "INVOKE"
            && request_id == Some(inv.request_id.as_str())
        {
            inv.taken.insert(id.clone(), taken_at);
        }
    });
    let mut response = json_response(StatusCode::OK, &shared.delivered_event(&event.body));
    if let Ok(value) = HeaderValue::from_str(&new_uuid()) {
        response
            .headers_mut()
            .insert(EVENT_IDENTIFIER_HEADER, value);
    }
    response
}

/// `POST /extension/init/error` and `/extension/exit/error`: recorded; an init error fails the
/// init in flight. The extension is expected to exit afterwards.
pub(crate) fn report_error(shared: &Shared, req: &Request, kind: &'static str) -> Response {
    let (_, name) = match identify(shared, req) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Some(error_type) = req.header(ERROR_TYPE_HEADER).map(str::to_owned) else {
        return forbidden(
            "Extension.MissingHeader",
            "Missing Lambda-Extension-Function-Error-Type header",
        );
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let now = Instant::now();
    shared.update(|s| {
        s.api_errors.push(ApiErrorReport {
            source: format!("extension:{name}"),
            kind,
            error_type: Some(error_type.clone()),
            body,
            at: now,
        });
        if kind == "init"
            && s.phase == Phase::Initializing
            && let Some(init) = s.init.as_mut()
            && init.failure.is_none()
        {
            init.failure = Some((
                "Extension.InitError".to_owned(),
                format!("extension {name} reported {error_type}"),
            ));
        }
    });
    accepted()
}
