//! `make bench`: the performance figures of the extension, measured through the emulator with
//! the release binaries, side by side with the empty extension where the target is a ratio,
//! printed as one table (and, for a full run, written to `bench/RESULTS.md`).
//!
//! ```text
//! bench [--only init,post-runtime,load,otel,memory,size,micro,scale] [--quick] [--out FILE]
//!       [--init-rounds N] [--post-rounds N] [--invokes N] [--load-runs N] [--load-seconds S]
//! ```
//!
//! The micro-benchmark rows are read from criterion's results: run
//! `cargo bench -p xray-extension --bench micro` first (`make bench` does).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use xray_extension_bench::report::{Machine, Row, load_average, render_markdown, render_text};
use xray_extension_bench::scale_model;
use xray_extension_bench::{Binaries, init, load, memory, micro, otel, post_runtime, size};
use xray_extension_tests::clock::iso8601_millis;
use xray_extension_tests::sink::XraySink;

const SECTIONS: [&str; 8] = [
    "init",
    "post-runtime",
    "load",
    "otel",
    "memory",
    "size",
    "micro",
    "scale",
];

#[derive(Debug)]
struct Options {
    only: Vec<String>,
    out: Option<PathBuf>,
    init_rounds: usize,
    post_rounds: usize,
    invokes: usize,
    load_runs: u64,
    load_seconds: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            only: SECTIONS.iter().map(|s| (*s).to_owned()).collect(),
            out: None,
            init_rounds: 20,
            post_rounds: 3,
            invokes: 200,
            load_runs: 3,
            load_seconds: 5.0,
        }
    }
}

const USAGE: &str = "bench [--only init,post-runtime,load,otel,memory,size,micro,scale] [--quick] [--out FILE] \
[--init-rounds N] [--post-rounds N] [--invokes N] [--load-runs N] [--load-seconds S]";

fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> anyhow::Result<T> {
    let v = v.with_context(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: cannot read {v:?}"))
}

fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => {
                let list: String = value(&arg, args.next())?;
                o.only = list.split(',').map(|s| s.trim().to_owned()).collect();
                for s in &o.only {
                    anyhow::ensure!(
                        SECTIONS.contains(&s.as_str()),
                        "unknown section {s:?}; one of {}",
                        SECTIONS.join(", ")
                    );
                }
            }
            "--quick" => {
                o.init_rounds = 5;
                o.post_rounds = 1;
                o.invokes = 50;
                o.load_runs = 1;
                o.load_seconds = 3.0;
            }
            "--out" => o.out = Some(PathBuf::from(value::<String>(&arg, args.next())?)),
            "--init-rounds" => o.init_rounds = value(&arg, args.next())?,
            "--post-rounds" => o.post_rounds = value(&arg, args.next())?,
            "--invokes" => o.invokes = value(&arg, args.next())?,
            "--load-runs" => o.load_runs = value(&arg, args.next())?,
            "--load-seconds" => o.load_seconds = value(&arg, args.next())?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    anyhow::ensure!(
        o.init_rounds > 0 && o.post_rounds > 0 && o.invokes > 0 && o.load_runs > 0,
        "counts must be positive"
    );
    anyhow::ensure!(
        o.load_seconds > 0.0 && o.load_seconds <= 60.0,
        "--load-seconds must be in (0, 60]"
    );
    Ok(Some(o))
}

fn wants(o: &Options, section: &str) -> bool {
    o.only.iter().any(|s| s == section)
}

/// What the load and OpenTelemetry rows measure, and its name for the notes: what users deploy,
/// the layer's static musl binary, when `make bench` has just built it (newer than the glibc
/// one); else the glibc build.
fn deployed<'a>(shipped: Option<&'a Binaries>, bins: &'a Binaries) -> (&'a Binaries, &'static str) {
    match shipped {
        Some(s) => (s, "the layer's static musl binary"),
        None if std::env::var_os("XRAY_EXTENSION_BIN").is_some() => {
            (bins, "the extension named by XRAY_EXTENSION_BIN")
        }
        None => (
            bins,
            "the glibc release binary (no current musl build: `make layer`)",
        ),
    }
}

async fn measure(o: &Options, bins: &Binaries) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let shipped = xray_extension_bench::shipped_binaries(bins);
    if wants(o, "init") {
        eprintln!(
            "bench: init, {} interleaved cold starts each",
            o.init_rounds
        );
        let sink = XraySink::start().await?;
        // Judged on what users deploy: both extensions as static musl builds, made like the
        // layer's. The glibc builds (dynamically linked, position-independent: the loader
        // relocates them at start) follow for comparison.
        if let Some(shipped) = &shipped {
            rows.extend(
                init::measure(shipped, &sink.endpoint(), o.init_rounds, "", true)
                    .await?
                    .into_iter()
                    .map(|row| row.note("both extensions: static musl builds, as the layer ships")),
            );
        }
        rows.extend(
            init::measure(
                bins,
                &sink.endpoint(),
                o.init_rounds,
                if shipped.is_some() { ", glibc builds" } else { "" },
                shipped.is_none(),
            )
            .await?
            .into_iter()
            .map(|row| {
                if shipped.is_some() {
                    row
                } else {
                    row.note("glibc builds: no current musl builds (`make -C layer binary-x86_64 baseline-x86_64`)")
                }
            }),
        );
    }
    if wants(o, "post-runtime") {
        eprintln!(
            "bench: post-runtime, {} rounds × {} warm invokes per strategy",
            o.post_rounds, o.invokes
        );
        rows.extend(post_runtime::measure(bins, o.post_rounds, o.invokes).await?);
    }
    if wants(o, "load") {
        eprintln!(
            "bench: load, {} runs × {} s at {} documents/s",
            o.load_runs,
            o.load_seconds,
            load::RATE
        );
        let (load_bins, which) = deployed(shipped.as_ref(), bins);
        rows.extend(
            load::measure(
                load_bins,
                o.load_runs,
                load::RATE,
                Duration::from_secs_f64(o.load_seconds),
            )
            .await?
            .into_iter()
            .map(|row| row.note(format!("extension: {which}"))),
        );
    }
    if wants(o, "otel") {
        eprintln!(
            "bench: otel, {} runs × {} s per path (UDP, HTTP) and destination (segments, otlp)",
            o.load_runs, o.load_seconds
        );
        let (otel_bins, which) = deployed(shipped.as_ref(), bins);
        rows.extend(
            otel::measure(
                otel_bins,
                o.load_runs,
                Duration::from_secs_f64(o.load_seconds),
            )
            .await?
            .into_iter()
            .map(|row| row.note(format!("extension: {which}"))),
        );
    }
    if wants(o, "memory") {
        eprintln!(
            "bench: memory, a soak of {} invocations, then {} hostile OTLP/HTTP connections for {} s per kind",
            xray_extension_bench::soak::INVOCATIONS,
            memory::CONNECTIONS,
            o.load_seconds
        );
        let (memory_bins, which) = deployed(shipped.as_ref(), bins);
        rows.extend(
            memory::measure(memory_bins, which, Duration::from_secs_f64(o.load_seconds)).await?,
        );
    }
    if wants(o, "size") {
        rows.extend(size::rows(bins));
    }
    if wants(o, "micro") {
        rows.extend(micro::rows(bins.target_dir()));
    }
    Ok(rows)
}

/// The commit the binaries were built from, and whether the extension had uncommitted changes.
fn source_revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--", "../extension"])
                .is_some_and(|s| !s.trim().is_empty());
            format!(
                "{}{}",
                rev.trim(),
                if dirty {
                    " with uncommitted changes in extension/"
                } else {
                    ""
                }
            )
        }
        None => String::from("unknown"),
    }
}

/// Whether some file under `extension/src` changed after `binary` was built.
fn binary_predates_sources(binary: &std::path::Path) -> bool {
    fn newest(dir: &std::path::Path) -> Option<SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                if meta.is_dir() {
                    newest(&e.path())
                } else {
                    meta.modified().ok()
                }
            })
            .max()
    }
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../extension/src");
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    matches!((built, newest(&sources)), (Some(b), Some(s)) if s > b)
}

fn markdown(
    bins: &Binaries,
    machine: &Machine,
    o: &Options,
    rows: &[Row],
    scale: Option<&str>,
    took: Duration,
) -> String {
    let mut md = String::from("# Performance results\n\n");
    md.push_str(
        "Written by `make bench` (`bench/src/bin/bench.rs`): release binaries driven through the \
local Lambda emulator on loopback, with the X-Ray sink as the endpoint (the load rows: a \
minimal endpoint that only counts). Medians over runs; a row passes when its median meets the \
target. Figures are from the run below only; the machine is shared, so the load average is \
given. Per-row details are in the notes under the table.\n\n",
    );
    let _ = write!(
        md,
        "- machine: {}\n- source: {}\n- finished: {}, after {:.0} s; load average at the end {}\n- settings: {} init rounds; {} post-runtime rounds × {} invokes; {} load runs × {} s\n\n",
        machine.describe(),
        source_revision()
            + if binary_predates_sources(&bins.extension) {
                "; the extension binary predates changes in extension/src (make bench rebuilds it)"
            } else {
                ""
            },
        iso8601_millis(SystemTime::now()),
        took.as_secs_f64(),
        load_average(),
        o.init_rounds,
        o.post_rounds,
        o.invokes,
        o.load_runs,
        o.load_seconds,
    );
    md.push_str(&render_markdown(rows));
    if let Some(scale) = scale {
        md.push_str("\n## Scale model\n\n");
        md.push_str(scale);
    }
    md
}

fn scale_section() -> String {
    format!(
        "`scale-model` (`bench/src/scale_model.rs`): a deterministic simulation, no processes. \
Account quota {} PutTraceSegments requests/s (a model parameter, not X-Ray's limit), {} s \
simulated, seed {}, 50 ms handlers; the environment is frozen between invocations.\n\n{}",
        scale_model::QUOTA_RPS_DEFAULT,
        scale_model::SECONDS_DEFAULT,
        scale_model::SEED_DEFAULT,
        scale_model::table(&scale_model::grid(
            scale_model::QUOTA_RPS_DEFAULT,
            scale_model::SECONDS_DEFAULT,
            scale_model::SEED_DEFAULT,
        ))
    )
}

async fn run(o: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let machine = Machine::detect();
    let bins = Binaries::beside_current_exe()?;
    eprintln!("bench: {}", machine.describe());
    let rows = measure(&o, &bins).await?;
    let scale = wants(&o, "scale").then(scale_section);
    println!("machine: {}", machine.describe());
    println!();
    print!("{}", render_text(&rows));
    if let Some(scale) = &scale {
        println!();
        println!("scale model");
        print!("{scale}");
    }
    let full = SECTIONS.iter().all(|s| wants(&o, s));
    let out = o
        .out
        .clone()
        .or_else(|| full.then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md")));
    if let Some(path) = out {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            &path,
            markdown(
                &bins,
                &machine,
                &o,
                &rows,
                scale.as_deref(),
                started.elapsed(),
            ),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        println!();
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    xray_extension_bench::main_with_runtime("bench", parse_args(), |o| async move {
        run(o).await.map(|()| true)
    })
}
