//! Inputs shared by the benchmarks: the document generator and the datagram fixture list are the
//! `make bench` harness's (one copy, in the tests crate), plus this crate's fixtures.

use std::path::PathBuf;

#[path = "../../../bench/src/docs.rs"]
#[allow(
    dead_code,
    reason = "the load generator's id stamping is not used here"
)]
mod shared;

pub use shared::{DATAGRAM_FIXTURES, datagram};

/// A valid trace id (format only: parsing does not look at the clock).
pub const TRACE_ID: &str = "1-5759e988-bd862e3fe1be46a994272793";
/// The parent every generated subsegment hangs under.
pub const PARENT_ID: &str = "53995c3f42cd8ad8";
/// The generated subsegments' start time.
const START: f64 = 1_795_605_003.944_657;

/// A subsegment body of exactly `size` bytes (at least ~700) shaped like an SDK's, with a
/// non-zero id derived from `n`.
pub fn subsegment(n: u64, size: usize) -> String {
    shared::subsegment(n | 1, TRACE_ID, PARENT_ID, START, size)
}

/// A file of this crate's fixtures.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}
