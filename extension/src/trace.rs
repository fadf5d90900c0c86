//! X-Ray identifiers and the `X-Amzn-Trace-Id` header (`Root=...;Parent=...;Sampled=1`), and
//! where new segment ids come from.
//!
//! Pure parsing: no I/O, no clock. [`IdSource::os`] is the one exception: it asks the kernel
//! for every id, so that copies of a SnapStart snapshot never repeat each other's ids.

use std::fmt;

/// Length of a trace id: `1-` + 8 hex (epoch seconds) + `-` + 24 hex.
pub const TRACE_ID_LEN: usize = 35;
/// Length of a segment or subsegment id: 16 hex digits.
pub const SEGMENT_ID_LEN: usize = 16;
/// Longest annotation string value we accept (X-Ray truncates at 1,000 characters).
pub const MAX_VALUE_LEN: usize = 1_000;

/// Whether X-Ray indexes `s` as an annotation's string value as it is: 1 to [`MAX_VALUE_LEN`]
/// characters (X-Ray cuts longer ones, and a filter on the whole value would then find
/// nothing), none of them a control character (no filter expression can write one). A value
/// from outside that fails is left out rather than sent altered.
pub fn is_indexable_string(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_VALUE_LEN && !s.chars().any(char::is_control)
}

/// Why an identifier or a trace header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// A trace id that is not `1-<8 hex>-<24 hex>`.
    #[error("invalid trace id")]
    InvalidTraceId,
    /// A segment id that is not 16 hex digits.
    #[error("invalid segment id")]
    InvalidSegmentId,
    /// A header without a `Root=` field.
    #[error("trace header has no Root")]
    MissingRoot,
}

/// A validated X-Ray trace id, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; TRACE_ID_LEN]);

impl TraceId {
    /// Parses `1-5759e988-bd862e3fe1be46a994272793`.
    pub fn parse(s: &str) -> Result<Self, TraceError> {
        let b = s.as_bytes();
        let ok = b.len() == TRACE_ID_LEN
            && b[0] == b'1'
            && b[1] == b'-'
            && b[10] == b'-'
            && b[2..10].iter().all(|&c| is_lower_hex(c))
            && b[11..].iter().all(|&c| is_lower_hex(c));
        if !ok {
            return Err(TraceError::InvalidTraceId);
        }
        let mut out = [0; TRACE_ID_LEN];
        out.copy_from_slice(b);
        Ok(Self(out))
    }

    /// When the trace started: the epoch seconds in its second field.
    pub fn epoch_seconds(&self) -> u64 {
        // Eight hex digits, checked by `parse`.
        std::str::from_utf8(&self.0[2..10])
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or_default()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and '-' were accepted by `parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.as_str())
    }
}

/// Lower-case hex only: X-Ray rejects ids written in upper case.
fn is_lower_hex(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

/// A validated segment/subsegment id (16 hex digits), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentId([u8; SEGMENT_ID_LEN]);

impl SegmentId {
    /// Parses `53995c3f42cd8ad8`.
    pub fn parse(s: &str) -> Result<Self, TraceError> {
        let b = s.as_bytes();
        if b.len() != SEGMENT_ID_LEN || !b.iter().all(|&c| is_lower_hex(c)) {
            return Err(TraceError::InvalidSegmentId);
        }
        let mut out = [0; SEGMENT_ID_LEN];
        out.copy_from_slice(b);
        Ok(Self(out))
    }

    /// Builds an id from 64 random bits (lowercase hex).
    pub fn from_u64(n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; SEGMENT_ID_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let nibble = (n >> (60 - 4 * i)) & 0xf;
            *slot = HEX[usize::try_from(nibble).unwrap_or(0)];
        }
        Self(out)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's 64 bits.
    pub fn as_u64(&self) -> u64 {
        // Only hex digits were accepted (or written by `from_u64`).
        u64::from_str_radix(self.as_str(), 16).unwrap_or_default()
    }

    /// A second id determined by this one and `salt`: the ids of a document's embedded parts
    /// (children, exceptions) stay the same when the document is re-sent, and are as unique
    /// as the document's own id. Never zero.
    #[must_use]
    pub fn derived(&self, salt: u64) -> Self {
        let mixed = splitmix64(self.as_u64() ^ splitmix64(salt));
        Self::from_u64(if mixed == 0 { 1 } else { mixed })
    }
}

/// One round of `SplitMix64`: a bijective mix of 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where new segment ids come from.
///
/// Under SnapStart every environment restored from one snapshot starts with the same memory:
/// a generator seeded before the snapshot would give every copy the same ids, and X-Ray would
/// merge unrelated documents. [`IdSource::os`] therefore keeps no state at all: each id is
/// drawn from the kernel (`getrandom`), which is re-seeded on restore.
#[derive(Debug, Clone)]
pub struct IdSource(Source);

#[derive(Debug, Clone)]
enum Source {
    Os,
    Sequence(u64),
}

impl IdSource {
    /// Ids drawn from the operating system, one call per id.
    pub fn os() -> Self {
        Self(Source::Os)
    }

    /// Deterministic ids `start + 1`, `start + 2`, ... (tests, benchmarks, fuzzing).
    pub fn sequence(start: u64) -> Self {
        Self(Source::Sequence(start))
    }

    /// A new id, never zero.
    pub fn next_id(&mut self) -> SegmentId {
        let n = match &mut self.0 {
            Source::Os => os_random_u64(),
            Source::Sequence(n) => {
                *n = n.wrapping_add(1);
                *n
            }
        };
        SegmentId::from_u64(if n == 0 { 1 } else { n })
    }
}

/// 64 random bits from the kernel. Should the call ever fail (it cannot on the Linux kernels
/// Lambda runs), fall back to a generator mixed with both clocks, which differ between
/// restored copies.
fn os_random_u64() -> u64 {
    let mut bytes = [0_u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low bits of the nanoseconds are the varying ones"
    )]
    let nanos = wall.as_nanos() as u64;
    splitmix64(fastrand::u64(..) ^ nanos)
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({})", self.as_str())
    }
}

/// The sampling decision carried by a trace header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// `Sampled=1`: the SDK records and sends.
    Sampled,
    /// `Sampled=0`: nothing is sent.
    NotSampled,
    /// `Sampled=?` or absent: the decision is left downstream. Lambda always decides, so we
    /// treat this as not sampled for our own documents.
    Undecided,
}

/// A parsed `X-Amzn-Trace-Id` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHeader {
    /// The trace.
    pub root: TraceId,
    /// The segment our subsegments hang under (Lambda's function segment).
    pub parent: Option<SegmentId>,
    /// The sampling decision.
    pub sampling: Sampling,
}

impl TraceHeader {
    /// Parses `Root=1-...;Parent=...;Sampled=1` (keys case-insensitive, any order, spaces and
    /// unknown keys such as `Lineage` ignored).
    pub fn parse(value: &str) -> Result<Self, TraceError> {
        let mut root = None;
        let mut parent = None;
        let mut sampling = Sampling::Undecided;
        for part in value.split(';') {
            let Some((key, val)) = part.split_once('=') else {
                continue;
            };
            let (key, val) = (key.trim(), val.trim());
            if key.eq_ignore_ascii_case("root") {
                root = Some(TraceId::parse(val)?);
            } else if key.eq_ignore_ascii_case("parent") {
                parent = Some(SegmentId::parse(val)?);
            } else if key.eq_ignore_ascii_case("sampled") {
                sampling = match val {
                    "1" => Sampling::Sampled,
                    "0" => Sampling::NotSampled,
                    _ => Sampling::Undecided,
                };
            }
        }
        Ok(Self {
            root: root.ok_or(TraceError::MissingRoot)?,
            parent,
            sampling,
        })
    }

    /// Whether documents of ours belong in this trace.
    pub fn is_sampled(&self) -> bool {
        self.sampling == Sampling::Sampled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lambda_invoke_header() {
        let h = TraceHeader::parse(
            "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1",
        )
        .unwrap();
        assert_eq!(h.root.as_str(), "1-5f35ae12-0c0fec141ab77a00bc047aa2");
        assert_eq!(h.parent.unwrap().as_str(), "2be948a625588e32");
        assert!(h.is_sampled());
    }

    #[test]
    fn accepts_any_order_spaces_case_and_lineage() {
        let h = TraceHeader::parse(
            " sampled=0 ; Lineage=a87bd80c:1|68fd508a:5 ; parent=2be948a625588e32; ROOT=1-5f35ae12-0c0fec141ab77a00bc047aa2",
        )
        .unwrap();
        assert_eq!(h.sampling, Sampling::NotSampled);
        assert!(!h.is_sampled());
        assert_eq!(h.parent.unwrap().as_str(), "2be948a625588e32");
    }

    #[test]
    fn undecided_and_missing_parent() {
        let h = TraceHeader::parse("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Sampled=?").unwrap();
        assert_eq!(h.sampling, Sampling::Undecided);
        assert!(h.parent.is_none());
        let h = TraceHeader::parse("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2").unwrap();
        assert_eq!(h.sampling, Sampling::Undecided);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(TraceHeader::parse(""), Err(TraceError::MissingRoot));
        assert_eq!(
            TraceHeader::parse("Parent=2be948a625588e32;Sampled=1"),
            Err(TraceError::MissingRoot)
        );
        assert_eq!(
            TraceHeader::parse("Root=1-5f35ae12-0c0fec141ab77a00bc047aa"),
            Err(TraceError::InvalidTraceId)
        );
        assert_eq!(
            TraceHeader::parse("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=xyz"),
            Err(TraceError::InvalidSegmentId)
        );
    }

    #[test]
    fn trace_id_shape_is_strict() {
        assert!(TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").is_ok());
        for bad in [
            "2-5759e988-bd862e3fe1be46a994272793",
            "1-5759e98g-bd862e3fe1be46a994272793",
            "1_5759e988-bd862e3fe1be46a994272793",
            "1-5759e988-bd862e3fe1be46a99427279",
            "1-5759e988-bd862e3fe1be46a9942727931",
        ] {
            assert_eq!(
                TraceId::parse(bad),
                Err(TraceError::InvalidTraceId),
                "{bad}"
            );
        }
    }

    #[test]
    fn derived_ids_are_stable_distinct_and_valid() {
        let base = SegmentId::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(base.as_u64(), 0x0123_4567_89ab_cdef);
        assert_eq!(base.derived(1), base.derived(1));
        let ids: std::collections::HashSet<SegmentId> =
            (0..1_000).map(|i| base.derived(i)).collect();
        assert_eq!(ids.len(), 1_000);
        assert!(!ids.contains(&base));
        assert!(ids.iter().all(|id| SegmentId::parse(id.as_str()).is_ok()));
        assert_ne!(SegmentId::from_u64(2).derived(1), base.derived(1));
    }

    /// A snapshot copies the id source with the rest of the memory: two copies must still
    /// produce different ids. A seeded generator (here: fastrand, what ids came from before)
    /// fails this; the OS source passes.
    #[test]
    fn copies_of_the_id_source_never_repeat_each_other() {
        const DRAWS: usize = 10_000;
        let seeded = fastrand::Rng::with_seed(7);
        let (mut a, mut b) = (seeded.clone(), seeded);
        let same = (0..DRAWS).filter(|_| a.u64(..) == b.u64(..)).count();
        assert_eq!(same, DRAWS, "the hazard: a copied generator repeats itself");

        let mut original = IdSource::os();
        let _ = original.next_id();
        let mut restored_a = original.clone();
        let mut restored_b = original;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..DRAWS {
            assert!(seen.insert(restored_a.next_id()));
            assert!(seen.insert(restored_b.next_id()));
        }
        assert_eq!(seen.len(), 2 * DRAWS);
    }

    #[test]
    fn a_sequence_is_deterministic_and_never_zero() {
        let mut ids = IdSource::sequence(u64::MAX - 1);
        assert_eq!(ids.next_id().as_str(), "ffffffffffffffff");
        assert_eq!(ids.next_id().as_str(), "0000000000000001");
        assert_eq!(ids.next_id().as_str(), "0000000000000001");
    }

    #[test]
    fn segment_ids_round_trip_from_random_bits() {
        let id = SegmentId::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(id.as_str(), "0123456789abcdef");
        assert_eq!(SegmentId::parse(id.as_str()).unwrap(), id);
        assert_eq!(SegmentId::from_u64(u64::MAX).as_str(), "ffffffffffffffff");
    }

    #[test]
    fn upper_case_hex_is_rejected_like_x_ray_does() {
        assert!(TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").is_ok());
        assert!(TraceId::parse("1-5759E988-bd862e3fe1be46a994272793").is_err());
        assert!(TraceId::parse("1-5759e988-BD862e3fe1be46a994272793").is_err());
        assert!(SegmentId::parse("53995c3f42cd8ad8").is_ok());
        assert!(SegmentId::parse("53995C3F42CD8AD8").is_err());
        let t = TraceId::parse("1-5759e988-bd862e3fe1be46a994272793").unwrap();
        assert_eq!(t.epoch_seconds(), 0x5759_e988);
    }
}
