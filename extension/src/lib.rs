//! An external AWS Lambda extension that takes over the X-Ray daemon's job: it receives segment
//! documents over UDP in the daemon protocol, adds what it learns from the Extensions and
//! Telemetry APIs, and sends everything to X-Ray with PutTraceSegments at the points of the
//! Lambda lifecycle where it costs the function nothing (or as little as can be measured).
//!
//! Data flow: [`ingest::udp`] → [`ingest::protocol`] → [`app`] (the lifecycle loop, fed by
//! [`lambda`], deciding with [`lifecycle`]) → [`export::exporter`] ([`export::buffer`] →
//! [`export::send`] ([`export::batcher`]) → [`export::backend`]: [`export::xray`]).

pub mod app;
pub mod attempt;
pub mod config;
pub mod document;
pub mod enrich;
pub mod env;
pub mod export;
pub mod fault;
pub mod ingest;
pub mod json_scan;
pub mod lambda;
#[cfg(test)]
mod layering;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod serve;
pub mod supervisor;
pub mod trace;
