//! The smallest honest external extension: registers for INVOKE and SHUTDOWN under its file
//! name, takes events until SHUTDOWN, then exits 0. Built on the same crates as the product, it
//! is the baseline for init-time measurements.

use std::sync::Arc;

use lambda_extension::{Extension, LambdaEvent, NextEvent, service_fn};
use tokio::sync::Notify;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_extension::Error> {
    let shutdown = Arc::new(Notify::new());
    let signal = Arc::clone(&shutdown);
    let events = service_fn(move |event: LambdaEvent| {
        let signal = Arc::clone(&signal);
        async move {
            if let NextEvent::Shutdown(_) = event.next {
                // notify_one stores a permit, so the wake-up is not lost if main is not yet
                // waiting.
                signal.notify_one();
            }
            Ok::<(), lambda_extension::Error>(())
        }
    });
    // The run loop calls next again after SHUTDOWN; stop as soon as SHUTDOWN has been seen.
    tokio::select! {
        result = Extension::new().with_events_processor(events).run() => result,
        () = shutdown.notified() => Ok(()),
    }
}
