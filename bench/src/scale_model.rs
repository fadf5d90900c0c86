//! A scale model of trace export from many Lambda environments into one account's X-Ray quota:
//! a deterministic discrete-event simulation (no processes, no sockets, a seeded RNG).
//!
//! Each of `environments` runs invocations one after another: a handler of `invoke_ms`
//! producing `docs_per_invoke` documents, then a gap so that the environment sees about
//! `invokes_per_second` (the environment is frozen in the gap: nothing runs). All environments
//! share one account-wide `PutTraceSegments` quota, a token bucket of `quota_rps` requests a
//! second holding at most `quota_burst`; a call without a token is throttled (HTTP 429). Calls
//! are instantaneous otherwise.
//!
//! Two exporters:
//! - **ours** (the extension's `end` flush strategy): at the end of each invocation, everything
//!   buffered goes out in calls of at most 50, 4 at a time; a throttled call is retried after a capped
//!   exponential backoff with full jitter (25 ms × 2ⁿ, at most 400 ms; 3 attempts; within the
//!   500 ms flush timeout) while the environment waits (post-runtime time); what is still unsent
//!   stays in the buffer (4 MiB = 4,096 documents of 1 KiB; beyond it new documents are
//!   spilled) for the next flush. At the end, a shutdown flush gets the same retries.
//! - **daemon** (the X-Ray daemon as documented, contracts §4): documents join the current
//!   batch; a full batch of 50 is sent at once; a partial batch goes out when the 1 s idle timer
//!   fires, which it can only do while the environment is thawed (at the next invocation);
//!   8 concurrent senders (never the limit here: calls are instantaneous); a failed call drops
//!   its batch, no retry. What is in the batch when the environment ends is lost (there is no
//!   SHUTDOWN hook for the daemon).
//!
//! The figures are the model's, not AWS's: the quota is a parameter, not X-Ray's real limit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use xray_extension::config::{
    DEFAULT_BUFFER_BYTES, DEFAULT_FLUSH_TIMEOUT, DEFAULT_SHUTDOWN_MARGIN,
};
use xray_extension::export::{send, xray};

/// Most documents in one call (X-Ray's limit, the batcher's).
pub const MAX_DOCUMENTS_PER_CALL: u64 = xray::MAX_DOCUMENTS_PER_CALL as u64;
/// Our retry schedule: the exporter's first backoff, in seconds.
pub const RETRY_BASE_SECONDS: f64 = send::RETRY_BASE_DELAY.as_secs_f64();
/// The exporter's longest backoff, in seconds.
pub const RETRY_MAX_SECONDS: f64 = send::RETRY_MAX_DELAY.as_secs_f64();
/// Calls in flight at once in one flush.
pub const MAX_CONCURRENT_CALLS: usize = send::MAX_CONCURRENT_CALLS;
/// Attempts per batch in one flush.
pub const MAX_ATTEMPTS_PER_FLUSH: u32 = send::MAX_ATTEMPTS_PER_FLUSH;
/// The longest one flush may hold the function (the default flush timeout).
pub const FLUSH_TIMEOUT_SECONDS: f64 = DEFAULT_FLUSH_TIMEOUT.as_secs_f64();
/// Lambda's shutdown phase for an environment with one external extension (contracts §1).
pub const LAMBDA_SHUTDOWN_SECONDS: f64 = 2.0;
/// The shutdown flush's budget: Lambda's shutdown phase less our default margin.
pub const SHUTDOWN_FLUSH_SECONDS: f64 =
    LAMBDA_SHUTDOWN_SECONDS - DEFAULT_SHUTDOWN_MARGIN.as_secs_f64();
/// The size of a document in the model.
pub const DOCUMENT_BYTES: u64 = 1_024;
/// Documents our default buffer holds at [`DOCUMENT_BYTES`] each.
pub const BUFFER_DOCUMENTS: u64 = DEFAULT_BUFFER_BYTES as u64 / DOCUMENT_BYTES;
/// The daemon's idle timer.
pub const DAEMON_IDLE_SECONDS: f64 = 1.0;

/// One simulated situation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Execution environments.
    pub environments: u32,
    /// Invocations per second per environment.
    pub invokes_per_second: f64,
    /// Documents each invocation produces.
    pub docs_per_invoke: u64,
    /// Handler duration, milliseconds.
    pub invoke_ms: f64,
    /// Simulated seconds.
    pub seconds: f64,
    /// Account-wide `PutTraceSegments` requests per second.
    pub quota_rps: f64,
    /// Token bucket size.
    pub quota_burst: f64,
    /// RNG seed.
    pub seed: u64,
}

impl Scenario {
    /// Documents per second per environment.
    pub fn docs_per_second(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let k = self.docs_per_invoke as f64;
        self.invokes_per_second * k
    }
}

/// The exporter being simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// The extension (`end` strategy).
    Ours,
    /// The X-Ray daemon.
    Daemon,
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Documents produced.
    pub generated: u64,
    /// Documents X-Ray accepted.
    pub sent: u64,
    /// `PutTraceSegments` calls, throttled ones included.
    pub calls: u64,
    /// Calls throttled.
    pub throttled: u64,
    /// Documents dropped: the daemon's failed batches, our buffer spills.
    pub dropped: u64,
    /// Documents still unsent when the environments ended.
    pub unsent_at_end: u64,
    /// Invocations.
    pub invocations: u64,
    /// Post-runtime time our flushes added, seconds, one per invocation (empty for the daemon).
    pub waits: Vec<f64>,
}

impl Outcome {
    /// Documents lost: dropped plus unsent at the end.
    pub fn lost(&self) -> u64 {
        self.dropped + self.unsent_at_end
    }

    /// Documents per accepted call.
    pub fn fill(&self) -> f64 {
        let ok = self.calls - self.throttled;
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let fill = if ok == 0 {
            0.0
        } else {
            self.sent as f64 / ok as f64
        };
        fill
    }
}

/// The account-wide token bucket.
#[derive(Debug)]
struct Quota {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: f64,
}

impl Quota {
    fn take(&mut self, now: f64) -> bool {
        self.tokens = (self.tokens + (now - self.at).max(0.0) * self.rate).min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An invocation starts (the environment thaws).
    Start,
    /// The handler returns; its documents are there.
    End,
    /// One attempt of one of our batches.
    Attempt {
        docs: u64,
        attempt: u32,
        flush_deadline: f64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: f64,
    seq: u64,
    env: usize,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed: the heap pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct EnvState {
    /// Ours: documents waiting (in flight included). Daemon: the current batch.
    buffered: u64,
    /// Ours: batches of the current flush being sent.
    in_flight: u32,
    /// Ours: documents of the current flush not yet in a batch.
    unbatched: u64,
    /// Ours: when the current flush must end.
    flush_deadline: f64,
    /// When the current flush began (ours).
    flush_started: f64,
    /// Daemon: when its idle timer fires next (it restarts at every send and every firing).
    timer_due: f64,
}

struct Sim {
    s: Scenario,
    exporter: Exporter,
    rng: fastrand::Rng,
    quota: Quota,
    heap: BinaryHeap<Event>,
    seq: u64,
    envs: Vec<EnvState>,
    out: Outcome,
}

impl Sim {
    fn push(&mut self, at: f64, env: usize, kind: Kind) {
        self.seq += 1;
        self.heap.push(Event {
            at,
            seq: self.seq,
            env,
            kind,
        });
    }

    /// The gap after an invocation so the environment averages `invokes_per_second`.
    fn gap(&mut self) -> f64 {
        let mean = (1.0 / self.s.invokes_per_second - self.s.invoke_ms / 1e3).max(0.0);
        // Exponential with that mean.
        -mean * (1.0 - self.rng.f64()).ln()
    }

    fn backoff(&mut self, attempt: u32) -> f64 {
        let cap =
            (RETRY_BASE_SECONDS * f64::from(1_u32 << (attempt - 1).min(16))).min(RETRY_MAX_SECONDS);
        self.rng.f64() * cap
    }

    fn call(&mut self, now: f64, docs: u64) -> bool {
        self.out.calls += 1;
        if self.quota.take(now) {
            self.out.sent += docs;
            true
        } else {
            self.out.throttled += 1;
            false
        }
    }

    fn next_invocation(&mut self, env: usize, now: f64) {
        let at = now + self.gap();
        if at < self.s.seconds {
            self.push(at, env, Kind::Start);
        }
    }

    /// Ours: sends everything buffered in batches of 50, [`MAX_CONCURRENT_CALLS`] at a time.
    fn flush(&mut self, env: usize, now: f64, budget: f64) {
        let st = &mut self.envs[env];
        st.flush_started = now;
        st.flush_deadline = now + budget;
        st.unbatched = st.buffered;
        for _ in 0..MAX_CONCURRENT_CALLS {
            if !self.start_next_batch(env, now) {
                break;
            }
        }
    }

    /// Ours: a free call slot takes the next batch, unless the flush is out of time (what is
    /// left stays in the buffer).
    fn start_next_batch(&mut self, env: usize, now: f64) -> bool {
        let st = &mut self.envs[env];
        if st.unbatched == 0 || now >= st.flush_deadline {
            return false;
        }
        let docs = st.unbatched.min(MAX_DOCUMENTS_PER_CALL);
        st.unbatched -= docs;
        st.in_flight += 1;
        let flush_deadline = st.flush_deadline;
        self.push(
            now,
            env,
            Kind::Attempt {
                docs,
                attempt: 1,
                flush_deadline,
            },
        );
        true
    }

    /// The daemon's batch goes out (or, throttled, is dropped) and its idle timer restarts.
    fn daemon_send(&mut self, env: usize, now: f64) {
        let docs = std::mem::take(&mut self.envs[env].buffered);
        if docs > 0 && !self.call(now, docs) {
            self.out.dropped += docs;
        }
        self.envs[env].timer_due = now + DAEMON_IDLE_SECONDS;
    }

    /// The daemon's idle timer, as seen by a thawed environment: overdue (it may have expired
    /// while frozen) means it fires now, sending a partial batch if there is one.
    fn daemon_timer(&mut self, env: usize, now: f64) {
        if now >= self.envs[env].timer_due {
            self.daemon_send(env, now);
        }
    }

    fn on_event(&mut self, e: Event) {
        let now = e.at;
        match (self.exporter, e.kind) {
            (_, Kind::Start) => {
                self.out.invocations += 1;
                if self.exporter == Exporter::Daemon {
                    self.daemon_timer(e.env, now);
                }
                self.push(now + self.s.invoke_ms / 1e3, e.env, Kind::End);
            }
            (Exporter::Ours, Kind::End) => {
                let room = BUFFER_DOCUMENTS.saturating_sub(self.envs[e.env].buffered);
                let k = self.s.docs_per_invoke;
                self.out.generated += k;
                self.out.dropped += k.saturating_sub(room);
                self.envs[e.env].buffered += k.min(room);
                if self.envs[e.env].buffered == 0 {
                    self.out.waits.push(0.0);
                    self.next_invocation(e.env, now);
                } else {
                    self.flush(e.env, now, FLUSH_TIMEOUT_SECONDS);
                }
            }
            (Exporter::Daemon, Kind::End) => {
                self.daemon_timer(e.env, now);
                let k = self.s.docs_per_invoke;
                self.out.generated += k;
                for _ in 0..k {
                    self.envs[e.env].buffered += 1;
                    if self.envs[e.env].buffered == MAX_DOCUMENTS_PER_CALL {
                        self.daemon_send(e.env, now);
                    }
                }
                self.next_invocation(e.env, now);
            }
            (
                _,
                Kind::Attempt {
                    docs,
                    attempt,
                    flush_deadline,
                },
            ) => {
                let resolved = if self.call(now, docs) {
                    self.envs[e.env].buffered -= docs;
                    true
                } else {
                    let delay = self.backoff(attempt);
                    if attempt < MAX_ATTEMPTS_PER_FLUSH && now + delay < flush_deadline {
                        self.push(
                            now + delay,
                            e.env,
                            Kind::Attempt {
                                docs,
                                attempt: attempt + 1,
                                flush_deadline,
                            },
                        );
                        false
                    } else {
                        true // kept in the buffer for the next flush
                    }
                };
                if resolved {
                    self.envs[e.env].in_flight -= 1;
                    self.start_next_batch(e.env, now);
                    let started = self.envs[e.env].flush_started;
                    // The flush of an invocation (not the shutdown's) releases the environment.
                    if self.envs[e.env].in_flight == 0 && started < self.s.seconds {
                        self.out.waits.push(now - started);
                        self.next_invocation(e.env, now);
                    }
                }
            }
        }
    }
}

/// Runs `scenario` with `exporter`.
pub fn simulate(scenario: Scenario, exporter: Exporter) -> Outcome {
    let mut sim = Sim {
        s: scenario,
        exporter,
        rng: fastrand::Rng::with_seed(scenario.seed),
        quota: Quota {
            rate: scenario.quota_rps,
            burst: scenario.quota_burst,
            tokens: scenario.quota_burst,
            at: 0.0,
        },
        heap: BinaryHeap::new(),
        seq: 0,
        envs: vec![
            EnvState {
                timer_due: DAEMON_IDLE_SECONDS,
                ..EnvState::default()
            };
            scenario.environments as usize
        ],
        out: Outcome::default(),
    };
    for env in 0..sim.envs.len() {
        let at = sim.rng.f64() / scenario.invokes_per_second;
        sim.push(at, env, Kind::Start);
    }
    while let Some(e) = sim.heap.pop() {
        sim.on_event(e);
    }
    // The environments end: ours gets SHUTDOWN and one last flush; the daemon's batch is lost.
    let end = scenario.seconds;
    match exporter {
        Exporter::Ours => {
            for env in 0..sim.envs.len() {
                if sim.envs[env].buffered > 0 {
                    sim.flush(env, end, SHUTDOWN_FLUSH_SECONDS);
                }
            }
            while let Some(e) = sim.heap.pop() {
                sim.on_event(e);
            }
        }
        Exporter::Daemon => {}
    }
    sim.out.unsent_at_end = sim.envs.iter().map(|e| e.buffered).sum();
    sim.out
}

/// Environments in the default grid.
pub const ENVIRONMENTS: [u32; 4] = [1, 10, 100, 1_000];
/// (invocations per second, documents per invocation) per environment in the default grid.
pub const LOADS: [(f64, u64); 3] = [(1.0, 5), (10.0, 5), (10.0, 50)];
/// The default account-wide quota of the model, requests per second.
pub const QUOTA_RPS_DEFAULT: f64 = 500.0;
/// The default simulated time.
pub const SECONDS_DEFAULT: f64 = 60.0;
/// The default seed.
pub const SEED_DEFAULT: u64 = 20_240_601;

/// The default grid: every environment count × every load, with `quota_rps` (burst: one
/// second's worth), over `seconds`.
pub fn grid(quota_rps: f64, seconds: f64, seed: u64) -> Vec<Scenario> {
    ENVIRONMENTS
        .iter()
        .flat_map(|&environments| {
            LOADS
                .iter()
                .map(move |&(invokes_per_second, docs_per_invoke)| Scenario {
                    environments,
                    invokes_per_second,
                    docs_per_invoke,
                    invoke_ms: 50.0,
                    seconds,
                    quota_rps,
                    quota_burst: quota_rps,
                    seed,
                })
        })
        .collect()
}

/// The nearest-rank percentile, 0 without values.
fn percentile(values: &[f64], p: f64) -> f64 {
    crate::report::percentile(values, p).unwrap_or(0.0)
}

/// Simulates every scenario with both exporters; returns a markdown table.
pub fn table(scenarios: &[Scenario]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| environments | docs/s per env | docs/s in all | exporter | calls/s | throttled | docs per accepted call | lost | added post-runtime p50 / p99 |\n\
         |---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for s in scenarios {
        for exporter in [Exporter::Ours, Exporter::Daemon] {
            let o = simulate(*s, exporter);
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let (calls, throttled, lost, generated) = (
                o.calls as f64,
                o.throttled as f64,
                o.lost() as f64,
                o.generated.max(1) as f64,
            );
            let wait = match exporter {
                Exporter::Ours => format!(
                    "{:.0} / {:.0} ms",
                    percentile(&o.waits, 50.0) * 1e3,
                    percentile(&o.waits, 99.0) * 1e3
                ),
                Exporter::Daemon => String::from("0 (sends while thawed)"),
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {} | {:.1} | {} ({:.1} %) | {:.1} | {} ({:.2} %) | {} |",
                s.environments,
                s.docs_per_second(),
                s.docs_per_second() * f64::from(s.environments),
                match exporter {
                    Exporter::Ours => "ours (end)",
                    Exporter::Daemon => "daemon",
                },
                calls / s.seconds,
                o.throttled,
                100.0 * throttled / calls.max(1.0),
                o.fill(),
                o.lost(),
                100.0 * lost / generated,
                wait,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(environments: u32, quota_rps: f64) -> Scenario {
        Scenario {
            environments,
            invokes_per_second: 2.0,
            docs_per_invoke: 5,
            invoke_ms: 50.0,
            seconds: 30.0,
            quota_rps,
            quota_burst: quota_rps,
            seed: 7,
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let s = scenario(20, 50.0);
        assert_eq!(simulate(s, Exporter::Ours), simulate(s, Exporter::Ours));
        assert_eq!(simulate(s, Exporter::Daemon), simulate(s, Exporter::Daemon));
    }

    #[test]
    fn documents_are_conserved() {
        for exporter in [Exporter::Ours, Exporter::Daemon] {
            for quota in [5.0, 1e6] {
                let o = simulate(scenario(50, quota), exporter);
                assert_eq!(o.generated, o.sent + o.lost(), "{exporter:?} quota {quota}");
                assert!(o.generated > 0);
            }
        }
    }

    #[test]
    fn without_throttling_nothing_is_lost_by_us_and_the_daemon_loses_its_last_batches() {
        let ours = simulate(scenario(10, 1e6), Exporter::Ours);
        assert_eq!((ours.throttled, ours.lost()), (0, 0));
        let daemon = simulate(scenario(10, 1e6), Exporter::Daemon);
        assert_eq!((daemon.throttled, daemon.dropped), (0, 0));
        assert!(daemon.unsent_at_end > 0);
        assert!(daemon.fill() > ours.fill());
    }

    #[test]
    fn under_a_tight_quota_the_daemon_drops_and_we_keep_and_retry() {
        let ours = simulate(scenario(200, 20.0), Exporter::Ours);
        let daemon = simulate(scenario(200, 20.0), Exporter::Daemon);
        assert!(daemon.throttled > 0 && daemon.dropped > 0);
        assert!(ours.throttled > 0);
        assert!(ours.lost() < daemon.lost());
    }
}
