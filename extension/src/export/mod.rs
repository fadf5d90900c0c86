//! Export: the bounded buffer, batching, PutTraceSegments, and the exporter that owns them.

pub mod batcher;
pub mod budget;
pub mod buffer;
pub mod exporter;
pub mod policy;
pub mod xray;
