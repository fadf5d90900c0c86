//! The Extensions and Telemetry API calls: registration, `/event/next`, the Telemetry
//! subscription.
//!
//! We own all of them rather than use the `lambda-extension` crate's loop: registration is one
//! POST and `/event/next` one GET, and the crate's loop stops at the first event it cannot decode
//! (its listener also answers 400 to a whole telemetry batch with one unknown record type, which
//! Lambda then re-sends forever). Our loop decodes leniently and keeps going.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{Client, build_request};
use serde::Deserialize;
use tracing::{info, warn};

use super::events::{EventError, EventSet, NextEvent, parse_next_event};

/// Header carrying our identifier on every call after registration.
pub const EXTENSION_ID_HEADER: &str = "Lambda-Extension-Identifier";
/// Header naming us at registration (the file name in `/opt/extensions`).
pub const EXTENSION_NAME_HEADER: &str = "Lambda-Extension-Name";
/// Telemetry API schema we subscribe with first: required on Lambda Managed Instances and
/// backward compatible everywhere else (contracts §8).
pub const TELEMETRY_SCHEMA_VERSION: &str = "2025-01-29";
/// Telemetry API schema we fall back to when [`TELEMETRY_SCHEMA_VERSION`] is refused.
pub const TELEMETRY_SCHEMA_FALLBACK: &str = "2022-12-13";
/// Telemetry buffering: the smallest delay, because our flush waits for `platform.runtimeDone`.
pub const TELEMETRY_BUFFER_TIMEOUT_MS: u32 = 25;
/// Telemetry buffering: items per delivery.
pub const TELEMETRY_BUFFER_MAX_ITEMS: u32 = 1_000;
/// Telemetry buffering: bytes per delivery.
pub const TELEMETRY_BUFFER_MAX_BYTES: u32 = 262_144;
/// Deadline for the registration and subscription calls.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `/event/next` before calling it again.
pub const EVENT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Why a call to the Lambda APIs failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `AWS_LAMBDA_RUNTIME_API` is missing or not a host:port.
    #[error("AWS_LAMBDA_RUNTIME_API is not set to host:port")]
    NoRuntimeApi,
    /// The request could not be built or sent.
    #[error("request failed: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// An unexpected status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Registration succeeded without the identifier header.
    #[error("registration answered without {EXTENSION_ID_HEADER}")]
    NoIdentifier,
    /// `/event/next` answered with a body that is not an event we act on.
    #[error("event: {0}")]
    Event(#[from] EventError),
}

impl ApiError {
    /// Whether Lambda refused the request itself (4xx): retrying it unchanged is pointless.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Status { status, .. } if (400..500).contains(status))
    }
}

/// A successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `Lambda-Extension-Identifier`, sent on every later call.
    pub extension_id: String,
    /// `functionName` from the answer (empty when absent).
    pub function_name: String,
    /// What we are registered for.
    pub events: EventSet,
}

/// Result of the Telemetry API subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telemetry {
    /// Records will be POSTed to our listener (with the schema version accepted).
    Subscribed,
    /// The environment has no Telemetry API (AWS's local emulator answers 202
    /// `Telemetry.NotSupported`): no enrichment, flush on a timer and at shutdown.
    NotSupported,
}

/// A client for the Lambda APIs at `AWS_LAMBDA_RUNTIME_API`.
pub struct LambdaApi {
    client: Client,
}

impl LambdaApi {
    /// A client for `runtime_api` (`host:port`).
    pub fn new(runtime_api: &str) -> Result<Self, ApiError> {
        let uri: http::Uri = format!("http://{runtime_api}")
            .parse()
            .map_err(|_| ApiError::NoRuntimeApi)?;
        let client = Client::builder()
            .with_endpoint(uri)
            .build()
            .map_err(|e| ApiError::Transport(e.into()))?;
        Ok(Self { client })
    }

    async fn call(
        &self,
        req: Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, String), ApiError> {
        self.exchange(req, timeout)
            .await
            .map(|(status, _, body)| (status, body))
    }

    async fn exchange(
        &self,
        req: Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, http::HeaderMap, String), ApiError> {
        let exchange = async {
            let res = self.client.call(req).await.map_err(ApiError::Transport)?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ApiError::Transport(e.into()))?
                .to_bytes();
            Ok((
                parts.status,
                parts.headers,
                String::from_utf8_lossy(&body).into_owned(),
            ))
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| ApiError::Timeout(t))?,
            None => exchange.await,
        }
    }

    /// Registers for `events`: one POST, under [`API_CALL_TIMEOUT`].
    pub async fn register(&self, name: &str, events: EventSet) -> Result<Registration, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            function_name: Option<String>,
        }
        let body = serde_json::json!({ "events": events.names() });
        let req = build_request()
            .method(Method::POST)
            .uri("/2020-01-01/extension/register")
            .header(EXTENSION_NAME_HEADER, name)
            .header("Content-Type", "application/json")
            .body(Body::from(body.to_string()))
            .map_err(|e| ApiError::Transport(e.into()))?;
        let (status, headers, body) = self.exchange(req, Some(API_CALL_TIMEOUT)).await?;
        if !status.is_success() {
            return Err(ApiError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let extension_id = headers
            .get(EXTENSION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(ApiError::NoIdentifier)?
            .to_owned();
        let function_name = serde_json::from_str::<Answer>(&body)
            .ok()
            .and_then(|a| a.function_name)
            .unwrap_or_default();
        Ok(Registration {
            extension_id,
            function_name,
            events,
        })
    }

    /// Registers for `events`; when Lambda refuses `INVOKE` (a 4xx, as Lambda Managed Instances
    /// does), registers again for `SHUTDOWN` only rather than fail the environment.
    pub async fn register_or_fall_back(
        &self,
        name: &str,
        events: EventSet,
    ) -> Result<Registration, ApiError> {
        match self.register(name, events).await {
            Err(e) if e.is_refusal() && events == EventSet::InvokeAndShutdown => {
                warn!(error = %e, "registration for INVOKE refused: registering for SHUTDOWN only (no flush points; sending on a timer and at shutdown)");
                self.register(name, EventSet::ShutdownOnly).await
            }
            other => other,
        }
    }

    /// Waits for the next event (no timeout: the environment may stay frozen for hours inside
    /// this call).
    pub async fn next_event(&self, extension_id: &str) -> Result<NextEvent, ApiError> {
        let req = build_request()
            .method(Method::GET)
            .uri("/2020-01-01/extension/event/next")
            .header(EXTENSION_ID_HEADER, extension_id)
            .body(Body::empty())
            .map_err(|e| ApiError::Transport(e.into()))?;
        let (status, body) = self.call(req, None).await?;
        if !status.is_success() {
            return Err(ApiError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(parse_next_event(body.as_bytes())?)
    }

    /// Subscribes to `platform` telemetry, delivered to `sandbox.localdomain:<port>`, with
    /// [`TELEMETRY_SCHEMA_VERSION`], or with [`TELEMETRY_SCHEMA_FALLBACK`] when that is refused.
    pub async fn subscribe_telemetry(
        &self,
        extension_id: &str,
        port: u16,
    ) -> Result<Telemetry, ApiError> {
        match self
            .subscribe_with(extension_id, port, TELEMETRY_SCHEMA_VERSION)
            .await
        {
            Err(e) if e.is_refusal() => {
                info!(error = %e, schema = TELEMETRY_SCHEMA_VERSION, fallback = TELEMETRY_SCHEMA_FALLBACK, "Telemetry API schema refused; subscribing with the older one");
                self.subscribe_with(extension_id, port, TELEMETRY_SCHEMA_FALLBACK)
                    .await
            }
            other => other,
        }
    }

    async fn subscribe_with(
        &self,
        extension_id: &str,
        port: u16,
        schema: &str,
    ) -> Result<Telemetry, ApiError> {
        let req = telemetry_subscription(extension_id, port, schema)?;
        let (status, body) = self.call(req, Some(API_CALL_TIMEOUT)).await?;
        if status == StatusCode::ACCEPTED && body.contains("Telemetry.NotSupported") {
            return Ok(Telemetry::NotSupported);
        }
        if status.is_success() {
            return Ok(Telemetry::Subscribed);
        }
        Err(ApiError::Status {
            status: status.as_u16(),
            body,
        })
    }
}

/// Builds the Telemetry API subscription request (pure: sends nothing).
pub fn telemetry_subscription(
    extension_id: &str,
    port: u16,
    schema: &str,
) -> Result<Request<Body>, ApiError> {
    let body = serde_json::json!({
        "schemaVersion": schema,
        "types": ["platform"],
        "buffering": {
            "maxItems": TELEMETRY_BUFFER_MAX_ITEMS,
            "maxBytes": TELEMETRY_BUFFER_MAX_BYTES,
            "timeoutMs": TELEMETRY_BUFFER_TIMEOUT_MS,
        },
        "destination": {
            "protocol": "HTTP",
            "URI": format!("http://sandbox.localdomain:{port}/telemetry"),
        },
    });
    build_request()
        .method(Method::PUT)
        .uri("/2022-07-01/telemetry")
        .header(EXTENSION_ID_HEADER, extension_id)
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| ApiError::Transport(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscription_request_matches_the_contract() {
        let req = telemetry_subscription("ext-1", 4271, TELEMETRY_SCHEMA_VERSION).unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.uri().path(), "/2022-07-01/telemetry");
        assert_eq!(req.headers()[EXTENSION_ID_HEADER], "ext-1");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["schemaVersion"], "2025-01-29");
        assert_eq!(v["types"], serde_json::json!(["platform"]));
        assert_eq!(v["buffering"]["timeoutMs"], 25);
        assert_eq!(v["buffering"]["maxItems"], 1000);
        assert_eq!(v["buffering"]["maxBytes"], 262_144);
        assert_eq!(v["destination"]["protocol"], "HTTP");
        assert_eq!(
            v["destination"]["URI"],
            "http://sandbox.localdomain:4271/telemetry"
        );
    }

    #[test]
    fn only_a_4xx_is_a_refusal() {
        let status = |status| ApiError::Status {
            status,
            body: String::new(),
        };
        assert!(status(403).is_refusal());
        assert!(status(400).is_refusal());
        assert!(!status(500).is_refusal());
        assert!(!status(200).is_refusal());
        assert!(!ApiError::Timeout(API_CALL_TIMEOUT).is_refusal());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let transport = ApiError::Transport(reset.into());
        assert!(!transport.is_refusal());
        // The cause travels with the error, not only its text.
        let source = std::error::Error::source(&transport).unwrap();
        assert_eq!(
            source
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionReset)
        );
    }
}
