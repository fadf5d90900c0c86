//! Tenant isolation: the `TenantId` annotation from the records' `tenantId`, over the cold and
//! warm fixture with the field in each shape Lambda and AWS's runtime core write.

use serde_json::{Value, json};

use super::tests::{fixture, names, run_fixture};
use super::*;
use crate::lambda::telemetry;

/// Where a record type carries `tenantId` in a variant.
#[derive(Clone, Copy)]
struct Shape {
    start: Option<&'static str>,
    runtime_done: Option<&'static str>,
    report: Option<&'static str>,
}

/// The cold-then-warm fixture with `tenantId` set to the JSON `value` in the records `shape`
/// names (`"absent"` leaves the field out).
fn with_tenant(shape: Shape, value: &Value) -> Value {
    let mut f = fixture("on_demand_cold_then_warm");
    for step in f["steps"].as_array_mut().unwrap() {
        let Some(records) = step.get_mut("telemetry").and_then(Value::as_array_mut) else {
            continue;
        };
        for r in records {
            let wanted = match r["type"].as_str().unwrap() {
                "platform.start" => shape.start,
                "platform.runtimeDone" => shape.runtime_done,
                "platform.report" => shape.report,
                _ => None,
            };
            if wanted.is_some() {
                r["record"]["tenantId"] = value.clone();
            }
        }
    }
    f
}

const EVERYWHERE: Shape = Shape {
    start: Some("start"),
    runtime_done: Some("runtimeDone"),
    report: Some("report"),
};
/// As AWS documents it: start and report.
const DOCUMENTED: Shape = Shape {
    start: Some("start"),
    runtime_done: None,
    report: Some("report"),
};
/// As AWS's runtime core writes it for a function without tenant isolation.
const RUNTIME_DONE_ONLY: Shape = Shape {
    start: None,
    runtime_done: Some("runtimeDone"),
    report: None,
};

/// Every document of ours, and the `TenantId` annotation of each (`None` when absent).
fn tenant_annotations(steps: &[Vec<Value>]) -> Vec<(String, Option<Value>)> {
    steps
        .iter()
        .flatten()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["annotations"].get("TenantId").cloned(),
            )
        })
        .collect()
}

#[test]
fn a_tenant_named_by_the_records_annotates_every_document_of_ours() {
    for (what, shape) in [("everywhere", EVERYWHERE), ("documented", DOCUMENTED)] {
        let steps = run_fixture(&with_tenant(shape, &json!("blue")), Settings::default());
        let got = tenant_annotations(&steps);
        assert_eq!(
            got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["Cold Start", "Runtime", "Runtime", "Runtime", "Runtime"],
            "{what}"
        );
        assert!(
            got.iter().all(|(_, t)| t == &Some(json!("blue"))),
            "{what}: {got:?}"
        );
    }
}

#[test]
fn no_tenant_isolation_means_no_annotation_whatever_the_records_carry() {
    let cases = [
        ("absent", EVERYWHERE, None),
        ("empty everywhere", EVERYWHERE, Some(json!(""))),
        ("null everywhere", EVERYWHERE, Some(json!(null))),
        ("empty in runtimeDone", RUNTIME_DONE_ONLY, Some(json!(""))),
    ];
    for (what, shape, value) in cases {
        let f = match &value {
            Some(v) => with_tenant(shape, v),
            None => fixture("on_demand_cold_then_warm"),
        };
        let steps = run_fixture(&f, Settings::default());
        assert_eq!(names(&steps[2]), ["Cold Start", "Runtime"], "{what}");
        let got = tenant_annotations(&steps);
        assert_eq!(got.len(), 5, "{what}");
        assert!(got.iter().all(|(_, t)| t.is_none()), "{what}: {got:?}");
        // "" and null are the documented "no tenant", not deviations.
        let body = f["steps"][2]["telemetry"].to_string();
        assert_eq!(
            telemetry::decode(body.as_bytes(), super::tests::RECEIVED).fields_ignored,
            0,
            "{what}"
        );
    }
}

#[test]
fn a_tenant_id_x_ray_would_refuse_costs_the_annotation_not_the_documents() {
    let too_long = "t".repeat(annotations::MAX_VALUE_LEN + 1);
    for value in [
        json!("blue\nred"),
        json!(too_long),
        json!(42),
        json!({"id": "blue"}),
    ] {
        let steps = run_fixture(&with_tenant(EVERYWHERE, &value), Settings::default());
        let got = tenant_annotations(&steps);
        assert_eq!(got.len(), 5, "{value}");
        assert!(got.iter().all(|(_, t)| t.is_none()), "{value}: {got:?}");
        // Left out and counted, once per record that carried it.
        let f = with_tenant(EVERYWHERE, &value);
        let body = f["steps"][2]["telemetry"].to_string();
        let decoded = telemetry::decode(body.as_bytes(), super::tests::RECEIVED);
        assert_eq!(decoded.invalid, 0, "{value}");
        assert_eq!(decoded.fields_ignored, 2, "{value}: start and runtimeDone");
    }
}

#[test]
fn the_tenant_annotation_can_be_left_out_or_chosen_alone() {
    let f = with_tenant(EVERYWHERE, &json!("blue"));
    let (without, _) = annotations::BuiltinSet::parse("ColdStart,FunctionName");
    let steps = run_fixture(
        &f,
        Settings {
            builtins: without,
            static_annotations: Vec::new(),
        },
    );
    assert!(tenant_annotations(&steps).iter().all(|(_, t)| t.is_none()));
    let (only, _) = annotations::BuiltinSet::parse("TenantId");
    let steps = run_fixture(
        &f,
        Settings {
            builtins: only,
            static_annotations: Vec::new(),
        },
    );
    let runtime = &steps[2][1];
    assert_eq!(runtime["annotations"], json!({"TenantId": "blue"}));
}

#[test]
fn the_environments_tenant_stands_for_an_invocation_whose_records_lost_it() {
    // The second invocation's records name no tenant (a record lost, a field unreadable): the
    // environment serves one tenant only, so its Runtime still gets the first one's.
    let mut f = with_tenant(DOCUMENTED, &json!("blue"));
    for step in f["steps"].as_array_mut().unwrap().iter_mut().skip(4) {
        if let Some(records) = step.get_mut("telemetry").and_then(Value::as_array_mut) {
            for r in records {
                if r["record"]["requestId"] == "r-2" {
                    r["record"].as_object_mut().unwrap().remove("tenantId");
                }
            }
        }
    }
    let steps = run_fixture(&f, Settings::default());
    let second = steps[4]
        .iter()
        .find(|d| d["metadata"]["lambda"]["requestId"] == "r-2")
        .unwrap();
    assert_eq!(second["annotations"]["TenantId"], "blue");
}
