//! What goes into the flush-point machine and what comes out: the INVOKE keys, the inputs and
//! the actions (the view of the exporter is the exporter's: [`crate::export::exporter::ExportView`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::lambda::telemetry::EpochSeconds;

/// How much earlier than its INVOKE reached us a runtimeDone may say it happened and still be
/// that INVOKE's (both clocks are the host's wall clock; Lambda retries an asynchronous event
/// a minute or more after the previous attempt).
pub const ATTEMPT_SEPARATION: Duration = Duration::from_secs(1);

/// One INVOKE, or the invocation a runtimeDone speaks of: the request id and a wall-clock time
/// (the INVOKE's arrival, the runtimeDone's `time`). Lambda's asynchronous retries reuse the
/// request id, so the time tells the attempts apart: a runtimeDone from before an INVOKE
/// arrived belongs to an earlier attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeKey {
    /// `requestId`.
    pub request_id: String,
    /// Epoch seconds, when known.
    pub at: Option<EpochSeconds>,
}

impl InvokeKey {
    /// A key from a request id and a wall-clock time in epoch seconds.
    pub fn new(request_id: impl Into<String>, at: Option<EpochSeconds>) -> Self {
        Self {
            request_id: request_id.into(),
            at: at.filter(|t| t.0.is_finite()),
        }
    }

    /// Whether the runtimeDone keyed `done` may belong to this INVOKE: same request id, and
    /// not from before this INVOKE arrived (when both times are known).
    pub(super) fn admits(&self, done: &InvokeKey) -> bool {
        self.request_id == done.request_id
            && match (self.at, done.at) {
                (Some(invoke), Some(done)) => done.0 + ATTEMPT_SEPARATION.as_secs_f64() >= invoke.0,
                _ => true,
            }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An INVOKE (`seq` is the shell's handle for releasing it).
    Invoke {
        /// The shell's handle.
        seq: u64,
        /// Its identity.
        key: InvokeKey,
        /// The invocation's deadline; without one it is never held.
        deadline: Option<Instant>,
    },
    /// A SHUTDOWN (or SIGTERM) with its deadline (before the margin).
    Shutdown {
        /// `deadlineMs` as an instant.
        deadline: Instant,
        /// Whether the enrichment still waits for a `platform.report`.
        awaiting_report: bool,
    },
    /// A `platform.runtimeDone` reached us.
    RuntimeDone(InvokeKey),
    /// The enrichment no longer waits for a `platform.report`.
    ReportArrived,
    /// The UDP socket has been drained as asked (or cannot be).
    Drained,
    /// The send in flight has settled.
    SendDone,
    /// [`FlushPoints::wake_at`] has passed.
    Wake,
    /// The idle timer ticked.
    Tick,
    /// The buffer holds a full batch (or half its bytes) and no send is in flight.
    Pressure,
}

/// Something to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer the INVOKE `seq`: our `/event/next` goes in.
    Release(u64),
    /// Ask the UDP reader to drain the socket; [`Input::Drained`] follows.
    Drain,
    /// Start a send of everything queued, under `deadline`.
    Send {
        /// The send's deadline.
        deadline: Instant,
    },
    /// The shutdown is over: abandon any send in flight, count what is left, log the counters,
    /// answer the SHUTDOWN(s) and exit.
    Exit,
    /// The post-runtime time we added to an invocation (runtimeDone to release).
    PostRuntime(Duration),
    /// An invocation had to be released by its deadline: from now on, never hold.
    GuardTripped {
        /// The invocation.
        request_id: String,
    },
    /// A runtimeDone arrived again: holding resumes.
    GuardCleared,
}
