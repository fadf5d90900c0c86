//! What the enricher remembers: the environment's init (or restore) records, and per
//! invocation what arrived for it. Bounded in count and age. Pure: times are inputs.
//!
//! An invocation is one attempt ([`crate::attempt`] decides which attempt each INVOKE and
//! record belongs to), not one request id: Lambda's asynchronous retries re-deliver an event
//! under the same request id, and each attempt gets its own `Runtime` id.

use std::collections::VecDeque;

use crate::attempt::{AttemptId, MAX_ATTEMPT_AGE_SECONDS};
use crate::lambda::events::ShutdownReason;
use crate::lambda::telemetry::{
    EpochSeconds, InitStart, InitializationType, Phase, PhaseDone, PhaseReport, Report,
    RuntimeDone, Status, TenantId,
};
use crate::trace::{SegmentId, TraceHeader};

/// Invocations remembered on the one-at-a-time models (waiting for their report or late records).
pub const MAX_TRACKED_INVOCATIONS: usize = 8;
/// Invocations remembered on Lambda Managed Instances, where many run at once.
pub const MAX_TRACKED_CONCURRENT_INVOCATIONS: usize = 1_024;
/// An invocation untouched for this long (in record time) is forgotten: as long as its attempt
/// is remembered.
pub const MAX_INVOCATION_AGE_SECONDS: f64 = MAX_ATTEMPT_AGE_SECONDS;

/// The init (and SnapStart restore) records of this environment.
#[derive(Debug, Default)]
pub struct InitPhase {
    /// `platform.initStart`.
    pub start: Option<(EpochSeconds, InitStart)>,
    /// `platform.initRuntimeDone`.
    pub runtime_done: Option<(EpochSeconds, PhaseDone)>,
    /// `platform.initReport`.
    pub report: Option<(EpochSeconds, PhaseReport)>,
    /// `platform.restoreStart`.
    pub restore_start: Option<(EpochSeconds, InitStart)>,
    /// `platform.restoreRuntimeDone`.
    pub restore_done: Option<(EpochSeconds, PhaseDone)>,
    /// `platform.restoreReport`.
    pub restore_report: Option<(EpochSeconds, PhaseReport)>,
}

impl InitPhase {
    /// Facts about the function and runtime: from the restore when there was one.
    pub fn info(&self) -> Option<&InitStart> {
        self.restore_start
            .as_ref()
            .or(self.start.as_ref())
            .map(|(_, s)| s)
    }

    /// `initializationType` as any init record gives it.
    pub fn init_type(&self) -> Option<&InitializationType> {
        let from_start = self
            .start
            .as_ref()
            .and_then(|(_, s)| s.initialization_type.as_ref());
        let from_done = self
            .runtime_done
            .as_ref()
            .and_then(|(_, d)| d.initialization_type.as_ref());
        let from_report = self
            .report
            .as_ref()
            .and_then(|(_, r)| r.initialization_type.as_ref());
        from_start.or(from_done).or(from_report)
    }

    /// A restore record arrived.
    pub fn restored(&self) -> bool {
        self.restore_start.is_some() || self.restore_done.is_some() || self.restore_report.is_some()
    }

    /// When the init ended: by its report's duration or its runtimeDone, whichever is later.
    pub fn end(&self) -> Option<EpochSeconds> {
        phase_end(
            self.start.as_ref(),
            self.report.as_ref(),
            self.runtime_done.as_ref(),
        )
    }

    /// When the restore ended.
    pub fn restore_end(&self) -> Option<EpochSeconds> {
        phase_end(
            self.restore_start.as_ref(),
            self.restore_report.as_ref(),
            self.restore_done.as_ref(),
        )
    }

    /// The init was retried inside the first invoke (`phase: "invoke"`).
    pub fn suppressed(&self) -> bool {
        self.start
            .as_ref()
            .is_some_and(|(_, s)| s.phase == Some(Phase::Invoke))
    }

    /// The init records describe something before this environment's start: a SnapStart
    /// snapshot's creation. Known from the initialization type, or from the records' own times
    /// (an init that began before the restore did).
    pub fn init_is_stale(&self, env_type: &InitializationType) -> bool {
        let by_type = *env_type == InitializationType::SnapStart
            || self.init_type() == Some(&InitializationType::SnapStart);
        let by_time = match (&self.start, &self.restore_start) {
            (Some((init, _)), Some((restore, _))) => init.0 < restore.0,
            _ => false,
        };
        by_type || by_time || self.restored()
    }
}

/// The end of an init or restore: its start plus its report's duration, or its runtimeDone,
/// whichever is later.
fn phase_end(
    start: Option<&(EpochSeconds, InitStart)>,
    report: Option<&(EpochSeconds, PhaseReport)>,
    done: Option<&(EpochSeconds, PhaseDone)>,
) -> Option<EpochSeconds> {
    let (start, _) = start?;
    let by_report = report.map(|(_, r)| start.plus_ms(r.metrics.duration_ms));
    let by_done = done.map(|(t, _)| *t);
    max_time(by_report, by_done).or(Some(*start))
}

/// What arrived for one invocation (one INVOKE: a retry under the same request id is another).
#[derive(Debug)]
pub struct Invocation {
    /// Its attempt.
    pub attempt: AttemptId,
    /// The request.
    pub request_id: String,
    /// Its trace context: the INVOKE's when there was one, else the records'.
    pub trace: Option<TraceHeader>,
    /// The INVOKE arrived.
    pub invoked: bool,
    /// `deadlineMs` of the INVOKE.
    pub deadline: Option<EpochSeconds>,
    /// When we received the INVOKE.
    pub received_at: Option<EpochSeconds>,
    /// `platform.start`'s time.
    pub start: Option<EpochSeconds>,
    /// `platform.runtimeDone`.
    pub done: Option<(EpochSeconds, RuntimeDone)>,
    /// `platform.report`.
    pub report: Option<(EpochSeconds, Report)>,
    /// SHUTDOWN came while it had not finished: when, and the reason.
    pub killed_at_shutdown: Option<(EpochSeconds, ShutdownReason)>,
    /// The tenant its records name (tenant isolation).
    pub tenant_id: Option<TenantId>,
    /// Id of its `Runtime` subsegment, stable across re-sends.
    pub runtime_id: SegmentId,
    /// The environment's first invocation.
    pub first: bool,
    /// Documents were sent for it.
    pub emitted: bool,
    /// The last time (record or INVOKE time) anything arrived for it.
    pub touched: EpochSeconds,
}

impl Invocation {
    /// The runtime finished it (or we know it never will).
    pub fn finished(&self) -> bool {
        self.done.is_some() || self.report.is_some() || self.killed_at_shutdown.is_some()
    }

    /// Everything that can arrive for it has: nothing more will change its documents.
    pub fn complete(&self) -> bool {
        self.emitted && self.report.is_some()
    }

    /// `status` and `errorType`: the runtimeDone's, else the report's (Lambda Managed
    /// Instances send no runtimeDone).
    pub fn outcome(&self) -> (Option<&Status>, Option<&str>) {
        if let Some((_, d)) = &self.done {
            return (d.status.as_ref(), d.error_type.as_deref());
        }
        if let Some((_, r)) = &self.report {
            return (r.status.as_ref(), r.error_type.as_deref());
        }
        (None, None)
    }
}

/// The invocations remembered, oldest first; bounded in count and age.
#[derive(Debug)]
pub struct Invocations {
    items: VecDeque<Invocation>,
    capacity: usize,
    newest: f64,
    seen_first: bool,
}

impl Invocations {
    /// An empty table holding at most `capacity` invocations.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            newest: f64::MIN,
            seen_first: false,
        }
    }

    /// Raises the bound (when Lambda Managed Instances are recognised from a record).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The invocation at `index`.
    pub fn get(&self, index: usize) -> Option<&Invocation> {
        self.items.get(index)
    }

    /// The invocation at `index`, to update.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Invocation> {
        self.items.get_mut(index)
    }

    /// Every remembered invocation, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Invocation> {
        self.items.iter()
    }

    /// Indexes of the remembered invocations matching `f`.
    pub fn positions(&self, f: impl Fn(&Invocation) -> bool) -> Vec<usize> {
        (0..self.items.len())
            .filter(|i| f(&self.items[*i]))
            .collect()
    }

    /// Forgets invocations untouched for [`MAX_INVOCATION_AGE_SECONDS`] before the newest time
    /// seen (`at` included); returns them, so those that finished can still be reported.
    pub fn expire(&mut self, at: EpochSeconds) -> Vec<Invocation> {
        self.newest = self.newest.max(at.0);
        let horizon = self.newest - MAX_INVOCATION_AGE_SECONDS;
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.items.len() {
            if self.items[i].touched.0 < horizon {
                gone.extend(self.items.remove(i));
            } else {
                i += 1;
            }
        }
        gone
    }

    /// The invocation of `attempt` (of `request_id`), a new one (with an id from `new_id`) when
    /// it is not remembered. Returns its index and the invocation pushed out to stay within the
    /// bound, if any.
    pub fn entry(
        &mut self,
        attempt: AttemptId,
        request_id: &str,
        at: EpochSeconds,
        new_id: impl FnOnce() -> SegmentId,
    ) -> (usize, Option<Invocation>) {
        if let Some(index) = self.items.iter().position(|i| i.attempt == attempt) {
            let inv = &mut self.items[index];
            inv.touched = EpochSeconds(inv.touched.0.max(at.0));
            return (index, None);
        }
        let evicted = if self.items.len() >= self.capacity {
            // Prefer forgetting one that can change no more.
            let index = self
                .items
                .iter()
                .position(Invocation::complete)
                .unwrap_or(0);
            self.items.remove(index)
        } else {
            None
        };
        let first = !std::mem::replace(&mut self.seen_first, true);
        self.items.push_back(Invocation {
            attempt,
            request_id: request_id.to_owned(),
            trace: None,
            invoked: false,
            deadline: None,
            received_at: None,
            start: None,
            done: None,
            report: None,
            killed_at_shutdown: None,
            tenant_id: None,
            runtime_id: new_id(),
            first,
            emitted: false,
            touched: at,
        });
        (self.items.len() - 1, evicted)
    }
}

/// The later of two optional times.
pub fn max_time(a: Option<EpochSeconds>, b: Option<EpochSeconds>) -> Option<EpochSeconds> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut() -> SegmentId {
        let mut n = 0;
        move || {
            n += 1;
            SegmentId::from_u64(n)
        }
    }

    fn attempt(n: u64) -> AttemptId {
        AttemptId::from_u64(n)
    }

    #[test]
    fn one_invocation_per_attempt_each_with_its_own_runtime_id() {
        let mut table = Invocations::new(MAX_TRACKED_INVOCATIONS);
        let mut new_id = ids();
        let mut entry = |table: &mut Invocations, n, at| {
            table
                .entry(attempt(n), "r", EpochSeconds(at), &mut new_id)
                .0
        };
        // Attempt 1 and its retry (same request id): two invocations; attempt 1's late
        // records find attempt 1.
        assert_eq!(entry(&mut table, 1, 1.0), 0);
        assert_eq!(entry(&mut table, 2, 60.0), 1);
        assert_eq!(entry(&mut table, 1, 2.1), 0);
        assert_eq!(entry(&mut table, 2, 61.0), 1);
        assert_eq!(table.len(), 2);
        let (a, b) = (table.get(0).unwrap(), table.get(1).unwrap());
        assert_ne!(a.runtime_id, b.runtime_id);
        assert!(a.first && !b.first);
        assert_eq!(a.touched, EpochSeconds(2.1));
    }

    #[test]
    fn bounded_in_count_preferring_complete_ones_and_in_age() {
        let mut table = Invocations::new(3);
        let mut new_id = ids();
        for n in 1..=3 {
            let at = EpochSeconds(f64::from(u32::try_from(n).unwrap()));
            table.entry(attempt(n), "r", at, &mut new_id);
        }
        // Attempt 2 is complete: it goes first, though attempt 1 is older.
        let b = table.get_mut(1).unwrap();
        b.emitted = true;
        b.report = Some((
            EpochSeconds(2.5),
            Report {
                request_id: "r".into(),
                status: None,
                error_type: None,
                metrics: crate::lambda::telemetry::ReportMetrics::default(),
                spans: Vec::new(),
                tracing: None,
                tenant_id: None,
            },
        ));
        let (_, evicted) = table.entry(attempt(4), "r", EpochSeconds(4.0), &mut new_id);
        assert_eq!(evicted.unwrap().attempt, attempt(2));
        let (_, evicted) = table.entry(attempt(5), "r", EpochSeconds(5.0), &mut new_id);
        assert_eq!(evicted.unwrap().attempt, attempt(1));
        assert_eq!(table.len(), 3);
        // Nothing for attempts 3, 4, 5 in 960 s: forgotten.
        assert!(table.expire(EpochSeconds(100.0)).is_empty());
        let gone = table.expire(EpochSeconds(5.0 + MAX_INVOCATION_AGE_SECONDS + 0.5));
        assert_eq!(gone.len(), 3);
        assert!(table.is_empty());
    }

    #[test]
    fn stale_init_records_are_recognised_by_type_and_by_time() {
        let init: InitStart = InitStart {
            initialization_type: Some(InitializationType::OnDemand),
            ..InitStart::default()
        };
        let mut phase = InitPhase {
            start: Some((EpochSeconds(100.0), init.clone())),
            ..InitPhase::default()
        };
        assert!(!phase.init_is_stale(&InitializationType::OnDemand));
        assert!(phase.init_is_stale(&InitializationType::SnapStart));
        phase.restore_start = Some((EpochSeconds(200.0), InitStart::default()));
        assert!(phase.init_is_stale(&unknown()));
        let snap: InitStart = InitStart {
            initialization_type: Some(InitializationType::SnapStart),
            ..InitStart::default()
        };
        let phase = InitPhase {
            start: Some((EpochSeconds(100.0), snap)),
            ..InitPhase::default()
        };
        assert!(phase.init_is_stale(&unknown()));
    }

    fn unknown() -> InitializationType {
        InitializationType::Unknown(String::new())
    }
}
