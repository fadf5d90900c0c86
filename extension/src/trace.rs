//! X-Ray identifiers and the `X-Amzn-Trace-Id` header (`Root=...;Parent=...;Sampled=1`).
//!
//! Pure parsing: no I/O, no clock.

use std::fmt;

/// Length of a trace id: `1-` + 8 hex (epoch seconds) + `-` + 24 hex.
pub const TRACE_ID_LEN: usize = 35;
/// Length of a segment or subsegment id: 16 hex digits.
pub const SEGMENT_ID_LEN: usize = 16;

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
            && b[2..10].iter().all(u8::is_ascii_hexdigit)
            && b[11..].iter().all(u8::is_ascii_hexdigit);
        if !ok {
            return Err(TraceError::InvalidTraceId);
        }
        let mut out = [0; TRACE_ID_LEN];
        out.copy_from_slice(b);
        Ok(Self(out))
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

/// A validated segment/subsegment id (16 hex digits), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentId([u8; SEGMENT_ID_LEN]);

impl SegmentId {
    /// Parses `53995c3f42cd8ad8`.
    pub fn parse(s: &str) -> Result<Self, TraceError> {
        let b = s.as_bytes();
        if b.len() != SEGMENT_ID_LEN || !b.iter().all(u8::is_ascii_hexdigit) {
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
    fn segment_ids_round_trip_from_random_bits() {
        let id = SegmentId::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(id.as_str(), "0123456789abcdef");
        assert_eq!(SegmentId::parse(id.as_str()).unwrap(), id);
        assert_eq!(SegmentId::from_u64(u64::MAX).as_str(), "ffffffffffffffff");
    }
}
