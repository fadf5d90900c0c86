//! `scale-model`: the deterministic simulation of many environments exporting into one
//! account's quota, ours against the X-Ray daemon (see `xray_extension_bench::scale_model`).
//!
//! ```text
//! scale-model [--quota-rps N] [--seconds S] [--seed N]
//! ```

use std::process::ExitCode;

use xray_extension_bench::scale_model::{
    QUOTA_RPS_DEFAULT, SECONDS_DEFAULT, SEED_DEFAULT, grid, table,
};

fn parse<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: cannot read {value:?}"))
}

fn run() -> Result<(), String> {
    let mut quota = QUOTA_RPS_DEFAULT;
    let mut seconds = SECONDS_DEFAULT;
    let mut seed = SEED_DEFAULT;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quota-rps" => quota = parse(&arg, args.next())?,
            "--seconds" => seconds = parse(&arg, args.next())?,
            "--seed" => seed = parse(&arg, args.next())?,
            "-h" | "--help" => {
                println!("scale-model [--quota-rps N] [--seconds S] [--seed N]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !(quota > 0.0 && seconds > 0.0) {
        return Err(String::from("--quota-rps and --seconds must be positive"));
    }
    println!(
        "scale model: account quota {quota} PutTraceSegments requests/s (burst {quota}), {seconds} s simulated, seed {seed}, 50 ms handlers, 1 KiB documents"
    );
    println!();
    print!("{}", table(&grid(quota, seconds, seed)));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale-model: {e}");
            ExitCode::FAILURE
        }
    }
}
