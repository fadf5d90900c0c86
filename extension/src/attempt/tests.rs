//! Which attempt each arrival belongs to, in one table: each case is a script of arrivals (time
//! in seconds from an origin, kind, request id, trace root) and the attempt expected (numbered
//! in order of creation), then the captured event sequences of `fixtures/enrich`.

use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::lambda::telemetry;

/// 2026-11-27T00:00:00Z: every scripted time is an offset from it.
const T0: f64 = 1_795_651_200.0;
const A: Option<&str> = Some("1-6927a800-000000000000000000000000");
const B: Option<&str> = Some("1-6927a800-111111111111111111111111");

use Kind::{Invoke as I, Report as R, RuntimeDone as D, Start as S};

/// What placing one arrival must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// This attempt (numbered from 1 in order of creation).
    At(u64),
    /// This attempt, as a copy of a record it already had.
    Again(u64),
    /// An INVOKE joining the attempt its runtimeDone already opened.
    DoneFirst(u64),
}
use Want::{Again, At, DoneFirst};

type Step = (f64, Kind, &'static str, Option<&'static str>, Want);

/// (case, steps)
const CASES: &[(&str, &[Step])] = &[
    (
        "on-demand, one at a time: each report arrives during the next invocation",
        &[
            (0.0, I, "r1", A, At(1)),
            (0.0, S, "r1", A, At(1)),
            (0.1, D, "r1", A, At(1)),
            (5.0, I, "r2", B, At(2)),
            (0.104, R, "r1", A, At(1)),
            (5.0, S, "r2", B, At(2)),
            (5.1, D, "r2", B, At(2)),
            (5.104, R, "r2", B, At(2)),
        ],
    ),
    (
        "async retry, same request id and root a minute later: a new attempt; attempt 1's late report and a redelivered runtimeDone stay attempt 1's",
        &[
            (0.0, I, "r", A, At(1)),
            (0.0, S, "r", A, At(1)),
            (0.05, D, "r", A, At(1)),
            (60.0, I, "r", A, At(2)),
            (0.06, R, "r", A, At(1)),
            (60.0, S, "r", A, At(2)),
            (60.05, D, "r", A, At(2)),
            (0.05, D, "r", A, Again(1)),
            (60.06, R, "r", A, At(2)),
        ],
    ),
    (
        "a retry within the separation: attempt 1's report, delivered after attempt 2's INVOKE, is attempt 1's",
        &[
            (0.0, I, "r", A, At(1)),
            (0.0, S, "r", A, At(1)),
            (0.05, D, "r", A, At(1)),
            (0.08, I, "r", A, At(2)),
            (0.06, R, "r", A, At(1)),
            (0.08, S, "r", A, At(2)),
            (0.3, D, "r", A, At(2)),
            (0.31, R, "r", A, At(2)),
        ],
    ),
    (
        "a retry under another trace root: the root tells the attempts apart whatever the times",
        &[
            (0.0, I, "r", A, At(1)),
            (0.2, I, "r", B, At(2)),
            (0.1, D, "r", A, At(1)),
            (0.3, D, "r", B, At(2)),
        ],
    ),
    (
        "a lost runtimeDone: the retry's own runtimeDone is the retry's; attempt 1's report (no runtimeDone) is attempt 1's",
        &[
            (0.0, I, "r", A, At(1)),
            (0.0, S, "r", A, At(1)),
            (60.0, I, "r", A, At(2)),
            (60.0, S, "r", A, At(2)),
            (60.1, D, "r", A, At(2)),
            (0.3, R, "r", A, At(1)),
            (60.2, R, "r", A, At(2)),
        ],
    ),
    (
        "a lost runtimeDone, no start known: the next INVOKE takes what comes after it; a late copy from before it is attempt 1's",
        &[
            (0.0, I, "r", None, At(1)),
            (60.0, I, "r", None, At(2)),
            (60.1, D, "r", None, At(2)),
            (0.9, D, "r", None, At(1)),
        ],
    ),
    (
        "a runtimeDone before its INVOKE (its time a little earlier than our clock at the INVOKE)",
        &[
            (0.2, D, "r1", None, At(1)),
            (0.3, I, "r1", None, DoneFirst(1)),
            (0.0, S, "r1", None, At(1)),
        ],
    ),
    (
        "an early runtimeDone of an earlier attempt is not the next INVOKE's",
        &[
            (0.5, D, "r", None, At(1)),
            (60.0, I, "r", None, At(2)),
            (60.01, D, "r", None, At(2)),
        ],
    ),
    (
        "Managed Instances: no INVOKE, several open at once, records interleaved, a report before its start",
        &[
            (0.0, S, "a", A, At(1)),
            (0.01, S, "b", B, At(2)),
            (0.152, R, "c", None, At(3)),
            (0.102, R, "a", A, At(1)),
            (0.05, S, "c", None, At(3)),
            (0.112, R, "b", B, At(2)),
        ],
    ),
    (
        "Managed Instances, a retry of a finished request: its report before its start",
        &[
            (0.0, S, "r", A, At(1)),
            (0.1, R, "r", A, At(1)),
            (60.1, R, "r", A, At(2)),
            (60.0, S, "r", A, At(2)),
        ],
    ),
    (
        "a report with no start, then a start after its report (reordered pair), then copies",
        &[
            (3.0, R, "x", None, At(1)),
            (2.5, S, "x", None, At(1)),
            (2.5, S, "x", None, Again(1)),
            (3.0, R, "x", None, Again(1)),
        ],
    ),
    (
        "a start after the runtimeDone it would precede cannot be that attempt's",
        &[
            (0.0, I, "r", None, At(1)),
            (0.5, D, "r", None, At(1)),
            (0.7, S, "r", None, At(2)),
        ],
    ),
    (
        "records for unknown request ids open attempts of their own and take nothing from the one under way",
        &[
            (0.0, I, "r", None, At(1)),
            (0.1, D, "ghost", None, At(2)),
            (0.1, R, "other", None, At(3)),
            (0.2, D, "r", None, At(1)),
        ],
    ),
];

fn root(s: Option<&str>) -> Option<TraceId> {
    s.map(|s| TraceId::parse(s).unwrap())
}

fn got(placed: Placed, kind: Kind) -> Want {
    let n = placed.id.0;
    if placed.redelivered {
        Again(n)
    } else if kind == Kind::Invoke && placed.had_runtime_done {
        DoneFirst(n)
    } else {
        At(n)
    }
}

#[test]
fn every_arrival_goes_to_its_attempt() {
    for (case, steps) in CASES {
        let mut attempts = Attempts::new();
        for (i, &(at, kind, request_id, r, want)) in steps.iter().enumerate() {
            let placed = attempts.place(Arrival {
                kind,
                request_id,
                root: root(r),
                at: EpochSeconds(T0 + at),
            });
            assert_eq!(
                got(placed, kind),
                want,
                "{case}: step {i} ({kind:?} {request_id} at {at})"
            );
        }
    }
}

/// The event sequences captured for the enricher (fixtures/enrich): one attempt per request
/// id, every record of a request on its INVOKE's attempt.
#[test]
fn captured_sequences_give_one_attempt_per_request() {
    let dir = format!("{}/fixtures/enrich", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let time = |v: &Value| EpochSeconds::parse_rfc3339(v.as_str().unwrap()).unwrap();
    for file in files {
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut attempts = Attempts::new();
        let mut of_request: HashMap<String, AttemptId> = HashMap::new();
        let mut placed_any = false;
        let mut check = |request_id: &str, placed: Placed| {
            let first = *of_request.entry(request_id.to_owned()).or_insert(placed.id);
            assert_eq!(placed.id, first, "{}: {request_id}", file.display());
        };
        for step in fixture["steps"].as_array().unwrap() {
            if let Some(inv) = step.get("invoke") {
                let request_id = inv["requestId"].as_str().unwrap();
                let trace = inv
                    .get("trace")
                    .and_then(|t| TraceHeader::parse(t.as_str().unwrap()).ok());
                let placed = attempts.place(Arrival {
                    kind: Kind::Invoke,
                    request_id,
                    root: trace.map(|t| t.root),
                    at: time(&inv["receivedAt"]),
                });
                check(request_id, placed);
            } else if let Some(records) = step.get("telemetry") {
                let decoded = telemetry::decode(records.to_string().as_bytes(), EpochSeconds(T0));
                for event in &decoded.events {
                    if let Some(arrival) = Arrival::of_record(&event.record, event.time) {
                        check(arrival.request_id, attempts.place(arrival));
                        placed_any = true;
                    }
                }
            }
        }
        assert!(placed_any, "{}", file.display());
        assert_eq!(attempts.len(), of_request.len(), "{}", file.display());
    }
}

#[test]
fn bounded_in_count_preferring_reported_ones_and_in_age() {
    let mut attempts = Attempts::new();
    let place = |attempts: &mut Attempts, kind, request_id: &str, at: f64| {
        attempts
            .place(Arrival {
                kind,
                request_id,
                root: None,
                at: EpochSeconds(T0 + at),
            })
            .id
    };
    // Without INVOKEs (Managed Instances) many are open at once.
    for i in 0..MAX_CONCURRENT_ATTEMPTS + 10 {
        place(&mut attempts, Kind::Start, &format!("c-{i}"), 0.0);
    }
    assert_eq!(attempts.len(), MAX_CONCURRENT_ATTEMPTS);
    // The oldest went first: a record of c-0 opens a new attempt.
    let again = place(&mut attempts, Kind::Report, "c-0", 0.1);
    assert_eq!(
        again,
        AttemptId(u64::try_from(MAX_CONCURRENT_ATTEMPTS).unwrap() + 11)
    );

    // With INVOKEs, one at a time: a smaller bound; one whose report is in goes first.
    let mut attempts = Attempts::new();
    let first = place(&mut attempts, Kind::Invoke, "r-0", 0.0);
    let reported = place(&mut attempts, Kind::Invoke, "r-1", 1.0);
    place(&mut attempts, Kind::Report, "r-1", 1.1);
    for i in 2..=MAX_ATTEMPTS {
        place(&mut attempts, Kind::Invoke, &format!("r-{i}"), 2.0);
    }
    assert_eq!(attempts.len(), MAX_ATTEMPTS);
    assert_eq!(place(&mut attempts, Kind::RuntimeDone, "r-0", 0.1), first);
    assert_ne!(
        place(&mut attempts, Kind::RuntimeDone, "r-1", 1.05),
        reported
    );

    // Untouched for the age bound: forgotten.
    let later = MAX_ATTEMPT_AGE_SECONDS + 5.0;
    let fresh = place(&mut attempts, Kind::Invoke, "late", later);
    assert_eq!(attempts.len(), 1);
    assert_ne!(place(&mut attempts, Kind::Report, "r-0", later), first);
    assert_eq!(place(&mut attempts, Kind::Start, "late", later), fresh);
}
