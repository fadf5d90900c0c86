//! The query API: what a test reads back while and after the emulator runs ([`Observer`], a
//! cloneable view usable while an invoke runs, and the same readers on [`Emulator`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{Phase, Shared};
use super::telemetry::{SubscriptionRecord, TelemetryDelivery, TelemetryEvent};
use super::{
    ApiErrorReport, DeliveredEvent, Emulator, EmulatorError, ExtensionInitTiming, InitRecord,
};

impl Emulator {
    /// The function's ARN.
    pub fn function_arn(&self) -> String {
        self.shared.config.function_arn()
    }

    /// The extensions' init timings of the latest init.
    pub fn extension_init_times(&self) -> Vec<ExtensionInitTiming> {
        self.observer()
            .inits()
            .pop()
            .map(|i| i.extensions)
            .unwrap_or_default()
    }

    /// Every init so far.
    pub fn inits(&self) -> Vec<InitRecord> {
        self.observer().inits()
    }

    /// Every telemetry event so far (all generations).
    pub fn telemetry_log(&self) -> Vec<TelemetryEvent> {
        self.observer().telemetry_log()
    }

    /// Events delivered to extension `name` (all generations).
    pub fn extension_events(&self, name: &str) -> Vec<DeliveredEvent> {
        self.observer().extension_events(name)
    }

    /// Output lines of process `name` (an extension's name, or the runtime command's file name).
    pub fn output(&self, name: &str) -> Vec<String> {
        self.shared.output(name)
    }
}

/// A cloneable, read-mostly view of an [`Emulator`].
#[derive(Clone)]
pub struct Observer {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("api", &self.shared.api_addr)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// The `AWS_LAMBDA_RUNTIME_API` address.
    pub fn runtime_api(&self) -> SocketAddr {
        self.shared.api_addr
    }

    /// Waits until a captured output line of `name` contains `needle` (woken by each line).
    pub async fn wait_for_output(
        &self,
        name: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), EmulatorError> {
        if self
            .shared
            .wait_for_output(name, needle, Instant::now() + timeout)
            .await
        {
            Ok(())
        } else {
            Err(EmulatorError::Timeout {
                what: format!("{name} to print {needle:?}"),
                waited: timeout,
            })
        }
    }

    /// Waits until an init is in progress and returns its generation.
    pub async fn wait_for_init_start(&self, timeout: Duration) -> Result<u64, EmulatorError> {
        self.shared
            .wait_until(Instant::now() + timeout, |s| {
                (s.phase == Phase::Initializing).then_some(s.generation)
            })
            .await
            .ok_or_else(|| EmulatorError::Timeout {
                what: "an init to start".to_owned(),
                waited: timeout,
            })
    }

    /// Every init so far.
    pub fn inits(&self) -> Vec<InitRecord> {
        self.shared.read(|s| s.inits.clone())
    }

    /// Every telemetry event so far (all generations), in order.
    pub fn telemetry_log(&self) -> Vec<TelemetryEvent> {
        self.shared.telemetry.log()
    }

    /// Every delivery attempt to a telemetry subscriber.
    pub fn telemetry_deliveries(&self) -> Vec<TelemetryDelivery> {
        self.shared.telemetry.deliveries()
    }

    /// Every accepted telemetry subscription.
    pub fn telemetry_subscriptions(&self) -> Vec<SubscriptionRecord> {
        self.shared.telemetry.subscriptions()
    }

    /// Records dropped because a subscriber's queue was full.
    pub fn telemetry_dropped(&self) -> u64 {
        self.shared.telemetry.dropped()
    }

    /// Waits until `predicate` holds over the telemetry log, woken by each new event.
    pub async fn wait_for_telemetry(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&[TelemetryEvent]) -> bool,
    ) -> Result<Vec<TelemetryEvent>, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared
            .telemetry
            .wait_until(deadline, |log, _| predicate(log).then(|| log.to_vec()))
            .await
            .ok_or_else(|| EmulatorError::Timeout {
                what: what.to_owned(),
                waited: timeout,
            })
    }

    /// Waits until `predicate` holds over the telemetry delivery attempts.
    pub async fn wait_for_deliveries(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&[TelemetryDelivery]) -> bool,
    ) -> Result<Vec<TelemetryDelivery>, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared
            .telemetry
            .wait_until(deadline, |_, deliveries| {
                predicate(deliveries).then(|| deliveries.to_vec())
            })
            .await
            .ok_or_else(|| EmulatorError::Timeout {
                what: what.to_owned(),
                waited: timeout,
            })
    }

    /// Events delivered to extension `name` (all generations), in order.
    pub fn extension_events(&self, name: &str) -> Vec<DeliveredEvent> {
        self.shared.read(|s| {
            s.delivered_log
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
                .collect()
        })
    }

    /// Reports posted to the `init/error` and `exit/error` endpoints.
    pub fn api_errors(&self) -> Vec<ApiErrorReport> {
        self.shared.read(|s| s.api_errors.clone())
    }

    /// Output lines of process `name`.
    pub fn output(&self, name: &str) -> Vec<String> {
        self.shared.output(name)
    }
}
