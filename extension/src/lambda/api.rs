//! The parts of the Extensions and Telemetry APIs we call ourselves.
//!
//! Registration and the event loop come from the `lambda-extension` crate. We own the Telemetry
//! subscription because the crate ties it to its own listener, which answers 400 to a whole batch
//! when one record has a type it does not know (Lambda then re-sends that batch forever) and
//! rebinds its socket on every connection; and we own an idle `/event/next` loop for when the
//! crate's loop fails, so the function never stalls because of us.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{Client, build_request};
use serde::Deserialize;
use tracing::{info, warn};

/// Header carrying our identifier on every call after registration.
pub const EXTENSION_ID_HEADER: &str = "Lambda-Extension-Identifier";
/// Telemetry API schema we speak.
pub const TELEMETRY_SCHEMA_VERSION: &str = "2022-12-13";
/// Telemetry buffering: the smallest delay, because our flush waits for `platform.runtimeDone`.
pub const TELEMETRY_BUFFER_TIMEOUT_MS: u32 = 25;
/// Telemetry buffering: items per delivery.
pub const TELEMETRY_BUFFER_MAX_ITEMS: u32 = 1_000;
/// Telemetry buffering: bytes per delivery.
pub const TELEMETRY_BUFFER_MAX_BYTES: u32 = 262_144;
/// Deadline for the subscription and error-report calls.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `/event/next` in the idle loop.
pub const IDLE_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Why a call to the Lambda APIs failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `AWS_LAMBDA_RUNTIME_API` is missing or not a host:port.
    #[error("AWS_LAMBDA_RUNTIME_API is not set to host:port")]
    NoRuntimeApi,
    /// The request could not be built or sent.
    #[error("request failed: {0}")]
    Transport(String),
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
}

/// Result of the Telemetry API subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telemetry {
    /// Records will be POSTed to our listener.
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
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        Ok(Self { client })
    }

    async fn call(
        &self,
        req: Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, String), ApiError> {
        let exchange = async {
            let res = self
                .client
                .call(req)
                .await
                .map_err(|e| ApiError::Transport(e.to_string()))?;
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiError::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| ApiError::Timeout(t))?,
            None => exchange.await,
        }
    }

    /// Subscribes to `platform` telemetry, delivered to `sandbox.localdomain:<port>`.
    pub async fn subscribe_telemetry(
        &self,
        extension_id: &str,
        port: u16,
    ) -> Result<Telemetry, ApiError> {
        let req = telemetry_subscription(extension_id, port)?;
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

    /// Reports a startup failure (`/extension/init/error`). The extension must exit afterwards.
    pub async fn init_error(
        &self,
        extension_id: &str,
        error_type: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let req = lambda_extension::requests::init_error(
            extension_id,
            error_type,
            Some(lambda_extension::requests::ErrorRequest {
                error_message: message,
                error_type,
                stack_trace: Vec::new(),
            }),
        )
        .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.call(req, Some(API_CALL_TIMEOUT)).await.map(|_| ())
    }

    /// Calls `/event/next` until SHUTDOWN arrives, doing nothing else: the fallback that keeps
    /// the function running when our own loop has failed. Returns at SHUTDOWN.
    pub async fn idle_until_shutdown(&self, extension_id: &str) {
        loop {
            let next = build_request()
                .method(Method::GET)
                .uri("/2020-01-01/extension/event/next")
                .header(EXTENSION_ID_HEADER, extension_id)
                .body(Body::empty());
            let Ok(next) = next else { return };
            // No timeout: the environment may stay frozen for hours inside this call.
            match self.call(next, None).await {
                Ok((status, body)) if status.is_success() => {
                    if event_type(&body).is_some_and(|t| t.eq_ignore_ascii_case("SHUTDOWN")) {
                        info!("SHUTDOWN received in idle mode");
                        return;
                    }
                }
                Ok((status, body)) => {
                    warn!(status = status.as_u16(), body = %body, "event/next failed in idle mode");
                    tokio::time::sleep(IDLE_RETRY_DELAY).await;
                }
                Err(e) => {
                    warn!(error = %e, "event/next failed in idle mode");
                    tokio::time::sleep(IDLE_RETRY_DELAY).await;
                }
            }
        }
    }
}

/// Builds the Telemetry API subscription request (pure: sends nothing).
pub fn telemetry_subscription(extension_id: &str, port: u16) -> Result<Request<Body>, ApiError> {
    let body = serde_json::json!({
        "schemaVersion": TELEMETRY_SCHEMA_VERSION,
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
        .map_err(|e| ApiError::Transport(e.to_string()))
}

fn event_type(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Next {
        event_type: String,
    }
    serde_json::from_str::<Next>(body)
        .ok()
        .map(|n| n.event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscription_request_matches_the_contract() {
        let req = telemetry_subscription("ext-1", 4271).unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.uri().path(), "/2022-07-01/telemetry");
        assert_eq!(req.headers()[EXTENSION_ID_HEADER], "ext-1");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["schemaVersion"], "2022-12-13");
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
    fn next_event_type_is_read_from_either_shape() {
        assert_eq!(
            event_type(r#"{"eventType":"SHUTDOWN","deadlineMs":1,"shutdownReason":"spindown"}"#)
                .as_deref(),
            Some("SHUTDOWN")
        );
        assert_eq!(event_type("{}"), None);
    }
}
