use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(1),
    restarts: 4,
};

#[test]
fn restarts_pause_longer_each_time_and_stop_at_the_bound() {
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    let mut failures = Failures::default();
    let decisions: Vec<Decision> = (0..6)
        .map(|n| failures.record(BACKOFF, t0 + ms(n * 10)))
        .collect();
    assert_eq!(
        decisions,
        [
            Decision::Restart(ms(100)),
            Decision::Restart(ms(200)),
            Decision::Restart(ms(400)),
            Decision::Restart(ms(800)),
            Decision::Close,
            Decision::Close,
        ]
    );
}

#[test]
fn the_pause_is_capped() {
    let t0 = Instant::now();
    let mut failures = Failures::default();
    let many = Backoff {
        restarts: 40,
        ..BACKOFF
    };
    let last = (0..40).map(|_| failures.record(many, t0)).last();
    assert_eq!(last, Some(Decision::Restart(BACKOFF.max)));
}

#[test]
fn failures_far_apart_do_not_add_up() {
    let t0 = Instant::now();
    let mut failures = Failures::default();
    for n in 0..10 {
        // One failure every window and a bit: each is a first.
        let at = t0 + (RESTART_WINDOW + Duration::from_secs(1)) * n;
        assert_eq!(
            failures.record(BACKOFF, at),
            Decision::Restart(BACKOFF.first),
            "failure {n}"
        );
    }
    // Within the window they do.
    let later = t0 + (RESTART_WINDOW + Duration::from_secs(1)) * 9 + RESTART_WINDOW;
    assert_eq!(
        failures.record(BACKOFF, later),
        Decision::Restart(BACKOFF.first * 2)
    );
}

#[tokio::test]
async fn a_receiver_that_panics_is_started_again_and_its_panic_recorded() {
    install_panic_hook();
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Supervisor::new(metrics.clone());
    let starts = Arc::new(AtomicU32::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut done_tx = Some(done_tx);
    let counted = starts.clone();
    let (finish_tx, finish_rx) = tokio::sync::watch::channel(false);
    tasks.spawn(Task::UdpReader, move || {
        let start = counted.fetch_add(1, Ordering::SeqCst);
        let done = if start == 1 { done_tx.take() } else { None };
        async move {
            assert!(start != 0, "reader failed");
            if let Some(done) = done {
                let _ = done.send(());
            }
            std::future::pending::<()>().await;
        }
    });
    // Stands in for the event loop: its end ends the run.
    let finish = finish_rx;
    tasks.spawn(Task::EventLoop, move || {
        let mut finish = finish.clone();
        async move {
            let _ = finish.wait_for(|f| *f).await;
        }
    });
    let run = tokio::spawn(tasks.run());
    tokio::time::timeout(Duration::from_secs(5), done_rx)
        .await
        .expect("not started again")
        .unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    assert_eq!(metrics::get(&metrics.task_failures), 1);
    // The hook kept the panic for the line, and the line took it.
    assert!(take_recorded(Task::UdpReader).is_none());
    finish_tx.send(true).unwrap();
    assert_eq!(run.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn a_task_that_fails_past_its_bound_stays_closed() {
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Supervisor::new(metrics.clone());
    let starts = Arc::new(AtomicU32::new(0));
    let counted = starts.clone();
    // Returns at once, every time: started again until the bound, then closed.
    tasks.spawn(Task::MetricsTimer, move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    // Nothing ends the run but the set running empty.
    tokio::time::timeout(Duration::from_secs(20), tasks.run())
        .await
        .expect("the run should end once every task is closed")
        .unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), RECEIVER_BACKOFF.restarts + 1);
    assert_eq!(
        metrics::get(&metrics.task_failures),
        u64::from(RECEIVER_BACKOFF.restarts) + 1
    );
}

#[tokio::test]
async fn when_the_lifecycle_loop_dies_its_receivers_are_closed_with_it() {
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Supervisor::new(metrics.clone());
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
    // The receiver holds this until it is dropped (aborted).
    let held = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    tasks.spawn(Task::TelemetryListener, move || {
        let held = held.lock().unwrap().take();
        async move {
            let _held = held;
            std::future::pending::<()>().await;
        }
    });
    tasks.spawn_once(Task::Lifecycle, async {
        tokio::task::yield_now().await;
        panic!("lifecycle failed");
    });
    tokio::time::timeout(Duration::from_secs(5), tasks.run())
        .await
        .expect("the run should end once every task is closed")
        .unwrap();
    assert!(dropped_rx.await.is_err(), "the receiver was not dropped");
    // One line: the lifecycle loop's; the receiver's closing is part of it.
    assert_eq!(metrics::get(&metrics.task_failures), 1);
}
