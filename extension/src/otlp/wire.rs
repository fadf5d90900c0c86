//! The protobuf wire format, the little of it OTLP traces need: varints, fixed 32/64-bit values
//! and length-delimited fields, read without copying and written into a `Vec<u8>`.
//!
//! Hand-written rather than generated (prost, opentelemetry-proto) for the binary's size: the
//! layer's `x86_64` binary must stay under 5 MiB, and we never need typed messages, only to check
//! a request's shape, find each span and copy resource, scope and span bytes verbatim. The tests
//! crate decodes our output with prost, independently. Pure: no I/O.

use super::OtlpError;

/// The wire type of a field (the low three bits of its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// 0: a base-128 varint.
    Varint,
    /// 1: eight little-endian bytes.
    Fixed64,
    /// 2: a varint length, then that many bytes.
    Len,
    /// 5: four little-endian bytes.
    Fixed32,
}

/// One field of a message: its number and its value's bytes (a varint's encoded bytes, the
/// fixed bytes, or a length-delimited field's payload without the length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// How the value is encoded.
    pub wire_type: WireType,
    /// The value's bytes.
    pub value: &'a [u8],
    /// The varint's value, for [`WireType::Varint`]; 0 otherwise.
    pub varint: u64,
}

/// Iterates over the fields of one message; a malformed field ends it with an error.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of `message`.
    pub fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, OtlpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = read_field(self.rest);
        match item {
            Ok((field, rest)) => {
                self.rest = rest;
                Some(Ok(field))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn read_field(input: &[u8]) -> Result<(Field<'_>, &[u8]), OtlpError> {
    let (key, rest) = read_varint(input)?;
    let number = u32::try_from(key >> 3).map_err(|_| OtlpError::Malformed)?;
    // Field numbers run from 1 to 2^29 - 1.
    if number == 0 || number >= 1 << 29 {
        return Err(OtlpError::Malformed);
    }
    let (wire_type, value, varint, rest) = match key & 7 {
        0 => {
            let (v, after) = read_varint(rest)?;
            let used = rest.len() - after.len();
            (WireType::Varint, &rest[..used], v, after)
        }
        1 => {
            let (value, after) = split(rest, 8)?;
            (WireType::Fixed64, value, 0, after)
        }
        2 => {
            let (len, after) = read_varint(rest)?;
            let len = usize::try_from(len).map_err(|_| OtlpError::Malformed)?;
            let (value, after) = split(after, len)?;
            (WireType::Len, value, 0, after)
        }
        5 => {
            let (value, after) = split(rest, 4)?;
            (WireType::Fixed32, value, 0, after)
        }
        // 3 and 4 are the deprecated groups, which OTLP never uses; 6 and 7 do not exist.
        _ => return Err(OtlpError::Malformed),
    };
    Ok((
        Field {
            number,
            wire_type,
            value,
            varint,
        },
        rest,
    ))
}

fn split(input: &[u8], n: usize) -> Result<(&[u8], &[u8]), OtlpError> {
    if input.len() < n {
        return Err(OtlpError::Malformed);
    }
    Ok(input.split_at(n))
}

/// Reads one varint (at most ten bytes, the last carrying at most one bit).
pub fn read_varint(input: &[u8]) -> Result<(u64, &[u8]), OtlpError> {
    let mut value = 0_u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Err(OtlpError::Malformed);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, &input[i + 1..]));
        }
    }
    Err(OtlpError::Malformed)
}

/// Appends a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit.
        out.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// Bytes a varint of `value` takes.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn key(number: u32, wire_type: WireType) -> u64 {
    let t = match wire_type {
        WireType::Varint => 0,
        WireType::Fixed64 => 1,
        WireType::Len => 2,
        WireType::Fixed32 => 5,
    };
    (u64::from(number) << 3) | t
}

/// Appends a length-delimited field.
pub fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, key(number, WireType::Len));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends the key and length of a length-delimited field whose payload follows.
pub fn put_len_header(out: &mut Vec<u8>, number: u32, len: usize) {
    put_varint(out, key(number, WireType::Len));
    put_varint(out, len as u64);
}

/// Bytes a length-delimited field with a payload of `len` bytes takes.
pub fn len_field_size(number: u32, len: usize) -> usize {
    varint_len(key(number, WireType::Len)) + varint_len(len as u64) + len
}

/// Appends a varint field.
pub fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, key(number, WireType::Varint));
    put_varint(out, value);
}

/// Appends a fixed 64-bit field.
pub fn put_fixed64(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, key(number, WireType::Fixed64));
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a fixed 32-bit field.
pub fn put_fixed32(out: &mut Vec<u8>, number: u32, value: u32) {
    put_varint(out, key(number, WireType::Fixed32));
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_sizes_agree() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&out), Ok((v, &[][..])), "{v}");
        }
    }

    #[test]
    fn malformed_varints_are_refused() {
        assert_eq!(read_varint(&[]), Err(OtlpError::Malformed));
        assert_eq!(read_varint(&[0x80]), Err(OtlpError::Malformed));
        // Eleven bytes, and ten whose last carries more than the 64th bit.
        assert_eq!(read_varint(&[0xff; 11]), Err(OtlpError::Malformed));
        let mut ten = vec![0xff; 9];
        ten.push(0x02);
        assert_eq!(read_varint(&ten), Err(OtlpError::Malformed));
    }

    #[test]
    fn fields_of_each_wire_type() {
        let mut m = Vec::new();
        put_varint_field(&mut m, 1, 150);
        put_fixed64(&mut m, 2, 7);
        put_len(&mut m, 3, b"abc");
        put_fixed32(&mut m, 4, 9);
        let fields: Vec<Field<'_>> = Fields::new(&m).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields.len(), 4);
        assert_eq!((fields[0].number, fields[0].varint), (1, 150));
        assert_eq!(fields[1].value, 7_u64.to_le_bytes());
        assert_eq!(fields[2].value, b"abc");
        assert_eq!(fields[3].wire_type, WireType::Fixed32);
        assert_eq!(len_field_size(3, 3), 5);
    }

    #[test]
    fn truncated_fields_groups_and_field_zero_are_refused() {
        for bad in [
            &[0x1a, 0x05, b'a'][..], // length beyond the end
            &[0x09, 1, 2, 3][..],    // fixed64 cut short
            &[0x0b][..],             // start group
            &[0x0e, 0][..],          // wire type 6
            &[0x02, 0][..],          // field 0
        ] {
            let r: Result<Vec<_>, _> = Fields::new(bad).collect();
            assert_eq!(r, Err(OtlpError::Malformed), "{bad:?}");
        }
    }
}
