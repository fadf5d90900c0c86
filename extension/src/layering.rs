//! The layering check: no import circle between modules.
//!
//! Every path into the crate (`crate::…`, `super::…`, `self::…`, in `use` items and inline, in
//! tests too) is an edge from the module whose file holds it to the module it names. Two
//! modules are compared at the level where their paths part: `ingest::udp` naming
//! `export::budget` is an edge `ingest` → `export`; `export::send` naming `super::batcher` is
//! `export::send` → `export::batcher`. A child naming its parent (or an item of it) is no edge
//! between siblings. The edges among the children of each module must not form a circle (the
//! README's module map says which layer may use which, and no top-level module may use one the
//! README puts on a line above its own). Comment lines are skipped; a file's module is taken from
//! its path, inline modules (`mod tests { … }`) count as their file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where one edge was seen: file and line.
type Sites = BTreeMap<(String, String), Vec<String>>;

/// The module path of a source file relative to `src`: `export/xray/client.rs` →
/// `[export, xray, client]`, `export/mod.rs` → `[export]`, `lib.rs` → `[]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a `use` tree or an inline path starting at `text` names, each as segments: `a::{b,
/// c::d}` → `[a, b]`, `[a, c, d]` (names after the first level of a group are kept, deeper
/// groups stop at their first level: the module is all that matters).
fn paths_at(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    walk(text, Vec::new(), &mut out);
    out
}

fn walk(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if !ident.is_empty() {
            rest = &rest[ident.len()..];
            path.push(ident);
            match rest.strip_prefix("::") {
                Some(after) => rest = after,
                None => break,
            }
        } else if let Some(group) = rest.strip_prefix('{') {
            for item in split_group(group) {
                walk(item.trim_start(), path.clone(), out);
            }
            return;
        } else {
            break;
        }
    }
    out.push(path);
}

/// The top-level items of a `{…}` group (text after the `{`), up to its closing brace.
fn split_group(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// Every path into the crate that `source` (the file of module `module`) names, resolved to
/// absolute segments, with its line number.
fn references(module: &[String], source: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    // A `use` item may span lines: join each statement-ish run so groups stay whole.
    let mut joined = String::new();
    let mut starts = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        starts.push((joined.len(), n + 1));
        joined.push_str(trimmed);
        joined.push(' ');
    }
    let line_at = |offset: usize| {
        let i = starts.partition_point(|&(at, _)| at <= offset);
        starts.get(i.saturating_sub(1)).map_or(0, |&(_, n)| n)
    };
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = joined[from..].find(root) {
            let at = from + found;
            from = at + root.len();
            let before = joined[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let mut base: Vec<String> = match root {
                "crate::" => Vec::new(),
                "self::" => module.to_vec(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            let mut rest = &joined[from..];
            if root == "super::" {
                while let Some(after) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = after;
                }
            }
            for path in paths_at(rest) {
                let mut target = base.clone();
                target.extend(path);
                out.push((line_at(at), target));
            }
        }
    }
    out
}

/// The edges between sibling modules: for each reference, the two children of the deepest
/// module both paths share, when the target's child is a module.
fn edges(files: &[(PathBuf, String)]) -> Sites {
    let parsed: Vec<(String, Vec<String>, &str)> = files
        .iter()
        .map(|(p, s)| (p.display().to_string(), module_of(p), s.as_str()))
        .collect();
    let modules: BTreeSet<Vec<String>> = parsed
        .iter()
        .flat_map(|(_, m, _)| (1..=m.len()).map(|n| m[..n].to_vec()))
        .collect();
    let mut sites = Sites::new();
    for (file, module, source) in &parsed {
        for (line, target) in references(module, source) {
            let shared = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if shared >= module.len() || shared >= target.len() {
                continue;
            }
            if !modules.contains(&target[..=shared]) {
                continue;
            }
            let from = module[..=shared].join("::");
            let to = target[..=shared].join("::");
            let at = format!("{file}:{line}");
            let seen = sites.entry((from, to)).or_default();
            if seen.last() != Some(&at) {
                seen.push(at);
            }
        }
    }
    sites
}

/// The circles among the edges: each strongly connected set of more than one module, with
/// the edges inside it and where they are.
fn circles<'a>(sites: &'a Sites) -> Vec<String> {
    let nodes: BTreeSet<&'a String> = sites.keys().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &'a String| {
        let mut seen = BTreeSet::from([from]);
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for (a, b) in sites.keys() {
                if a == n && seen.insert(b) {
                    todo.push(b);
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<&String>> =
        nodes.iter().map(|&n| (n, reaches(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for &n in &nodes {
        if done.contains(n) {
            continue;
        }
        let set: BTreeSet<&String> = reach[n]
            .iter()
            .copied()
            .filter(|m| reach[m].contains(n))
            .collect();
        done.extend(set.iter().copied());
        if set.len() < 2 {
            continue;
        }
        let mut text = format!(
            "circle among {}:",
            set.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for ((a, b), at) in sites {
            if set.contains(a) && set.contains(b) {
                let shown: Vec<&str> = at.iter().take(4).map(String::as_str).collect();
                let more = at.len().saturating_sub(shown.len());
                let _ = write!(text, "\n  {a} -> {b}: {}", shown.join(" "));
                if more > 0 {
                    let _ = write!(text, " (+{more})");
                }
            }
        }
        out.push(text);
    }
    out
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
}

fn all_sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    files
}

/// The line of the README's "Layers" list on which each top-level module first appears.
fn readme_layers(modules: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let layers = readme.split("**Layers.**").nth(1).unwrap();
    let layers = layers.split("\n\n").next().unwrap();
    let mut level = 0;
    let mut out = BTreeMap::new();
    for line in layers.lines() {
        if let Some((n, _)) = line.split_once(". ")
            && let Ok(n) = n.parse::<usize>()
        {
            level = n;
        }
        if level == 0 {
            continue;
        }
        for name in line.split('`').skip(1).step_by(2) {
            if modules.contains(name) {
                out.entry(name.to_owned()).or_insert(level);
            }
        }
    }
    out
}

#[test]
fn the_readme_layers_hold() {
    let files = all_sources();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| module_of(p).first().cloned())
        // This check, a test module, is no layer.
        .filter(|m| m != "layering")
        .collect();
    let levels = readme_layers(&modules);
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !levels.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's layers: {missing:?}"
    );
    for ((from, to), at) in edges(&files) {
        if from.contains("::") {
            continue;
        }
        assert!(
            levels[&from] >= levels[&to],
            "{from} (README layer {}) uses {to} (layer {}): {}",
            levels[&from],
            levels[&to],
            at.join(" ")
        );
    }
}

#[test]
fn no_import_circle_between_modules() {
    let files = all_sources();
    assert!(files.len() > 20, "read only {} files", files.len());
    let sites = edges(&files);
    assert!(
        sites.contains_key(&("app".to_owned(), "export".to_owned())),
        "the reader found no edge app -> export: {:?}",
        sites.keys()
    );
    let found = circles(&sites);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn finds_the_edges_and_circles_it_is_meant_to() {
    let file = |p: &str, s: &str| (PathBuf::from(p), s.to_owned());
    let files = [
        file("a.rs", "use crate::b::{self, x::Y};\n// use crate::c::Z;\n"),
        file("b/mod.rs", "pub mod x;\nfn f() { crate::c::g(); }\n"),
        file(
            "b/x.rs",
            "use super::super::a::T;\nuse super::{Parent, y};\n",
        ),
        file("b/y.rs", "use crate::{\n    b::x::Q,\n    d,\n};\n"),
        file("c.rs", "use crate::a;\n"),
        file("d.rs", "use self::inner::E;\n"),
    ];
    let sites = edges(&files);
    let keys: Vec<(&str, &str)> = sites
        .keys()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("a", "b"),
            ("b", "a"),
            ("b", "c"),
            ("b", "d"),
            ("b::x", "b::y"),
            ("b::y", "b::x"),
            ("c", "a"),
        ]
    );
    assert_eq!(sites[&("b".to_owned(), "d".to_owned())], ["b/y.rs:1"]);
    assert_eq!(sites[&("b".to_owned(), "c".to_owned())], ["b/mod.rs:2"]);
    let found = circles(&sites);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("circle among a, b, c:"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("circle among b::x, b::y:"),
        "{}",
        found[1]
    );
}
