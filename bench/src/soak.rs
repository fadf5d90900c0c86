//! A long life: many invocations back to back through the emulator, each sending the same
//! number of subsegments, the extension's RSS sampled every few invocations, then SHUTDOWN and a
//! check that every document the function sent reached the endpoint.
//!
//! `make soak` runs it as a pass/fail check on the layer's static musl binary, and the bench's
//! memory section prints its figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::EnvSpec;
use super::counting_sink::CountingSink;
use super::load::shut_down;
use xray_extension_tests::emulator::Invoke;
use xray_extension_tests::procfs::{self, Memory};
use xray_extension_tests::trace::TraceHeader;

/// Invocations in a soak.
pub const INVOCATIONS: u64 = 10_000;
/// Subsegments the function sends per invocation (one datagram each).
pub const SUBSEGMENTS: u64 = 10;
/// RSS is read after every this many invocations.
pub const SAMPLE_EVERY: u64 = 100;
/// Growth is measured from the sample after this invocation to the last one.
pub const GROWTH_FROM: u64 = 1_000;
/// The most the extension's RSS may grow from [`GROWTH_FROM`] to the end, in KiB.
pub const MAX_GROWTH_KIB: u64 = 1024;
/// Time between init and the idle sample: the background start-up settles.
const SETTLE: Duration = Duration::from_millis(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The extension executable.
    pub extension: PathBuf,
    /// The function executable (the sample function).
    pub function: PathBuf,
    /// Invocations, back to back.
    pub invocations: u64,
    /// Subsegments per invocation.
    pub subsegments: u64,
    /// RSS read after every this many invocations.
    pub sample_every: u64,
    /// Extra variables for the extension.
    pub extension_env: Vec<(String, String)>,
    /// Invocations with one subsegment each after the others (a quiet spell after a burst),
    /// sampled once at the end.
    pub quiet_after: u64,
    /// The executable whose memory is read: the extension, or what its launcher script starts
    /// (a profiler's).
    pub process: PathBuf,
}

impl Plan {
    /// The standard soak ([`INVOCATIONS`] × [`SUBSEGMENTS`]) of `extension`.
    pub fn new(extension: &Path, function: &Path) -> Self {
        Self {
            extension: extension.to_path_buf(),
            function: function.to_path_buf(),
            invocations: INVOCATIONS,
            subsegments: SUBSEGMENTS,
            sample_every: SAMPLE_EVERY,
            extension_env: Vec::new(),
            quiet_after: 0,
            process: extension.to_path_buf(),
        }
    }
}

/// What a soak measured.
#[derive(Debug, Clone)]
pub struct Soak {
    /// After init, before the first invocation.
    pub idle: Memory,
    /// `(invocations done, memory)`, every [`Plan::sample_every`] invocations and after the last.
    pub samples: Vec<(u64, Memory)>,
    /// Documents the function sent (ids from its answers).
    pub sent: u64,
    /// Of those, how many never reached the endpoint.
    pub missing: u64,
    /// The extension's shutdown counters.
    pub counters: HashMap<String, u64>,
    /// Wall time of the invocations.
    pub took: Duration,
}

impl Soak {
    /// RSS (KiB) of the sample taken after invocation `n` (the first sample at or after it).
    pub fn rss_at(&self, n: u64) -> Option<u64> {
        self.samples
            .iter()
            .find(|(at, _)| *at >= n)
            .map(|(_, m)| m.rss_kib)
    }

    /// RSS (KiB) after the last invocation.
    pub fn rss_last(&self) -> Option<u64> {
        self.samples.last().map(|(_, m)| m.rss_kib)
    }

    /// Growth (KiB, may be negative) from the sample after invocation `from` to the last one.
    pub fn growth_kib(&self, from: u64) -> Option<i64> {
        let a = i64::try_from(self.rss_at(from)?).ok()?;
        let b = i64::try_from(self.rss_last()?).ok()?;
        Some(b - a)
    }

    /// The samples as `n:RSS` pairs (KiB), for notes and logs.
    pub fn trace(&self) -> String {
        self.samples
            .iter()
            .map(|(n, m)| format!("{n}:{}", m.rss_kib))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The samples as `n:anonymous/file` pairs (KiB): where the resident pages are.
    pub fn split_trace(&self) -> String {
        self.samples
            .iter()
            .map(|(n, m)| format!("{n}:{}/{}", m.anon_kib, m.file_kib))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Counters that must stay at zero through a soak: any document lost.
pub const LOSS_COUNTERS: [&str; 4] = ["spilled", "dropped_at_shutdown", "send_failed", "rejected"];

impl Soak {
    /// What failed: a document that never reached the endpoint, a loss counter above zero, RSS
    /// growth from invocation [`GROWTH_FROM`] to the end above [`MAX_GROWTH_KIB`] (judged when
    /// the plan runs past [`GROWTH_FROM`]). Empty when the soak passed.
    pub fn failures(&self, plan: &Plan) -> Vec<String> {
        let mut failures = Vec::new();
        if self.missing > 0 {
            failures.push(format!(
                "{} of {} documents never reached the endpoint",
                self.missing, self.sent
            ));
        }
        for counter in LOSS_COUNTERS {
            let n = self.counters.get(counter).copied().unwrap_or(0);
            if n > 0 {
                failures.push(format!("{counter} = {n}"));
            }
        }
        if plan.invocations > GROWTH_FROM {
            match self.growth_kib(GROWTH_FROM) {
                Some(g) if g > i64::try_from(MAX_GROWTH_KIB).unwrap_or(i64::MAX) => {
                    failures.push(format!(
                        "RSS grew {g} KiB from invocation {GROWTH_FROM} to {} (at most {MAX_GROWTH_KIB} KiB)",
                        plan.invocations
                    ));
                }
                Some(_) => {}
                None => failures.push(String::from("no RSS samples")),
            }
        }
        failures
    }
}

/// Runs `plan`; `progress` is called with each sample.
pub async fn run(plan: &Plan, mut progress: impl FnMut(u64, Memory)) -> anyhow::Result<Soak> {
    let sink = CountingSink::start_recording_ids(0).await?;
    let mut spec = EnvSpec::new(&plan.extension, &plan.function, &sink.endpoint());
    for (k, v) in &plan.extension_env {
        spec = spec.env(k, v);
    }
    let mut env = spec.start().await?;
    env.lambda.prewarm().await?;
    let pid =
        procfs::child_running(&plan.process).context("cannot find the extension's process")?;
    tokio::time::sleep(SETTLE).await;
    let idle = procfs::memory(pid).context("cannot read the extension's memory")?;
    let mut sent: Vec<u64> = Vec::new();
    let mut samples = Vec::new();
    let started = Instant::now();
    let last = plan.invocations + plan.quiet_after;
    for n in 1..=last {
        let subsegments = if n <= plan.invocations {
            plan.subsegments
        } else {
            1
        };
        let event = json!({ "subsegments": subsegments });
        let invocation = env
            .lambda
            .invoke(Invoke::new(event).traced(TraceHeader::sampled()))
            .await
            .with_context(|| format!("invocation {n}"))?;
        let answer = invocation
            .response_json()
            .with_context(|| format!("invocation {n}: no JSON answer ({:?})", invocation.status))?;
        let ids = answer["sent_ids"]
            .as_array()
            .with_context(|| format!("invocation {n}: no sent_ids in {answer}"))?;
        anyhow::ensure!(
            ids.len() as u64 == subsegments,
            "invocation {n}: the function sent {} documents, not {subsegments}",
            ids.len(),
        );
        sent.extend(
            ids.iter()
                .filter_map(|v| u64::from_str_radix(v.as_str()?, 16).ok()),
        );
        if (n <= plan.invocations && n % plan.sample_every == 0)
            || n == plan.invocations
            || n == last
        {
            let Some(m) = procfs::memory(pid) else {
                let tail = super::last_lines(&env.lambda, 5);
                anyhow::bail!(
                    "the extension is gone after invocation {n} ({:?}, timed out {}, failure {:?}); its last lines: {tail:?}",
                    invocation.status,
                    invocation.timed_out,
                    invocation.failure
                );
            };
            progress(n, m);
            samples.push((n, m));
        }
    }
    let took = started.elapsed();
    let counters = shut_down(&mut env).await?;
    let missing = sink.with_counts(|c| sent.iter().filter(|id| !c.ids.contains(id)).count());
    Ok(Soak {
        idle,
        samples,
        sent: sent.len() as u64,
        missing: missing as u64,
        counters,
        took,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(rss_kib: u64) -> Memory {
        Memory {
            rss_kib,
            hwm_kib: rss_kib,
            anon_kib: 0,
            file_kib: 0,
        }
    }

    fn soak(samples: &[(u64, u64)]) -> Soak {
        Soak {
            idle: memory(3_000),
            samples: samples.iter().map(|(n, k)| (*n, memory(*k))).collect(),
            sent: 100,
            missing: 0,
            counters: HashMap::from([("received".to_owned(), 100), ("spilled".to_owned(), 0)]),
            took: Duration::from_secs(1),
        }
    }

    fn plan() -> Plan {
        Plan::new(Path::new("ext"), Path::new("fun"))
    }

    #[test]
    fn growth_is_measured_from_the_sample_after_invocation_1000_to_the_last() {
        let s = soak(&[
            (500, 4_000),
            (1_000, 4_700),
            (5_000, 4_800),
            (10_000, 4_790),
        ]);
        assert_eq!(s.rss_at(1_000), Some(4_700));
        assert_eq!(s.rss_at(999), Some(4_700));
        assert_eq!(s.rss_at(1_001), Some(4_800));
        assert_eq!(s.growth_kib(GROWTH_FROM), Some(90));
        assert!(s.failures(&plan()).is_empty());
    }

    #[test]
    fn growth_past_one_mebibyte_fails() {
        let s = soak(&[(1_000, 4_700), (10_000, 4_700 + 1_025)]);
        let failures = s.failures(&plan());
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("grew 1025 KiB"), "{failures:?}");
        let at_bound = soak(&[(1_000, 4_700), (10_000, 4_700 + 1_024)]);
        assert!(at_bound.failures(&plan()).is_empty());
    }

    #[test]
    fn a_missing_document_or_a_loss_counter_fails() {
        let mut s = soak(&[(1_000, 4_700), (10_000, 4_700)]);
        s.missing = 3;
        s.counters.insert("dropped_at_shutdown".to_owned(), 2);
        let failures = s.failures(&plan());
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0].starts_with("3 of 100 documents"),
            "{failures:?}"
        );
        assert_eq!(failures[1], "dropped_at_shutdown = 2");
    }

    #[test]
    fn a_soak_without_samples_fails() {
        assert_eq!(soak(&[]).failures(&plan()), ["no RSS samples"]);
    }
}
