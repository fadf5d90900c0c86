//! Looks at JSON text without parsing it: the bytes outside its strings, for cheap bounds
//! (nesting depth, number of values) checked before a parser builds anything (pure).

/// The bytes of `json` outside its strings (the quotes themselves left out); escaped quotes
/// inside a string do not end it.
pub fn outside_strings(json: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    json.iter().copied().filter(move |&b| {
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
}
