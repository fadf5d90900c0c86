//! The OTLP JSON mapping, turned into protobuf: lowerCamelCase (or proto) field names, trace
//! and span ids as hex, other bytes as base64, enums as integers, 64-bit integers as numbers or
//! decimal strings. Unknown fields are ignored, as the specification asks of receivers. The
//! result is then checked like any protobuf request. Pure: no I/O but the reader it is given.
//!
//! Streaming: a serde visitor over the JSON writes each field's protobuf as it is read, so no
//! tree of JSON values is ever built and the memory it needs follows its output, not the number
//! of values sent (8 million zeros in an ignored field cost nothing). The output grows only
//! with the room its [`Room`] grants. A nested message is written in place behind a one-byte
//! length, widened once its length is known (most messages are shorter than 128 bytes).

use std::io::Read;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};

use super::schema::{FieldDef, Kind, REQUEST, Schema};
use super::{MAX_NESTING_DEPTH, OtlpError, wire};

/// Grants the output the memory it grows into.
pub trait Room {
    /// Whether the output may take `additional` more bytes.
    fn grow(&mut self, additional: usize) -> bool;

    /// Gives back `bytes` granted before.
    fn release(&mut self, _bytes: usize) {}
}

/// Room without limit, for callers that bound their input otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbounded;

impl Room for Unbounded {
    fn grow(&mut self, _additional: usize) -> bool {
        true
    }
}

/// Converts an OTLP JSON `ExportTraceServiceRequest` into its protobuf encoding.
pub fn to_protobuf(json: &[u8]) -> Result<Vec<u8>, OtlpError> {
    decode_slice(json, &mut Unbounded)
}

/// [`to_protobuf`], growing the output only as `room` allows ([`OtlpError::NoRoom`] when it
/// refuses).
pub fn decode_slice(json: &[u8], room: &mut dyn Room) -> Result<Vec<u8>, OtlpError> {
    run(serde_json::Deserializer::from_slice(json), room)
}

/// [`decode_slice`] of the JSON read from `reader` (buffer it: it is read byte by byte). A read
/// error is [`OtlpError::Json`]; the reader knows why it failed.
pub fn decode_reader<R: Read>(reader: R, room: &mut dyn Room) -> Result<Vec<u8>, OtlpError> {
    run(serde_json::Deserializer::from_reader(reader), room)
}

fn run<'de, R: serde_json::de::Read<'de>>(
    mut json: serde_json::Deserializer<R>,
    room: &mut dyn Room,
) -> Result<Vec<u8>, OtlpError> {
    let mut encoder = Encoder {
        out: Vec::new(),
        room,
        failure: None,
    };
    let result = MessageSeed {
        encoder: &mut encoder,
        schema: &REQUEST,
        depth: 0,
    }
    .deserialize(&mut json)
    .and_then(|()| json.end());
    match (result, encoder.failure) {
        (Ok(()), _) => Ok(encoder.out),
        (Err(_), Some(failure)) => Err(failure),
        (Err(_), None) => Err(OtlpError::Json),
    }
}

struct Encoder<'r> {
    out: Vec<u8>,
    room: &'r mut dyn Room,
    /// Why the visitor stopped, when it was our decision rather than the JSON's syntax.
    failure: Option<OtlpError>,
}

impl Encoder<'_> {
    /// Records `failure` (the first one wins) and stops the deserializer.
    fn fail<E: de::Error>(&mut self, failure: OtlpError) -> E {
        self.failure.get_or_insert(failure);
        E::custom(failure)
    }

    /// Capacity for `additional` more bytes, asked of the room first.
    fn reserve<E: de::Error>(&mut self, additional: usize) -> Result<(), E> {
        let needed = self.out.len().saturating_add(additional);
        let capacity = self.out.capacity();
        if needed <= capacity {
            return Ok(());
        }
        // Twice the capacity, else a quarter more, else what this write needs (rounded up to
        // a page): few reallocations, and none per write near the room's end. The new buffer
        // is granted whole, since the old one is held until the contents move; then the old
        // one is given back.
        let steps = [
            capacity.saturating_mul(2),
            capacity.saturating_add(capacity / 4),
            needed.next_multiple_of(4096),
        ];
        for target in steps {
            let target = target.max(needed).max(256);
            if self.room.grow(target) {
                self.out.reserve_exact(target - self.out.len());
                self.room.release(capacity);
                return Ok(());
            }
        }
        Err(self.fail(OtlpError::NoRoom))
    }

    /// Opens a nested message field: its key and a one-byte length to patch. Returns where its
    /// payload starts.
    fn open<E: de::Error>(&mut self, number: u32) -> Result<usize, E> {
        self.reserve(16)?;
        wire::put_varint(&mut self.out, u64::from(number) << 3 | 2);
        self.out.push(0);
        Ok(self.out.len())
    }

    /// Writes the length of the message whose payload starts at `start`, widening it in place.
    fn close<E: de::Error>(&mut self, start: usize) -> Result<(), E> {
        let len = self.out.len() - start;
        let mut header = Vec::with_capacity(10);
        wire::put_varint(&mut header, len as u64);
        self.reserve(header.len() - 1)?;
        self.out[start - 1] = header[0];
        if header.len() > 1 {
            self.out.splice(start..start, header[1..].iter().copied());
        }
        Ok(())
    }
}

/// A message, read from a JSON object.
struct MessageSeed<'e, 'r> {
    encoder: &'e mut Encoder<'r>,
    schema: &'static Schema,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for MessageSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth > MAX_NESTING_DEPTH {
            return Err(self.encoder.fail(OtlpError::TooDeep));
        }
        while let Some(def) = map.next_key_seed(KeySeed(self.schema))? {
            let Some(def) = def else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            map.next_value_seed(FieldSeed {
                encoder: self.encoder,
                schema: self.schema,
                def,
                depth: self.depth,
                item: false,
            })?;
        }
        Ok(())
    }
}

/// A key: the field it names in `schema`, `None` for a field we do not know.
struct KeySeed(&'static Schema);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<&'static FieldDef>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl de::Visitor<'_> for KeySeed {
    type Value = Option<&'static FieldDef>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.by_json_name(name))
    }
}

/// One field's value: `null` (absent), an array of items for a repeated field, or one item.
struct FieldSeed<'e, 'r> {
    encoder: &'e mut Encoder<'r>,
    schema: &'static Schema,
    def: &'static FieldDef,
    depth: usize,
    /// Reading one item of a repeated field's array (or a singular field's value).
    item: bool,
}

impl FieldSeed<'_, '_> {
    fn invalid<E: de::Error>(self) -> E {
        self.encoder.fail(OtlpError::InvalidField {
            message: self.schema.name,
            field: self.def.json,
        })
    }

    /// Whether this value must be an array (a repeated field, not yet inside its array).
    fn wants_array(&self) -> bool {
        self.def.repeated && !self.item
    }

    /// A JSON number or boolean: never where an array is due.
    fn number<E: de::Error>(self, value: Scalar) -> Result<(), E> {
        if self.wants_array() {
            Err(self.invalid())
        } else {
            self.scalar(value)
        }
    }

    /// Writes a number or boolean as the field's kind requires.
    fn scalar<E: de::Error>(self, value: Scalar) -> Result<(), E> {
        let number = self.def.number;
        let written = match (self.def.kind, value) {
            (Kind::Int64, Scalar::Int(n)) => i64::try_from(n)
                .ok()
                .map(|n| Encoded::Varint(u64::from_ne_bytes(n.to_ne_bytes()))),
            (Kind::Uint32, Scalar::Int(n)) => {
                u32::try_from(n).ok().map(|n| Encoded::Varint(n.into()))
            }
            (Kind::Fixed64, Scalar::Int(n)) => u64::try_from(n).ok().map(Encoded::Fixed64),
            (Kind::Fixed32, Scalar::Int(n)) => u32::try_from(n).ok().map(Encoded::Fixed32),
            (Kind::Double, Scalar::Int(n)) => Some(Encoded::Fixed64(lossy_f64(n).to_bits())),
            (Kind::Double, Scalar::Float(d)) => Some(Encoded::Fixed64(d.to_bits())),
            (Kind::Bool, Scalar::Bool(b)) => Some(Encoded::Varint(u64::from(b))),
            _ => None,
        };
        let Some(written) = written else {
            return Err(self.invalid());
        };
        self.encoder.reserve(16)?;
        let out = &mut self.encoder.out;
        match written {
            Encoded::Varint(v) => wire::put_varint_field(out, number, v),
            Encoded::Fixed64(v) => wire::put_fixed64(out, number, v),
            Encoded::Fixed32(v) => wire::put_fixed32(out, number, v),
        }
        Ok(())
    }

    /// Writes a string as the field's kind requires.
    fn text<E: de::Error>(self, text: &str) -> Result<(), E> {
        if self.wants_array() {
            return Err(self.invalid());
        }
        let number = self.def.number;
        match self.def.kind {
            Kind::Str => {
                self.encoder.reserve(text.len() + 16)?;
                wire::put_len(&mut self.encoder.out, number, text.as_bytes());
                Ok(())
            }
            Kind::HexBytes => {
                let Some(len) = hex_len(text) else {
                    return Err(self.invalid());
                };
                if len > 0 {
                    self.encoder.reserve(len + 16)?;
                    wire::put_len_header(&mut self.encoder.out, number, len);
                    put_hex(&mut self.encoder.out, text);
                }
                Ok(())
            }
            Kind::Base64Bytes => {
                let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(text) else {
                    return Err(self.invalid());
                };
                self.encoder.reserve(bytes.len() + 16)?;
                wire::put_len(&mut self.encoder.out, number, &bytes);
                Ok(())
            }
            // A decimal string, as the mapping writes 64-bit integers (any width accepted),
            // read as the field's own type.
            Kind::Int64 => self.decimal(text.parse::<i64>().map(i128::from).ok()),
            Kind::Uint32 | Kind::Fixed32 => self.decimal(text.parse::<u32>().map(i128::from).ok()),
            Kind::Fixed64 => self.decimal(text.parse::<u64>().map(i128::from).ok()),
            Kind::Double => match text {
                "NaN" => self.scalar(Scalar::Float(f64::NAN)),
                "Infinity" => self.scalar(Scalar::Float(f64::INFINITY)),
                "-Infinity" => self.scalar(Scalar::Float(f64::NEG_INFINITY)),
                other => match other.parse::<f64>() {
                    Ok(d) => self.scalar(Scalar::Float(d)),
                    Err(_) => Err(self.invalid()),
                },
            },
            Kind::Bool | Kind::Message(_) => Err(self.invalid()),
        }
    }
}

impl FieldSeed<'_, '_> {
    fn decimal<E: de::Error>(self, value: Option<i128>) -> Result<(), E> {
        match value {
            Some(n) => self.scalar(Scalar::Int(n)),
            None => Err(self.invalid()),
        }
    }
}

/// A JSON number or boolean, before the field's kind says how it is written.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Int(i128),
    Float(f64),
    Bool(bool),
}

enum Encoded {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a JSON integer given for a double is converted as JSON readers do"
)]
fn lossy_f64(n: i128) -> f64 {
    n as f64
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema.name, self.def.json)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // `null` stands for an absent field, but not for an item of an array.
        if self.item && self.def.repeated {
            Err(self.invalid())
        } else {
            Ok(())
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.number(Scalar::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.number(Scalar::Int(i128::from(n)))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.number(Scalar::Int(i128::from(n)))
    }

    fn visit_f64<E: de::Error>(self, d: f64) -> Result<(), E> {
        // A fraction or an exponent: only a double takes it.
        if matches!(self.def.kind, Kind::Double) {
            self.number(Scalar::Float(d))
        } else {
            Err(self.invalid())
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.text(text)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.wants_array() {
            return Err(self.invalid());
        }
        while seq
            .next_element_seed(FieldSeed {
                encoder: &mut *self.encoder,
                schema: self.schema,
                def: self.def,
                depth: self.depth,
                item: true,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Kind::Message(inner) = self.def.kind else {
            return Err(self.invalid());
        };
        if self.wants_array() {
            return Err(self.invalid());
        }
        let start = self.encoder.open(self.def.number)?;
        de::Visitor::visit_map(
            MessageSeed {
                encoder: &mut *self.encoder,
                schema: inner,
                depth: self.depth + 1,
            },
            map,
        )?;
        self.encoder.close(start)
    }
}

/// The number of bytes hex `text` decodes to; `None` for an odd length or a non-hex digit.
fn hex_len(text: &str) -> Option<usize> {
    let digits = text.as_bytes();
    (digits.len().is_multiple_of(2) && digits.iter().all(u8::is_ascii_hexdigit))
        .then_some(digits.len() / 2)
}

/// Appends the bytes of hex `text` (checked by [`hex_len`]).
fn put_hex(out: &mut Vec<u8>, text: &str) {
    let nibble = |d: u8| {
        char::from(d)
            .to_digit(16)
            .and_then(|n| u8::try_from(n).ok())
            .unwrap_or(0)
    };
    out.extend(
        text.as_bytes()
            .chunks_exact(2)
            .map(|pair| nibble(pair[0]) << 4 | nibble(pair[1])),
    );
}

#[cfg(test)]
mod tests;
