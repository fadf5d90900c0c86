//! The OTLP trace messages, as tables: field number, JSON name and kind. One table drives both
//! the protobuf shape check and the OTLP JSON → protobuf conversion (`opentelemetry-proto`
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`).

use super::wire::WireType;

/// What a field holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A nested message.
    Message(&'static Schema),
    /// UTF-8 text.
    Str,
    /// Bytes written as hex in JSON (trace and span ids).
    HexBytes,
    /// Bytes written as base64 in JSON.
    Base64Bytes,
    /// `int64`, a varint (JSON: a number or a decimal string).
    Int64,
    /// `uint32` or an enum, a varint (JSON: a number).
    Uint32,
    /// `bool`, a varint (JSON: true or false).
    Bool,
    /// `fixed64` (JSON: a number or a decimal string).
    Fixed64,
    /// `double`, eight bytes (JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`).
    Double,
    /// `fixed32` (JSON: a number).
    Fixed32,
}

impl Kind {
    /// The wire type the field is encoded with.
    pub fn wire_type(self) -> WireType {
        match self {
            Self::Message(_) | Self::Str | Self::HexBytes | Self::Base64Bytes => WireType::Len,
            Self::Int64 | Self::Uint32 | Self::Bool => WireType::Varint,
            Self::Fixed64 | Self::Double => WireType::Fixed64,
            Self::Fixed32 => WireType::Fixed32,
        }
    }
}

/// One field of a message.
#[derive(Debug)]
pub struct FieldDef {
    /// Its number.
    pub number: u32,
    /// Its name in the OTLP JSON mapping (lowerCamelCase).
    pub json: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether it may appear more than once.
    pub repeated: bool,
}

/// A message: its fields. Fields not listed are skipped (newer OTLP versions add fields).
#[derive(Debug)]
pub struct Schema {
    /// The message's name, for errors.
    pub name: &'static str,
    /// Its fields.
    pub fields: &'static [FieldDef],
}

impl Schema {
    /// The field with this number.
    pub fn by_number(&self, number: u32) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.number == number)
    }

    /// The field with this JSON name (lowerCamelCase, or the proto name, which the OTLP JSON
    /// mapping also accepts).
    pub fn by_json_name(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields
            .iter()
            .find(|f| f.json == name || snake_equals(f.json, name))
    }
}

/// Whether `snake` is the `snake_case` spelling of the `lowerCamelCase` name `camel`.
fn snake_equals(camel: &str, snake: &str) -> bool {
    let mut s = snake.bytes();
    for c in camel.bytes() {
        if c.is_ascii_uppercase() {
            if s.next() != Some(b'_') || s.next() != Some(c.to_ascii_lowercase()) {
                return false;
            }
        } else if s.next() != Some(c) {
            return false;
        }
    }
    s.next().is_none()
}

const fn one(number: u32, json: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        number,
        json,
        kind,
        repeated: false,
    }
}

const fn many(number: u32, json: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        number,
        json,
        kind,
        repeated: true,
    }
}

/// `ExportTraceServiceRequest`.
pub static REQUEST: Schema = Schema {
    name: "ExportTraceServiceRequest",
    fields: &[many(1, "resourceSpans", Kind::Message(&RESOURCE_SPANS))],
};

/// `ResourceSpans`.
pub static RESOURCE_SPANS: Schema = Schema {
    name: "ResourceSpans",
    fields: &[
        one(1, "resource", Kind::Message(&RESOURCE)),
        many(2, "scopeSpans", Kind::Message(&SCOPE_SPANS)),
        one(3, "schemaUrl", Kind::Str),
    ],
};

/// `Resource`.
pub static RESOURCE: Schema = Schema {
    name: "Resource",
    fields: &[
        many(1, "attributes", Kind::Message(&KEY_VALUE)),
        one(2, "droppedAttributesCount", Kind::Uint32),
    ],
};

/// `ScopeSpans`.
pub static SCOPE_SPANS: Schema = Schema {
    name: "ScopeSpans",
    fields: &[
        one(1, "scope", Kind::Message(&SCOPE)),
        many(2, "spans", Kind::Message(&SPAN)),
        one(3, "schemaUrl", Kind::Str),
    ],
};

/// `InstrumentationScope`.
pub static SCOPE: Schema = Schema {
    name: "InstrumentationScope",
    fields: &[
        one(1, "name", Kind::Str),
        one(2, "version", Kind::Str),
        many(3, "attributes", Kind::Message(&KEY_VALUE)),
        one(4, "droppedAttributesCount", Kind::Uint32),
    ],
};

/// `Span` field numbers the ingest path reads.
pub mod span {
    /// `trace_id`: 16 bytes.
    pub const TRACE_ID: u32 = 1;
    /// `span_id`: 8 bytes.
    pub const SPAN_ID: u32 = 2;
    /// `parent_span_id`: empty or 8 bytes.
    pub const PARENT_SPAN_ID: u32 = 4;
}

/// `Span`.
pub static SPAN: Schema = Schema {
    name: "Span",
    fields: &[
        one(span::TRACE_ID, "traceId", Kind::HexBytes),
        one(span::SPAN_ID, "spanId", Kind::HexBytes),
        one(3, "traceState", Kind::Str),
        one(span::PARENT_SPAN_ID, "parentSpanId", Kind::HexBytes),
        one(5, "name", Kind::Str),
        one(6, "kind", Kind::Uint32),
        one(7, "startTimeUnixNano", Kind::Fixed64),
        one(8, "endTimeUnixNano", Kind::Fixed64),
        many(9, "attributes", Kind::Message(&KEY_VALUE)),
        one(10, "droppedAttributesCount", Kind::Uint32),
        many(11, "events", Kind::Message(&EVENT)),
        one(12, "droppedEventsCount", Kind::Uint32),
        many(13, "links", Kind::Message(&LINK)),
        one(14, "droppedLinksCount", Kind::Uint32),
        one(15, "status", Kind::Message(&STATUS)),
        one(16, "flags", Kind::Fixed32),
    ],
};

/// `Span.Event`.
pub static EVENT: Schema = Schema {
    name: "Span.Event",
    fields: &[
        one(1, "timeUnixNano", Kind::Fixed64),
        one(2, "name", Kind::Str),
        many(3, "attributes", Kind::Message(&KEY_VALUE)),
        one(4, "droppedAttributesCount", Kind::Uint32),
    ],
};

/// `Span.Link`.
pub static LINK: Schema = Schema {
    name: "Span.Link",
    fields: &[
        one(1, "traceId", Kind::HexBytes),
        one(2, "spanId", Kind::HexBytes),
        one(3, "traceState", Kind::Str),
        many(4, "attributes", Kind::Message(&KEY_VALUE)),
        one(5, "droppedAttributesCount", Kind::Uint32),
        one(6, "flags", Kind::Fixed32),
    ],
};

/// `Status`.
pub static STATUS: Schema = Schema {
    name: "Status",
    fields: &[one(2, "message", Kind::Str), one(3, "code", Kind::Uint32)],
};

/// `KeyValue`.
pub static KEY_VALUE: Schema = Schema {
    name: "KeyValue",
    fields: &[
        one(1, "key", Kind::Str),
        one(2, "value", Kind::Message(&ANY_VALUE)),
    ],
};

/// `AnyValue` (a oneof: at most one of these is set).
pub static ANY_VALUE: Schema = Schema {
    name: "AnyValue",
    fields: &[
        one(1, "stringValue", Kind::Str),
        one(2, "boolValue", Kind::Bool),
        one(3, "intValue", Kind::Int64),
        one(4, "doubleValue", Kind::Double),
        one(5, "arrayValue", Kind::Message(&ARRAY_VALUE)),
        one(6, "kvlistValue", Kind::Message(&KEY_VALUE_LIST)),
        one(7, "bytesValue", Kind::Base64Bytes),
    ],
};

/// `ArrayValue`.
pub static ARRAY_VALUE: Schema = Schema {
    name: "ArrayValue",
    fields: &[many(1, "values", Kind::Message(&ANY_VALUE))],
};

/// `KeyValueList`.
pub static KEY_VALUE_LIST: Schema = Schema {
    name: "KeyValueList",
    fields: &[many(1, "values", Kind::Message(&KEY_VALUE))],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_in_camel_and_snake_case() {
        assert_eq!(SPAN.by_json_name("traceId").map(|f| f.number), Some(1));
        assert_eq!(SPAN.by_json_name("trace_id").map(|f| f.number), Some(1));
        assert_eq!(
            SPAN.by_json_name("start_time_unix_nano").map(|f| f.number),
            Some(7)
        );
        assert!(SPAN.by_json_name("traceid").is_none());
        assert!(SPAN.by_json_name("trace_id_").is_none());
        assert!(SPAN.by_json_name("trace_Id").is_none());
        assert!(SPAN.by_number(99).is_none());
    }
}
