//! What the enricher remembers: the environment's init (or restore) records, and per
//! invocation what arrived for it. Bounded in count and age. Pure: times are inputs.
//!
//! An invocation is one INVOKE, not one request id: Lambda's asynchronous retries re-deliver an
//! event under the same request id. Each record is attached to the oldest attempt of its request
//! id that still lacks a record of its kind (and whose trace root, when both are known, is the
//! record's), so a late `platform.report` of attempt 1 never lands on attempt 2, and attempt 2
//! gets its own `Runtime` id.

use std::collections::VecDeque;

use crate::lambda::events::ShutdownReason;
use crate::lambda::telemetry::{
    EpochSeconds, InitStart, InitializationType, Phase, PhaseDone, PhaseReport, Report,
    RuntimeDone, Status, TenantId,
};
use crate::trace::{SegmentId, TraceHeader, TraceId};

/// Invocations remembered on the one-at-a-time models (waiting for their report or late records).
pub const MAX_TRACKED_INVOCATIONS: usize = 8;
/// Invocations remembered on Lambda Managed Instances, where many run at once.
pub const MAX_TRACKED_CONCURRENT_INVOCATIONS: usize = 1_024;
/// An invocation untouched for this long (in record time) is forgotten: longer than the
/// longest function timeout (900 s), so only pairs that will never complete go.
pub const MAX_INVOCATION_AGE_SECONDS: f64 = 960.0;

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

/// Which record an invocation received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The Extensions API INVOKE.
    Invoke,
    /// `platform.start`.
    Start,
    /// `platform.runtimeDone`.
    RuntimeDone,
    /// `platform.report`.
    Report,
}

/// What arrived for one invocation (one INVOKE: a retry under the same request id is another).
#[derive(Debug)]
pub struct Invocation {
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
    fn has(&self, slot: Slot) -> bool {
        match slot {
            Slot::Invoke => self.invoked,
            Slot::Start => self.start.is_some(),
            Slot::RuntimeDone => self.done.is_some(),
            Slot::Report => self.report.is_some(),
        }
    }

    fn root(&self) -> Option<TraceId> {
        self.trace.map(|t| t.root)
    }

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

/// A record for an invocation, as the table needs to place it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Which record.
    pub slot: Slot,
    /// Its request id.
    pub request_id: &'a str,
    /// Its trace root, when it has one.
    pub root: Option<TraceId>,
    /// Its time.
    pub at: EpochSeconds,
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

    /// Where `arrival` belongs: the oldest attempt of its request id that lacks a record of its
    /// kind (a record identical in kind and time to one it already has is a redelivery and goes
    /// to the same one), else a new invocation with an id from `new_id`. Returns its index and
    /// the invocation pushed out to stay within the bound, if any.
    pub fn place(
        &mut self,
        arrival: Arrival<'_>,
        new_id: impl FnOnce() -> SegmentId,
    ) -> (usize, Option<Invocation>) {
        let same_root = |inv: &Invocation| match (inv.root(), arrival.root) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let candidates = || {
            self.items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.request_id == arrival.request_id && same_root(i))
        };
        let redelivered = candidates()
            .find(|(_, inv)| is_redelivery(inv, arrival))
            .map(|(index, _)| index);
        let open = candidates()
            .find(|(_, inv)| !inv.has(arrival.slot) && fits(inv, arrival))
            .map(|(index, _)| index);
        if let Some(index) = redelivered.or(open) {
            let inv = &mut self.items[index];
            inv.touched = EpochSeconds(inv.touched.0.max(arrival.at.0));
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
            request_id: arrival.request_id.to_owned(),
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
            touched: arrival.at,
        });
        (self.items.len() - 1, evicted)
    }
}

/// Whether `arrival`'s time is consistent with what `inv` already has: a start is not after
/// its runtimeDone, a runtimeDone or report not before its start.
fn fits(inv: &Invocation, arrival: Arrival<'_>) -> bool {
    let done = inv.done.as_ref().map(|(t, _)| t.0);
    match arrival.slot {
        Slot::Invoke => true,
        Slot::Start => done.is_none_or(|d| arrival.at.0 <= d),
        Slot::RuntimeDone | Slot::Report => inv.start.is_none_or(|s| arrival.at.0 >= s.0),
    }
}

fn is_redelivery(inv: &Invocation, arrival: Arrival<'_>) -> bool {
    let same = |t: Option<EpochSeconds>| t.is_some_and(|t| t == arrival.at);
    match arrival.slot {
        Slot::Invoke => false,
        Slot::Start => same(inv.start),
        Slot::RuntimeDone => same(inv.done.as_ref().map(|(t, _)| *t)),
        Slot::Report => same(inv.report.as_ref().map(|(t, _)| *t)),
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

    fn arrival(slot: Slot, request_id: &str, at: f64) -> Arrival<'_> {
        Arrival {
            slot,
            request_id,
            root: None,
            at: EpochSeconds(at),
        }
    }

    fn ids() -> impl FnMut() -> SegmentId {
        let mut n = 0;
        move || {
            n += 1;
            SegmentId::from_u64(n)
        }
    }

    /// Fill in the slot the way the enricher does.
    fn mark(table: &mut Invocations, index: usize, slot: Slot, at: f64) {
        let inv = table.get_mut(index).unwrap();
        let t = EpochSeconds(at);
        match slot {
            Slot::Invoke => inv.invoked = true,
            Slot::Start => inv.start = Some(t),
            Slot::RuntimeDone => {
                inv.done = Some((
                    t,
                    RuntimeDone {
                        request_id: "r".into(),
                        status: None,
                        error_type: None,
                        metrics: None,
                        spans: Vec::new(),
                        tracing: None,
                        tenant_id: None,
                    },
                ));
            }
            Slot::Report => {
                inv.report = Some((
                    t,
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
            }
        }
    }

    #[test]
    fn a_retry_under_the_same_request_id_is_another_invocation() {
        let mut table = Invocations::new(MAX_TRACKED_INVOCATIONS);
        let mut new_id = ids();
        let mut place = |table: &mut Invocations, slot, at| {
            let (index, _) = table.place(arrival(slot, "r", at), &mut new_id);
            mark(table, index, slot, at);
            index
        };
        // Attempt 1 runs; its report arrives only during attempt 2.
        assert_eq!(place(&mut table, Slot::Invoke, 1.0), 0);
        assert_eq!(place(&mut table, Slot::Start, 1.0), 0);
        assert_eq!(place(&mut table, Slot::RuntimeDone, 2.0), 0);
        assert_eq!(place(&mut table, Slot::Invoke, 60.0), 1);
        assert_eq!(place(&mut table, Slot::Report, 2.1), 0);
        assert_eq!(place(&mut table, Slot::Start, 60.0), 1);
        assert_eq!(place(&mut table, Slot::RuntimeDone, 61.0), 1);
        assert_eq!(place(&mut table, Slot::Report, 61.1), 1);
        assert_ne!(
            table.get(0).unwrap().runtime_id,
            table.get(1).unwrap().runtime_id
        );
        assert!(table.get(0).unwrap().first && !table.get(1).unwrap().first);
        // A redelivered runtimeDone of attempt 1 stays with attempt 1.
        assert_eq!(place(&mut table, Slot::RuntimeDone, 2.0), 0);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn records_before_the_invoke_and_report_before_start() {
        let mut table = Invocations::new(MAX_TRACKED_INVOCATIONS);
        let mut new_id = ids();
        let mut place = |table: &mut Invocations, slot, id, at| {
            let (index, _) = table.place(arrival(slot, id, at), &mut new_id);
            mark(table, index, slot, at);
            index
        };
        assert_eq!(place(&mut table, Slot::RuntimeDone, "a", 2.0), 0);
        assert_eq!(place(&mut table, Slot::Invoke, "a", 1.0), 0);
        assert_eq!(place(&mut table, Slot::Report, "b", 3.0), 1);
        assert_eq!(place(&mut table, Slot::Start, "b", 2.5), 1);
    }

    #[test]
    fn a_different_trace_root_is_a_different_attempt() {
        let mut table = Invocations::new(MAX_TRACKED_INVOCATIONS);
        let mut new_id = ids();
        let (index, _) = table.place(arrival(Slot::Invoke, "r", 1.0), &mut new_id);
        let root_a = TraceId::parse("1-62e900b2-710d76f009d6e7785905449a").unwrap();
        let root_b = TraceId::parse("1-62e900b3-710d76f009d6e7785905449a").unwrap();
        table.get_mut(index).unwrap().trace = Some(TraceHeader {
            root: root_a,
            parent: None,
            sampling: crate::trace::Sampling::Sampled,
        });
        mark(&mut table, index, Slot::Invoke, 1.0);
        let mut start_b = arrival(Slot::Start, "r", 2.0);
        start_b.root = Some(root_b);
        assert_eq!(table.place(start_b, &mut new_id).0, 1);
        let mut start_a = arrival(Slot::Start, "r", 1.0);
        start_a.root = Some(root_a);
        assert_eq!(table.place(start_a, &mut new_id).0, 0);
    }

    #[test]
    fn bounded_in_count_preferring_complete_ones_and_in_age() {
        let mut table = Invocations::new(3);
        let mut new_id = ids();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            let at = 1.0 + f64::from(u32::try_from(i).unwrap());
            let (index, _) = table.place(arrival(Slot::Start, id, at), &mut new_id);
            mark(&mut table, index, Slot::Start, at);
        }
        // "b" is complete: it goes first, though "a" is older.
        let b = table.get_mut(1).unwrap();
        b.emitted = true;
        mark(&mut table, 1, Slot::Report, 2.5);
        let (_, evicted) = table.place(arrival(Slot::Start, "d", 4.0), &mut new_id);
        assert_eq!(evicted.unwrap().request_id, "b");
        let (_, evicted) = table.place(arrival(Slot::Start, "e", 5.0), &mut new_id);
        assert_eq!(evicted.unwrap().request_id, "a");
        assert_eq!(table.len(), 3);
        // Nothing for "c", "d", "e" in 960 s: forgotten.
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
