//! Invocation attempts: which INVOKE, `platform.start`, `platform.runtimeDone` and
//! `platform.report` belong together. The lifecycle loop asks once per event, with one clock
//! read; the flush-point machine ([`crate::lifecycle`]) and the enricher ([`crate::enrich`])
//! both take the answer, an [`AttemptId`], and decide nothing of the kind themselves. Pure:
//! times are inputs.
//!
//! An attempt is one INVOKE (or, where no INVOKE comes, as on Lambda Managed Instances, one
//! `platform.start`), not one request id: Lambda's asynchronous retries re-deliver an event
//! under the same request id, a minute or more later, and records arrive late, twice, or in
//! another order. An arrival of request id R goes, in this order:
//! 1. to the attempt of R that already has a record of its kind at exactly its time (a
//!    redelivery);
//! 2. to the oldest attempt of R that lacks a record of its kind, agrees with it (trace roots
//!    equal where both are known; a start not after the attempt's runtimeDone, a runtimeDone or
//!    report not before its start; nothing from more than [`ATTEMPT_SEPARATION`] before the
//!    INVOKE arrived), and that no later attempt of R claims: a later attempt claims a record
//!    when its start (Lambda's time) is not after the record's time, or, its start unknown,
//!    when its INVOKE arrived before the record's time (within [`ATTEMPT_SEPARATION`] for a
//!    start or runtimeDone, whose time may read earlier than our clock at the INVOKE). So
//!    attempt 1's late report stays attempt 1's, and when attempt 1's runtimeDone was lost the
//!    retry's own runtimeDone is the retry's;
//! 3. else to a new attempt.
//!
//! Bounded: at most [`MAX_ATTEMPTS`] attempts while INVOKEs arrive (one invocation at a
//! time), [`MAX_CONCURRENT_ATTEMPTS`] where none does (many at once); the oldest complete one
//! (its report in) is forgotten first. An attempt untouched for [`MAX_ATTEMPT_AGE_SECONDS`]
//! (in record time) is forgotten.

use std::collections::VecDeque;
use std::time::Duration;

use crate::lambda::telemetry::{EpochSeconds, Event, Record, TracingContext};
use crate::trace::{TraceHeader, TraceId};

/// How much earlier than its INVOKE reached us a record may say it happened and still be that
/// INVOKE's (both clocks are the host's wall clock; Lambda retries an asynchronous event a
/// minute or more after the previous attempt).
pub const ATTEMPT_SEPARATION: Duration = Duration::from_secs(1);
/// Attempts remembered while INVOKEs arrive (one invocation at a time: the one under way and
/// those whose report or late records may still come).
pub const MAX_ATTEMPTS: usize = 16;
/// Attempts remembered where no INVOKE arrives (Lambda Managed Instances: many at once).
pub const MAX_CONCURRENT_ATTEMPTS: usize = 1_024;
/// An attempt untouched for this long (in record time) is forgotten: longer than the longest
/// function timeout (900 s), so only attempts whose records will never come go.
pub const MAX_ATTEMPT_AGE_SECONDS: f64 = 960.0;

/// One invocation attempt, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(u64);

impl AttemptId {
    /// The id with this number (tests build ids of their own).
    pub const fn from_u64(n: u64) -> Self {
        Self(n)
    }
}

/// What arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Extensions API INVOKE (its time: when it reached us).
    Invoke,
    /// `platform.start`.
    Start,
    /// `platform.runtimeDone`.
    RuntimeDone,
    /// `platform.report`.
    Report,
}

/// An INVOKE or an invocation's record, as placing it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival<'a> {
    /// Which.
    pub kind: Kind,
    /// Its request id.
    pub request_id: &'a str,
    /// Its trace root, when it has one.
    pub root: Option<TraceId>,
    /// Its time: the record's `time`, or our clock when the INVOKE arrived.
    pub at: EpochSeconds,
}

impl<'a> Arrival<'a> {
    /// The arrival a Telemetry API record at `at` is, if it belongs to an invocation.
    pub fn of_record(record: &'a Record, at: EpochSeconds) -> Option<Self> {
        let (kind, request_id, tracing) = match record {
            Record::Start(s) => (Kind::Start, &s.request_id, &s.tracing),
            Record::RuntimeDone(d) => (Kind::RuntimeDone, &d.request_id, &d.tracing),
            Record::Report(r) => (Kind::Report, &r.request_id, &r.tracing),
            _ => return None,
        };
        Some(Self {
            kind,
            request_id,
            root: tracing.as_ref().and_then(root_of),
            at,
        })
    }
}

fn root_of(tracing: &TracingContext) -> Option<TraceId> {
    TraceHeader::parse(&tracing.value).ok().map(|h| h.root)
}

/// Where an arrival was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Its attempt.
    pub id: AttemptId,
    /// A copy of a record the attempt already had.
    pub redelivered: bool,
    /// The attempt's runtimeDone had arrived before (for an INVOKE: its runtimeDone came first).
    pub had_runtime_done: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    id: AttemptId,
    request_id: String,
    root: Option<TraceId>,
    invoke: Option<f64>,
    start: Option<f64>,
    done: Option<f64>,
    report: Option<f64>,
    touched: f64,
}

impl Entry {
    fn time(&self, kind: Kind) -> Option<f64> {
        match kind {
            Kind::Invoke => self.invoke,
            Kind::Start => self.start,
            Kind::RuntimeDone => self.done,
            Kind::Report => self.report,
        }
    }

    fn slot(&mut self, kind: Kind) -> &mut Option<f64> {
        match kind {
            Kind::Invoke => &mut self.invoke,
            Kind::Start => &mut self.start,
            Kind::RuntimeDone => &mut self.done,
            Kind::Report => &mut self.report,
        }
    }

    fn is(&self, arrival: &Arrival<'_>) -> bool {
        self.request_id == arrival.request_id
            && match (self.root, arrival.root) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whether `arrival`'s time agrees with what this attempt has.
    fn fits(&self, arrival: &Arrival<'_>) -> bool {
        let t = arrival.at.0;
        let separation = ATTEMPT_SEPARATION.as_secs_f64();
        match arrival.kind {
            // Nothing it has is from (well) before this INVOKE arrived.
            Kind::Invoke => [self.start, self.done, self.report]
                .into_iter()
                .flatten()
                .all(|x| x + separation >= t),
            Kind::Start => {
                self.done.is_none_or(|d| t <= d) && self.invoke.is_none_or(|a| t + separation >= a)
            }
            Kind::RuntimeDone | Kind::Report => {
                self.start.is_none_or(|s| t >= s) && self.invoke.is_none_or(|a| t + separation >= a)
            }
        }
    }

    /// Whether this (later) attempt began at or before `arrival`, so that an earlier attempt
    /// cannot have it.
    fn claims(&self, arrival: &Arrival<'_>) -> bool {
        let t = arrival.at.0;
        if let Some(start) = self.start {
            return start <= t;
        }
        let slack = match arrival.kind {
            Kind::Start | Kind::RuntimeDone => ATTEMPT_SEPARATION.as_secs_f64(),
            Kind::Invoke | Kind::Report => 0.0,
        };
        self.invoke.is_some_and(|a| a <= t + slack)
    }
}

/// The attempts remembered, oldest first; bounded in count and age.
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    items: VecDeque<Entry>,
    next: u64,
    newest: f64,
    invoked: bool,
}

impl Attempts {
    /// No attempt yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn capacity(&self) -> usize {
        if self.invoked {
            MAX_ATTEMPTS
        } else {
            MAX_CONCURRENT_ATTEMPTS
        }
    }

    /// The attempt of an INVOKE of `request_id` that reached us at `at` (our clock).
    pub fn place_invoke(
        &mut self,
        request_id: &str,
        trace: Option<TraceHeader>,
        at: EpochSeconds,
    ) -> Placed {
        self.place(Arrival {
            kind: Kind::Invoke,
            request_id,
            root: trace.map(|t| t.root),
            at,
        })
    }

    /// The attempt of a Telemetry API record, if it belongs to an invocation.
    pub fn place_event(&mut self, event: &Event) -> Option<Placed> {
        Arrival::of_record(&event.record, event.time).map(|arrival| self.place(arrival))
    }

    /// The attempt `arrival` belongs to (see the module documentation), recorded.
    pub fn place(&mut self, arrival: Arrival<'_>) -> Placed {
        let t = arrival.at.0;
        self.expire(t);
        self.invoked |= arrival.kind == Kind::Invoke;
        let redelivered = (arrival.kind != Kind::Invoke)
            .then(|| {
                self.items
                    .iter()
                    .position(|e| e.is(&arrival) && e.time(arrival.kind) == Some(t))
            })
            .flatten();
        let index = match redelivered.or_else(|| self.open(&arrival)) {
            Some(index) => index,
            None => self.push(&arrival),
        };
        let entry = &mut self.items[index];
        let had_runtime_done = entry.done.is_some();
        *entry.slot(arrival.kind) = Some(t);
        entry.touched = entry.touched.max(t);
        if entry.root.is_none() {
            entry.root = arrival.root;
        }
        Placed {
            id: entry.id,
            redelivered: redelivered.is_some(),
            had_runtime_done,
        }
    }

    /// The oldest attempt that can take `arrival` and that no later one claims.
    fn open(&self, arrival: &Arrival<'_>) -> Option<usize> {
        let ours = |e: &Entry| e.is(arrival);
        (0..self.items.len()).find(|&i| {
            let e = &self.items[i];
            ours(e)
                && e.time(arrival.kind).is_none()
                && e.fits(arrival)
                && (arrival.kind == Kind::Invoke
                    || !self
                        .items
                        .iter()
                        .skip(i + 1)
                        .any(|later| ours(later) && later.claims(arrival)))
        })
    }

    fn push(&mut self, arrival: &Arrival<'_>) -> usize {
        if self.items.len() >= self.capacity() {
            // Prefer forgetting one whose report is in: only copies can still come for it.
            let index = self
                .items
                .iter()
                .position(|e| e.report.is_some())
                .unwrap_or(0);
            self.items.remove(index);
        }
        self.next += 1;
        self.items.push_back(Entry {
            id: AttemptId(self.next),
            request_id: arrival.request_id.to_owned(),
            root: arrival.root,
            invoke: None,
            start: None,
            done: None,
            report: None,
            touched: arrival.at.0,
        });
        self.items.len() - 1
    }

    /// Forgets attempts untouched for [`MAX_ATTEMPT_AGE_SECONDS`] before the newest time seen.
    fn expire(&mut self, t: f64) {
        if t.is_finite() {
            self.newest = self.newest.max(t);
        }
        let horizon = self.newest - MAX_ATTEMPT_AGE_SECONDS;
        self.items.retain(|e| e.touched >= horizon);
    }
}

#[cfg(test)]
mod tests;
