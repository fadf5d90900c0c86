//! The flush-point state machine (see the module documentation).

use std::time::Duration;

use tokio::time::Instant;

use super::io::{Action, Input};
use crate::attempt::AttemptId;
use crate::export::exporter::ExportView;
use crate::export::policy::{AtInvoke, BufferState, Policy, PolicyConfig, Strategy};

/// What the machine is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Bounds an invocation's post-runtime phase, counted from runtimeDone.
    pub flush_timeout: Duration,
    /// Kept free before the SHUTDOWN deadline.
    pub shutdown_margin: Duration,
    /// At SHUTDOWN, how long to wait for the last `platform.report`.
    pub report_wait: Duration,
    /// Without its runtimeDone, an invocation is released this long before its deadline: past
    /// the deadline Lambda times the invocation out and resets the environment.
    pub deadline_margin: Duration,
    /// The flush policy.
    pub policy: PolicyConfig,
    /// Whether telemetry records will arrive (runtimeDone can be waited for).
    pub telemetry: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Invoke: waiting for its runtimeDone.
    AwaitRuntimeDone,
    /// Shutdown: waiting for the last `platform.report`.
    AwaitReport,
    /// Waiting for the UDP drain.
    Draining,
    /// Sending (or waiting out a background send in flight).
    Flushing,
}

#[derive(Debug, Clone, PartialEq)]
enum Point {
    Invoke {
        seq: u64,
        attempt: AttemptId,
        request_id: String,
        stage: Stage,
        deadline: Instant,
        flush_deadline: Option<Instant>,
        runtime_done_at: Option<Instant>,
        /// Our own send round has started (a send in flight before it is waited out first).
        own_send: bool,
    },
    Shutdown {
        stage: Stage,
        deadline: Instant,
        report_until: Instant,
        hard_deadline: Instant,
    },
}

/// An INVOKE as [`FlushPoints::on_invoke`] takes it.
struct Invoke {
    seq: u64,
    attempt: AttemptId,
    request_id: String,
    runtime_done: bool,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct FlushPoints {
    settings: Settings,
    policy: Policy,
    point: Option<Point>,
    degraded: bool,
    exited: bool,
}

impl FlushPoints {
    /// A machine with no flush point under way.
    pub fn new(settings: Settings) -> Self {
        Self {
            policy: Policy::new(settings.policy),
            settings,
            point: None,
            degraded: false,
            exited: false,
        }
    }

    /// Whether holding is suspended because a runtimeDone went missing.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Whether the shutdown is over.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// Whether a flush point is under way.
    pub fn is_active(&self) -> bool {
        self.point.is_some()
    }

    /// Whether the idle timer should run: nothing is held at INVOKEs, so only it sends.
    pub fn idle_sends(&self) -> bool {
        !self.settings.telemetry || self.degraded || self.policy.strategy() != Strategy::End
    }

    /// When to feed [`Input::Wake`] (none when nothing is under way).
    pub fn wake_at(&self) -> Option<Instant> {
        match self.point.as_ref()? {
            Point::Invoke {
                stage: Stage::AwaitRuntimeDone,
                deadline,
                ..
            } => Some(
                deadline
                    .checked_sub(self.settings.deadline_margin)
                    .unwrap_or(*deadline),
            ),
            Point::Invoke {
                flush_deadline,
                deadline,
                ..
            } => Some(flush_deadline.unwrap_or(*deadline)),
            Point::Shutdown {
                stage: Stage::AwaitReport,
                report_until,
                ..
            } => Some(*report_until),
            Point::Shutdown { hard_deadline, .. } => Some(*hard_deadline),
        }
    }

    /// Feeds one input at `now`; returns what to do, in order.
    pub fn on(&mut self, input: Input, now: Instant, export: ExportView) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.exited {
            // After the shutdown only late INVOKEs can come; never hold them.
            if let Input::Invoke { seq, .. } = input {
                actions.push(Action::Release(seq));
            }
            return actions;
        }
        match input {
            Input::Invoke {
                seq,
                attempt,
                request_id,
                runtime_done,
                deadline,
            } => {
                let invoke = Invoke {
                    seq,
                    attempt,
                    request_id,
                    runtime_done,
                };
                self.on_invoke(invoke, deadline, now, export, &mut actions);
            }
            Input::Shutdown {
                deadline,
                awaiting_report,
            } => self.on_shutdown(deadline, awaiting_report, now, &mut actions),
            Input::RuntimeDone(attempt) => self.on_runtime_done(attempt, now, &mut actions),
            Input::ReportArrived => {
                if matches!(
                    self.point,
                    Some(Point::Shutdown {
                        stage: Stage::AwaitReport,
                        ..
                    })
                ) {
                    self.begin_drain(now, &mut actions);
                }
            }
            Input::Drained => {
                if self.stage() == Some(Stage::Draining) {
                    self.set_stage(Stage::Flushing);
                    self.continue_flushing(now, export, &mut actions);
                }
            }
            Input::SendDone => self.on_send_done(now, export, &mut actions),
            Input::Wake => self.on_wake(now, export, &mut actions),
            Input::Pressure => {
                // While the function runs (held for its runtimeDone) it is not frozen, and
                // where nothing is held a sender already runs in the background: send now
                // rather than let the buffer overflow. Never between held invocations (the
                // environment may be frozen mid-send) nor during a flush (it sends itself).
                let running = matches!(
                    self.point,
                    Some(Point::Invoke {
                        stage: Stage::AwaitRuntimeDone,
                        ..
                    })
                );
                if running || (self.point.is_none() && self.idle_sends()) {
                    self.send_unless_busy(
                        now + self.settings.flush_timeout,
                        now,
                        export,
                        &mut actions,
                    );
                }
            }
            Input::Tick => {
                if self.point.is_none() && self.idle_sends() && export.queued > 0 {
                    self.send_unless_busy(
                        now + self.settings.flush_timeout,
                        now,
                        export,
                        &mut actions,
                    );
                }
            }
        }
        actions
    }

    fn stage(&self) -> Option<Stage> {
        match self.point.as_ref()? {
            Point::Invoke { stage, .. } | Point::Shutdown { stage, .. } => Some(*stage),
        }
    }

    fn set_stage(&mut self, to: Stage) {
        if let Some(Point::Invoke { stage, .. } | Point::Shutdown { stage, .. }) =
            self.point.as_mut()
        {
            *stage = to;
        }
    }

    fn send_unless_busy(
        &mut self,
        deadline: Instant,
        now: Instant,
        export: ExportView,
        actions: &mut Vec<Action>,
    ) -> bool {
        if export.in_flight || export.queued == 0 {
            return false;
        }
        self.policy.sent(now);
        actions.push(Action::Send { deadline });
        true
    }

    /// A flush's deadline: the flush timeout, capped by the invocation's deadline when it is
    /// still ahead.
    fn flush_deadline(&self, now: Instant, invocation_deadline: Instant) -> Instant {
        let cap = now + self.settings.flush_timeout;
        if invocation_deadline > now {
            cap.min(invocation_deadline)
        } else {
            cap
        }
    }

    fn on_invoke(
        &mut self,
        invoke: Invoke,
        deadline: Option<Instant>,
        now: Instant,
        export: ExportView,
        actions: &mut Vec<Action>,
    ) {
        let Invoke {
            seq,
            attempt,
            request_id,
            runtime_done,
        } = invoke;
        match self.point {
            Some(Point::Shutdown { .. }) => {
                // Never hold during a shutdown.
                actions.push(Action::Release(seq));
                return;
            }
            // Cannot happen (the event loop waits for our answer); if it did, let go of it.
            Some(Point::Invoke { .. }) => self.finish_invoke(now, actions),
            None => {}
        }
        let buffer = BufferState {
            queued: export.queued,
            oldest: export.oldest,
        };
        let decision = self.policy.on_invoke(now, buffer);
        // After a lost runtimeDone, or without a deadline to bound the hold: background.
        let (decision, deadline) = match deadline {
            Some(deadline) if !self.degraded => (decision, deadline),
            _ => (
                AtInvoke {
                    hold: false,
                    send: export.queued > 0,
                },
                now,
            ),
        };
        if decision.send {
            self.send_unless_busy(self.flush_deadline(now, deadline), now, export, actions);
        }
        if !decision.hold {
            // Our /event/next goes in at once: the function never waits for us.
            actions.push(Action::Release(seq));
            return;
        }
        if !self.settings.telemetry {
            // No runtimeDone will come: flush what earlier invocations left, then answer.
            self.point = Some(Point::Invoke {
                seq,
                attempt,
                request_id,
                stage: Stage::Flushing,
                deadline,
                flush_deadline: Some(self.flush_deadline(now, deadline)),
                runtime_done_at: None,
                own_send: false,
            });
            self.continue_flushing(now, export, actions);
            return;
        }
        self.point = Some(Point::Invoke {
            seq,
            attempt,
            request_id,
            stage: Stage::AwaitRuntimeDone,
            deadline,
            flush_deadline: None,
            runtime_done_at: None,
            own_send: false,
        });
        if runtime_done {
            // Its runtimeDone came first.
            self.begin_drain(now, actions);
        }
    }

    fn on_shutdown(
        &mut self,
        deadline: Instant,
        awaiting_report: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        match self.point {
            // A second SHUTDOWN (SIGTERM, then Lambda's) joins the one under way.
            Some(Point::Shutdown { .. }) => return,
            Some(Point::Invoke { .. }) => self.finish_invoke(now, actions),
            None => {}
        }
        let deadline = deadline
            .checked_sub(self.settings.shutdown_margin)
            .unwrap_or(now)
            .max(now);
        self.point = Some(Point::Shutdown {
            stage: Stage::AwaitReport,
            deadline,
            report_until: (now + self.settings.report_wait).min(deadline),
            // The sends' own timeouts end at `deadline`; this lets a call finishing right
            // then settle, and still leaves half the margin.
            hard_deadline: deadline + self.settings.shutdown_margin / 2,
        });
        if !awaiting_report {
            self.begin_drain(now, actions);
        }
    }

    fn on_runtime_done(&mut self, attempt: AttemptId, now: Instant, actions: &mut Vec<Action>) {
        if self.degraded {
            self.degraded = false;
            actions.push(Action::GuardCleared);
        }
        // Only the held invocation's own runtimeDone moves it on; another attempt's (a copy, a
        // late one of an invocation released without it, one before its INVOKE) changes
        // nothing here.
        let held = matches!(
            &self.point,
            Some(Point::Invoke {
                attempt: current,
                stage: Stage::AwaitRuntimeDone,
                ..
            }) if *current == attempt
        );
        if held {
            self.begin_drain(now, actions);
        }
    }

    fn begin_drain(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let cap = match &self.point {
            Some(Point::Invoke { deadline, .. }) => Some(self.flush_deadline(now, *deadline)),
            _ => None,
        };
        match self.point.as_mut() {
            Some(Point::Invoke {
                stage,
                flush_deadline,
                runtime_done_at,
                ..
            }) => {
                *stage = Stage::Draining;
                // The flush timeout bounds the whole post-runtime phase: it starts now, at
                // runtimeDone, and covers the drain, a send already in flight, and ours.
                if flush_deadline.is_none() {
                    *flush_deadline = cap;
                }
                runtime_done_at.get_or_insert(now);
            }
            Some(Point::Shutdown { stage, .. }) => *stage = Stage::Draining,
            None => return,
        }
        actions.push(Action::Drain);
    }

    /// Starts a send round, or ends the flush point when nothing is left to do.
    fn continue_flushing(&mut self, now: Instant, export: ExportView, actions: &mut Vec<Action>) {
        if export.in_flight {
            return; // resumes at SendDone
        }
        let deadline = match &self.point {
            Some(Point::Invoke { flush_deadline, .. }) => flush_deadline.unwrap_or(now),
            Some(Point::Shutdown { deadline, .. }) => *deadline,
            None => return,
        };
        if export.queued == 0 || now >= deadline {
            self.finish(now, actions);
            return;
        }
        if let Some(Point::Invoke { own_send, .. }) = self.point.as_mut() {
            *own_send = true;
        }
        self.send_unless_busy(deadline, now, export, actions);
    }

    fn on_send_done(&mut self, now: Instant, export: ExportView, actions: &mut Vec<Action>) {
        match &self.point {
            Some(Point::Invoke {
                stage: Stage::Flushing,
                own_send: true,
                ..
            }) => {
                // One round per invocation: what failed stays for the next flush point.
                self.finish(now, actions);
            }
            Some(
                Point::Invoke {
                    stage: Stage::Flushing,
                    ..
                }
                | Point::Shutdown {
                    stage: Stage::Flushing,
                    ..
                },
            ) => self.continue_flushing(now, export, actions),
            _ => {}
        }
    }

    fn on_wake(&mut self, now: Instant, export: ExportView, actions: &mut Vec<Action>) {
        let Some(wake) = self.wake_at() else {
            return;
        };
        if now < wake {
            return;
        }
        match &self.point {
            Some(Point::Invoke {
                stage: Stage::AwaitRuntimeDone,
                request_id,
                ..
            }) => {
                // The deadline came without runtimeDone: Lambda is timing the invocation out.
                // Let go now, and stop holding until telemetry proves healthy again.
                if !self.degraded {
                    self.degraded = true;
                    actions.push(Action::GuardTripped {
                        request_id: request_id.clone(),
                    });
                }
                self.send_unless_busy(now + self.settings.flush_timeout, now, export, actions);
                self.finish(now, actions);
            }
            Some(Point::Invoke { .. }) => {
                // The flush timeout: the send goes on in the background; what it cannot
                // deliver is kept for the next flush point.
                self.finish(now, actions);
            }
            Some(Point::Shutdown {
                stage: Stage::AwaitReport,
                ..
            }) => self.begin_drain(now, actions),
            Some(Point::Shutdown { .. }) => self.finish(now, actions),
            None => {}
        }
    }

    fn finish(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match self.point {
            Some(Point::Invoke { .. }) => self.finish_invoke(now, actions),
            Some(Point::Shutdown { .. }) => {
                self.point = None;
                self.exited = true;
                actions.push(Action::Exit);
            }
            None => {}
        }
    }

    fn finish_invoke(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Some(Point::Invoke {
            seq,
            runtime_done_at,
            ..
        }) = self.point.take()
        {
            actions.push(Action::Release(seq));
            if let Some(from) = runtime_done_at {
                actions.push(Action::PostRuntime(now.saturating_duration_since(from)));
            }
        }
    }
}
