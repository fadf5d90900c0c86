//! The flush policy: whether the function waits for the send, and when to send. Pure: time is
//! an input.
//!
//! - `end`: at each INVOKE, hold `/event/next` until `platform.runtimeDone`, drain the socket and
//!   flush: the data is in X-Ray when the invocation ends, at the cost of the telemetry delivery
//!   delay and the send in the post-runtime phase.
//! - `background`: answer each INVOKE at once (our `/event/next` is in before the runtime's: no
//!   post-runtime phase at all) and send what is buffered in the background while the function
//!   runs. Documents of an invocation are sent during the next one (or at SHUTDOWN). A request cut
//!   by the freeze times out after the thaw and its documents are sent again (same ids: safe).
//! - `adaptive` (default): keeps an exponentially weighted moving average of the time between
//!   INVOKEs. While it is at least the flush interval (invocations are rare), behave as `end`.
//!   Below it (invocations are frequent), behave as `background`, but send only when a full batch
//!   is buffered, when the flush interval has passed since the last send, or when the oldest
//!   buffered document is older than the maximum age. A gap longer than [`ADAPTIVE_IDLE_RESET`]
//!   forgets the average (back to `end`).

use std::time::Duration;

use tokio::time::Instant;

use super::xray::MAX_DOCUMENTS_PER_CALL;

/// Weight of the newest inter-arrival time in the moving average.
pub const EWMA_WEIGHT: f64 = 0.3;
/// A gap between invocations longer than this resets the adaptive average.
pub const ADAPTIVE_IDLE_RESET: Duration = Duration::from_secs(30);
/// Default flush interval (adaptive's threshold and background send interval).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default maximum age of buffered documents in adaptive's busy mode.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);

/// Which strategy users chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Flush before `/event/next` at every invocation.
    End,
    /// Never hold the function; send in the background.
    Background,
    /// `end` while invocations are rare, background while they are frequent.
    Adaptive,
}

impl Strategy {
    /// Parses `end`, `background` or `adaptive` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "end" => Some(Self::End),
            "background" => Some(Self::Background),
            "adaptive" => Some(Self::Adaptive),
            _ => None,
        }
    }

    /// The setting's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::End => "end",
            Self::Background => "background",
            Self::Adaptive => "adaptive",
        }
    }
}

/// Policy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The strategy.
    pub strategy: Strategy,
    /// Adaptive: the inter-arrival threshold and the least time between background sends.
    pub interval: Duration,
    /// Adaptive: buffered documents older than this are sent at the next INVOKE.
    pub max_age: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Adaptive,
            interval: DEFAULT_FLUSH_INTERVAL,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// What to do with an INVOKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtInvoke {
    /// Hold `/event/next` until the runtime is done, then flush (`end` behaviour).
    pub hold: bool,
    /// Start a background send now.
    pub send: bool,
}

/// What the buffer looks like, as the policy needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferState {
    /// Documents queued.
    pub queued: usize,
    /// When the oldest queued document was buffered.
    pub oldest: Option<Instant>,
}

/// The policy's state.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    mean_gap: Option<f64>,
    last_invoke: Option<Instant>,
    last_send: Option<Instant>,
}

impl Policy {
    /// A fresh policy.
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            mean_gap: None,
            last_invoke: None,
            last_send: None,
        }
    }

    /// The configured strategy.
    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    /// Whether invocations are currently frequent (adaptive's background mode).
    pub fn is_busy(&self) -> bool {
        self.mean_gap
            .is_some_and(|g| g < self.config.interval.as_secs_f64())
    }

    /// An INVOKE arrived at `now`.
    pub fn on_invoke(&mut self, now: Instant, buffer: BufferState) -> AtInvoke {
        if let Some(last) = self.last_invoke {
            let gap = now.saturating_duration_since(last);
            self.mean_gap = if gap > ADAPTIVE_IDLE_RESET {
                None
            } else {
                let g = gap.as_secs_f64();
                Some(self.mean_gap.map_or(g, |m| m + EWMA_WEIGHT * (g - m)))
            };
        }
        self.last_invoke = Some(now);
        let buffered = buffer.queued > 0;
        match self.config.strategy {
            Strategy::End => AtInvoke {
                hold: true,
                send: false,
            },
            Strategy::Background => AtInvoke {
                hold: false,
                send: buffered,
            },
            Strategy::Adaptive if !self.is_busy() => AtInvoke {
                hold: true,
                send: false,
            },
            Strategy::Adaptive => {
                let due = self
                    .last_send
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.config.interval);
                let full = buffer.queued >= MAX_DOCUMENTS_PER_CALL;
                let old = buffer
                    .oldest
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.config.max_age);
                AtInvoke {
                    hold: false,
                    send: buffered && (due || full || old),
                }
            }
        }
    }

    /// A send started at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_send = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(queued: usize, oldest: Option<Instant>) -> BufferState {
        BufferState { queued, oldest }
    }

    fn policy(strategy: Strategy) -> Policy {
        Policy::new(PolicyConfig {
            strategy,
            ..PolicyConfig::default()
        })
    }

    const HOLD: AtInvoke = AtInvoke {
        hold: true,
        send: false,
    };

    #[test]
    fn end_always_holds_and_never_sends_in_the_background() {
        let t0 = Instant::now();
        let mut p = policy(Strategy::End);
        for i in 0..20 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(p.on_invoke(now, buffer(10, Some(t0))), HOLD);
        }
    }

    #[test]
    fn background_never_holds_and_sends_whatever_is_buffered() {
        let t0 = Instant::now();
        let mut p = policy(Strategy::Background);
        assert_eq!(
            p.on_invoke(t0, buffer(1, Some(t0))),
            AtInvoke {
                hold: false,
                send: true
            }
        );
        assert_eq!(
            p.on_invoke(t0, buffer(0, None)),
            AtInvoke {
                hold: false,
                send: false
            }
        );
    }

    #[test]
    fn adaptive_holds_while_rare_and_goes_background_when_frequent() {
        let t0 = Instant::now();
        let mut p = policy(Strategy::Adaptive);
        // Rare: every 5 s.
        for i in 0..4 {
            let now = t0 + Duration::from_secs(5 * i);
            assert_eq!(p.on_invoke(now, buffer(3, Some(now))), HOLD, "invoke {i}");
        }
        assert!(!p.is_busy());
        // Frequent: every 100 ms. The average falls under 1 s after a few invocations.
        let mut now = t0 + Duration::from_secs(15);
        let mut busy_at = None;
        for i in 0..20 {
            now += Duration::from_millis(100);
            let d = p.on_invoke(now, buffer(0, None));
            if !d.hold && busy_at.is_none() {
                busy_at = Some(i);
            }
        }
        assert!(busy_at.is_some_and(|i| i <= 6), "{busy_at:?}");
        // Busy: the first send is due; then at most one per interval unless a batch is full or
        // the oldest document is too old.
        now += Duration::from_millis(100);
        assert_eq!(
            p.on_invoke(now, buffer(3, Some(now))),
            AtInvoke {
                hold: false,
                send: true
            }
        );
        p.sent(now);
        let sent_at = now;
        now += Duration::from_millis(100);
        assert!(!p.on_invoke(now, buffer(3, Some(now))).send);
        now += Duration::from_millis(100);
        assert!(p.on_invoke(now, buffer(50, Some(now))).send);
        now += Duration::from_millis(100);
        assert!(
            p.on_invoke(now, buffer(3, Some(sent_at - Duration::from_secs(6))))
                .send
        );
        now = sent_at + Duration::from_secs(1);
        assert!(p.on_invoke(now, buffer(3, Some(now))).send);
    }

    #[test]
    fn adaptive_resets_after_a_long_idle_gap() {
        let t0 = Instant::now();
        let mut p = policy(Strategy::Adaptive);
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_millis(50);
            p.on_invoke(now, buffer(0, None));
        }
        assert!(p.is_busy());
        now += Duration::from_secs(31);
        assert_eq!(p.on_invoke(now, buffer(1, Some(now))), HOLD);
        assert!(!p.is_busy());
    }

    #[test]
    fn strategy_names() {
        for s in [Strategy::End, Strategy::Background, Strategy::Adaptive] {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
        assert_eq!(Strategy::parse(" END "), Some(Strategy::End));
        assert_eq!(Strategy::parse("sometimes"), None);
    }
}
