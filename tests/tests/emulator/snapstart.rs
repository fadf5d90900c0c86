//! SnapStart: the restore records and the snapshot's stale init records.

use std::time::Duration;

use xray_extension_tests::emulator::{Emulator, InitializationType, InvocationStatus, Invoke};

use crate::{function, quiet_event};

/// SnapStart: the runtime's `/runtime/restore/next` ends the snapshot's init; the restore
/// records come at restore, and the snapshot's init records, held back, come dated the snapshot's
/// age back, in the order asked; the next invoke needs no init.
#[tokio::test]
async fn snap_start_delivers_the_stale_init_records_around_the_restore() {
    use xray_extension_tests::emulator::StaleInit;
    let expected: [(StaleInit, [&str; 6]); 4] = [
        (
            StaleInit::BeforeRestore,
            [
                "initStart",
                "initRuntimeDone",
                "initReport",
                "restoreStart",
                "restoreRuntimeDone",
                "restoreReport",
            ],
        ),
        (
            StaleInit::BetweenRestore,
            [
                "restoreStart",
                "initStart",
                "initRuntimeDone",
                "initReport",
                "restoreRuntimeDone",
                "restoreReport",
            ],
        ),
        (
            StaleInit::AfterRestore,
            [
                "restoreStart",
                "restoreRuntimeDone",
                "restoreReport",
                "initStart",
                "initRuntimeDone",
                "initReport",
            ],
        ),
        (
            StaleInit::Split,
            [
                "initStart",
                "restoreStart",
                "initRuntimeDone",
                "restoreRuntimeDone",
                "restoreReport",
                "initReport",
            ],
        ),
    ];
    for (stale, order) in expected {
        let mut lambda = Emulator::builder()
            .function(function())
            .snapshot_age(Duration::from_hours(2))
            .start()
            .await
            .unwrap();
        let init = lambda.snap_start(stale).await.unwrap();
        assert_eq!(init.initialization_type, InitializationType::SnapStart);
        let log = lambda.telemetry_log();
        let platform: Vec<&str> = log
            .iter()
            .filter_map(|e| e.event_type.strip_prefix("platform."))
            .filter(|t| t.starts_with("init") || t.starts_with("restore"))
            .collect();
        assert_eq!(platform, order, "{stale:?}");
        let time = |kind: &str| {
            log.iter()
                .find(|e| e.event_type == kind)
                .map(|e| e.time.clone())
                .unwrap()
        };
        // Dated two hours back: same format, so the strings compare as times do.
        assert!(time("platform.initReport") < time("platform.restoreStart"));
        // Seconds of the day of `2022-10-12T00:00:15.064Z`.
        let seconds = |t: String| {
            let parts: Vec<f64> = t[11..23].split(':').map(|p| p.parse().unwrap()).collect();
            parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
        };
        let back = (seconds(time("platform.restoreStart")) - seconds(time("platform.initStart"))
            + 86_400.0)
            % 86_400.0;
        assert!((back - 7_200.0).abs() < 60.0, "{stale:?}: {back} s back");
        let inv = lambda.invoke(Invoke::new(quiet_event())).await.unwrap();
        assert_eq!(inv.status, InvocationStatus::Success);
        assert!(!inv.cold);
        lambda.shutdown().await.unwrap();
    }
}
