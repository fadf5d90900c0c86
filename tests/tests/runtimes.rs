//! Conformance with real runtimes: the same scenario (cold, warm, error, shutdown) with a Python
//! function run by AWS's runtime interface client through the layer's wrapper script, a Node.js
//! function with aws-xray-sdk-core, and a Rust function built with `lambda_runtime`. Each must
//! deliver every subsegment its SDK sent and get our enrichment.

#![allow(clippy::expect_used, reason = "a failed set-up is a failed test")]

mod common;

use common::{
    EXTENSION, Harness, Options, functions_dir, in_trace, invoke_traced, named,
    python_sdk_function, sent_ids, workspace_binary,
};
use serde_json::json;
use xray_extension_tests::emulator::{FunctionSpec, InvocationStatus};

/// Cold, two warm, an error, then shutdown; checks the sink after each step.
async fn scenario(label: &str, options: Options) {
    let Harness {
        mut lambda, sink, ..
    } = Harness::start(Options {
        extension_env: vec![("XRAY_EXTENSION_FLUSH_STRATEGY".into(), "end".into())],
        ..options
    })
    .await;
    for i in 0..3 {
        let (trace, inv) = invoke_traced(&mut lambda, json!({"n": i})).await;
        assert_eq!(
            inv.status,
            InvocationStatus::Success,
            "{label} {i}: {:?}",
            inv.error
        );
        assert_eq!(inv.cold, i == 0, "{label} {i}");
        let ids = sent_ids(&inv);
        assert!(!ids.is_empty(), "{label} {i}: {:?}", inv.response_json());
        let docs = sink.documents();
        for id in &ids {
            let doc = docs.iter().find(|d| &d.id == id);
            let doc = doc.unwrap_or_else(|| panic!("{label} {i}: subsegment {id} missing"));
            assert_eq!(doc.trace_id, trace.root, "{label} {i}");
        }
        let runtime = named(&docs, &trace.root, "Runtime");
        assert_eq!(runtime.len(), 1, "{label} {i}");
        assert_eq!(runtime[0].value["annotations"]["ColdStart"], json!(i == 0));
        assert_eq!(
            named(&docs, &trace.root, "Cold Start").len(),
            usize::from(i == 0)
        );
        // The SDK's subsegments hang under the same parent as ours.
        let parent = runtime[0].parent_id().map(str::to_owned);
        let sdk_top = in_trace(&docs, &trace.root)
            .into_iter()
            .find(|d| ids.contains(&d.id) && d.parent_id() == parent.as_deref());
        assert!(
            sdk_top.is_some(),
            "{label} {i}: no SDK subsegment under {parent:?}"
        );
    }
    let (trace, inv) = invoke_traced(&mut lambda, json!({"error": true})).await;
    assert_eq!(inv.status, InvocationStatus::Error, "{label}");
    let docs = sink.documents();
    let runtime = named(&docs, &trace.root, "Runtime");
    assert_eq!(runtime.len(), 1, "{label}");
    assert_eq!(runtime[0].value["fault"], true, "{label}");
    assert!(
        in_trace(&docs, &trace.root).len() >= 3,
        "{label}: SDK subsegments of the failed invocation"
    );

    let report = lambda.shutdown().await.expect("shutdown");
    let ext = report.extension(EXTENSION).expect("extension exit");
    assert_eq!(ext.exit_code(), Some(0), "{label}");
    assert!(ext.exited_before_deadline, "{label}");
}

/// The scenario with `function` started through the layer's wrapper script.
async fn through_the_wrapper(label: &str, function: FunctionSpec) {
    let options = Options {
        function: Some(function),
        wrapper: true,
        ..Options::default()
    };
    scenario(label, options).await;
}

#[tokio::test]
async fn python_awslambdaric_through_the_wrapper_script() {
    through_the_wrapper("python", python_sdk_function()).await;
}

/// The function's `XRAY_EXTENSION_UDP_ADDRESS` written with spaces: the extension reads it
/// trimmed, and the wrapper takes the address the extension wrote, so both agree.
#[tokio::test]
async fn python_through_the_wrapper_agrees_with_the_extension_on_an_untidy_address() {
    scenario(
        "python, untidy address",
        Options {
            function: Some(python_sdk_function()),
            wrapper: true,
            wrapper_address: Some("  127.0.0.1:{port} "),
            ..Options::default()
        },
    )
    .await;
}

#[tokio::test]
async fn node_with_aws_xray_sdk_core() {
    let dir = functions_dir("node");
    assert!(
        dir.join("node_modules/aws-xray-sdk-core").exists(),
        "run `make node-deps` (make test does)"
    );
    let function =
        FunctionSpec::command(["node".into(), dir.join("bootstrap.js").into_os_string()])
            .handler("index.handler")
            .env("AWS_XRAY_CONTEXT_MISSING", "LOG_ERROR");
    through_the_wrapper("node", function).await;
}

#[tokio::test]
async fn rust_with_lambda_runtime() {
    let function = FunctionSpec::command([workspace_binary("sample-function")]);
    scenario(
        "rust",
        Options {
            function: Some(function),
            ..Options::default()
        },
    )
    .await;
}
