//! The extension under a sustained UDP load while invocations run: RSS idle and under load,
//! CPU, drops, and how full the PutTraceSegments calls are.
//!
//! A generator thread sends 1 KB subsegments over loopback at a fixed rate for a bounded time
//! (and a bounded count); the emulator keeps invoking the function meanwhile, so every
//! invocation's flush point exports what arrived since the previous one.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::counting_sink::CountingSink;
use super::report::{Row, Target, Unit};
use super::{Binaries, Env, EnvSpec, counters, docs};
use xray_extension_tests::clock::epoch_seconds;
use xray_extension_tests::emulator::Invoke;
use xray_extension_tests::procfs;
use xray_extension_tests::trace::{TraceHeader, new_segment_id};

/// Documents per second.
pub const RATE: u64 = 20_000;
/// Bytes per document body.
pub const DOCUMENT_BYTES: usize = 1024;
/// The extension's default buffer limit (`XRAY_EXTENSION_BUFFER_BYTES`), for the RSS note.
const DEFAULT_BUFFER_MIB: f64 = 4.0;
/// Memory sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Linux reports process CPU time in these ticks per second (`USER_HZ`).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
/// The generator stops at this much past its planned duration whatever happens.
const GENERATOR_GRACE: Duration = Duration::from_secs(5);

/// What the generator did.
#[derive(Debug, Clone, Copy, Default)]
struct Generated {
    sent: u64,
    send_errors: u64,
    elapsed: Duration,
}

/// Sends `rate` documents a second for `duration` to `target`, ids `tag << 32 | n`.
fn generate(
    target: SocketAddr,
    rate: u64,
    duration: Duration,
    tag: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Generated> {
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    let trace = TraceHeader::sampled();
    let body = docs::subsegment(
        0,
        &trace.root,
        &new_segment_id(),
        epoch_seconds(SystemTime::now()),
        DOCUMENT_BYTES,
    );
    let mut datagram = docs::datagram(&body);
    let (sent, send_errors, elapsed) = paced(rate, duration, stop, |n| {
        docs::stamp_id(&mut datagram, (tag << 32) | n);
        socket.send_to(&datagram, target).is_ok()
    });
    Ok(Generated {
        sent,
        send_errors,
        elapsed,
    })
}

/// Calls `send(n)` for n = 0, 1, … at `rate` a second for `duration` (or until `stop`, with a
/// grace past the duration whatever happens), catching up every 250 µs. Returns the calls that
/// succeeded, those that failed, and the time it took.
pub(super) fn paced(
    rate: u64,
    duration: Duration,
    stop: &AtomicBool,
    mut send: impl FnMut(u64) -> bool,
) -> (u64, u64, Duration) {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "counts far below 2^52"
    )]
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let (mut ok, mut failed) = (0_u64, 0_u64);
    let mut n = 0_u64;
    while n < total && !stop.load(Ordering::Relaxed) && start.elapsed() < duration + GENERATOR_GRACE
    {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "counts far below 2^52"
        )]
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while n < due {
            if send(n) {
                ok += 1;
            } else {
                failed += 1;
            }
            n += 1;
        }
        std::thread::sleep(Duration::from_micros(250));
    }
    (ok, failed, start.elapsed())
}

/// User + system CPU seconds of `pid` so far.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
}

/// Figures of one run.
#[derive(Debug, Clone, Copy, Default)]
struct RunFigures {
    idle_rss_mib: f64,
    warm_idle_rss_mib: f64,
    peak_rss_mib: f64,
    hwm_mib: f64,
    cpu_percent: f64,
    achieved_rate: f64,
    sent: u64,
    send_errors: u64,
    received: u64,
    rejected: u64,
    spilled: u64,
    stored: u64,
    calls: u64,
    documents_in_calls: u64,
    invokes: u64,
}

pub(super) fn mib(kib: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "KiB of one process")]
    let k = kib as f64;
    k / 1024.0
}

/// Samples `pid`'s RSS every [`SAMPLE_EVERY`] into `peak` until `done`.
fn spawn_sampler(
    pid: u32,
    done: Arc<AtomicBool>,
    peak: Arc<Mutex<u64>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !done.load(Ordering::Relaxed) {
            if let Some(m) = procfs::memory(pid)
                && let Ok(mut p) = peak.lock()
            {
                *p = (*p).max(m.rss_kib);
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    })
}

/// Invokes the function back to back (sampled) while `running()`; returns how many invokes
/// succeeded and, when one failed, its error (`stop` then tells the generators to stop).
pub(super) async fn invoke_while(
    env: &mut Env,
    event: &Value,
    stop: &AtomicBool,
    running: impl Fn() -> bool,
) -> (u64, Option<anyhow::Error>) {
    let mut invokes = 0;
    while running() {
        match env
            .lambda
            .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
            .await
        {
            Ok(_) => invokes += 1,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return (invokes, Some(e.into()));
            }
        }
    }
    (invokes, None)
}

/// Three more invocations, so that their flush points send what is left; returns how many.
pub(super) async fn flush_rest(env: &mut Env, event: &Value) -> anyhow::Result<u64> {
    const FLUSHES: u64 = 3;
    for _ in 0..FLUSHES {
        env.lambda
            .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
            .await?;
    }
    Ok(FLUSHES)
}

/// Shuts the environment down and returns the extension's counters.
pub(super) async fn shut_down(env: &mut Env) -> anyhow::Result<HashMap<String, u64>> {
    let report = env.lambda.shutdown().await?;
    let exit = report.extension(super::EXTENSION).map_or_else(
        || String::from("no exit recorded"),
        |e| {
            format!(
                "exit {:?}, killed {}, took {:?}",
                e.exit_code(),
                e.killed,
                e.took
            )
        },
    );
    let c = counters(&env.lambda);
    if c.is_empty() {
        let tail = super::last_lines(&env.lambda, 5);
        anyhow::bail!("the extension logged no counters ({exit}); last lines: {tail:?}");
    }
    Ok(c)
}

async fn run_once(
    bins: &Binaries,
    run: u64,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<RunFigures> {
    let tag = 0xb0_00 | run;
    let sink = CountingSink::start(tag).await?;
    let mut env = EnvSpec::new(&bins.extension, &bins.function, &sink.endpoint())
        .start()
        .await?;
    env.lambda.prewarm().await?;
    let pid =
        procfs::child_running(&bins.extension).context("cannot find the extension's process")?;
    // Let the background start-up finish before calling it idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = procfs::memory(pid).context("cannot read the extension's memory")?;
    // Idle again after one invocation: the X-Ray client (built at the first event), its TLS
    // roots and a connection now exist. This is the extension's memory between invocations.
    let event = json!({"subsegments": 1, "sleep_ms": 20});
    env.lambda
        .invoke(Invoke::new(event.clone()).traced(TraceHeader::sampled()))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let warm_idle = procfs::memory(pid).context("cannot read the extension's memory")?;

    let target = SocketAddr::from(([127, 0, 0, 1], env.udp_port));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(idle.rss_kib));
    let sampler = spawn_sampler(pid, Arc::clone(&done), Arc::clone(&peak));
    let cpu_before = cpu_seconds(pid).unwrap_or(f64::NAN);
    let load_start = Instant::now();
    let generator = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || generate(target, rate, duration, tag, &stop))
    };
    let (mut invokes, failure) =
        invoke_while(&mut env, &event, &stop, || !generator.is_finished()).await;
    invokes += 1;
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    let cpu_after = cpu_seconds(pid).unwrap_or(f64::NAN);
    if let Some(e) = failure {
        return Err(e);
    }
    invokes += flush_rest(&mut env, &event).await?;
    let after = procfs::memory(pid).context("cannot read the extension's memory")?;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let c = shut_down(&mut env).await?;
    let (calls, documents_in_calls, stored) = sink.with_counts(|c| {
        let during = c.calls.iter().filter(|(at, _)| *at >= load_start);
        let (calls, docs) = during.fold((0_u64, 0_u64), |(n, d), (_, k)| (n + 1, d + *k as u64));
        (calls, docs, c.tagged.len() as u64)
    });
    let peak_kib = peak
        .lock()
        .map_or(after.rss_kib, |p| (*p).max(after.rss_kib));
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let achieved_rate = generated.sent as f64 / generated.elapsed.as_secs_f64();
    Ok(RunFigures {
        idle_rss_mib: mib(idle.rss_kib),
        warm_idle_rss_mib: mib(warm_idle.rss_kib),
        peak_rss_mib: mib(peak_kib),
        hwm_mib: mib(after.hwm_kib),
        cpu_percent: 100.0 * (cpu_after - cpu_before) / generated.elapsed.as_secs_f64(),
        achieved_rate,
        sent: generated.sent,
        send_errors: generated.send_errors,
        received: c.get("received").copied().unwrap_or(0),
        rejected: c.get("rejected").copied().unwrap_or(0),
        spilled: c.get("spilled").copied().unwrap_or(0),
        stored,
        calls,
        documents_in_calls,
        invokes,
    })
}

/// `runs` runs of `duration` at `rate` documents/s.
pub async fn measure(
    bins: &Binaries,
    runs: u64,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    let mut all = Vec::new();
    for run in 0..runs {
        all.push(
            run_once(bins, run, rate, duration)
                .await
                .with_context(|| format!("load run {run}"))?,
        );
    }
    let col = |f: fn(&RunFigures) -> f64| all.iter().map(f).collect::<Vec<f64>>();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let drops = col(|r| r.sent.saturating_sub(r.stored) as f64);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let fill = col(|r| r.documents_in_calls as f64 / r.calls.max(1) as f64);
    let detail: Vec<String> = all
        .iter()
        .map(|r| {
            format!(
                "sent {} ({} send errors) / received {} (the function's own included) / rejected {} / spilled {} / at the endpoint {}; {} calls, {} invokes",
                r.sent, r.send_errors, r.received, r.rejected, r.spilled, r.stored, r.calls, r.invokes
            )
        })
        .collect();
    let secs = duration.as_secs_f64();
    Ok(vec![
        Row::new("RSS idle after init (VmRSS)", &col(|r| r.idle_rss_mib), Unit::MiB, Target::AtMost(6.0)),
        Row::new(
            "RSS idle after the first invocation (X-Ray client built, VmRSS)",
            &col(|r| r.warm_idle_rss_mib),
            Unit::MiB,
            Target::AtMost(6.0),
        ),
        Row::new(
            format!("RSS at {}k documents/s (peak VmRSS, sampled every 50 ms)", RATE / 1000),
            &col(|r| r.peak_rss_mib),
            Unit::MiB,
            Target::AtMost(24.0),
        )
        .note(format!(
            "buffer limit {DEFAULT_BUFFER_MIB} MiB (default); VmHWM after the run {}",
            col(|r| r.hwm_mib).iter().map(|m| format!("{m:.2} MiB")).collect::<Vec<_>>().join(", ")
        )),
        Row::new("load: documents/s achieved by the generator", &col(|r| r.achieved_rate), Unit::PerSecond, Target::None)
            .note(format!("{DOCUMENT_BYTES}-byte bodies over loopback for {secs:.0} s per run, while the function is invoked back to back (20 ms handler); the extension runs with its default settings (flush strategy included)")),
        Row::new("load: extension CPU (% of one core)", &col(|r| r.cpu_percent), Unit::Percent, Target::None),
        Row::new(
            "drops at 20k documents/s (sent − distinct ones X-Ray got)",
            &drops,
            Unit::Count,
            Target::AtMost(0.0),
        )
        .note(detail.join(" | ")),
        Row::new(
            "documents per PutTraceSegments call under load",
            &fill,
            Unit::PerCall,
            Target::AtLeast(45.0),
        ),
    ])
}
