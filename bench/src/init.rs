//! Extension init: spawn → first `/event/next`, ours against the empty extension, in
//! interleaved cold starts (the order alternates each round so neither always goes first).

use std::path::Path;

use anyhow::Context as _;

use super::report::{Row, Target, Unit};
use super::{Binaries, EnvSpec, ms};

/// Init times of one round, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    init_ms: f64,
    register_ms: f64,
}

/// One cold init (provisioned-concurrency style, no invoke) and shutdown.
async fn cold_init(
    extension: &Path,
    function: &Path,
    xray_endpoint: &str,
) -> anyhow::Result<Sample> {
    let mut env = EnvSpec::new(extension, function, xray_endpoint)
        .start()
        .await?;
    let record = env.lambda.prewarm().await?;
    let name = extension
        .file_name()
        .and_then(|n| n.to_str())
        .context("extension path has no file name")?;
    let timing = record
        .extension(name)
        .with_context(|| format!("no init timing for {name}"))?;
    let sample = Sample {
        init_ms: timing.init_duration().map_or(f64::NAN, ms),
        register_ms: timing.register_duration().map_or(f64::NAN, ms),
    };
    env.lambda.shutdown().await?;
    Ok(sample)
}

/// `rounds` interleaved cold starts of each; returns the rows, their figures suffixed with
/// `label` (which builds), with the targets only when `judged`.
pub async fn measure(
    bins: &Binaries,
    xray_endpoint: &str,
    rounds: usize,
    label: &str,
    judged: bool,
) -> anyhow::Result<Vec<Row>> {
    let mut ours = Vec::new();
    let mut empty = Vec::new();
    for round in 0..rounds {
        let (o, e) = if round % 2 == 0 {
            let o = cold_init(&bins.extension, &bins.function, xray_endpoint).await?;
            let e = cold_init(&bins.empty_extension, &bins.function, xray_endpoint).await?;
            (o, e)
        } else {
            let e = cold_init(&bins.empty_extension, &bins.function, xray_endpoint).await?;
            let o = cold_init(&bins.extension, &bins.function, xray_endpoint).await?;
            (o, e)
        };
        ours.push(o);
        empty.push(e);
    }
    let ratios: Vec<f64> = ours
        .iter()
        .zip(&empty)
        .map(|(o, e)| o.init_ms / e.init_ms)
        .collect();
    let pick = |v: &[Sample], f: fn(&Sample) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    Ok(vec![
        Row::new(
            format!("init: ours, spawn → first /event/next{label}"),
            &pick(&ours, |s| s.init_ms),
            Unit::Ms,
            if judged {
                Target::AtMost(5.0)
            } else {
                Target::None
            },
        ),
        Row::new(
            format!("init: empty extension, spawn → first /event/next{label}"),
            &pick(&empty, |s| s.init_ms),
            Unit::Ms,
            Target::None,
        ),
        Row::new(
            format!("init: ours ÷ empty (paired rounds){label}"),
            &ratios,
            Unit::Ratio,
            if judged {
                Target::AtMost(1.25)
            } else {
                Target::None
            },
        ),
        Row::new(
            format!("init: ours, spawn → register{label}"),
            &pick(&ours, |s| s.register_ms),
            Unit::Ms,
            Target::None,
        ),
        Row::new(
            format!("init: empty extension, spawn → register{label}"),
            &pick(&empty, |s| s.register_ms),
            Unit::Ms,
            Target::None,
        ),
    ])
}
