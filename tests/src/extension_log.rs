//! Reading what the extension under test logged (captured by the emulator).

use std::collections::HashMap;

use crate::emulator::Emulator;

/// The extension's name in the Extensions API (its file name).
pub const EXTENSION: &str = "xray-extension";

/// The last `counters` line the extension logged at shutdown, as key → number (`None` when it
/// logged none).
pub fn counters(lambda: &Emulator) -> Option<HashMap<String, u64>> {
    let line = lambda
        .output(EXTENSION)
        .into_iter()
        .rev()
        .find(|l| l.contains("counters"))?;
    Some(parse_fields(&line))
}

/// The numeric `key=value` fields of a log line.
pub fn parse_fields(line: &str) -> HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_of_a_counters_line() {
        let f = parse_fields(" INFO counters received=12 sent=15 reason=spindown peak_rss_kb=7000");
        assert_eq!(f["received"], 12);
        assert_eq!(f["sent"], 15);
        assert_eq!(f["peak_rss_kb"], 7000);
        assert!(!f.contains_key("reason"));
    }
}
