//! The environment as a lookup from a variable's name to its value: the process's, or fixed
//! pairs in tests. Configuration ([`crate::config`]) and the backends' service settings
//! ([`crate::export`]) both read variables through such a lookup, never `std::env` directly.

/// A variable of the process's environment (`None` when unset or not Unicode).
pub fn process(variable: &str) -> Option<String> {
    std::env::var(variable).ok()
}

/// A lookup over fixed `(variable, value)` pairs, standing in for the environment in tests.
#[cfg(test)]
pub(crate) fn lookup_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}
