//! Lambda Managed Instances run the runtime and the extensions as user 993, group 990 (AWS's
//! runtime core does): the extension works unprivileged, binding its ports, writing the address
//! file for the wrapper and sending what the function's SDK sent (`EmulatorBuilder::run_as`).

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use common::{
    EXTENSION, Harness, Options, WAIT, counters, extension_log, invoke_traced, named, sent_ids,
};
use serde_json::json;
use xray_extension_tests::emulator::{
    InvocationStatus, Invoke, MANAGED_INSTANCES_GID, MANAGED_INSTANCES_UID,
};

/// `Uid:` and `Gid:` (real, effective, saved, filesystem) of process `pid`.
fn ids_of(pid: &str) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .expect("the line")
    };
    (line("Uid:"), line("Gid:"))
}

#[tokio::test]
async fn on_managed_instances_the_extension_works_as_user_993() {
    let (root, _) = ids_of("self");
    let options = Options {
        managed_instances: true,
        run_as: Some((MANAGED_INSTANCES_UID, MANAGED_INSTANCES_GID)),
        ..Options::strategy("end")
    };
    let mut harness = Harness::start(options).await;
    if !root.starts_with("0 ") {
        // Only root can start processes as another user: the emulator says so, it does not
        // run them as ourselves instead.
        let refused = harness
            .lambda
            .invoke(Invoke::new(json!({"subsegments": 1})))
            .await;
        assert!(refused.is_err(), "started as {root} without privilege");
        return;
    }
    let mut ids = Vec::new();
    let mut roots = Vec::new();
    for _ in 0..3 {
        let (trace, inv) = invoke_traced(&mut harness.lambda, json!({"subsegments": 2})).await;
        assert_eq!(inv.status, InvocationStatus::Success, "{:?}", inv.error);
        ids.extend(sent_ids(&inv));
        roots.push(trace.root);
    }
    // The extension runs as 993:990, as AWS's runtime core starts it there.
    let log = extension_log(&harness.lambda);
    let pid = log
        .iter()
        .find_map(|l| {
            l.contains("ready")
                .then(|| l.split_whitespace().find_map(|kv| kv.strip_prefix("pid=")))
                .flatten()
        })
        .expect("the ready line names the pid");
    let want = |id: u32| format!("{id} {id} {id} {id}");
    assert_eq!(
        ids_of(pid),
        (want(MANAGED_INSTANCES_UID), want(MANAGED_INSTANCES_GID))
    );
    let wanted = ids.clone();
    harness
        .sink
        .wait_for("the function's subsegments", WAIT, move |r| {
            wanted
                .iter()
                .all(|id| r.documents().iter().any(|d| &d.id == id))
        })
        .await
        .expect("sent in the background");
    let report = harness.lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    let docs = harness.sink.documents();
    for root in &roots {
        assert_eq!(named(&docs, root, "Runtime").len(), 1, "{root}");
    }
    let c = counters(&harness.lambda).expect("counters");
    assert_eq!(c["received"], ids.len() as u64);
    assert_eq!(c["dropped_at_shutdown"], 0);
    // Nothing it needed was out of reach for an unprivileged user.
    assert!(
        !log.iter()
            .any(|l| l.contains("ERROR") || l.contains("WARN")),
        "{log:#?}"
    );
}
