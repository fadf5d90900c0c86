//! Looks at JSON text without parsing it: the bytes outside its strings, for cheap bounds
//! (nesting depth, number of values) checked before a parser builds anything (pure).

/// The bytes of `json` outside its strings (the quotes themselves left out); escaped quotes
/// inside a string do not end it.
pub fn outside_strings(json: &[u8]) -> impl Iterator<Item = u8> + '_ {
    outside_strings_at(json).map(|(_, b)| b)
}

/// The same bytes with their offsets in `json`.
fn outside_strings_at(json: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    json.iter().copied().enumerate().filter(move |&(_, b)| {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            false
        } else if b == b'"' {
            in_string = true;
            false
        } else {
            true
        }
    })
}

/// The elements of a JSON array, as far as its separators say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayElements {
    /// How many there are (separators at the array's own level, plus one unless empty).
    pub count: usize,
    /// Bytes of the largest one, separators and surrounding white space included.
    pub largest: usize,
}

/// The elements of the array `json` is, found by its separators outside strings and nested
/// values (without reading them); an array cut short counts what it has. Text that is not an
/// array counts as one element of its whole size.
pub fn array_elements(json: &[u8]) -> ArrayElements {
    let whole = ArrayElements {
        count: 1,
        largest: json.len(),
    };
    let Some(open) = json.iter().position(|c| !c.is_ascii_whitespace()) else {
        return whole;
    };
    if json[open] != b'[' {
        return whole;
    }
    let array = &json[open..];
    let has_content = |from: usize, to: usize| {
        array
            .get(from + 1..to)
            .is_some_and(|s| s.iter().any(|c| !c.is_ascii_whitespace()))
    };
    let (mut depth, mut count, mut largest, mut start) = (0_usize, 0_usize, 0_usize, 0_usize);
    for (at, b) in outside_strings_at(array) {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if has_content(start, at) {
                        count += 1;
                        largest = largest.max(at - start);
                    }
                    return ArrayElements { count, largest };
                }
            }
            b',' if depth == 1 => {
                count += 1;
                largest = largest.max(at - start);
                start = at;
            }
            _ => {}
        }
    }
    if has_content(start, array.len()) {
        count += 1;
        largest = largest.max(array.len() - start);
    }
    ArrayElements { count, largest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_their_escaped_quotes_are_skipped() {
        let cases: [(&str, &str); 5] = [
            (r#"{"a":[1,2]}"#, "{:[1,2]}"),
            (r#"["{[,", 3]"#, "[, 3]"),
            (r#"{"k\"{":"v\\"}"#, "{:}"),
            (r#""unterminated {"#, ""),
            ("", ""),
        ];
        for (json, want) in cases {
            let got: Vec<u8> = outside_strings(json.as_bytes()).collect();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{json}");
        }
    }

    #[test]
    fn array_elements_are_counted_by_their_own_separators() {
        let cases: [(&str, usize, usize); 9] = [
            ("[]", 0, 0),
            (" [ ] ", 0, 0),
            ("[1,22,3]", 3, 3),
            (r#"[{"a":[1,2,3]},"x,y"]"#, 2, 14),
            (r#"["a\"]\",b"]"#, 1, 11),
            ("[{},{},", 2, 3),
            ("[{},{},{", 3, 3),
            (r#"{"a":1}"#, 1, 7),
            ("", 1, 0),
        ];
        for (json, count, largest) in cases {
            assert_eq!(
                array_elements(json.as_bytes()),
                ArrayElements { count, largest },
                "{json}"
            );
        }
    }
}
