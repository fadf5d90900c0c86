//! Statistics, the result table (terminal and markdown) and the machine description.

use std::fmt::Write as _;

/// Median and range of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

/// Median, min and max of `values` (`None` when empty; NaNs are ignored).
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    })
}

/// The nearest-rank `p`-th percentile (0–100) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rank among at most millions of samples"
    )]
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// How a figure is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Ms,
    /// A ratio.
    Ratio,
    /// Mebibytes.
    MiB,
    /// Documents per second.
    PerSecond,
    /// A count.
    Count,
    /// Documents per call.
    PerCall,
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// A percentage.
    Percent,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// `x` with its unit.
    pub fn format(self, x: f64) -> String {
        match self {
            Self::Ms => format!("{x:.2} ms"),
            Self::Ratio => format!("{x:.2}×"),
            Self::MiB => format!("{x:.2} MiB"),
            Self::PerSecond => format!("{}/s", thousands(x)),
            Self::Count => thousands(x),
            Self::PerCall => format!("{x:.1}"),
            Self::Ns => format!("{x:.0} ns"),
            Self::Us => format!("{x:.1} µs"),
            Self::Percent => format!("{x:.0} %"),
            Self::Bytes => format!("{x:.0} B"),
        }
    }
}

/// `x` rounded, with thousands separators.
fn thousands(x: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "figures far below i64's range"
    )]
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// What a figure must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At most this much.
    AtMost(f64),
    /// At least this much.
    AtLeast(f64),
    /// Informational.
    None,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The runs, when there were any.
    pub summary: Option<Summary>,
    /// Its unit.
    pub unit: Unit,
    /// The target.
    pub target: Target,
    /// The target as stated, when it is not simply the bound (e.g. "≤ RTT + 2 ms").
    pub target_text: Option<String>,
    /// Why there is no value, or a caveat.
    pub note: Option<String>,
}

impl Row {
    /// A row from measured values.
    pub fn new(figure: impl Into<String>, values: &[f64], unit: Unit, target: Target) -> Self {
        Self {
            figure: figure.into(),
            summary: summarize(values),
            unit,
            target,
            target_text: None,
            note: None,
        }
    }

    /// A row with nothing measured, saying why.
    pub fn missing(figure: impl Into<String>, unit: Unit, target: Target, why: &str) -> Self {
        Self {
            figure: figure.into(),
            summary: None,
            unit,
            target,
            target_text: None,
            note: Some(why.to_owned()),
        }
    }

    /// States the target in words.
    #[must_use]
    pub fn target_text(mut self, text: impl Into<String>) -> Self {
        self.target_text = Some(text.into());
        self
    }

    /// Adds a caveat (after any the row already has).
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        self.note = Some(match self.note.take() {
            Some(before) => format!("{before}; {note}"),
            None => note,
        });
        self
    }

    /// `pass`, `FAIL`, `—` (informational) or `n/a` (not measured); judged on the median.
    pub fn verdict(&self) -> &'static str {
        match (self.summary, self.target) {
            (_, Target::None) => "—",
            (None, _) => "n/a",
            (Some(s), Target::AtMost(t)) => {
                if s.median <= t {
                    "pass"
                } else {
                    "FAIL"
                }
            }
            (Some(s), Target::AtLeast(t)) => {
                if s.median >= t {
                    "pass"
                } else {
                    "FAIL"
                }
            }
        }
    }

    fn cells(&self) -> [String; 6] {
        let (median, range, n) = match self.summary {
            Some(s) => (
                self.unit.format(s.median),
                if s.n > 1 {
                    format!("{} – {}", self.unit.format(s.min), self.unit.format(s.max))
                } else {
                    String::from("—")
                },
                s.n.to_string(),
            ),
            None => (String::from("—"), String::from("—"), String::from("0")),
        };
        let target = self
            .target_text
            .clone()
            .unwrap_or_else(|| match self.target {
                Target::AtMost(t) => format!("≤ {}", self.unit.format(t)),
                Target::AtLeast(t) => format!("≥ {}", self.unit.format(t)),
                Target::None => String::from("—"),
            });
        [
            self.figure.clone(),
            median,
            range,
            n,
            target,
            self.verdict().to_owned(),
        ]
    }
}

const HEADINGS: [&str; 6] = ["figure", "median", "min – max", "runs", "target", "result"];

/// The table for a terminal: aligned columns, notes below.
pub fn render_text(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| -> String {
        let mut out = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            if i == 0 {
                let _ = write!(out, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{c}", " ".repeat(pad));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&HEADINGS.map(String::from));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for row in &cells {
        out.push_str(&line(row));
    }
    out.push_str(&notes(rows));
    out
}

/// The table in markdown, notes below.
pub fn render_markdown(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADINGS.join(" | "));
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for row in rows {
        let cells = row.cells();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push_str(&notes(rows));
    out
}

fn notes(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        if let Some(note) = &row.note {
            let _ = writeln!(out, "\n- {}: {note}", row.figure);
        }
    }
    out
}

/// The machine a run happened on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `/proc/loadavg` when the run started.
    pub load_before: String,
}

impl Machine {
    /// Reads the facts from `/proc` and `rustc`.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| String::from("unknown"));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| String::from("unknown"), |s| s.trim().to_owned());
        let rustc =
            std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map_or_else(|| String::from("unknown"), |s| s.trim().to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel,
            rustc,
            load_before: load_average(),
        }
    }

    /// One line.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} cores, Linux {}, {}; load average at start {}",
            self.cpu, self.cores, self.kernel, self.rustc, self.load_before
        )
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| String::from("unknown"),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_percentiles() {
        let s = summarize(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert!((summarize(&[1.0, 2.0, 3.0, 4.0]).unwrap().median - 2.5).abs() < 1e-12);
        assert!(summarize(&[]).is_none());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn verdicts_follow_the_median() {
        let row = Row::new("x", &[1.0, 2.0, 9.0], Unit::Ms, Target::AtMost(2.0));
        assert_eq!(row.verdict(), "pass");
        let row = Row::new(
            "x",
            &[40.0, 44.0, 50.0],
            Unit::PerCall,
            Target::AtLeast(45.0),
        );
        assert_eq!(row.verdict(), "FAIL");
        assert_eq!(
            Row::missing("x", Unit::Ms, Target::AtMost(1.0), "no").verdict(),
            "n/a"
        );
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(12.0), "12");
    }

    #[test]
    fn tables_have_one_line_per_row() {
        let rows = [
            Row::new("a", &[1.0], Unit::Ms, Target::None),
            Row::missing("b", Unit::Ms, Target::AtMost(1.0), "skipped"),
        ];
        let text = render_text(&rows);
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 5);
        let md = render_markdown(&rows);
        assert!(md.contains("| a | 1.00 ms | — | 1 | — | — |"));
        assert!(md.contains("- b: skipped"));
    }
}
