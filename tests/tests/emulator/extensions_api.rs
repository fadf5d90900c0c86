//! The Extensions API: registration's validation and SHUTDOWN at spindown.

use std::time::Duration;

use http::{Method, StatusCode};
use xray_extension_tests::emulator::{ExtensionSpec, InitializationType, Invoke, ShutdownReason};
use xray_extension_tests::http as h;

use crate::{EMPTY_NAME, WAIT, quiet_event, with_empty_extension};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_spindown_and_the_extension_exits_before_the_deadline() {
    let mut lambda = with_empty_extension().start().await.unwrap();
    let init = lambda.prewarm().await.unwrap();
    assert_eq!(
        init.initialization_type,
        InitializationType::ProvisionedConcurrency
    );
    let first = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
    assert!(!first.cold, "a provisioned environment is not a cold start");

    let report = lambda.shutdown().await.unwrap();
    assert_eq!(report.reason, ShutdownReason::Spindown);
    let runtime = report.runtime.as_ref().unwrap();
    assert!(runtime.exit.is_some());
    let ext = report.extension(EMPTY_NAME).unwrap();
    assert!(ext.shutdown_sent && ext.shutdown_delivered);
    assert_eq!(ext.exit_code(), Some(0));
    assert!(ext.exited_before_deadline && !ext.killed);
    assert!(ext.took.unwrap() < Duration::from_secs(2));
    let shutdown = lambda.extension_events(EMPTY_NAME).pop().unwrap();
    assert_eq!(shutdown.shutdown_reason(), Some("spindown"));
    assert_eq!(shutdown.event["deadlineMs"], report.deadline_ms);
    assert!(!lambda.is_initialized());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_validated() {
    let mut lambda = with_empty_extension()
        .extension(ExtensionSpec::attached("probe"))
        .start()
        .await
        .unwrap();
    let observer = lambda.observer();
    let api = lambda.runtime_api();
    let checks = tokio::spawn(async move {
        observer.wait_for_init_start(WAIT).await.unwrap();
        let register = |name: &str, body: &str, feature: bool| {
            let mut req = h::request(Method::POST, api, "/2020-01-01/extension/register")
                .header("Lambda-Extension-Name", name);
            if feature {
                req = req.header("Lambda-Extension-Accept-Feature", "accountId");
            }
            h::send(api, req.body(h::body(body.to_owned())).unwrap(), Some(WAIT))
        };
        // An internal extension (no such executable) cannot subscribe to SHUTDOWN.
        let internal = register("in-process", r#"{"events":["INVOKE","SHUTDOWN"]}"#, false)
            .await
            .unwrap();
        assert_eq!(internal.status, StatusCode::FORBIDDEN);
        assert_eq!(
            internal.json().unwrap()["errorType"],
            "Extension.InvalidEventType"
        );
        let empty = register("", r#"{"events":["INVOKE"]}"#, false)
            .await
            .unwrap();
        assert_eq!(
            empty.json().unwrap()["errorType"],
            "Extension.InvalidExtensionName"
        );
        let ok = register("probe", r#"{"events":["INVOKE","SHUTDOWN"]}"#, true)
            .await
            .unwrap();
        assert_eq!(ok.status, StatusCode::OK);
        let body = ok.json().unwrap();
        assert_eq!(body["functionName"], "xray-test-function");
        assert_eq!(body["functionVersion"], "$LATEST");
        assert_eq!(body["accountId"], "123456789012");
        assert!(body["handler"].is_string());
        let twice = register("probe", r#"{"events":["INVOKE"]}"#, false)
            .await
            .unwrap();
        assert_eq!(
            twice.json().unwrap()["errorType"],
            "Extension.InvalidExtensionState"
        );
        let id = ok.header("Lambda-Extension-Identifier").unwrap().to_owned();
        let unknown = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
            .header(
                "Lambda-Extension-Identifier",
                "00000000-0000-4000-8000-000000000000",
            )
            .body(h::body(""))
            .unwrap();
        assert_eq!(
            h::send(api, unknown, Some(WAIT)).await.unwrap().status,
            StatusCode::FORBIDDEN
        );
        loop {
            let next = h::request(Method::GET, api, "/2020-01-01/extension/event/next")
                .header("Lambda-Extension-Identifier", &id)
                .body(h::body(""))
                .unwrap();
            if h::send(api, next, None).await.unwrap().json().unwrap()["eventType"] == "SHUTDOWN" {
                return;
            }
        }
    });
    lambda.init_ahead().await.unwrap();
    // Registration closes with the init.
    let late = h::request(Method::POST, api, "/2020-01-01/extension/register")
        .header("Lambda-Extension-Name", "late")
        .body(h::body(r#"{"events":["INVOKE"]}"#))
        .unwrap();
    let late = h::send(api, late, Some(WAIT)).await.unwrap();
    assert_eq!(
        late.json().unwrap()["errorType"],
        "Extension.RegistrationClosed"
    );
    // A response for an unknown request id is refused.
    let stray = h::request(
        Method::POST,
        api,
        "/2018-06-01/runtime/invocation/nope/response",
    )
    .body(h::body("{}"))
    .unwrap();
    let stray = h::send(api, stray, Some(WAIT)).await.unwrap();
    assert_eq!(stray.status, StatusCode::BAD_REQUEST);
    assert_eq!(stray.json().unwrap()["errorType"], "InvalidRequestID");
    lambda.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, checks).await.unwrap().unwrap();
}
