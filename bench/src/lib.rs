//! Programs run through the local Lambda emulator and the X-Ray sink of `xray-extension-tests`:
//! the performance harness behind `make bench` (each figure of the performance targets measured
//! with the release binaries, side by side with the baseline where the target is a ratio, and
//! printed as one table), the soak behind `make soak`, the scale model and the demo (`make demo`).
//!
//! - [`init`]: spawn → first `/event/next`, ours and `empty-extension`, interleaved cold starts;
//! - [`post_runtime`]: `platform.runtimeDone` delivered → our `/event/next`, per flush strategy,
//!   and the sink's round trip for the `end` target;
//! - [`load`]: RSS idle and under a 20k documents/s UDP load, drops, batch fill (against
//!   [`counting_sink`], an endpoint that only counts);
//! - [`otel`]: spans/s through the UDP OTLP path and the OTLP/HTTP receiver, the extension
//!   pinned to one core;
//! - [`memory`]: RSS over a long life and its peak under hostile OTLP/HTTP requests;
//! - [`soak`]: many invocations back to back, every document delivered, RSS flat;
//! - [`size`]: the stripped `x86_64` binary;
//! - [`micro`]: the criterion micro-benchmarks' medians (`cargo bench -p xray-extension`);
//! - [`docs`]: the document generator and datagram fixtures (also the criterion benchmarks' inputs);
//! - [`report`]: statistics, the table, the machine it ran on;
//! - [`scale_model`]: many environments against one account's request quota, simulated.
//!
//! Binaries: `bench` (`make bench`), `soak` (`make soak`), `scale-model` (`make scale-model`) and
//! `demo` (`make demo`).

pub mod counting_sink;
pub mod docs;
pub mod init;
pub mod load;
pub mod memory;
pub mod micro;
pub mod otel;
pub mod post_runtime;
pub mod report;
pub mod scale_model;
pub mod size;
pub mod soak;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use xray_extension_tests::emulator::{ChildOutput, Emulator, ExtensionSpec, FunctionSpec};
use xray_extension_tests::net;

/// The extension's name in the Extensions API (its file name).
pub use xray_extension_tests::extension_log::EXTENSION;
/// The baseline's name.
pub const EMPTY_EXTENSION: &str = "empty-extension";
/// The function every measurement runs.
pub const SAMPLE_FUNCTION: &str = "sample-function";
/// The extension's flush-strategy setting.
pub const FLUSH_STRATEGY_VAR: &str = "XRAY_EXTENSION_FLUSH_STRATEGY";

/// The binaries a run needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `target/<profile>`, where the binaries are.
    pub dir: PathBuf,
    /// Ours (`XRAY_EXTENSION_BIN` overrides it).
    pub extension: PathBuf,
    /// The baseline.
    pub empty_extension: PathBuf,
    /// The function.
    pub function: PathBuf,
}

impl Binaries {
    /// The binaries next to the running executable (`target/release` under `make bench`).
    pub fn beside_current_exe() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let dir = exe
            .parent()
            .context("the running executable has no directory")?
            .to_path_buf();
        let extension = std::env::var_os("XRAY_EXTENSION_BIN")
            .map_or_else(|| dir.join(EXTENSION), PathBuf::from);
        let bins = Self {
            extension,
            empty_extension: dir.join(EMPTY_EXTENSION),
            function: dir.join(SAMPLE_FUNCTION),
            dir,
        };
        for path in [&bins.extension, &bins.empty_extension, &bins.function] {
            anyhow::ensure!(
                path.exists(),
                "{} is missing: build it first (`make bench-build`)",
                path.display()
            );
        }
        Ok(bins)
    }

    /// `target/`, the parent of the profile directory.
    pub fn target_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }
}

/// Where the layer's static musl `x86_64` builds are, relative to `target/`.
pub const MUSL_RELEASE_DIR: &str = "x86_64-unknown-linux-musl/release";

/// What users deploy: the layer's static musl `x86_64` build of the extension, and the empty
/// extension built the same way (`make -C layer binary-x86_64 baseline-x86_64`), when both
/// exist and are built from the sources as they are now ([`is_current`]). The function stays
/// the glibc build: it is not what is measured.
/// `None` under `XRAY_EXTENSION_BIN`, which names the extension to measure.
pub fn shipped_binaries(bins: &Binaries) -> Option<Binaries> {
    if std::env::var_os("XRAY_EXTENSION_BIN").is_some() {
        return None;
    }
    let musl = bins.target_dir().join(MUSL_RELEASE_DIR);
    let extension = musl.join(EXTENSION);
    let empty_extension = musl.join(EMPTY_EXTENSION);
    (is_current(&extension, &bins.extension) && is_current(&empty_extension, &bins.empty_extension))
        .then(|| Binaries {
            extension,
            empty_extension,
            ..bins.clone()
        })
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether the executable `built` was built from the sources as they are now: it is at least as
/// new as every file its dep-info (`<built>.d`, which cargo writes next to it) names. Without
/// dep-info, whether it is at least as new as `reference` (its glibc build). A build cargo found
/// up to date keeps its old time, so comparing the two builds' times alone would call a current
/// musl build stale whenever the glibc one was rebuilt after it.
pub fn is_current(built: &Path, reference: &Path) -> bool {
    let Some(built_at) = modified(built) else {
        return false;
    };
    let mut dep_info = built.as_os_str().to_owned();
    dep_info.push(".d");
    match std::fs::read_to_string(dep_info) {
        Ok(text) => text
            .split_once(": ")
            .map_or("", |(_, sources)| sources)
            .split_whitespace()
            .all(|source| modified(Path::new(source)).is_some_and(|at| at <= built_at)),
        Err(_) => modified(reference).is_some_and(|at| at <= built_at),
    }
}

/// One environment: an extension (ours or the baseline) and the sample function.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// The extension executable.
    pub extension: PathBuf,
    /// Extra variables for the extension.
    pub extension_env: Vec<(String, String)>,
    /// The function.
    pub function: PathBuf,
    /// `AWS_ENDPOINT_URL_XRAY`.
    pub xray_endpoint: String,
    /// The function timeout.
    pub function_timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (the emulator's default, 128, when `None`).
    pub memory_mb: Option<u32>,
}

/// A started emulator and the UDP port the extension listens on.
pub struct Env {
    /// The local Lambda.
    pub lambda: Emulator,
    /// The extension's daemon-protocol port.
    pub udp_port: u16,
}

impl EnvSpec {
    /// Ours or the baseline, with the sample function, against `xray_endpoint`.
    pub fn new(extension: &Path, function: &Path, xray_endpoint: &str) -> Self {
        Self {
            extension: extension.to_path_buf(),
            extension_env: Vec::new(),
            function: function.to_path_buf(),
            xray_endpoint: xray_endpoint.to_owned(),
            function_timeout: Duration::from_secs(3),
            memory_mb: None,
        }
    }

    /// An extra variable for the extension.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extension_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The function's memory size in MB.
    #[must_use]
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// Starts the emulator (nothing runs until an init or invoke).
    pub async fn start(&self) -> anyhow::Result<Env> {
        let udp_port = net::free_udp_port()?;
        let telemetry_port = net::free_tcp_port()?;
        let mut extension = ExtensionSpec::new(&self.extension)
            .env(
                "XRAY_EXTENSION_UDP_ADDRESS",
                format!("127.0.0.1:{udp_port}"),
            )
            .env("XRAY_EXTENSION_TELEMETRY_PORT", telemetry_port.to_string());
        for (k, v) in &self.extension_env {
            extension = extension.env(k, v);
        }
        let mut builder = Emulator::builder();
        if let Some(mb) = self.memory_mb {
            builder = builder.memory_mb(mb);
        }
        let lambda = builder
            .extension(extension)
            .function(
                FunctionSpec::command([&self.function])
                    .env("AWS_XRAY_DAEMON_ADDRESS", format!("127.0.0.1:{udp_port}")),
            )
            .function_name("bench")
            .function_timeout(self.function_timeout)
            .xray_endpoint(&self.xray_endpoint)
            .output(ChildOutput::Quiet)
            .start()
            .await?;
        Ok(Env { lambda, udp_port })
    }
}

/// The extension's last `n` lines of output, newest first (for an error message).
pub fn last_lines(lambda: &Emulator, n: usize) -> Vec<String> {
    lambda.output(EXTENSION).into_iter().rev().take(n).collect()
}

/// The extension's shutdown counters (empty when it logged none).
pub fn counters(lambda: &Emulator) -> std::collections::HashMap<String, u64> {
    xray_extension_tests::extension_log::counters(lambda).unwrap_or_default()
}

/// Whether `binary` knows the flush-strategy setting (its name appears in the executable);
/// a build without it ignores the variable and flushes at the end of each invocation.
pub fn knows_flush_strategy(binary: &Path) -> bool {
    std::fs::read(binary).is_ok_and(|bytes| {
        bytes
            .windows(FLUSH_STRATEGY_VAR.len())
            .any(|w| w == FLUSH_STRATEGY_VAR.as_bytes())
    })
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `main` of the `bench` and `soak` binaries: the parsed arguments (`None`: help was
/// printed), then `run` on a runtime of two workers; `Ok(false)` (a failed check) and errors,
/// printed after `name`, exit with a failure.
pub fn main_with_runtime<A, F>(
    name: &str,
    args: anyhow::Result<Option<A>>,
    run: impl FnOnce(A) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<bool>>,
{
    let args = match args {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use super::is_current;

    fn file_at(path: &Path, text: &str, at: SystemTime) {
        fs::write(path, text).unwrap();
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bench-current-{}", fastrand::u64(..)));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_build_is_current_when_no_source_its_dep_info_names_is_newer() {
        let dir = scratch();
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let (source, musl, glibc) = (dir.join("main.rs"), dir.join("musl"), dir.join("glibc"));
        let dep_info = format!("{}: {}\n", musl.display(), source.display());
        file_at(&source, "", t(0));
        file_at(&musl, "", t(10));
        file_at(&musl.with_extension("d"), &dep_info, t(10));
        // The glibc build was made later (cargo found the musl one up to date): still current.
        file_at(&glibc, "", t(20));
        assert!(is_current(&musl, &glibc));
        // A source changed after the musl build: stale, whatever the glibc build's time.
        file_at(&source, "", t(15));
        assert!(!is_current(&musl, &glibc));
        // A source it names is gone: stale.
        fs::remove_file(&source).unwrap();
        assert!(!is_current(&musl, &glibc));
        // Without dep-info: at least as new as the glibc build.
        fs::remove_file(musl.with_extension("d")).unwrap();
        assert!(!is_current(&musl, &glibc));
        file_at(&glibc, "", t(5));
        assert!(is_current(&musl, &glibc));
        // No build at all.
        assert!(!is_current(&dir.join("absent"), &glibc));
        fs::remove_dir_all(dir).unwrap();
    }
}
