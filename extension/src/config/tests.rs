use super::*;
use crate::env::lookup_from;
use crate::export::policy::Strategy;
use crate::logging::LogFormat;

fn load(pairs: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
    Config::from_lookup(lookup_from(pairs))
}

#[test]
fn defaults_when_nothing_is_set() {
    let (config, warnings) = load(&[]);
    assert_eq!(config, Config::default());
    assert!(warnings.is_empty());
    assert_eq!(config.udp_address.to_string(), "127.0.0.1:2000");
}

#[test]
fn valid_values_are_used() {
    let (config, warnings) = load(&[
        (vars::UDP_ADDRESS, "127.0.0.1:2999"),
        (vars::TELEMETRY_PORT, "4300"),
        (vars::LOG_LEVEL, "DEBUG"),
        (vars::BUFFER_BYTES, "1048576"),
        (vars::FLUSH_TIMEOUT_MS, "250"),
        (vars::SHUTDOWN_MARGIN_MS, "300"),
        (vars::FLUSH_STRATEGY, "Background"),
        (vars::FLUSH_INTERVAL_MS, "2500"),
        (vars::MAX_AGE_MS, "10000"),
        (vars::SPAN_DESTINATION, " OTLP "),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.span_destination, SpanDestination::Otlp);
    assert_eq!(config.udp_address.port(), 2999);
    assert_eq!(config.telemetry_port, 4300);
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.buffer_bytes, 1_048_576);
    assert_eq!(config.flush_timeout, Duration::from_millis(250));
    assert_eq!(config.shutdown_margin, Duration::from_millis(300));
    assert_eq!(config.policy.strategy, Strategy::Background);
    assert_eq!(config.policy.interval, Duration::from_millis(2500));
    assert_eq!(config.policy.max_age, Duration::from_secs(10));
}

#[test]
fn each_invalid_value_warns_once_and_keeps_the_default() {
    let (config, warnings) = load(&[
        (vars::UDP_ADDRESS, "localhost"),
        (vars::TELEMETRY_PORT, "9001"),
        (vars::LOG_LEVEL, "loud"),
        (vars::BUFFER_BYTES, "12"),
        (vars::FLUSH_TIMEOUT_MS, "5s"),
        (vars::SHUTDOWN_MARGIN_MS, "999999"),
        (vars::FLUSH_STRATEGY, "sometimes"),
        (vars::FLUSH_INTERVAL_MS, "5"),
        (vars::SPAN_DESTINATION, "xray"),
    ]);
    assert_eq!(config, Config::default());
    let named: Vec<&str> = warnings.iter().map(|w| w.variable).collect();
    assert_eq!(
        named,
        [
            vars::UDP_ADDRESS,
            vars::TELEMETRY_PORT,
            vars::LOG_LEVEL,
            vars::BUFFER_BYTES,
            vars::FLUSH_TIMEOUT_MS,
            vars::SHUTDOWN_MARGIN_MS,
            vars::FLUSH_STRATEGY,
            vars::FLUSH_INTERVAL_MS,
            vars::SPAN_DESTINATION,
        ]
    );
    assert!(warnings[4].to_string().contains("10-30000 milliseconds"));
}

#[test]
fn each_warning_names_the_declared_default() {
    let cases: &[(&str, &str)] = &[
        (vars::ALLOW_NON_LOOPBACK, "false"),
        (vars::TELEMETRY_PORT, "4271"),
        (vars::LOG_LEVEL, "info"),
        (vars::LAMBDA_LOG_LEVEL, "info"),
        (vars::LAMBDA_LOG_FORMAT, "Text"),
        (vars::FLUSH_TIMEOUT_MS, "500"),
        (vars::SHUTDOWN_MARGIN_MS, "200"),
        (vars::FLUSH_STRATEGY, "adaptive"),
        (vars::FLUSH_INTERVAL_MS, "1000"),
        (vars::MAX_AGE_MS, "5000"),
        (vars::TLS_ROOTS, "amazon"),
        (vars::SPAN_DESTINATION, "segments"),
        (vars::ENRICH, "true"),
        (vars::METRICS_INTERVAL_MINUTES, "5"),
        (vars::UDP_ADDRESS, "127.0.0.1:2000"),
        (vars::OTLP_ADDRESS, "127.0.0.1:4318"),
    ];
    for (variable, default) in cases {
        let (config, warnings) = load(&[(variable, "?")]);
        assert_eq!(config, Config::default(), "{variable}");
        assert_eq!(warnings.len(), 1, "{variable}");
        assert_eq!(warnings[0].variable, *variable);
        assert_eq!(warnings[0].default, *default, "{variable}");
    }
}

#[test]
fn non_loopback_needs_explicit_permission() {
    let (config, warnings) = load(&[(vars::UDP_ADDRESS, "0.0.0.0:2000")]);
    assert_eq!(config.udp_address.to_string(), "127.0.0.1:2000");
    assert_eq!(warnings.len(), 1);

    let (config, warnings) = load(&[
        (vars::UDP_ADDRESS, "0.0.0.0:2000"),
        (vars::ALLOW_NON_LOOPBACK, "true"),
    ]);
    assert_eq!(config.udp_address.to_string(), "0.0.0.0:2000");
    assert!(warnings.is_empty());
}

#[test]
fn the_otlp_receiver_address_or_off() {
    let (config, _) = load(&[]);
    assert_eq!(
        config.otlp_address.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:4318")
    );
    for (value, want, warned) in [
        ("127.0.0.1:4399", Some("127.0.0.1:4399"), false),
        ("OFF", None, false),
        (" off ", None, false),
        ("0.0.0.0:4318", Some("127.0.0.1:4318"), true),
        ("localhost:4318", Some("127.0.0.1:4318"), true),
    ] {
        let (config, warnings) = load(&[(vars::OTLP_ADDRESS, value)]);
        let got = config.otlp_address.map(|a| a.to_string());
        assert_eq!(got.as_deref(), want, "{value}");
        assert_eq!(warnings.len(), usize::from(warned), "{value}");
    }
}

#[test]
fn enrichment_settings() {
    let (config, warnings) = load(&[(vars::ENRICH, "false")]);
    assert!(config.enrich.is_none());
    assert!(warnings.is_empty());

    let (config, warnings) = load(&[
        (vars::ENRICH_ANNOTATIONS, "ColdStart,Nope"),
        (vars::ANNOTATIONS, "team=payments,bad key=1"),
    ]);
    let settings = config.enrich.unwrap();
    assert!(settings.builtins.contains(annotations::Builtin::ColdStart));
    assert!(!settings.builtins.contains(annotations::Builtin::InitType));
    assert_eq!(settings.static_annotations.len(), 1);
    let named: Vec<(&str, &str)> = warnings
        .iter()
        .map(|w| (w.variable, w.value.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (vars::ENRICH_ANNOTATIONS, "Nope"),
            (vars::ANNOTATIONS, "bad key=1")
        ]
    );
    // The warning names every built-in one could have meant.
    for b in annotations::Builtin::ALL {
        assert!(warnings[0].accepted.contains(b.key()), "{}", b.key());
    }
}

#[test]
fn log_level_and_format_follow_lambda_unless_ours_is_set() {
    type Case<'a> = (&'a [(&'a str, &'a str)], LogLevel, LogFormat, usize);
    let cases: &[Case<'_>] = &[
        (&[], LogLevel::Info, LogFormat::Text, 0),
        (
            &[
                (vars::LAMBDA_LOG_FORMAT, "JSON"),
                (vars::LAMBDA_LOG_LEVEL, "DEBUG"),
            ],
            LogLevel::Debug,
            LogFormat::Json,
            0,
        ),
        (
            &[(vars::LAMBDA_LOG_LEVEL, "FATAL")],
            LogLevel::Error,
            LogFormat::Text,
            0,
        ),
        (
            &[(vars::LAMBDA_LOG_LEVEL, "DEBUG"), (vars::LOG_LEVEL, "warn")],
            LogLevel::Warn,
            LogFormat::Text,
            0,
        ),
        // Ours is invalid: one warning, then Lambda's level.
        (
            &[(vars::LAMBDA_LOG_LEVEL, "trace"), (vars::LOG_LEVEL, "loud")],
            LogLevel::Trace,
            LogFormat::Text,
            1,
        ),
        (
            &[
                (vars::LAMBDA_LOG_LEVEL, "verbose"),
                (vars::LAMBDA_LOG_FORMAT, "xml"),
            ],
            LogLevel::Info,
            LogFormat::Text,
            2,
        ),
    ];
    for (pairs, level, format, warned) in cases {
        let (config, warnings) = load(pairs);
        assert_eq!(
            (config.log_level, config.log_format, warnings.len()),
            (*level, *format, *warned),
            "{pairs:?}"
        );
    }
}

#[test]
fn metrics_lines_settings() {
    let (config, warnings) = load(&[
        (vars::METRICS_NAMESPACE, "team/orders"),
        (vars::METRICS_INTERVAL_MINUTES, "15"),
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let m = config.metrics.unwrap();
    assert_eq!(m.namespace, "team/orders");
    assert_eq!(m.interval, Duration::from_mins(15));

    let (config, warnings) = load(&[(vars::METRICS_NAMESPACE, "None")]);
    assert!(config.metrics.is_none(), "none turns the lines off");
    assert!(warnings.is_empty());

    let (config, warnings) = load(&[
        (vars::METRICS_NAMESPACE, "AWS/Lambda"),
        (vars::METRICS_INTERVAL_MINUTES, "0"),
    ]);
    assert_eq!(config.metrics, Some(emf::Settings::default()));
    let named: Vec<&str> = warnings.iter().map(|w| w.variable).collect();
    assert_eq!(
        named,
        [vars::METRICS_NAMESPACE, vars::METRICS_INTERVAL_MINUTES]
    );
}

#[test]
fn blank_values_count_as_unset() {
    let (config, warnings) = load(&[(vars::LOG_LEVEL, "  ")]);
    assert_eq!(config.log_level, DEFAULT_LOG_LEVEL);
    assert!(warnings.is_empty());
}

#[test]
fn the_default_buffer_follows_the_memory_size() {
    const MIB: usize = 1024 * 1024;
    assert_eq!(default_buffer_bytes(None), DEFAULT_BUFFER_BYTES);
    assert_eq!(default_buffer_bytes(Some(128)), 4 * MIB);
    assert_eq!(default_buffer_bytes(Some(256)), 8 * MIB);
    assert_eq!(default_buffer_bytes(Some(512)), 16 * MIB);
    assert_eq!(default_buffer_bytes(Some(10_240)), 16 * MIB);
    assert_eq!(default_buffer_bytes(Some(1)), BUFFER_BYTES_RANGE.0);
    let (config, _) = load(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")]);
    assert_eq!(config.buffer_bytes, 16 * MIB);
    let (config, warnings) = load(&[
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        (vars::BUFFER_BYTES, "12"),
    ]);
    assert_eq!(config.buffer_bytes, 8 * MIB);
    assert_eq!(warnings[0].default, (8 * MIB).to_string());
    let (config, _) = load(&[
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        (vars::BUFFER_BYTES, "1048576"),
    ]);
    assert_eq!(config.buffer_bytes, MIB);
}

/// The README's table of variables: (name, default, range / values) of each row.
fn readme_rows() -> Vec<(String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let section = readme.split("\n## Configuration\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let name = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
            Some((name.to_owned(), cells[1].to_owned(), cells[2].to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_table_has_one_row_per_declared_variable_with_its_default_and_range() {
    // Read by the layer's wrapper script, not by the extension.
    const WRAPPER: &[&str] = &["XRAY_EXTENSION_NEXT_WRAPPER"];
    let wrapper = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../layer/xray-extension-wrapper"
    ))
    .unwrap();
    let rows = readme_rows();
    let declared = table::declared();
    let mut in_readme: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut expected: Vec<&str> = declared.iter().map(|d| d.name).collect();
    expected.extend(WRAPPER);
    in_readme.sort_unstable();
    expected.sort_unstable();
    assert_eq!(in_readme, expected, "README rows against the declarations");
    for name in WRAPPER {
        assert!(wrapper.contains(name), "{name} is not read by the wrapper");
    }
    for d in &declared {
        let (_, default, range) = rows.iter().find(|r| r.0 == d.name).unwrap();
        if let Some(shown) = &d.default
            && default != "—"
        {
            assert!(
                default.contains(&format!("`{shown}`")),
                "{}: the README says the default is {default}, the declaration {shown}",
                d.name
            );
        }
        if let Some(table::Accepted::Millis(lo, hi) | table::Accepted::Minutes(lo, hi)) = d.accepted
        {
            assert!(
                range.contains(&format!("{lo}–{hi}")),
                "{}: the README says {range}, the declaration {lo}–{hi}",
                d.name
            );
        }
    }
}
