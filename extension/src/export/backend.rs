//! The seam in front of the trace backend: one call, `put(batch, deadline) -> answer`.
//!
//! The retry loop ([`super::send`]) knows nothing of the service behind it: it batches, retries
//! what the backend says may succeed again, keeps what must wait for the next flush point and
//! counts the rest. A backend turns documents into its own request, classifies its failures
//! into [`ExportError`] and says, per document, what it did not take.
//!
//! PutTraceSegments ([`super::xray`]) takes every kind of document as a string. A backend that
//! takes OTLP spans instead (X-Ray's `/v1/traces`) fits the same call: it decodes the `T1S`
//! documents of its batch into one request (serialized requests concatenate), and documents are
//! routed to it by kind before batching, with its own [`Backend::max_batch`].

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

use crate::document::Document;

/// The future of one [`Backend::put`] call.
pub type PutFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, ExportError>> + Send + 'a>>;

/// The work of [`Backend::warm`].
pub type WarmFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service that stores trace documents.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The call's name, for log lines.
    fn name(&self) -> &'static str;

    /// Most documents one call may carry.
    fn max_batch(&self) -> usize;

    /// Sends `batch` in one call. The retry loop stops waiting for it at `deadline` (so a
    /// backend need not), and a test backend records it. `Ok` when the service answered the
    /// call, with what it did not take.
    fn put<'a>(&'a self, batch: &'a [&'a Document], deadline: Instant) -> PutFuture<'a>;

    /// The work that prepares the client (configuration, credentials) ahead of the first call,
    /// which the exporter runs in the background as a supervised task; the default has none.
    fn warm(&self) -> Option<WarmFuture> {
        None
    }
}

/// What the service answered to a call it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Documents of the batch it did not take; every other document was stored.
    pub unprocessed: Vec<Unprocessed>,
    /// Spans the service said it rejected without naming their documents (the OTLP
    /// endpoint's `partial_success`): counted, not sent again.
    pub rejected_spans: u64,
}

/// A document the service did not take in an otherwise successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    /// The document's id.
    pub id: String,
    /// The service's error code.
    pub code: String,
    /// The service's message.
    pub message: String,
    /// Whether it may be taken if sent again (the service was busy or failed), rather than
    /// refused for its content.
    pub retry: bool,
}

/// Why one call failed, by the daemon's backend-error kinds.
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
    /// HTTP 429 or the service's throttling error.
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

    /// Whether the role lacks the permission to call the backend.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Self::Auth { code, .. } if code.starts_with("AccessDenied"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_error_does_to_the_batch() {
        let auth = |code: &str| ExportError::Auth {
            status: 403,
            code: code.into(),
            message: String::new(),
        };
        // (error, retried in this flush, kept for the next, access denied)
        let table = [
            (ExportError::Timeout, true, true, false),
            (ExportError::Refused("reset".into()), true, true, false),
            (ExportError::UnknownHost("x".into()), true, true, false),
            (ExportError::Throttled, true, true, false),
            (ExportError::Server5xx { status: 503 }, true, true, false),
            (ExportError::Other("?".into()), true, true, false),
            (auth("ExpiredTokenException"), false, true, false),
            (auth("AccessDeniedException"), false, true, true),
            (
                ExportError::Client4xx {
                    status: 400,
                    message: "bad".into(),
                },
                false,
                false,
                false,
            ),
        ];
        for (e, retried, kept, denied) in table {
            assert_eq!(e.is_retryable(), retried, "{e:?}");
            assert_eq!(e.keeps_documents(), kept, "{e:?}");
            assert_eq!(e.is_access_denied(), denied, "{e:?}");
        }
    }
}
