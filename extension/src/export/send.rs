//! The flush: documents in batches through a [`Backend`], a few calls at a time, retrying what
//! may succeed again with capped, fully jittered exponential backoff, until a deadline. It
//! reports what was sent, refused and kept, and publishes what it has settled as it goes
//! ([`Progress`]) so that a flush that never reports (aborted at the end of the shutdown, or
//! failed) still says what it delivered. Metrics only observe.

use std::borrow::Borrow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::backend::{Answer, Backend, ExportError};
use super::{batcher, otlp};
use crate::document::Document;
use crate::metrics::{self, LogLimiter, Metrics};

/// Calls in flight at once during one flush (the daemon uses 8).
pub const MAX_CONCURRENT_CALLS: usize = 4;
/// Attempts per batch within one flush; what still fails stays buffered.
pub const MAX_ATTEMPTS_PER_FLUSH: u32 = 3;
/// First retry delay; doubles each attempt, capped, with full jitter.
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(25);
/// Largest retry delay.
pub const RETRY_MAX_DELAY: Duration = Duration::from_millis(400);
/// One warning per this interval for documents the backend refused (the function controls
/// them).
pub const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// One warning per this interval for refused credentials.
pub const AUTH_LOG_INTERVAL: Duration = Duration::from_mins(1);

/// What one flush did with its documents (`T`: a document, or what holds it): every document is
/// in exactly one of `sent`, `refused`, `superseded` or `kept`.
#[derive(Debug)]
pub struct FlushReport<T = Document> {
    /// Documents the backend stored.
    pub sent: usize,
    /// Documents the backend refused for their content, or in a batch it refused (logged,
    /// counted, not sent again).
    pub refused: usize,
    /// Older versions of a document re-sent with the same id in the same flush (only the
    /// latest is sent; the service keeps the last write anyway).
    pub superseded: usize,
    /// Documents not sent before the deadline, after the last attempt, or refused with the
    /// credentials: they go back to the buffer.
    pub kept: Vec<T>,
    /// Calls made.
    pub calls: usize,
}

impl<T> Default for FlushReport<T> {
    fn default() -> Self {
        Self {
            sent: 0,
            refused: 0,
            superseded: 0,
            kept: Vec::new(),
            calls: 0,
        }
    }
}

impl<T> FlushReport<T> {
    fn absorb(&mut self, other: Self) {
        self.sent += other.sent;
        self.refused += other.refused;
        self.superseded += other.superseded;
        self.calls += other.calls;
        self.kept.extend(other.kept);
    }
}

/// Documents a flush has settled so far (sent, refused or superseded): written by the flush as
/// each call is answered, read by its owner when the flush ends without a report.
#[derive(Debug, Default)]
pub struct Progress(AtomicUsize);

impl Progress {
    /// Documents settled so far.
    pub fn settled(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// How one answer splits a batch. Pure.
#[derive(Debug, PartialEq, Eq)]
pub struct Split<T> {
    /// Stored.
    pub sent: usize,
    /// Refused for their content.
    pub refused: usize,
    /// To send again (the service asked to).
    pub again: Vec<T>,
}

/// Splits `pending` by the service's `answer`: documents named in an unprocessed entry that may
/// be retried go again; as many of the rest as the answer refused are refused; the others were
/// stored.
pub fn split<T: Borrow<Document>>(pending: Vec<T>, answer: &Answer) -> Split<T> {
    let (retry, refused): (Vec<_>, Vec<_>) = answer.unprocessed.iter().partition(|u| u.retry);
    let (again, done): (Vec<T>, Vec<T>) = pending
        .into_iter()
        .partition(|d| retry.iter().any(|u| u.id == d.borrow().id.as_str()));
    let refused = refused.len().min(done.len());
    Split {
        sent: done.len() - refused,
        refused,
        again,
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, base * 2^(attempt-1))]`.
/// `unit` is a uniform random number in `[0, 1)`, passed in to keep this pure.
pub fn backoff(attempt: u32, unit: f64) -> Duration {
    let exp = RETRY_BASE_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exp.min(RETRY_MAX_DELAY).mul_f64(unit.clamp(0.0, 1.0))
}

/// What has been said about refused documents and credentials: one error line for a missing
/// permission, rate-limited warnings for the rest.
#[derive(Debug)]
struct Logs {
    rejections: LogLimiter,
    auth: LogLimiter,
    access_denied_logged: bool,
}

/// Which backend a batch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The documents' (PutTraceSegments).
    Documents,
    /// The sampled spans' (the OTLP endpoint).
    Spans,
}

/// Sends flushes through one backend (and sampled OpenTelemetry spans through a second one,
/// when given); shared by every flush of the exporter.
#[derive(Debug)]
pub struct Sender {
    backend: Arc<dyn Backend>,
    /// Where sampled OpenTelemetry spans (`T1S` documents) go instead, when set.
    spans: Option<Arc<dyn Backend>>,
    metrics: Arc<Metrics>,
    /// Uniform in `[0, 1)`: the backoff's jitter.
    jitter: fn() -> f64,
    logs: std::sync::Mutex<Logs>,
}

impl Sender {
    /// A sender through `backend`, counting into `metrics`.
    pub fn new(backend: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Self {
            backend,
            spans: None,
            metrics,
            jitter: fastrand::f64,
            logs: std::sync::Mutex::new(Logs {
                rejections: LogLimiter::new(REJECTION_LOG_INTERVAL),
                auth: LogLimiter::new(AUTH_LOG_INTERVAL),
                access_denied_logged: false,
            }),
        }
    }

    /// The same with the backoff's random source given (tests pin it).
    #[cfg(test)]
    pub fn with_jitter(
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        jitter: fn() -> f64,
    ) -> Self {
        Self {
            jitter,
            ..Self::new(backend, metrics)
        }
    }

    /// The same, sending sampled OpenTelemetry spans through `spans`.
    #[must_use]
    pub fn with_spans(self, spans: Arc<dyn Backend>) -> Self {
        Self {
            spans: Some(spans),
            ..self
        }
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Every backend: the documents' and, when set, the spans'.
    pub fn backends(&self) -> impl Iterator<Item = &dyn Backend> {
        std::iter::once(&*self.backend).chain(self.spans.as_deref())
    }

    /// The calls of one flush: each backend's batches, after dropping older versions of a
    /// document (`superseded`, returned with them). Spans held for the OTLP endpoint
    /// ([`crate::document::Body::Spans`]) never go to the documents' backend, even without a spans backend.
    fn calls<T: Borrow<Document>>(&self, docs: Vec<T>) -> (Vec<(Route, Vec<T>)>, usize) {
        let total = docs.len();
        let (spans, docs): (Vec<T>, Vec<T>) = docs.into_iter().partition(|d| {
            let d = d.borrow();
            d.body.text().is_none() || (self.spans.is_some() && otlp::request::is_sampled_spans(d))
        });
        let mut calls: Vec<(Route, Vec<T>)> = batcher::batches(docs, self.backend.max_batch())
            .into_iter()
            .map(|b| (Route::Documents, b))
            .collect();
        let weighed = batcher::batches(spans, usize::MAX)
            .into_iter()
            .flatten()
            .map(|d| {
                let w = otlp::request::weigh(d.borrow()).unwrap_or(otlp::request::Weight {
                    bytes: d.borrow().body.len(),
                    spans: 1,
                });
                (d, w)
            })
            .collect();
        calls.extend(
            otlp::request::batches(weighed)
                .into_iter()
                .map(|b| (Route::Spans, b)),
        );
        let superseded = total - calls.iter().map(|(_, b)| b.len()).sum::<usize>();
        (calls, superseded)
    }

    /// Sends `docs` (oldest first) in batches of the backend's size, a few calls at a time,
    /// until `deadline`; `progress` grows as calls are answered.
    pub async fn flush<T: Borrow<Document> + Send>(
        &self,
        docs: Vec<T>,
        deadline: Instant,
        progress: &Progress,
    ) -> FlushReport<T> {
        let (calls, superseded) = self.calls(docs);
        progress.add(superseded);
        let mut report = FlushReport {
            superseded,
            ..FlushReport::default()
        };
        let mut results = futures_util::stream::iter(calls)
            .map(|(route, batch)| self.send_batch(route, batch, deadline, progress))
            .buffer_unordered(MAX_CONCURRENT_CALLS);
        while let Some(r) = results.next().await {
            report.absorb(r);
        }
        report
    }

    /// The backend of a route; `None` for spans without a spans backend.
    fn route(&self, route: Route) -> Option<&dyn Backend> {
        match route {
            Route::Spans => self.spans.as_deref(),
            Route::Documents => Some(&*self.backend),
        }
    }

    async fn send_batch<T: Borrow<Document> + Send>(
        &self,
        route: Route,
        batch: Vec<T>,
        deadline: Instant,
        progress: &Progress,
    ) -> FlushReport<T> {
        let mut report = FlushReport::default();
        let Some(backend) = self.route(route) else {
            // Only a receiver told that spans go to the OTLP endpoint builds these.
            error!(
                documents = batch.len(),
                "spans for the OTLP endpoint without its backend; dropped"
            );
            metrics::add(&self.metrics.unprocessed, batch.len() as u64);
            report.refused = batch.len();
            progress.add(batch.len());
            return report;
        };
        let mut pending = batch;
        let mut attempt = 0;
        loop {
            attempt += 1;
            report.calls += 1;
            metrics::add(&self.metrics.api_calls, 1);
            let outcome = {
                let refs: Vec<&Document> = pending.iter().map(Borrow::borrow).collect();
                tokio::time::timeout_at(deadline, backend.put(&refs, deadline))
                    .await
                    .unwrap_or(Err(ExportError::Timeout))
            };
            let retryable_error = match outcome {
                Ok(answer) => {
                    if let Some(first) = answer.unprocessed.iter().find(|u| !u.retry) {
                        let refused = answer.unprocessed.iter().filter(|u| !u.retry).count();
                        self.rejected(backend, first, refused);
                    }
                    if answer.rejected_spans > 0 {
                        metrics::add(&self.metrics.otlp_spans_rejected, answer.rejected_spans);
                        self.spans_rejected(backend, answer.rejected_spans);
                    }
                    let Split {
                        sent,
                        refused,
                        again,
                    } = split(pending, &answer);
                    report.sent += sent;
                    report.refused += refused;
                    progress.add(sent + refused);
                    metrics::add(&self.metrics.sent, sent as u64);
                    metrics::add(&self.metrics.unprocessed, refused as u64);
                    if again.is_empty() {
                        return report;
                    }
                    debug!(
                        documents = again.len(),
                        backend = backend.name(),
                        "asked to retry documents"
                    );
                    pending = again;
                    None
                }
                Err(e) => {
                    self.count(&e);
                    if !e.is_retryable() && e.keeps_documents() {
                        self.auth_failed(backend, &e);
                        report.kept = pending;
                        return report;
                    }
                    if !e.is_retryable() {
                        warn!(error = %e, documents = pending.len(), backend = backend.name(), "X-Ray refused the batch; dropped");
                        metrics::add(&self.metrics.unprocessed, pending.len() as u64);
                        report.refused += pending.len();
                        progress.add(pending.len());
                        return report;
                    }
                    Some(e)
                }
            };
            let delay = backoff(attempt, (self.jitter)());
            if attempt >= MAX_ATTEMPTS_PER_FLUSH || Instant::now() + delay >= deadline {
                debug!(error = ?retryable_error, attempt, documents = pending.len(), "not sent in this flush; kept for the next");
                report.kept = pending;
                return report;
            }
            debug!(error = ?retryable_error, attempt, delay_ms = delay.as_millis(), "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn count(&self, e: &ExportError) {
        let m = &self.metrics;
        let counter = match e {
            ExportError::Timeout => &m.backend_timeout,
            ExportError::Refused(_) => &m.backend_refused,
            ExportError::UnknownHost(_) => &m.backend_unknown_host,
            ExportError::Throttled | ExportError::Client4xx { .. } | ExportError::Auth { .. } => {
                &m.backend_4xx
            }
            ExportError::Server5xx { .. } => &m.backend_5xx,
            ExportError::Other(_) => &m.backend_other,
        };
        metrics::add(counter, 1);
    }

    /// Whether a line about refused documents or spans may be written now (one limit for
    /// both), with how many were suppressed since the last one.
    fn rejection_log_allowed(&self) -> Option<u64> {
        self.logs
            .lock()
            .ok()
            .and_then(|mut l| l.rejections.allow(std::time::Instant::now()))
    }

    /// Logs documents the backend refused in one call, at most one line per
    /// [`REJECTION_LOG_INTERVAL`]: the first one's id and error, how many, how many lines were
    /// suppressed.
    fn rejected(
        &self,
        backend: &dyn Backend,
        first: &super::backend::Unprocessed,
        documents: usize,
    ) {
        let allowed = self.rejection_log_allowed();
        if let Some(suppressed) = allowed {
            warn!(id = %first.id, code = %first.code, message = %first.message, documents, suppressed, backend = backend.name(), "X-Ray rejected documents; dropped");
        }
    }

    /// Logs spans the OTLP endpoint rejected in an accepted call (`partial_success`), on the
    /// same rate limit as refused documents.
    fn spans_rejected(&self, backend: &dyn Backend, spans: u64) {
        let allowed = self.rejection_log_allowed();
        if let Some(suppressed) = allowed {
            warn!(
                spans,
                suppressed,
                backend = backend.name(),
                "X-Ray rejected spans; dropped"
            );
        }
    }

    /// Logs a refused call: once at error level naming the IAM action when access is denied,
    /// otherwise a rate-limited warning. The documents are kept either way.
    fn auth_failed(&self, backend: &dyn Backend, e: &ExportError) {
        let Ok(mut logs) = self.logs.lock() else {
            return;
        };
        if e.is_access_denied() {
            if !std::mem::replace(&mut logs.access_denied_logged, true) {
                error!(error = %e, "X-Ray refused {}: the function's role needs the IAM permission xray:PutTraceSegments (documents are kept for the next flush)", backend.name());
            }
        } else if let Some(suppressed) = logs.auth.allow(std::time::Instant::now()) {
            warn!(error = %e, suppressed, backend = backend.name(), "X-Ray refused the credentials; documents are kept for the next flush");
        }
    }
}

#[cfg(test)]
mod tests;
