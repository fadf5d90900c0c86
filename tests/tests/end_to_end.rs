//! End to end: the real extension binary and a real `lambda_runtime` function in the emulator,
//! exporting to the embedded X-Ray sink.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    EXTENSION, Harness, Options, WAIT, counters, f, in_trace, invoke_traced, named, sent_ids,
};
use serde_json::json;
use xray_extension_tests::emulator::{InvocationStatus, Invoke};
use xray_extension_tests::trace::TraceHeader;

#[tokio::test]
async fn cold_and_warm_invocations_arrive_before_each_invocation_ends() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("end")).await;

    let mut traces = Vec::new();
    for i in 0..4 {
        let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 3})).await;
        assert_eq!(inv.status, InvocationStatus::Success);
        assert_eq!(inv.cold, i == 0, "invocation {i}");
        let ids = sent_ids(&inv);
        assert_eq!(ids.len(), 3);

        // Flushed before our /event/next: in X-Ray by the time the invocation has ended.
        let docs = sink.documents();
        for id in &ids {
            let doc = docs
                .iter()
                .find(|d| &d.id == id)
                .unwrap_or_else(|| panic!("invocation {i}: subsegment {id} not in the sink"));
            assert_eq!(doc.trace_id, trace.root);
        }
        let runtime = named(&docs, &trace.root, "Runtime");
        assert_eq!(runtime.len(), 1, "invocation {i}: one Runtime subsegment");
        let runtime = &runtime[0].value;
        assert_eq!(runtime["parent_id"], json!(trace.parent.clone().unwrap()));
        assert_eq!(runtime["annotations"]["ColdStart"], json!(i == 0));
        assert_eq!(runtime["annotations"]["FunctionName"], "orders");
        let children: Vec<&str> = runtime["subsegments"]
            .as_array()
            .expect("Runtime children")
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(children.contains(&"Response Latency"), "{children:?}");
        let cold = named(&docs, &trace.root, "Cold Start");
        assert_eq!(cold.len(), usize::from(i == 0), "invocation {i}");
        if i == 0 {
            let c = &cold[0].value;
            assert!(f(c, "end_time") > f(c, "start_time"));
            let names: Vec<&str> = c["subsegments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["Extension Init", "Runtime Init"]);
        }
        let post = inv.post_runtime.expect("post-runtime duration");
        let bound = common::flush_timeout();
        assert!(
            post < bound,
            "post-runtime {post:?}, flush timeout {bound:?}"
        );
        traces.push(trace);
    }

    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline);

    // The last invocation's platform.report only arrives at shutdown: its Runtime is re-sent
    // (same id) with the billing figures before the extension exits.
    let last = traces.last().unwrap();
    let docs = sink.documents();
    let runtime = named(&docs, &last.root, "Runtime");
    assert_eq!(runtime.len(), 1);
    assert!(
        runtime[0].value["metadata"]["lambda"]["billedDurationMs"].is_u64(),
        "{}",
        runtime[0].raw
    );
    // Every earlier invocation's Runtime also carries its report (re-sent during the next one).
    for t in &traces {
        let r = named(&docs, &t.root, "Runtime");
        assert!(r[0].value["metadata"]["lambda"]["maxMemoryUsedMB"].is_u64());
    }
    assert!(sink.put_calls().iter().all(|c| c.documents.len() <= 50));
    let c = counters(&lambda).expect("counters logged at shutdown");
    assert_eq!(c["received"], 12);
    assert_eq!(c["rejected"], 0);
    assert_eq!(c["dropped_at_shutdown"], 0);
}

#[tokio::test]
async fn a_large_invocation_is_sent_in_calls_of_at_most_fifty() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::default()).await;
    let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 173})).await;
    let ids: HashSet<String> = sent_ids(&inv).into_iter().collect();
    assert_eq!(ids.len(), 173);
    lambda.shutdown().await.expect("shutdown");
    let docs = sink.documents();
    let got: HashSet<String> = in_trace(&docs, &trace.root)
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert!(
        ids.is_subset(&got),
        "missing {:?}",
        ids.difference(&got).count()
    );
    let calls = sink.put_calls();
    assert!(calls.len() >= 4);
    assert!(calls.iter().all(|c| c.documents.len() <= 50));
}

#[tokio::test]
async fn unsampled_and_untraced_invocations_send_nothing() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::default()).await;
    let trace = TraceHeader::not_sampled();
    let inv = lambda
        .invoke(Invoke::new(json!({"subsegments": 2})).traced(trace.clone()))
        .await
        .expect("invoke");
    assert!(sent_ids(&inv).is_empty());
    lambda
        .invoke(Invoke::new(json!({"subsegments": 2})))
        .await
        .expect("invoke");
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    assert!(sink.documents().is_empty(), "{:?}", sink.documents());
}

#[tokio::test]
async fn an_error_is_a_fault_naming_the_error_type() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::default()).await;
    let (trace, inv) = invoke_traced(&mut lambda, json!({"error": true, "subsegments": 1})).await;
    assert_eq!(inv.status, InvocationStatus::Error);
    assert!(inv.error.is_some());
    // The cause names the error type the platform reported in platform.runtimeDone.
    let error_type = lambda
        .telemetry_log()
        .into_iter()
        .find(|e| {
            e.event_type == "platform.runtimeDone" && e.record["requestId"] == json!(inv.request_id)
        })
        .map(|e| e.record["errorType"].clone())
        .expect("runtimeDone");
    assert!(error_type.is_string());
    let docs = sink.documents();
    let runtime = named(&docs, &trace.root, "Runtime");
    assert_eq!(runtime.len(), 1);
    let r = &runtime[0].value;
    assert_eq!(r["fault"], true);
    assert_eq!(r["cause"]["exceptions"][0]["type"], error_type);
    assert_eq!(r["metadata"]["lambda"]["errorType"], error_type);
    lambda.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_timeout_reaches_x_ray_although_the_runtime_was_killed() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        function_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let (trace, inv) = invoke_traced(&mut lambda, json!({"hang": true, "subsegments": 0})).await;
    assert!(inv.timed_out);
    let reset = inv
        .reset
        .as_ref()
        .expect("the timeout resets the environment");
    let ext = reset.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0), "{ext:?}");
    assert!(ext.exited_before_deadline);

    let docs = sink.documents();
    let runtime = named(&docs, &trace.root, "Runtime");
    assert_eq!(runtime.len(), 1, "{docs:?}");
    let r = &runtime[0].value;
    assert_eq!(r["fault"], true);
    let message = r["cause"]["exceptions"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Task timed out after 1."), "{message}");

    // The next invoke is a fresh cold start.
    let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
    assert!(inv.cold);
    let docs = sink.documents();
    assert_eq!(named(&docs, &trace.root, "Cold Start").len(), 1);
    lambda.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn without_the_telemetry_api_documents_still_arrive() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        telemetry: false,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
        ids.extend(sent_ids(&inv));
    }
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    let docs = sink
        .wait_for_documents(ids.len(), WAIT)
        .await
        .expect("documents");
    let got: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert!(ids.iter().all(|id| got.contains(id.as_str())));
    // No enrichment without telemetry.
    assert!(docs.iter().all(|d| d.name() != "Runtime"));
}

#[tokio::test]
async fn bad_datagrams_are_counted_and_never_sent() {
    let Harness {
        mut lambda,
        sink,
        udp_port,
    } = Harness::start(Options::default()).await;
    let (trace, first) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let bad: [&[u8]; 6] = [
        b"no newline",
        b"{\"format\":\"json\",\"version\":\"1\"}\n{}",
        b"{\"format\":\"json\",\"version\":1}\n[1,2]",
        b"{\"format\":\"json\",\"version\":1}\n{\"id\":\"zz\"}",
        b"{\"format\":\"json\",\"version\":1}\n\xff\xfe",
        b"",
    ];
    for b in bad {
        socket.send_to(b, ("127.0.0.1", udp_port)).unwrap();
    }
    let second = lambda
        .invoke(Invoke::new(json!({"subsegments": 2})).traced(trace.clone()))
        .await
        .expect("invoke");
    lambda.shutdown().await.expect("shutdown");
    let docs = sink.documents();
    let ids: Vec<String> = sent_ids(&first)
        .into_iter()
        .chain(sent_ids(&second))
        .collect();
    for id in &ids {
        assert!(docs.iter().any(|d| &d.id == id), "{id} missing");
    }
    let c = counters(&lambda).expect("counters");
    assert_eq!(c["rejected"], 6, "{c:?}");
    assert_eq!(c["received"], 3);
    // Only valid documents went out: the sink rejected none.
    assert!(
        sink.put_calls()
            .iter()
            .flat_map(|c| c.documents.iter())
            .all(|d| d.rejection.is_none())
    );
}

/// SnapStart and Lambda Managed Instances give no credentials in the environment, only the
/// container credentials endpoint: the extension signs its calls with what that serves.
#[tokio::test]
async fn credentials_come_from_the_container_endpoint_when_the_environment_has_none() {
    use std::sync::atomic::Ordering;
    let credentials = common::ContainerCredentials::start().await;
    let mut options = Options::strategy("end");
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", String::new()),
        ("AWS_SECRET_ACCESS_KEY", String::new()),
        ("AWS_SESSION_TOKEN", String::new()),
    ] {
        options.extension_env.push((k.to_owned(), v));
    }
    options.extension_env.extend(credentials.env());
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(options).await;
    let (_, inv) = invoke_traced(&mut lambda, json!({"subsegments": 2})).await;
    let ids = sent_ids(&inv);
    assert_eq!(ids.len(), 2);
    lambda.shutdown().await.expect("shutdown");

    let docs = sink.documents();
    assert!(ids.iter().all(|id| docs.iter().any(|d| &d.id == id)));
    let calls = sink.put_calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(
            call.access_key_id.as_deref(),
            Some(common::ContainerCredentials::KEY_ID),
            "{call:?}"
        );
    }
    assert!(credentials.served.load(Ordering::SeqCst) >= 1);
    assert_eq!(credentials.refused.load(Ordering::SeqCst), 0);
}

/// Background flushing answers INVOKE at once, so SHUTDOWN can come before the last
/// invocations' runtimeDone is delivered: those finished invocations must not be reported as
/// killed by the shutdown.
#[tokio::test]
async fn background_invocations_finished_before_shutdown_carry_no_fault() {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options::strategy("background")).await;
    let mut traces = Vec::new();
    for _ in 0..4 {
        let (trace, inv) = invoke_traced(&mut lambda, json!({"subsegments": 1})).await;
        assert_eq!(inv.status, InvocationStatus::Success);
        traces.push(trace);
    }
    let report = lambda.shutdown().await.expect("shutdown");
    assert_eq!(report.extension(EXTENSION).unwrap().exit_code(), Some(0));
    let docs = sink.documents();
    for (i, t) in traces.iter().enumerate() {
        let runtime = named(&docs, &t.root, "Runtime");
        assert_eq!(runtime.len(), 1, "invocation {i}");
        let r = &runtime[0].value;
        assert!(
            r.get("fault").is_none(),
            "invocation {i}: {}",
            runtime[0].raw
        );
        assert!(
            r["subsegments"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "Response Latency")),
            "invocation {i}: {}",
            runtime[0].raw
        );
    }
}
