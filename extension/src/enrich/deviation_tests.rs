//! The enrichment over every deviation of a Telemetry API delivery: whatever a field holds
//! (or lacks), the decoded records still release the invocation, and every document the
//! enricher builds from them is one X-Ray takes.

use crate::ingest::protocol::parse_document;
use crate::lambda::events::ShutdownReason;
use crate::lambda::telemetry::{EpochSeconds, Record, decode};
use crate::trace::IdSource;

use super::{Enricher, Environment, Settings};

/// When the test bodies "arrived": 2022-10-12T00:00:16Z.
const RECEIVED: EpochSeconds = EpochSeconds(1_665_532_816.0);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/telemetry/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every record type, as documented (the cold invoke plus the SnapStart restore records) and as
/// AWS's runtime core writes them.
fn every_record_type() -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> =
        serde_json::from_slice(&fixture("cold_invoke.json")).unwrap();
    all.extend(
        serde_json::from_slice::<Vec<serde_json::Value>>(&fixture("runtime_core.json")).unwrap(),
    );
    all.extend(
        serde_json::from_str::<Vec<serde_json::Value>>(
            r#"[{"time":"2022-10-12T00:00:14.100Z","type":"platform.restoreStart","record":{"runtimeVersion":"java:21.v20","runtimeVersionArn":"arn:x","functionName":"f","functionVersion":"3","instanceId":"i-1","instanceMaxMemory":536870912}},
                {"time":"2022-10-12T00:00:14.200Z","type":"platform.restoreRuntimeDone","record":{"status":"success"}},
                {"time":"2022-10-12T00:00:14.210Z","type":"platform.restoreReport","record":{"status":"success","metrics":{"durationMs":15.19},"spans":[{"name":"restore","start":"2022-10-12T00:00:14.100Z","durationMs":100.0}]}}]"#,
        )
        .unwrap(),
    );
    all
}

/// JSON pointers to every value inside `v` (objects' fields and arrays' elements).
fn pointers(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &serde_json::Value)> = match v {
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        let p = format!("{at}/{key}");
        out.push(p.clone());
        pointers(child, &p, out);
    }
}

/// Removes the value at `pointer`, or replaces it.
fn mutate(v: &mut serde_json::Value, pointer: &str, with: Option<&serde_json::Value>) {
    if let Some(new) = with {
        *v.pointer_mut(pointer).unwrap() = new.clone();
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap() {
        serde_json::Value::Object(m) => {
            m.remove(key);
        }
        serde_json::Value::Array(a) => {
            a.remove(key.parse().unwrap());
        }
        _ => unreachable!(),
    }
}

/// What identifies the invocation that a runtimeDone releases: without it nothing can.
fn is_identity(element: &serde_json::Value, pointer: &str) -> bool {
    element["type"] == "platform.runtimeDone"
        && ["/type", "/record", "/record/requestId"].contains(&pointer)
}

/// Decodes `body` and runs it through the enrichment: the runtimeDone of `REQUEST` must be
/// there (it releases the invocation), and every document produced must be one X-Ray takes.
fn assert_releases(body: &[serde_json::Value], what: &str) {
    const REQUEST: &str = "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa";
    let text = serde_json::Value::Array(body.to_vec()).to_string();
    let d = decode(text.as_bytes(), RECEIVED);
    let released = d
        .events
        .iter()
        .filter(|e| matches!(&e.record, Record::RuntimeDone(r) if r.request_id == REQUEST))
        .count();
    assert_eq!(released, 1, "{what}: no release in {d:?}");
    let mut enricher = Enricher::with_ids(
        Settings::default(),
        Environment::default(),
        IdSource::sequence(0),
    );
    let mut attempts = crate::attempt::Attempts::new();
    let mut docs: Vec<_> = d
        .events
        .iter()
        .flat_map(|e| super::tests::record(&mut enricher, &mut attempts, e))
        .collect();
    docs.extend(enricher.on_shutdown(&ShutdownReason::Spindown, RECEIVED.plus_ms(1000.0)));
    for doc in docs {
        parse_document(doc.body.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: enrichment produced {e}: {:?}", doc.body));
    }
}

#[test]
fn no_deviation_of_any_field_of_any_record_costs_the_release() {
    let base = every_record_type();
    let replacements = [
        serde_json::Value::Null,
        serde_json::json!(2.0),
        serde_json::json!(-1),
        serde_json::json!(true),
        serde_json::json!("unexpected"),
        serde_json::json!([]),
        serde_json::json!({"x": 1}),
    ];
    let mut cases = 0;
    for (i, element) in base.iter().enumerate() {
        let mut paths = Vec::new();
        pointers(element, "", &mut paths);
        for pointer in paths.iter().filter(|p| !is_identity(element, p)) {
            for with in std::iter::once(None).chain(replacements.iter().map(Some)) {
                let mut body = base.clone();
                mutate(&mut body[i], pointer, with);
                assert_releases(&body, &format!("element {i} {pointer} -> {with:?}"));
                cases += 1;
            }
        }
        // Extra fields everywhere in the element.
        let mut body = base.clone();
        for pointer in std::iter::once(String::new()).chain(paths) {
            if let Some(serde_json::Value::Object(m)) = body[i].pointer_mut(&pointer) {
                m.insert(
                    "someNewField".into(),
                    serde_json::json!({"nested": [1, null]}),
                );
            }
        }
        assert_releases(&body, &format!("element {i} with extra fields"));
        // Another type in its place, and an unknown element next to it.
        if element["type"] != "platform.runtimeDone" {
            let mut body = base.clone();
            body[i]["type"] = serde_json::json!("platform.someFutureEvent");
            assert_releases(&body, &format!("element {i} of an unknown type"));
        }
        let mut body = base.clone();
        body.insert(i, serde_json::json!({"time": "2022-10-12T00:00:15.000Z", "type": "platform.future", "record": 1}));
        assert_releases(&body, &format!("an unknown element before {i}"));
        cases += 3;
    }
    // Unknown and unusual statuses on every record that has one.
    for status in ["throttled", "", "SUCCESS", "timeout"] {
        let mut body = base.clone();
        for element in &mut body {
            if element["record"].get("status").is_some() {
                element["record"]["status"] = serde_json::json!(status);
            }
        }
        assert_releases(&body, &format!("status {status:?}"));
        cases += 1;
    }
    assert!(cases > 500, "only {cases} cases");
}
