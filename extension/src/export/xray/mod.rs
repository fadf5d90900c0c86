//! The PutTraceSegments backend, through aws-sdk-xray: client construction ([`client`]), the
//! request body ([`body`]), error classification ([`errors`]).
//!
//! The SDK's own retries are off: the retry loop ([`crate::export::send`]) knows the flush
//! deadline (the invocation's or the shutdown's) and leaves what it could not send in the buffer
//! for the next flush point.

pub mod body;
pub mod client;
pub mod errors;

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio::time::Instant;

pub use self::client::TlsRoots;
use super::backend::{Answer, Backend, ExportError, PutFuture, Unprocessed, WarmFuture};
use crate::document::Document;

/// The service's limit ("Exceeding maximum segment count: 50").
pub const MAX_DOCUMENTS_PER_CALL: usize = 50;

/// The X-Ray client, built once, lazily: in the background at the first event (after our first
/// `/event/next`, so off the init path), or at the first send.
pub type ClientCell = Arc<OnceCell<aws_sdk_xray::Client>>;

/// PutTraceSegments: takes every kind of document, 50 a call.
#[derive(Debug, Clone)]
pub struct XrayBackend {
    client: ClientCell,
    roots: TlsRoots,
}

impl XrayBackend {
    /// A backend whose client `cell` holds once built, trusting `roots`.
    pub fn new(client: ClientCell, roots: TlsRoots) -> Self {
        Self { client, roots }
    }

    async fn client(&self) -> &aws_sdk_xray::Client {
        let roots = self.roots;
        self.client
            .get_or_init(|| async move { client::from_env(roots) })
            .await
    }

    /// One call. The documents are written straight into the request body, before it is
    /// signed: one copy (the serialization), not a `String` per document for the SDK's input
    /// and then the serialization of those.
    async fn call(&self, batch: &[&Document]) -> Result<Answer, ExportError> {
        let body = body::request_body(batch);
        let out = self
            .client()
            .await
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
            .map_err(|e| errors::classify(&e))?;
        let unprocessed = out
            .unprocessed_trace_segments()
            .iter()
            .map(|u| {
                let code = u.error_code().unwrap_or_default();
                Unprocessed {
                    id: u.id().unwrap_or_default().to_owned(),
                    code: code.to_owned(),
                    message: u.message().unwrap_or_default().to_owned(),
                    retry: errors::is_retryable_code(code),
                }
            })
            .collect();
        Ok(Answer {
            unprocessed,
            ..Answer::default()
        })
    }
}

impl Backend for XrayBackend {
    fn name(&self) -> &'static str {
        "PutTraceSegments"
    }

    fn max_batch(&self) -> usize {
        MAX_DOCUMENTS_PER_CALL
    }

    fn put<'a>(&'a self, batch: &'a [&'a Document], _deadline: Instant) -> PutFuture<'a> {
        // The retry loop stops waiting for the call at the deadline, whatever the backend.
        Box::pin(self.call(batch))
    }

    fn warm(&self) -> Option<WarmFuture> {
        let backend = self.clone();
        Some(Box::pin(async move {
            backend.client().await;
        }))
    }
}
