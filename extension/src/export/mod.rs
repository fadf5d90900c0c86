//! Export: the bounded buffer, batching, the retry loop, and the backend behind it
//! (PutTraceSegments), owned by the exporter.

pub mod backend;
pub mod batcher;
pub mod budget;
pub mod buffer;
pub mod exporter;
#[cfg(test)]
pub mod memory;
pub mod otlp;
pub mod policy;
pub mod send;
pub mod xray;
