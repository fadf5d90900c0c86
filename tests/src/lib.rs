//! Test infrastructure for the X-Ray Lambda extension.
//!
//! - [`emulator`]: a local Lambda execution environment built from the AWS contracts — the Runtime
//!   API, the Extensions API and the Telemetry API on one port, and the init → invoke → shutdown
//!   lifecycle with its deadlines, driving real processes (the extension under test and a function).
//! - [`sink`]: an X-Ray API endpoint (`PutTraceSegments` and friends) that records what it receives,
//!   enforces the service limits and can inject faults.
//! - [`trace`]: X-Ray trace headers (`Root=…;Parent=…;Sampled=…`).
//! - [`net`]: free loopback ports for fixtures.
//! - [`timeline`]: every trace as a timeline in one self-contained HTML file (`make demo`).
//! - [`http`]: the small HTTP/1 server and client both are built on, usable by tests for fakes.
//! - [`procfs`]: a child process found by executable, its memory from `/proc` (tests and bench).
//!
//! Binaries: `sample-function` (a real `lambda_runtime` function that emits subsegments over the
//! X-Ray daemon protocol), `empty-extension` (the smallest external extension, a baseline),
//! `xray-sink` (the sink as a standalone server). The bench, soak, scale model and demo, which run
//! on this library, are the `xray-extension-bench` crate (`bench/`).

pub mod clock;
pub mod emulator;
pub mod extension_log;
pub mod http;
pub mod net;
pub mod procfs;
pub mod sink;
pub mod timeline;
pub mod trace;
