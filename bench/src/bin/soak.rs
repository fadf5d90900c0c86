//! `make soak`: a long life of the extension through the emulator: ten thousand invocations back
//! to back, ten subsegments each, then SHUTDOWN; every document must reach the endpoint and the
//! extension's RSS must not grow by more than 1 MiB from the 1,000th invocation to the last.
//!
//! ```text
//! soak [--invocations N] [--subsegments N] [--sample-every N] [--quiet-after N] [--env KEY=VALUE ...]
//!      [--process EXE]   (the executable whose memory is read, when XRAY_EXTENSION_BIN is a
//!                        launcher script, e.g. a profiler's)
//! ```
//!
//! The extension is the layer's static musl build (`make -C layer binary-x86_64`), or
//! `XRAY_EXTENSION_BIN`; the function is the sample function next to this executable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use xray_extension_bench::soak::{self, Plan};
use xray_extension_bench::{EXTENSION, MUSL_RELEASE_DIR, SAMPLE_FUNCTION};

const USAGE: &str = "soak [--invocations N] [--subsegments N] [--sample-every N] [--quiet-after N] [--env KEY=VALUE for the extension] [--process EXE whose memory is read]";

fn value(flag: &str, v: Option<String>) -> anyhow::Result<u64> {
    let v = v.with_context(|| format!("{flag} needs a value"))?;
    v.parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("{flag}: {v:?} is not a positive count"))
}

/// The plan from the command line; `None` for `--help`.
fn plan() -> anyhow::Result<Option<Plan>> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    let target = dir
        .parent()
        .context("the executable is not in target/<profile>")?;
    let extension = std::env::var_os("XRAY_EXTENSION_BIN").map_or_else(
        || target.join(MUSL_RELEASE_DIR).join(EXTENSION),
        PathBuf::from,
    );
    let mut plan = Plan::new(&extension, &dir.join(SAMPLE_FUNCTION));
    // Memory is read from the extension's process unless --process names another executable.
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--invocations" => plan.invocations = value(&arg, args.next())?,
            "--subsegments" => plan.subsegments = value(&arg, args.next())?,
            "--sample-every" => plan.sample_every = value(&arg, args.next())?,
            "--quiet-after" => plan.quiet_after = value(&arg, args.next())?,
            "--process" => {
                plan.process = PathBuf::from(args.next().context("--process needs a path")?);
            }
            "--env" => {
                let pair = args.next().context("--env needs KEY=VALUE")?;
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--env: {pair:?} is not KEY=VALUE"))?;
                plan.extension_env.push((k.to_owned(), v.to_owned()));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    for path in [&plan.extension, &plan.function] {
        anyhow::ensure!(
            path.exists(),
            "{} is missing (`make soak` builds both)",
            path.display()
        );
    }
    Ok(Some(plan))
}

async fn run(plan: Plan) -> anyhow::Result<bool> {
    eprintln!(
        "soak: {} invocations × {} subsegments, {}",
        plan.invocations,
        plan.subsegments,
        plan.extension.display()
    );
    let result = soak::run(&plan, |n, m| {
        if n % (plan.sample_every * 10) == 0 {
            eprintln!("soak: {n} invocations, RSS {} KiB", m.rss_kib);
        }
    })
    .await?;
    println!(
        "soak: {} invocations in {:.1} s; RSS idle {} KiB, after {} {} KiB, after {} {} KiB; growth {} KiB; {} documents sent, {} missing",
        plan.invocations,
        result.took.as_secs_f64(),
        result.idle.rss_kib,
        soak::GROWTH_FROM,
        result.rss_at(soak::GROWTH_FROM).unwrap_or(0),
        plan.invocations,
        result.rss_last().unwrap_or(0),
        result.growth_kib(soak::GROWTH_FROM).unwrap_or(0),
        result.sent,
        result.missing
    );
    println!("soak: RSS KiB by invocation: {}", result.trace());
    println!(
        "soak: of which anonymous/file-backed KiB: idle {}/{}, {}",
        result.idle.anon_kib,
        result.idle.file_kib,
        result.split_trace()
    );
    let mut counters: Vec<_> = result.counters.iter().collect();
    counters.sort();
    println!("soak: counters {counters:?}");
    let failures = result.failures(&plan);
    for f in &failures {
        println!("soak: FAILED: {f}");
    }
    if failures.is_empty() {
        println!("soak: passed");
    }
    Ok(failures.is_empty())
}

fn main() -> ExitCode {
    xray_extension_bench::main_with_runtime("soak", plan(), run)
}
