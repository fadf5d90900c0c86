//! PutTraceSegments through aws-sdk-xray, and the flush that drives it.
//!
//! The SDK's own retries are off: our retry loop knows the flush deadline (the invocation's or
//! the shutdown's) and leaves what it could not send in the buffer for the next flush point.

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_xray::config::Region;
use aws_sdk_xray::error::SdkError;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::batcher;
use crate::ingest::protocol::Document;
use crate::metrics::{self, LogLimiter, Metrics};

/// PutTraceSegments calls in flight at once during one flush (the daemon uses 8).
pub const MAX_CONCURRENT_CALLS: usize = 4;
/// Attempts per batch within one flush; what still fails stays buffered.
pub const MAX_ATTEMPTS_PER_FLUSH: u32 = 3;
/// First retry delay; doubles each attempt, capped, with full jitter.
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(25);
/// Largest retry delay.
pub const RETRY_MAX_DELAY: Duration = Duration::from_millis(400);
/// Amazon Trust Services' roots (and the Starfield root that cross-signs them): AWS endpoints
/// chain to these. Compiled in so startup does not read the system store (~15 ms).
pub const AMAZON_ROOTS_PEM: &[u8] = include_bytes!("../../certs/amazon-trust-services.pem");

/// Which certificates the TLS client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRoots {
    /// The compiled-in Amazon Trust Services roots.
    Amazon,
    /// The system store (for proxies or endpoints with other certificate authorities).
    System,
}

/// TCP/TLS connect timeout for the X-Ray endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why one PutTraceSegments call failed, by the daemon's backend-error kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// No answer before the deadline.
    #[error("timed out")]
    Timeout,
    /// Connection refused or reset.
    #[error("connection refused: {0}")]
    Refused(String),
    /// The endpoint's name did not resolve.
    #[error("unknown host: {0}")]
    UnknownHost(String),
    /// HTTP 429 or `ThrottledException`.
    #[error("throttled")]
    Throttled,
    /// The call was not authenticated or not authorized (expired or invalid credentials, a
    /// signature refused for clock skew, a missing permission): nothing is wrong with the
    /// documents, so they are kept for the next flush point.
    #[error("authentication error {status} {code}: {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// The service's error code.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Another 4xx: the request itself is wrong; retrying will not help.
    #[error("client error {status}: {message}")]
    Client4xx {
        /// HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// A 5xx.
    #[error("server error {status}")]
    Server5xx {
        /// HTTP status.
        status: u16,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl ExportError {
    /// Whether the same batch may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Client4xx { .. } | Self::Auth { .. })
    }

    /// Whether the documents must be kept for the next flush point although this flush will not
    /// try again (the credentials may be renewed, the clock corrected, the permission granted).
    pub fn keeps_documents(&self) -> bool {
        self.is_retryable() || matches!(self, Self::Auth { .. })
    }

    /// Whether the role lacks the permission to call PutTraceSegments.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Self::Auth { code, .. } if code.starts_with("AccessDenied"))
    }

    fn count(&self, m: &Metrics) {
        let counter = match self {
            Self::Timeout => &m.backend_timeout,
            Self::Refused(_) => &m.backend_refused,
            Self::UnknownHost(_) => &m.backend_unknown_host,
            Self::Throttled | Self::Client4xx { .. } | Self::Auth { .. } => &m.backend_4xx,
            Self::Server5xx { .. } => &m.backend_5xx,
            Self::Other(_) => &m.backend_other,
        };
        metrics::add(counter, 1);
    }
}

/// A document X-Ray refused in an otherwise successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    /// The document's id.
    pub id: String,
    /// X-Ray's error code.
    pub code: String,
    /// X-Ray's message.
    pub message: String,
}

/// Where the X-Ray API is and how to reach it, from the standard AWS variables (the ones
/// aws-config's loader reads for a service whose id is `XRay`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL_XRAY`, else `AWS_ENDPOINT_URL`; neither when
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true.
    pub endpoint_url: Option<String>,
    /// `AWS_USE_FIPS_ENDPOINT`.
    pub use_fips: bool,
    /// `AWS_USE_DUALSTACK_ENDPOINT`.
    pub use_dual_stack: bool,
}

impl ServiceSettings {
    /// Reads the settings through `lookup` (the environment, or a map in tests). Empty values
    /// count as unset, as in aws-config.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let flag = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint_url = if flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
            None
        } else {
            get("AWS_ENDPOINT_URL_XRAY").or_else(|| get("AWS_ENDPOINT_URL"))
        };
        Self {
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            endpoint_url,
            use_fips: flag("AWS_USE_FIPS_ENDPOINT"),
            use_dual_stack: flag("AWS_USE_DUALSTACK_ENDPOINT"),
        }
    }
}

/// The X-Ray API client.
#[derive(Clone, Debug)]
pub struct XrayClient {
    client: aws_sdk_xray::Client,
    auth_log: Arc<std::sync::Mutex<AuthLog>>,
    rejection_log: Arc<std::sync::Mutex<LogLimiter>>,
}

/// What has been said about refused credentials: one error line for a missing permission,
/// rate-limited warnings for the rest.
#[derive(Debug)]
struct AuthLog {
    access_denied_logged: bool,
    limiter: LogLimiter,
}

impl Default for AuthLog {
    fn default() -> Self {
        Self {
            access_denied_logged: false,
            limiter: LogLimiter::new(AUTH_LOG_INTERVAL),
        }
    }
}

/// One warning per this interval for documents X-Ray rejected (the function controls them).
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One warning per this interval for refused credentials.
pub const AUTH_LOG_INTERVAL: Duration = Duration::from_mins(1);

impl XrayClient {
    /// Logs documents X-Ray rejected in one call, at most one line per
    /// [`REJECTION_LOG_INTERVAL`]: the first one's id and error, how many, how many lines were
    /// suppressed.
    fn rejected(&self, first: &Unprocessed, documents: usize) {
        let allowed = self
            .rejection_log
            .lock()
            .ok()
            .and_then(|mut l| l.allow(std::time::Instant::now()));
        if let Some(suppressed) = allowed {
            warn!(id = %first.id, code = %first.code, message = %first.message, documents, suppressed, "X-Ray rejected documents; dropped");
        }
    }

    /// Logs a refused call: once at error level naming the IAM action when access is denied,
    /// otherwise a rate-limited warning. The documents are kept either way.
    fn auth_failed(&self, e: &ExportError) {
        let Ok(mut log) = self.auth_log.lock() else {
            return;
        };
        if e.is_access_denied() {
            if !std::mem::replace(&mut log.access_denied_logged, true) {
                error!(error = %e, "X-Ray refused PutTraceSegments: the function's role needs the IAM permission xray:PutTraceSegments (documents are kept for the next flush)");
            }
        } else if let Some(suppressed) = log.limiter.allow(std::time::Instant::now()) {
            warn!(error = %e, suppressed, "X-Ray refused the credentials; documents are kept for the next flush");
        }
    }
}

impl XrayClient {
    /// Builds a client from the standard AWS environment (region, credentials,
    /// `AWS_ENDPOINT_URL_XRAY` / `AWS_ENDPOINT_URL`) with one TLS stack (rustls + ring).
    ///
    /// Not `aws_config::defaults(..).load()`: its default chain links in profile files, SSO,
    /// STS (web identity, assume role) and IMDS, none of which exist inside Lambda, and they
    /// are a fifth of the binary. Lambda gives credentials in the environment, or (SnapStart,
    /// Lambda Managed Instances) through the container credentials endpoint: that chain, and
    /// the service settings from the same variables aws-config reads (`ServiceSettings`).
    pub fn from_env(roots: TlsRoots) -> Self {
        use aws_config::environment::EnvironmentVariableCredentialsProvider;
        use aws_config::meta::credentials::CredentialsProviderChain;
        use aws_config::provider_config::ProviderConfig;
        use aws_smithy_http_client::tls;
        let trust = match roots {
            TlsRoots::Amazon => tls::TrustStore::empty().with_pem_certificate(AMAZON_ROOTS_PEM),
            TlsRoots::System => tls::TrustStore::empty().with_native_roots(true),
        };
        let context = tls::TlsContext::builder().with_trust_store(trust).build();
        let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        let http = match context {
            Ok(context) => builder.tls_context(context).build_https(),
            Err(_) => builder.build_https(),
        };
        let settings = ServiceSettings::from_lookup(|k| std::env::var(k).ok());
        let container = aws_config::ecs::EcsCredentialsProvider::builder()
            .configure(&ProviderConfig::empty().with_http_client(http.clone()))
            .connect_timeout(CONNECT_TIMEOUT)
            .build();
        let credentials = CredentialsProviderChain::first_try(
            "Environment",
            EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else("Container", container);
        let mut config = aws_sdk_xray::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .credentials_provider(credentials)
            .region(settings.region.map(Region::new))
            .use_fips(settings.use_fips)
            .use_dual_stack(settings.use_dual_stack)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            );
        if let Some(url) = settings.endpoint_url {
            config = config.endpoint_url(url);
        }
        Self {
            client: aws_sdk_xray::Client::from_conf(config.build()),
            auth_log: Arc::default(),
            rejection_log: Arc::new(std::sync::Mutex::new(LogLimiter::new(
                REJECTION_LOG_INTERVAL,
            ))),
        }
    }

    /// One PutTraceSegments call.
    ///
    /// The documents are written straight into the request body, before it is signed: one copy
    /// (the serialization), not a `String` per document for the SDK's input and then the
    /// serialization of those.
    pub async fn put(&self, batch: &[Document]) -> Result<Vec<Unprocessed>, ExportError> {
        let body = request_body(batch);
        let out = self
            .client
            .put_trace_segments()
            .set_trace_segment_documents(Some(Vec::new()))
            .customize()
            .mutate_request(move |req| {
                let length = body.len().to_string();
                *req.body_mut() = aws_smithy_types::body::SdkBody::from(body.clone());
                req.headers_mut().insert("content-length", length);
            })
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(out
            .unprocessed_trace_segments()
            .iter()
            .map(|u| Unprocessed {
                id: u.id().unwrap_or_default().to_owned(),
                code: u.error_code().unwrap_or_default().to_owned(),
                message: u.message().unwrap_or_default().to_owned(),
            })
            .collect())
    }
}

/// The PutTraceSegments request body, `{"TraceSegmentDocuments":["<document>", ...]}`. Pure.
pub fn request_body(batch: &[Document]) -> hyper::body::Bytes {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(rename = "TraceSegmentDocuments")]
        documents: Vec<&'a str>,
    }
    let body = Body {
        documents: batch.iter().map(|d| &*d.body).collect(),
    };
    // Serializing strings into memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default().into()
}

fn classify<E, R>(err: &SdkError<E, R>) -> ExportError
where
    E: aws_sdk_xray::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    match err {
        SdkError::TimeoutError(_) => ExportError::Timeout,
        SdkError::DispatchFailure(f) => {
            let text = error_chain(err);
            if f.is_timeout() {
                ExportError::Timeout
            } else if text.contains("dns error") || text.contains("failed to lookup") {
                ExportError::UnknownHost(text)
            } else if f.is_io() {
                ExportError::Refused(text)
            } else {
                ExportError::Other(text)
            }
        }
        SdkError::ServiceError(e) => {
            let status = e.raw().status_code();
            let code = e.err().code().unwrap_or_default();
            let message = e.err().message().unwrap_or_default().to_owned();
            by_status(status, code, message)
        }
        SdkError::ResponseError(e) => by_status(e.raw().status_code(), "", error_chain(err)),
        _ => ExportError::Other(error_chain(err)),
    }
}

/// Access to the HTTP status of a raw response (lets `classify` stay generic for tests).
pub trait HasStatus {
    /// The HTTP status code.
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_xray::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Error codes of the AWS query and JSON protocols that say the caller, not the request, was
/// refused: credentials missing, invalid or expired, a signature refused (also for clock skew),
/// or a permission missing.
pub const AUTH_ERROR_CODES: [&str; 12] = [
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "RequestTimeTooSkewed",
];

fn by_status(status: u16, code: &str, message: String) -> ExportError {
    if status == 429 || code == "ThrottledException" || code == "ThrottlingException" {
        ExportError::Throttled
    } else if AUTH_ERROR_CODES.contains(&code) || status == 401 || status == 403 {
        ExportError::Auth {
            status,
            code: code.to_owned(),
            message,
        }
    } else if status >= 500 {
        ExportError::Server5xx { status }
    } else {
        ExportError::Client4xx { status, message }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What one flush achieved.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Documents X-Ray accepted.
    pub sent: usize,
    /// Documents X-Ray refused for their content (counted, logged, not retried).
    pub unprocessed: usize,
    /// Documents not sent before the deadline or after the last attempt; they go back to the
    /// buffer.
    pub unsent: Vec<Document>,
    /// Calls made.
    pub calls: usize,
}

/// Sends `docs` in batches of at most 50, a few calls at a time, retrying retryable failures
/// with capped, fully jittered exponential backoff, until `deadline`.
pub async fn flush(
    client: Arc<XrayClient>,
    docs: Vec<Document>,
    deadline: Instant,
    metrics: Arc<Metrics>,
) -> FlushReport {
    let batches = batcher::batches(docs);
    let results: Vec<BatchResult> = futures_util::stream::iter(batches)
        .map(|batch| send_batch(&client, batch, deadline, &metrics))
        .buffer_unordered(MAX_CONCURRENT_CALLS)
        .collect()
        .await;
    let mut report = FlushReport::default();
    for r in results {
        report.sent += r.sent;
        report.unprocessed += r.unprocessed;
        report.calls += r.calls;
        report.unsent.extend(r.unsent);
    }
    report
}

#[derive(Debug, Default)]
struct BatchResult {
    sent: usize,
    unprocessed: usize,
    calls: usize,
    unsent: Vec<Document>,
}

async fn send_batch(
    client: &XrayClient,
    batch: Vec<Document>,
    deadline: Instant,
    metrics: &Metrics,
) -> BatchResult {
    let mut result = BatchResult::default();
    let mut pending = batch;
    let mut attempt = 0;
    loop {
        attempt += 1;
        result.calls += 1;
        metrics::add(&metrics.api_calls, 1);
        let outcome = match tokio::time::timeout_at(deadline, client.put(&pending)).await {
            Ok(r) => r,
            Err(_) => Err(ExportError::Timeout),
        };
        let retryable_error = match outcome {
            Ok(unprocessed) => {
                let (retry, rejected): (Vec<Unprocessed>, Vec<Unprocessed>) = unprocessed
                    .into_iter()
                    .partition(|u| is_retryable_code(&u.code));
                if let Some(u) = rejected.first() {
                    client.rejected(u, rejected.len());
                }
                result.unprocessed += rejected.len();
                metrics::add(&metrics.unprocessed, rejected.len() as u64);
                let (again, done): (Vec<Document>, Vec<Document>) = pending
                    .into_iter()
                    .partition(|d| retry.iter().any(|u| u.id == d.id.as_str()));
                let sent = done.len().saturating_sub(rejected.len());
                result.sent += sent;
                metrics::add(&metrics.sent, sent as u64);
                if again.is_empty() {
                    return result;
                }
                debug!(documents = again.len(), "X-Ray asked to retry documents");
                pending = again;
                None
            }
            Err(e) => {
                e.count(metrics);
                if !e.is_retryable() && e.keeps_documents() {
                    client.auth_failed(&e);
                    result.unsent = pending;
                    return result;
                }
                if !e.is_retryable() {
                    warn!(error = %e, documents = pending.len(), "PutTraceSegments refused the batch; dropped");
                    metrics::add(&metrics.unprocessed, pending.len() as u64);
                    result.unprocessed += pending.len();
                    return result;
                }
                Some(e)
            }
        };
        let delay = backoff(attempt, fastrand::f64());
        if attempt >= MAX_ATTEMPTS_PER_FLUSH || Instant::now() + delay >= deadline {
            debug!(error = ?retryable_error, attempt, documents = pending.len(), "not sent in this flush; kept for the next");
            result.unsent = pending;
            return result;
        }
        debug!(error = ?retryable_error, attempt, delay_ms = delay.as_millis(), "retrying PutTraceSegments");
        tokio::time::sleep(delay).await;
    }
}

/// Whether an `UnprocessedTraceSegments` error code is worth another try (throttling and
/// service-side failures), rather than a verdict on the document itself.
pub fn is_retryable_code(code: &str) -> bool {
    [
        "Throttl",
        "Internal",
        "ServiceUnavailable",
        "Unavailable",
        "Timeout",
        "TooManyRequests",
    ]
    .iter()
    .any(|k| code.contains(k))
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, base * 2^(attempt-1))]`.
/// `unit` is a uniform random number in `[0, 1)`, passed in to keep this pure.
pub fn backoff(attempt: u32, unit: f64) -> Duration {
    let exp = RETRY_BASE_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exp.min(RETRY_MAX_DELAY).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_carries_each_document_as_a_json_string() {
        let dir = format!("{}/fixtures/datagrams", env!("CARGO_MANIFEST_DIR"));
        let docs: Vec<Document> = ["python_child.bin", "node_child.bin"]
            .iter()
            .map(|f| {
                crate::ingest::protocol::parse_datagram(
                    &std::fs::read(format!("{dir}/{f}")).unwrap(),
                )
                .unwrap()
            })
            .collect();
        let body: serde_json::Value = serde_json::from_slice(&request_body(&docs)).unwrap();
        let sent = body["TraceSegmentDocuments"].as_array().unwrap();
        assert_eq!(sent.len(), 2);
        for (doc, sent) in docs.iter().zip(sent) {
            assert_eq!(sent.as_str(), Some(&*doc.body));
        }
        assert_eq!(&request_body(&[])[..], br#"{"TraceSegmentDocuments":[]}"#);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert_eq!(backoff(1, 0.0), Duration::ZERO);
        assert_eq!(backoff(1, 1.0), RETRY_BASE_DELAY);
        assert_eq!(backoff(2, 1.0), RETRY_BASE_DELAY * 2);
        assert_eq!(backoff(30, 1.0), RETRY_MAX_DELAY);
        assert_eq!(backoff(3, 0.5), RETRY_BASE_DELAY * 2);
    }

    #[test]
    fn the_compiled_in_roots_are_five_certificates() {
        let text = std::str::from_utf8(AMAZON_ROOTS_PEM).unwrap();
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 5);
        assert_eq!(text.matches("-----END CERTIFICATE-----").count(), 5);
    }

    #[test]
    fn unprocessed_codes() {
        assert!(is_retryable_code("ThrottledException"));
        assert!(is_retryable_code("InternalFailure"));
        assert!(is_retryable_code("ServiceUnavailable"));
        assert!(!is_retryable_code("InvalidTraceId"));
        assert!(!is_retryable_code("MissingRequiredField"));
        assert!(!is_retryable_code(""));
    }

    #[test]
    fn status_classification() {
        assert_eq!(by_status(429, "", String::new()), ExportError::Throttled);
        assert_eq!(
            by_status(400, "ThrottledException", String::new()),
            ExportError::Throttled
        );
        assert_eq!(
            by_status(503, "", String::new()),
            ExportError::Server5xx { status: 503 }
        );
        let e = by_status(400, "InvalidRequestException", "bad".into());
        assert!(!e.is_retryable());
        assert!(!e.keeps_documents());
        for (status, code) in [
            (403, "ExpiredTokenException"),
            (400, "ExpiredTokenException"),
            (403, "InvalidSignatureException"),
            (400, "RequestExpired"),
            (403, "UnrecognizedClientException"),
            (401, ""),
            (403, "AccessDeniedException"),
        ] {
            let e = by_status(status, code, "no".into());
            assert!(
                matches!(e, ExportError::Auth { .. }),
                "{status} {code}: {e:?}"
            );
            assert!(!e.is_retryable() && e.keeps_documents(), "{status} {code}");
            assert_eq!(e.is_access_denied(), code.starts_with("AccessDenied"));
        }
        assert!(ExportError::Timeout.is_retryable());
    }

    fn settings(pairs: &[(&str, &str)]) -> ServiceSettings {
        ServiceSettings::from_lookup(crate::config::lookup_from(pairs))
    }

    #[test]
    fn the_service_specific_endpoint_wins_over_the_global_one() {
        let s = settings(&[
            ("AWS_ENDPOINT_URL", "http://global:1"),
            ("AWS_ENDPOINT_URL_XRAY", "http://xray:2"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]);
        assert_eq!(s.endpoint_url.as_deref(), Some("http://xray:2"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let s = settings(&[
            ("AWS_ENDPOINT_URL", "http://global:1"),
            ("AWS_ENDPOINT_URL_XRAY", " "),
        ]);
        assert_eq!(s.endpoint_url.as_deref(), Some("http://global:1"));
    }

    #[test]
    fn configured_endpoints_can_be_ignored_and_flags_read() {
        let s = settings(&[
            ("AWS_ENDPOINT_URL_XRAY", "http://xray:2"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "false"),
        ]);
        assert_eq!(s.endpoint_url, None);
        assert_eq!(s.region.as_deref(), Some("us-east-1"));
        assert!(s.use_fips);
        assert!(!s.use_dual_stack);
        assert_eq!(settings(&[]), ServiceSettings::default());
    }
}
