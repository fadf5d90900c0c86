//! `make demo`'s timeline in a real browser: headless Chromium loads the HTML file the demo
//! wrote, and the page it built has one row per document of the demo's traces; it also renders
//! the page to a PNG (`target/<profile>/demo-timeline.png`).

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed step is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::workspace_binary;
use xray_extension_tests::timeline::count_rows;

/// The browser: `XRAY_TEST_CHROMIUM`, else `chromium` on PATH (`make browser` installs it).
fn chromium() -> PathBuf {
    std::env::var_os("XRAY_TEST_CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from)
}

/// Runs headless Chromium with a fresh profile and nothing that reaches the network.
fn headless(profile: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is missing: `make browser` installs it (Debian package chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_demo_timeline_has_one_row_per_document_in_a_real_browser() {
    let dir = workspace_binary("demo")
        .parent()
        .expect("target/<profile>")
        .to_path_buf();
    let html = dir.join("demo-timeline.html");
    let png = dir.join("demo-timeline.png");
    let _ = std::fs::remove_file(&html);
    let _ = std::fs::remove_file(&png);

    let demo = Command::new(workspace_binary("demo"))
        .env("XRAY_DEMO_HTML", &html)
        .output()
        .expect("demo");
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "demo failed: {stdout}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let last = stdout.lines().last().expect("output");
    assert_eq!(
        last,
        format!("timeline: {}", html.display()),
        "the path comes last"
    );
    let in_xray: usize = stdout
        .lines()
        .find_map(|l| l.split("distinct documents in X-Ray ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .expect("the summary line");
    let traces = stdout.lines().filter(|l| l.starts_with("trace ")).count();

    let profile = tempdir("profile");
    let url = format!("file://{}", html.display());
    let dom = headless(&profile, &["--dump-dom".to_owned(), url.clone()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let rows = count_rows(&dom);
    assert_eq!(rows.len(), traces, "one timeline per trace: {rows:?}");
    let documents: usize = rows.values().map(|(_, docs)| docs).sum();
    assert_eq!(
        documents, in_xray,
        "one row per document X-Ray received: {rows:?}"
    );
    for (trace, (all, docs)) in &rows {
        assert!(all > docs, "{trace}: embedded subsegments have rows too");
    }
    // OpenTelemetry spans decoded from OTLP documents have rows of their own.
    let spans: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OpenTelemetry: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the OpenTelemetry line");
    assert_eq!(dom.matches("data-source=\"otel\"").count(), spans);
    let source = std::fs::read_to_string(&html).expect("html");
    assert_eq!(count_rows(&source), rows, "the browser kept every row");

    headless(
        &profile,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,1800".to_owned(),
            url,
        ],
    );
    let image = std::fs::read(&png).expect("screenshot");
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        image.len() > 20_000,
        "a picture, not a blank page: {} bytes",
        image.len()
    );
    let _ = std::fs::remove_dir_all(&profile);
    eprintln!("screenshot: {}", png.display());
}

/// A fresh directory under the system's temporary directory.
fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "xray-timeline-{}-{name}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
