//! The fallback that keeps the function alive when the extension's own loop has failed: the
//! idle `/event/next` loop (`LambdaApi::idle_until_shutdown`), driven by the emulator through
//! invocations and a shutdown.

#![allow(clippy::unwrap_used, reason = "a failed set-up is a failed test")]

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use xray_extension::lambda::api::LambdaApi;
use xray_extension_tests::emulator::{
    Emulator, ExtensionSpec, FunctionSpec, InvocationStatus, Invoke,
};
use xray_extension_tests::http as h;
use xray_extension_tests::trace::TraceHeader;

const WAIT: Duration = Duration::from_secs(10);

fn sample_function() -> FunctionSpec {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    FunctionSpec::command([dir.join("sample-function")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_loop_keeps_invocations_flowing_and_returns_at_shutdown() {
    let mut lambda = Emulator::builder()
        .extension(ExtensionSpec::attached("xray-extension"))
        .function(sample_function())
        .start()
        .await
        .unwrap();
    let observer = lambda.observer();
    let idle = tokio::spawn(async move {
        observer.wait_for_init_start(WAIT).await.unwrap();
        let api_addr = observer.runtime_api();
        let register = h::request(Method::POST, api_addr, "/2020-01-01/extension/register")
            .header("Lambda-Extension-Name", "xray-extension")
            .body(h::body(r#"{"events":["INVOKE","SHUTDOWN"]}"#))
            .unwrap();
        let registered = h::send(api_addr, register, Some(WAIT)).await.unwrap();
        assert_eq!(registered.status, StatusCode::OK);
        let id = registered
            .header("Lambda-Extension-Identifier")
            .unwrap()
            .to_owned();
        let api = LambdaApi::new(&api_addr.to_string()).unwrap();
        api.idle_until_shutdown(&id).await;
    });

    for _ in 0..3 {
        let inv = lambda
            .invoke(Invoke::new(json!({"subsegments": 0})).traced(TraceHeader::sampled()))
            .await
            .unwrap();
        assert_eq!(inv.status, InvocationStatus::Success);
        // The idle loop answers INVOKE with its next call at once: nothing is held.
        assert!(inv.extension_next("xray-extension").is_some());
        assert!(inv.post_runtime.unwrap_or_default() < Duration::from_millis(100));
    }
    let report = lambda.shutdown().await.unwrap();
    assert!(
        report
            .extension("xray-extension")
            .unwrap()
            .shutdown_delivered
    );
    // SHUTDOWN ends the idle loop.
    tokio::time::timeout(WAIT, idle).await.unwrap().unwrap();
}
