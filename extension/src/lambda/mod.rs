//! Lambda: the Extensions API (registration and events), the Telemetry API (subscription,
//! listener, record model).

pub mod api;
pub mod events;
pub mod listener;
pub mod telemetry;
