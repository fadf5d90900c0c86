//! Faults on demand, for the tests of the supervision only: compiled in with the cargo feature
//! `fault-injection`, which the layer's build never enables (`make -C layer check` verifies
//! its binaries hold none of this). Without the feature, [`check`] is an empty function and
//! nothing here reaches the binary.
//!
//! With it, `XRAY_EXTENSION_FAULT` names one site (`lifecycle`, `udp_reader`, `otlp_receiver`,
//! `warm_up`), and the first document (or request body) carrying [`MARKER`] that reaches that
//! site makes it panic, once per process; a site that handles no documents (the warm-up) panics
//! the first time it runs.

/// A place that can be made to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The lifecycle loop, as it takes a document from the receivers.
    Lifecycle,
    /// The UDP reader, as it reads a datagram.
    UdpReader,
    /// The OTLP/HTTP receiver, as it reads a request body.
    OtlpReceiver,
    /// The export backends' client warm-up, as it starts.
    WarmUp,
    /// Anything else (a variable naming no site arms nothing).
    Unknown,
}

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Site;

    /// The variable naming the site that panics.
    pub const VARIABLE: &str = "XRAY_EXTENSION_FAULT";
    /// What a document must carry to make the armed site panic.
    pub const MARKER: &[u8] = b"xray-extension-fault-injection-panic";

    impl Site {
        fn parse(value: &str) -> Self {
            match value.trim() {
                "lifecycle" => Self::Lifecycle,
                "udp_reader" => Self::UdpReader,
                "otlp_receiver" => Self::OtlpReceiver,
                "warm_up" => Self::WarmUp,
                _ => Self::Unknown,
            }
        }
    }

    fn armed() -> Option<Site> {
        static ARMED: OnceLock<Option<Site>> = OnceLock::new();
        *ARMED.get_or_init(|| std::env::var(VARIABLE).ok().map(|v| Site::parse(&v)))
    }

    /// Logs, once at start, which site is armed: tests look for this line to know the binary
    /// was built with the feature.
    pub fn announce() {
        if let Some(site) = armed() {
            tracing::warn!(site = ?site, "fault injection armed: the first document carrying the marker makes this site panic");
        }
    }

    /// Panics when `site` is the armed one and `bytes` carry the marker, the first time only.
    ///
    /// # Panics
    ///
    /// That is its purpose.
    pub fn check(site: Site, bytes: &[u8]) {
        static FIRED: AtomicBool = AtomicBool::new(false);
        if armed() == Some(site)
            && bytes.windows(MARKER.len()).any(|w| w == MARKER)
            && !FIRED.swap(true, Ordering::SeqCst)
        {
            panic!("fault injected into {site:?}");
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{MARKER, VARIABLE, announce, check};

/// Panics when `site` is the armed one, the first time only (for a site without documents).
#[cfg(feature = "fault-injection")]
pub fn check_site(site: Site) {
    check(site, MARKER);
}

/// Without the `fault-injection` feature: never panics.
#[cfg(not(feature = "fault-injection"))]
#[inline]
pub fn check_site(_site: Site) {}

/// Without the `fault-injection` feature: nothing to announce.
#[cfg(not(feature = "fault-injection"))]
pub fn announce() {}

/// Without the `fault-injection` feature: never panics.
#[cfg(not(feature = "fault-injection"))]
#[inline]
pub fn check(_site: Site, _bytes: &[u8]) {}
