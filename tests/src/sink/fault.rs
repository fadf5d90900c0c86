//! Fault injection for the sink: a plan maps the index of each `PutTraceSegments` call (0-based,
//! counted since the sink started or was cleared) to what the sink does with it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the sink does with one `PutTraceSegments` call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer 429 `ThrottledException`; no document is stored.
    Throttle,
    /// Answer 500 `InternalFailure`; no document is stored.
    ServerError,
    /// Answer `status` with `error_type` in `x-amzn-ErrorType`; no document is stored.
    Status {
        /// The HTTP status.
        status: u16,
        /// The error type.
        error_type: String,
    },
    /// Wait, then process the call normally (for client timeouts and slow flushes).
    Delay(Duration),
    /// Process normally but report this fraction (0.0–1.0) of the valid documents, spread evenly,
    /// as unprocessed (`ThrottledException`); those are not stored.
    PartialUnprocessed(f64),
    /// Close the connection without answering; no document is stored.
    Disconnect,
}

/// Maps a call index to a fault (`None`: behave normally).
#[derive(Clone)]
pub struct FaultPlan(Arc<dyn Fn(usize) -> Option<Fault> + Send + Sync>);

impl FaultPlan {
    /// No faults.
    pub fn none() -> Self {
        Self::from_fn(|_| None)
    }

    /// `faults[i]` for call `i`; calls past the end behave normally.
    pub fn sequence(faults: impl IntoIterator<Item = Option<Fault>>) -> Self {
        let faults: Vec<Option<Fault>> = faults.into_iter().collect();
        Self::from_fn(move |i| faults.get(i).cloned().flatten())
    }

    /// `fault` for the first `n` calls, then normal behaviour.
    pub fn first(n: usize, fault: Fault) -> Self {
        Self::from_fn(move |i| (i < n).then(|| fault.clone()))
    }

    /// `fault` for every call.
    pub fn always(fault: Fault) -> Self {
        Self::from_fn(move |_| Some(fault.clone()))
    }

    /// Any mapping.
    pub fn from_fn(f: impl Fn(usize) -> Option<Fault> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The fault for call `index`.
    pub fn fault_for(&self, index: usize) -> Option<Fault> {
        (self.0)(index)
    }
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultPlan(..)")
    }
}

/// Whether document `i` of a call falls in the unprocessed `fraction` (spread evenly, so 0.5
/// marks every second document).
pub(crate) fn is_marked_unprocessed(i: usize, fraction: f64) -> bool {
    let fraction = fraction.clamp(0.0, 1.0);
    #[expect(
        clippy::cast_precision_loss,
        reason = "document indexes are below 2^52"
    )]
    let (before, after) = (i as f64 * fraction, (i + 1) as f64 * fraction);
    after.floor() > before.floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_map_indexes() {
        let plan = FaultPlan::sequence([Some(Fault::Throttle), None, Some(Fault::ServerError)]);
        assert_eq!(plan.fault_for(0), Some(Fault::Throttle));
        assert_eq!(plan.fault_for(1), None);
        assert_eq!(plan.fault_for(2), Some(Fault::ServerError));
        assert_eq!(plan.fault_for(3), None);
        let first = FaultPlan::first(2, Fault::Disconnect);
        assert_eq!(first.fault_for(1), Some(Fault::Disconnect));
        assert_eq!(first.fault_for(2), None);
    }

    #[test]
    fn fractions_spread_evenly() {
        let marked = |f| (0..10).filter(|&i| is_marked_unprocessed(i, f)).count();
        assert_eq!(marked(0.0), 0);
        assert_eq!(marked(0.5), 5);
        assert_eq!(marked(1.0), 10);
        assert!(is_marked_unprocessed(1, 0.5) && !is_marked_unprocessed(0, 0.5));
    }
}
