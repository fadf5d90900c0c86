//! Table tests of the flush-point machine: each case is a script of inputs at given times
//! (milliseconds from the start) with the exporter's state, and the actions expected.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::attempt::AttemptId;
use crate::export::exporter::ExportView;
use crate::export::policy::{PolicyConfig, Strategy};

const FLUSH_TIMEOUT: u64 = 500;
const MARGIN: u64 = 200;
const REPORT_WAIT: u64 = 150;
const DEADLINE_MARGIN: u64 = 200;
fn settings(strategy: Strategy, telemetry: bool) -> Settings {
    Settings {
        flush_timeout: Duration::from_millis(FLUSH_TIMEOUT),
        shutdown_margin: Duration::from_millis(MARGIN),
        report_wait: Duration::from_millis(REPORT_WAIT),
        deadline_margin: Duration::from_millis(DEADLINE_MARGIN),
        policy: PolicyConfig {
            strategy,
            ..PolicyConfig::default()
        },
        telemetry,
    }
}

/// The exporter's state as the shell would report it.
#[derive(Clone, Copy)]
struct View {
    queued: usize,
    in_flight: bool,
}

const EMPTY: View = View {
    queued: 0,
    in_flight: false,
};
const QUEUED: View = View {
    queued: 3,
    in_flight: false,
};
const FLYING: View = View {
    queued: 0,
    in_flight: true,
};
const FLYING_QUEUED: View = View {
    queued: 2,
    in_flight: true,
};

struct Run {
    machine: FlushPoints,
    t0: Instant,
}

impl Run {
    fn new(strategy: Strategy, telemetry: bool) -> Self {
        Self {
            machine: FlushPoints::new(settings(strategy, telemetry)),
            t0: Instant::now(),
        }
    }

    fn t(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn on(&mut self, ms: u64, input: Input, view: View) -> Vec<Action> {
        let export = ExportView {
            queued: view.queued,
            oldest: (view.queued > 0).then_some(self.t0),
            in_flight: view.in_flight,
        };
        self.machine.on(input, self.t(ms), export)
    }

    /// Runs a script, asserting each step's actions.
    fn script(&mut self, steps: &[(u64, Input, View, Vec<Action>)]) {
        for (i, (ms, input, view, expected)) in steps.iter().enumerate() {
            let got = self.on(*ms, input.clone(), *view);
            assert_eq!(&got, expected, "step {i} at {ms} ms: {input:?}");
        }
    }
}

fn invoke(run: &Run, seq: u64, request_id: &str, attempt: u64, deadline_ms: u64) -> Input {
    Input::Invoke {
        seq,
        attempt: AttemptId::from_u64(attempt),
        request_id: request_id.into(),
        runtime_done: false,
        deadline: Some(run.t(deadline_ms)),
    }
}

fn done(attempt: u64) -> Input {
    Input::RuntimeDone(AttemptId::from_u64(attempt))
}

fn send(run: &Run, ms: u64) -> Action {
    Action::Send {
        deadline: run.t(ms),
    }
}

fn post(ms: u64) -> Action {
    Action::PostRuntime(Duration::from_millis(ms))
}

#[test]
fn end_holds_until_runtime_done_drains_sends_one_round_then_releases() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 3_000);
    let send_until = send(&run, 100 + FLUSH_TIMEOUT);
    run.script(&[
        (0, i, EMPTY, vec![]),
        (100, done(1), QUEUED, vec![Action::Drain]),
        (105, Input::Drained, QUEUED, vec![send_until]),
        (
            150,
            Input::SendDone,
            QUEUED,
            vec![Action::Release(1), post(50)],
        ),
    ]);
    assert!(!run.machine.is_active());
    assert_eq!(run.machine.wake_at(), None);
}

#[test]
fn nothing_to_send_releases_at_the_drain() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 3_000);
    run.script(&[
        (0, i, EMPTY, vec![]),
        (10, done(1), EMPTY, vec![Action::Drain]),
        (12, Input::Drained, EMPTY, vec![Action::Release(1), post(2)]),
    ]);
}

#[test]
fn an_invoke_whose_runtime_done_came_first_is_not_held_for_it() {
    let mut run = Run::new(Strategy::End, true);
    // The attempt module says its runtimeDone arrived before it.
    let i = Input::Invoke {
        seq: 1,
        attempt: AttemptId::from_u64(1),
        request_id: "r1".into(),
        runtime_done: true,
        deadline: Some(run.t(3_000)),
    };
    run.script(&[
        (0, done(1), EMPTY, vec![]),
        (1, i, EMPTY, vec![Action::Drain]),
        (2, Input::Drained, EMPTY, vec![Action::Release(1), post(1)]),
    ]);
}

#[test]
fn a_second_runtime_done_neither_releases_early_nor_the_next_attempt() {
    let mut run = Run::new(Strategy::End, true);
    let first = invoke(&run, 1, "r1", 1, 3_000);
    // An async retry: the same request id, a minute later.
    let retry = invoke(&run, 2, "r1", 2, 6_000);
    run.script(&[
        (0, first, EMPTY, vec![]),
        (10, done(1), QUEUED, vec![Action::Drain]),
        // The copy while draining changes nothing.
        (11, done(1), QUEUED, vec![]),
        (12, Input::Drained, EMPTY, vec![Action::Release(1), post(2)]),
        // Another copy after the release is a duplicate, not the retry's.
        (20, done(1), EMPTY, vec![]),
        (3_000, retry, EMPTY, vec![]),
        (3_050, done(2), EMPTY, vec![Action::Drain]),
    ]);
}

#[test]
fn another_attempts_runtime_done_never_releases_this_one() {
    // Attempt 1 is released by its deadline; copies of its runtimeDone arrive late, one during
    // attempt 2 (same request id, a minute later), and must not release attempt 2.
    let mut run = Run::new(Strategy::End, true);
    let attempt1 = invoke(&run, 1, "r1", 1, 1_000);
    let attempt2 = invoke(&run, 2, "r1", 2, 5_000);
    run.script(&[
        (0, attempt1, EMPTY, vec![]),
        (
            1_000,
            Input::Wake,
            EMPTY,
            vec![
                Action::GuardTripped {
                    request_id: "r1".into(),
                },
                Action::Release(1),
            ],
        ),
        // The late runtimeDone proves telemetry healthy again: holding resumes.
        (2_000, done(1), EMPTY, vec![Action::GuardCleared]),
        (2_100, attempt2, EMPTY, vec![]),
        (2_200, done(1), EMPTY, vec![]),
        (2_300, done(2), EMPTY, vec![Action::Drain]),
    ]);
}

#[test]
fn an_early_runtime_done_of_another_attempt_is_not_taken() {
    let mut run = Run::new(Strategy::End, true);
    let attempt2 = invoke(&run, 2, "r1", 2, 5_000);
    // Attempt 1's runtimeDone, placed on attempt 1 before attempt 2's INVOKE arrived.
    run.script(&[
        (0, done(1), EMPTY, vec![]),
        (10, attempt2, EMPTY, vec![]),
        (20, done(2), EMPTY, vec![Action::Drain]),
    ]);
}

#[test]
fn a_lost_runtime_done_stops_holding_until_telemetry_is_healthy() {
    let mut run = Run::new(Strategy::End, true);
    let first = invoke(&run, 1, "r1", 1, 1_000);
    let second = invoke(&run, 2, "r2", 2, 3_000);
    let third = invoke(&run, 3, "r3", 3, 5_000);
    let fourth = invoke(&run, 4, "r4", 4, 7_000);
    run.script(&[
        (0, first, QUEUED, vec![]),
        // Released before the deadline (Lambda would time the invocation out and reset the
        // environment), with a background send of what is queued.
        (
            1_000 - DEADLINE_MARGIN,
            Input::Wake,
            QUEUED,
            vec![
                Action::GuardTripped {
                    request_id: "r1".into(),
                },
                send(&run, 1_000 - DEADLINE_MARGIN + FLUSH_TIMEOUT),
                Action::Release(1),
            ],
        ),
        // Degraded: never hold, send what is queued (background).
        (
            2_000,
            second,
            QUEUED,
            vec![send(&run, 2_000 + FLUSH_TIMEOUT), Action::Release(2)],
        ),
        (2_500, third, EMPTY, vec![Action::Release(3)]),
        // Telemetry is back (r3's runtimeDone): the next INVOKE is held again.
        (2_600, done(3), EMPTY, vec![Action::GuardCleared]),
        (6_000, fourth, EMPTY, vec![]),
    ]);
    assert!(!run.machine.is_degraded());
    assert_eq!(run.machine.wake_at(), Some(run.t(7_000 - DEADLINE_MARGIN)));
}

#[test]
fn degraded_mode_sends_on_the_idle_timer() {
    let mut run = Run::new(Strategy::End, true);
    assert!(!run.machine.idle_sends());
    let first = invoke(&run, 1, "r1", 1, 1_000);
    run.on(0, first, EMPTY);
    run.on(1_000, Input::Wake, EMPTY);
    assert!(run.machine.idle_sends());
    let tick = run.on(1_500, Input::Tick, QUEUED);
    assert_eq!(tick, vec![send(&run, 1_500 + FLUSH_TIMEOUT)]);
}

#[test]
fn shutdown_during_a_hold_releases_it_and_flushes_until_empty() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 3_000);
    let shutdown = Input::Shutdown {
        deadline: run.t(2_100),
        awaiting_report: false,
    };
    let until = 2_100 - MARGIN;
    run.script(&[
        (0, i, QUEUED, vec![]),
        (
            100,
            shutdown.clone(),
            QUEUED,
            vec![Action::Release(1), Action::Drain],
        ),
        // A second SHUTDOWN (SIGTERM, then Lambda's) joins it.
        (101, shutdown, QUEUED, vec![]),
        (110, Input::Drained, QUEUED, vec![send(&run, until)]),
        (150, Input::SendDone, QUEUED, vec![send(&run, until)]),
        (200, Input::SendDone, EMPTY, vec![Action::Exit]),
    ]);
    assert!(run.machine.has_exited());
    // A late INVOKE is never held.
    let late = invoke(&run, 2, "r2", 2, 9_000);
    assert_eq!(run.on(300, late, EMPTY), vec![Action::Release(2)]);
}

#[test]
fn shutdown_waits_briefly_for_the_report_then_abandons_a_send_at_the_hard_deadline() {
    let mut run = Run::new(Strategy::End, true);
    let shutdown = Input::Shutdown {
        deadline: run.t(2_000),
        awaiting_report: true,
    };
    run.script(&[
        (0, shutdown, QUEUED, vec![]),
        (REPORT_WAIT, Input::Wake, QUEUED, vec![Action::Drain]),
        (
            REPORT_WAIT + 5,
            Input::Drained,
            QUEUED,
            vec![send(&run, 2_000 - MARGIN)],
        ),
        // The send hangs: at the sends' deadline nothing happens yet...
        (2_000 - MARGIN, Input::Wake, FLYING, vec![]),
        // ...at the hard deadline (half the margin later) the shutdown ends anyway.
        (2_000 - MARGIN / 2, Input::Wake, FLYING, vec![Action::Exit]),
    ]);
}

#[test]
fn the_report_ends_the_wait_at_shutdown() {
    let mut run = Run::new(Strategy::End, true);
    let shutdown = Input::Shutdown {
        deadline: run.t(2_000),
        awaiting_report: true,
    };
    run.script(&[
        (0, shutdown, EMPTY, vec![]),
        (20, Input::ReportArrived, EMPTY, vec![Action::Drain]),
        (22, Input::Drained, EMPTY, vec![Action::Exit]),
    ]);
}

#[test]
fn a_send_in_flight_at_every_stage() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 3_000);
    run.script(&[
        // A background send is in flight at the INVOKE: nothing starts.
        (0, i, FLYING_QUEUED, vec![]),
        // ... at runtimeDone: drain anyway.
        (100, done(1), FLYING_QUEUED, vec![Action::Drain]),
        // ... after the drain: wait it out.
        (105, Input::Drained, FLYING_QUEUED, vec![]),
        // It settles: our own round.
        (
            200,
            Input::SendDone,
            QUEUED,
            vec![send(&run, 100 + FLUSH_TIMEOUT)],
        ),
        // Ours hangs: the flush timeout, counted from runtimeDone, releases.
        (
            100 + FLUSH_TIMEOUT,
            Input::Wake,
            FLYING,
            vec![Action::Release(1), post(FLUSH_TIMEOUT)],
        ),
        // It settles later, with nothing under way: nothing to do.
        (900, Input::SendDone, QUEUED, vec![]),
    ]);
}

#[test]
fn the_flush_timeout_bounds_a_drain_that_never_ends() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 3_000);
    run.script(&[
        (0, i, EMPTY, vec![]),
        (100, done(1), EMPTY, vec![Action::Drain]),
        (
            100 + FLUSH_TIMEOUT,
            Input::Wake,
            EMPTY,
            vec![Action::Release(1), post(FLUSH_TIMEOUT)],
        ),
    ]);
}

#[test]
fn the_invocation_deadline_caps_the_flush() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 300);
    run.script(&[
        (0, i, QUEUED, vec![]),
        (100, done(1), QUEUED, vec![Action::Drain]),
        (101, Input::Drained, QUEUED, vec![send(&run, 300)]),
    ]);
    assert_eq!(run.machine.wake_at(), Some(run.t(300)));
}

#[test]
fn without_telemetry_end_flushes_what_is_left_then_releases() {
    let mut run = Run::new(Strategy::End, false);
    assert!(run.machine.idle_sends());
    let i = invoke(&run, 1, "r1", 1, 3_000);
    run.script(&[
        (0, i, QUEUED, vec![send(&run, FLUSH_TIMEOUT)]),
        (40, Input::SendDone, EMPTY, vec![Action::Release(1)]),
    ]);
    let i = invoke(&run, 2, "r2", 2, 6_000);
    assert_eq!(run.on(3_000, i, EMPTY), vec![Action::Release(2)]);
}

#[test]
fn background_never_holds_and_sends_what_is_queued() {
    let mut run = Run::new(Strategy::Background, true);
    let first = invoke(&run, 1, "r1", 1, 3_000);
    let second = invoke(&run, 2, "r2", 2, 6_000);
    let third = invoke(&run, 3, "r3", 3, 9_000);
    run.script(&[
        (0, first, EMPTY, vec![Action::Release(1)]),
        (
            3_000,
            second,
            QUEUED,
            vec![send(&run, 3_000 + FLUSH_TIMEOUT), Action::Release(2)],
        ),
        // A send already in flight: none more.
        (3_100, third, FLYING_QUEUED, vec![Action::Release(3)]),
        // runtimeDones of unheld invocations are remembered harmlessly.
        (3_200, done(1), EMPTY, vec![]),
        (
            3_300,
            Input::Tick,
            QUEUED,
            vec![send(&run, 3_300 + FLUSH_TIMEOUT)],
        ),
        (3_400, Input::Tick, FLYING_QUEUED, vec![]),
    ]);
}

#[test]
fn an_invoke_without_a_deadline_is_never_held() {
    let mut run = Run::new(Strategy::End, true);
    let i = Input::Invoke {
        seq: 1,
        attempt: AttemptId::from_u64(1),
        request_id: "r1".into(),
        runtime_done: false,
        deadline: None,
    };
    let expected = vec![send(&run, FLUSH_TIMEOUT), Action::Release(1)];
    run.script(&[(0, i, QUEUED, expected)]);
    assert!(!run.machine.is_degraded());
}

#[test]
fn only_the_held_attempts_runtime_done_releases_it() {
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 3_000);
    run.script(&[
        (0, i, EMPTY, vec![]),
        (5, done(2), EMPTY, vec![]),
        (10, done(1), EMPTY, vec![Action::Drain]),
    ]);
}

#[test]
fn a_full_buffer_is_sent_while_the_function_runs_never_while_it_may_be_frozen() {
    // `end`: a long invocation fills the buffer: send while the function runs (it is not
    // frozen), and the flush after runtimeDone waits out that send first, within its timeout.
    let mut run = Run::new(Strategy::End, true);
    let i = invoke(&run, 1, "r1", 1, 60_000);
    run.script(&[
        (0, i, EMPTY, vec![]),
        (
            1_000,
            Input::Pressure,
            QUEUED,
            vec![send(&run, 1_000 + FLUSH_TIMEOUT)],
        ),
        // One send at a time.
        (1_100, Input::Pressure, FLYING_QUEUED, vec![]),
        (1_200, Input::SendDone, QUEUED, vec![]),
        (5_000, done(1), FLYING_QUEUED, vec![Action::Drain]),
        (5_005, Input::Drained, FLYING_QUEUED, vec![]),
        (
            5_100,
            Input::SendDone,
            QUEUED,
            vec![send(&run, 5_000 + FLUSH_TIMEOUT)],
        ),
        (
            5_200,
            Input::SendDone,
            EMPTY,
            vec![Action::Release(1), post(200)],
        ),
    ]);
    // Between invocations under `end` the environment may be frozen at any moment: no send.
    assert_eq!(run.on(6_000, Input::Pressure, QUEUED), vec![]);
    // Nor during the post-runtime flush (it sends on its own) or at shutdown.
    let j = invoke(&run, 2, "r2", 2, 70_000);
    run.script(&[
        (10_000, j, EMPTY, vec![]),
        (10_100, done(2), QUEUED, vec![Action::Drain]),
        (10_101, Input::Pressure, QUEUED, vec![]),
    ]);
    // Where nothing is held (`background`), a full buffer goes out at once, not at the tick.
    let mut background = Run::new(Strategy::Background, true);
    assert_eq!(
        background.on(0, Input::Pressure, QUEUED),
        vec![send(&background, FLUSH_TIMEOUT)]
    );
}
