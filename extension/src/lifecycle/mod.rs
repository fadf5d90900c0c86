//! Flush points: when the function is held, when we send, when we let go. Pure: time, the
//! events and a view of the exporter are inputs; the decisions are [`Action`]s the async shell
//! (`app`) carries out.
//!
//! A flush point is either an `Invoke` (held until `platform.runtimeDone`, the UDP socket is
//! drained, and one send round has finished or the flush timeout counted from runtimeDone has
//! passed) or a `Shutdown` (a short wait for the last `platform.report`, a drain, sends until
//! the buffer is empty or the deadline, then exit). An invocation is held for the runtimeDone of
//! its own attempt: which attempt an INVOKE and a runtimeDone belong to is decided once, by
//! [`crate::attempt`], never by the request id alone (asynchronous retries reuse it).
//!
//! A guard that does not depend on telemetry: an invocation released by its deadline because
//! its runtimeDone never came puts the machine in `degraded` mode (behave as `background`: never
//! hold) until a runtimeDone arrives again.

mod flush_points;
mod io;
#[cfg(test)]
mod tests;

pub use flush_points::{FlushPoints, Settings};
pub use io::{Action, Input};
