//! Tenant isolation end to end: a tenant's invocations carry `TenantId` on our `Runtime` and on
//! its environment's `Cold Start`, our JSON log lines about them carry `tenantId`, the runtime
//! (`lambda_runtime`, `awslambdaric`) gets `Lambda-Runtime-Aws-Tenant-Id`; a function without
//! tenant isolation, whose `platform.runtimeDone` says `"tenantId": ""`, gets none of it.

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use std::time::Duration;

use common::{
    EXTENSION, Harness, Options, extension_log, invoke_traced, named, python_sdk_function,
};
use serde_json::{Value, json};
use xray_extension_tests::emulator::{EmulatorError, Invoke};
use xray_extension_tests::trace::TraceHeader;

fn json_logs() -> Vec<(String, String)> {
    vec![
        ("AWS_LAMBDA_LOG_FORMAT".to_owned(), "JSON".to_owned()),
        ("XRAY_EXTENSION_FLUSH_STRATEGY".to_owned(), "end".to_owned()),
    ]
}

/// `key` summed over the counters lines of every environment (`None` without one).
fn counter(log: &[String], key: &str) -> Option<u64> {
    let lines = lines_with(log, "counters");
    (!lines.is_empty()).then(|| lines.iter().filter_map(|l| l[key].as_u64()).sum())
}

/// Our JSON log lines whose message is `message`.
fn lines_with(log: &[String], message: &str) -> Vec<Value> {
    log.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

#[tokio::test]
async fn a_tenants_invocations_carry_its_id_in_our_subsegments_and_log_lines() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        tenant_isolation: true,
        extension_env: json_logs(),
        ..Options::default()
    })
    .await;
    // An invoke of a tenant-isolated function must name its tenant.
    assert!(matches!(
        lambda.invoke(Invoke::new(json!({}))).await,
        Err(EmulatorError::TenantRequired)
    ));
    let mut roots = Vec::new();
    for (i, tenant) in ["blue", "blue", "green"].into_iter().enumerate() {
        let trace = TraceHeader::sampled();
        let inv = lambda
            .invoke(
                Invoke::new(json!({"subsegments": 1}))
                    .traced(trace.clone())
                    .tenant(tenant),
            )
            .await
            .expect("invoke");
        // lambda_runtime read Lambda-Runtime-Aws-Tenant-Id.
        assert_eq!(inv.response_json().unwrap()["tenant_id"], tenant, "{i}");
        // Another tenant never shares the environment: a fresh one, a cold start.
        assert_eq!(inv.cold, i != 1, "{i}");
        roots.push((trace.root, tenant, inv.request_id.clone()));
    }
    lambda.shutdown().await.expect("shutdown");
    let docs = sink.documents();
    for (i, (root, tenant, _)) in roots.iter().enumerate() {
        let runtime = named(&docs, root, "Runtime");
        assert!(!runtime.is_empty(), "{i}");
        for r in runtime {
            assert_eq!(r.value["annotations"]["TenantId"], *tenant, "{i}");
        }
        let cold = named(&docs, root, "Cold Start");
        assert_eq!(cold.len(), usize::from(i != 1), "{i}");
        for c in cold {
            assert_eq!(c.value["annotations"]["TenantId"], *tenant, "{i}");
        }
    }
    // Our log lines about each invocation carry its tenant, as Lambda's JSON lines do.
    let log = extension_log(&lambda);
    // Both environments' counters: nothing left out, nothing unreadable.
    assert_eq!(counter(&log, "telemetry_fields_ignored"), Some(0));
    assert_eq!(counter(&log, "telemetry_invalid"), Some(0));
    let done = lines_with(&log, "platform.runtimeDone");
    for (root, tenant, request_id) in &roots {
        let line = done
            .iter()
            .find(|l| l["requestId"] == request_id.as_str())
            .unwrap_or_else(|| panic!("no runtimeDone line for {root}: {log:#?}"));
        assert_eq!(line["tenantId"], *tenant, "{line}");
    }
    // Once the environment's tenant is known, its INVOKE lines carry it too.
    let second_invoke = lines_with(&log, "INVOKE")
        .into_iter()
        .find(|l| l["requestId"] == roots[1].2.as_str())
        .expect("the second INVOKE line");
    assert_eq!(second_invoke["tenantId"], "blue");
}

#[tokio::test]
async fn without_tenant_isolation_no_tenant_id_anywhere() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        extension_env: json_logs(),
        function_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    assert!(matches!(
        lambda.invoke(Invoke::new(json!({})).tenant("blue")).await,
        Err(EmulatorError::TenantNotAccepted { .. })
    ));
    let mut roots = Vec::new();
    for _ in 0..2 {
        let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
        assert_eq!(inv.response_json().unwrap()["tenant_id"], Value::Null);
        roots.push(trace.root);
    }
    // A timeout: AWS's runtime core adds platform.fault (Go's field names), which costs nothing.
    let (_, hung) = invoke_traced(&mut lambda, json!({"subsegments": 0, "hang": true})).await;
    assert!(hung.timed_out);
    lambda.shutdown().await.expect("shutdown");
    // The records say "tenantId": "" (runtimeDone), as AWS's runtime core writes them.
    let dones: Vec<_> = lambda
        .telemetry_log()
        .into_iter()
        .filter(|e| e.event_type == "platform.runtimeDone")
        .collect();
    assert_eq!(dones.len(), 3);
    assert!(dones.iter().all(|e| e.record["tenantId"] == ""));
    let docs = sink.documents();
    for root in &roots {
        for name in ["Runtime", "Cold Start"] {
            for d in named(&docs, root, name) {
                assert!(d.value["annotations"].get("TenantId").is_none(), "{name}");
            }
        }
        assert!(!named(&docs, root, "Runtime").is_empty());
    }
    let log = extension_log(&lambda);
    assert_eq!(
        counter(&log, "telemetry_fields_ignored"),
        Some(0),
        "\"\" and platform.fault are no deviation"
    );
    assert_eq!(counter(&log, "telemetry_invalid"), Some(0));
    assert!(
        log.iter().all(|l| !l.contains("tenantId")),
        "{:#?}",
        log.iter()
            .filter(|l| l.contains("tenantId"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn awslambdaric_gets_the_tenant_and_its_invocation_is_annotated() {
    let function = python_sdk_function();
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        function: Some(function),
        wrapper: true,
        tenant_isolation: true,
        extension_env: json_logs(),
        ..Options::default()
    })
    .await;
    let trace = TraceHeader::sampled();
    let inv = lambda
        .invoke(Invoke::new(json!({})).traced(trace.clone()).tenant("blue"))
        .await
        .expect("invoke");
    assert_eq!(
        inv.response_json().expect("answer")["tenant_id"],
        "blue",
        "{:?}",
        inv.error
    );
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    let docs = sink.documents();
    let runtime = named(&docs, &trace.root, "Runtime");
    assert!(!runtime.is_empty());
    assert!(
        runtime
            .iter()
            .all(|r| r.value["annotations"]["TenantId"] == "blue")
    );
}
