//! What goes into the flush-point machine and what comes out: the inputs and the actions (the
//! view of the exporter is the exporter's: [`crate::export::exporter::ExportView`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::attempt::AttemptId;

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An INVOKE (`seq` is the shell's handle for releasing it).
    Invoke {
        /// The shell's handle.
        seq: u64,
        /// Its attempt ([`crate::attempt`]).
        attempt: AttemptId,
        /// Its request id, for the log.
        request_id: String,
        /// Its attempt's runtimeDone arrived before it.
        runtime_done: bool,
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
    /// A `platform.runtimeDone` of this attempt reached us.
    RuntimeDone(AttemptId),
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
