//! The stripped size of the release binary: the static musl build of the layer when there is
//! one (`make layer`), else the glibc release build.

use std::path::{Path, PathBuf};

use super::report::{Row, Target, Unit};
use super::{Binaries, EMPTY_EXTENSION, EXTENSION, MUSL_RELEASE_DIR};

/// Bytes of `binary` once stripped (a stripped copy in a temporary directory), and whether
/// `strip` could be run.
fn stripped_size(binary: &Path) -> Option<(u64, bool)> {
    let size = std::fs::metadata(binary).ok()?.len();
    let copy = std::env::temp_dir().join(format!("xray-bench-strip-{}", std::process::id()));
    let stripped = std::process::Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(binary)
        .status()
        .ok()
        .filter(std::process::ExitStatus::success)
        .and_then(|_| std::fs::metadata(&copy).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    Some(stripped.map_or((size, false), |s| (s, true)))
}

#[expect(clippy::cast_precision_loss, reason = "a file size")]
fn to_mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The rows.
pub fn rows(bins: &Binaries) -> Vec<Row> {
    let musl: PathBuf = bins.target_dir().join(MUSL_RELEASE_DIR).join(EXTENSION);
    let glibc = &bins.extension;
    let mut rows = Vec::new();
    let target = Target::AtMost(5.0);
    let newer_than = |a: &Path, b: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(a), m(b)), (Some(x), Some(y)) if x >= y)
    };
    if let Some((bytes, stripped)) = musl.exists().then(|| stripped_size(&musl)).flatten() {
        let mut row = Row::new(
            "binary: x86_64 static (musl), stripped",
            &[to_mib(bytes)],
            Unit::MiB,
            target,
        )
        .note(format!(
            "{bytes} bytes, {}{}",
            Path::new("target")
                .join(MUSL_RELEASE_DIR)
                .join(EXTENSION)
                .display(),
            if stripped {
                ""
            } else {
                " (strip unavailable: file size)"
            }
        ));
        if !newer_than(&musl, glibc) {
            row = row.note(format!(
                "{bytes} bytes, {} — built before the glibc release binary: rebuild with `make layer` for a current figure",
                Path::new("target").join(MUSL_RELEASE_DIR).join(EXTENSION).display()
            ));
        }
        rows.push(row);
    } else {
        rows.push(Row::missing(
            "binary: x86_64 static (musl), stripped",
            Unit::MiB,
            target,
            "no musl build: `make layer` makes one; the glibc row stands in",
        ));
    }
    if let Some((bytes, _)) = stripped_size(glibc) {
        rows.push(
            Row::new(
                "binary: x86_64 glibc release, stripped",
                &[to_mib(bytes)],
                Unit::MiB,
                target,
            )
            .note(format!("{bytes} bytes, dynamically linked against glibc")),
        );
    }
    let empty_musl = bins
        .target_dir()
        .join(MUSL_RELEASE_DIR)
        .join(EMPTY_EXTENSION);
    for (empty, how) in [
        (&empty_musl, "static (musl)"),
        (&bins.empty_extension, "glibc release"),
    ] {
        if let Some((bytes, _)) = stripped_size(empty) {
            rows.push(Row::new(
                format!("binary: empty extension (same crates), {how}, stripped"),
                &[to_mib(bytes)],
                Unit::MiB,
                Target::None,
            ));
        }
    }
    rows
}
