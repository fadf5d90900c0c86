//! An in-memory [`Backend`] for tests: answers each call from a script, records every call and
//! what it stored. No network.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::backend::{Answer, Backend, ExportError, PutFuture, Unprocessed, WarmFuture};
use crate::document::Document;
use crate::trace::SegmentId;

/// A segment document with id `n` and an empty body: what the export tests queue and send.
pub(crate) fn doc(n: u64) -> Document {
    Document {
        body: "{}".into(),
        id: SegmentId::from_u64(n),
        trace_id: crate::trace::TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap(),
        kind: crate::document::DocumentKind::Segment,
    }
}

/// What the backend does with one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Stores every document.
    Store,
    /// Stores all but the documents at these positions of the batch, each answered with the
    /// code, retryable or not.
    Unprocessed(Vec<(usize, &'static str, bool)>),
    /// Stores every document, saying it rejected this many spans (`partial_success`).
    RejectSpans(u64),
    /// Fails the call.
    Fail(ExportError),
    /// The reply after a delay.
    Late(Duration, Box<Reply>),
    /// Never answers.
    Hang,
    /// Panics: the send task fails.
    Panic,
}

/// One call as the backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When it arrived.
    pub at: Instant,
    /// The ids of its documents, in order.
    pub ids: Vec<SegmentId>,
    /// The deadline it was given.
    pub deadline: Instant,
}

/// A scripted backend: the replies are used in order, then every call is stored.
#[derive(Debug)]
pub struct MemoryBackend {
    max_batch: usize,
    script: Mutex<VecDeque<Reply>>,
    calls: Mutex<Vec<Call>>,
    stored: Mutex<Vec<SegmentId>>,
    warm_up_panics: bool,
}

impl MemoryBackend {
    /// A backend taking `max_batch` documents a call, answering from `script`.
    pub fn new(max_batch: usize, script: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            max_batch,
            script: Mutex::new(script.into_iter().collect()),
            calls: Mutex::default(),
            stored: Mutex::default(),
            warm_up_panics: false,
        }
    }

    /// The same, with a client warm-up that panics.
    #[must_use]
    pub fn with_panicking_warm_up(mut self) -> Self {
        self.warm_up_panics = true;
        self
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The ids of every document stored so far, in the order stored.
    pub fn stored(&self) -> Vec<SegmentId> {
        self.stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn answer(&self, reply: Reply, ids: Vec<SegmentId>) -> Result<Answer, ExportError> {
        let mut reply = reply;
        while let Reply::Late(delay, then) = reply {
            tokio::time::sleep(delay).await;
            reply = *then;
        }
        match reply {
            Reply::Store => {
                self.stored
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(ids);
                Ok(Answer::default())
            }
            Reply::Unprocessed(which) => {
                let mut unprocessed = Vec::new();
                let mut stored = self.stored.lock().unwrap_or_else(PoisonError::into_inner);
                for (i, id) in ids.into_iter().enumerate() {
                    match which.iter().find(|(at, _, _)| *at == i) {
                        Some((_, code, retry)) => unprocessed.push(Unprocessed {
                            id: id.as_str().to_owned(),
                            code: (*code).to_owned(),
                            message: String::new(),
                            retry: *retry,
                        }),
                        None => stored.push(id),
                    }
                }
                Ok(Answer {
                    unprocessed,
                    ..Answer::default()
                })
            }
            Reply::RejectSpans(spans) => {
                self.stored
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(ids);
                Ok(Answer {
                    rejected_spans: spans,
                    ..Answer::default()
                })
            }
            Reply::Fail(e) => Err(e),
            Reply::Hang => std::future::pending().await,
            Reply::Panic => panic!("the backend failed"),
            Reply::Late(..) => unreachable!("unwrapped above"),
        }
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn put<'a>(&'a self, batch: &'a [&'a Document], deadline: Instant) -> PutFuture<'a> {
        let ids: Vec<SegmentId> = batch.iter().map(|d| d.id).collect();
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Call {
                at: Instant::now(),
                ids: ids.clone(),
                deadline,
            });
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Store);
        Box::pin(self.answer(reply, ids))
    }

    fn warm(&self) -> Option<WarmFuture> {
        self.warm_up_panics
            .then(|| -> WarmFuture { Box::pin(async { panic!("the warm-up failed") }) })
    }
}
