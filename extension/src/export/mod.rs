//! Export: the bounded buffer, batching, and PutTraceSegments.

pub mod batcher;
pub mod buffer;
pub mod policy;
pub mod xray;
