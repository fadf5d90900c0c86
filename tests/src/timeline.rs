//! The demo's picture: every trace as a timeline in one self-contained HTML file (inline SVG, no
//! script, nothing fetched).
//!
//! The renderer takes [`Row`]s, whatever produced them: [`rows_from_documents`] turns X-Ray
//! segment documents (with their embedded subsegments) into rows; OpenTelemetry spans can be
//! turned into rows the same way ([`Source::OpenTelemetry`]). One row per segment, subsegment or
//! span, bars on a time axis shared by the trace's rows, indentation for nesting, our subsegments
//! in one colour and the function's in another, faults and errors in their own, and the
//! annotations in each bar's tooltip (SVG `<title>`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::Value;

use crate::sink::ReceivedDocument;

/// Height of one row, in pixels.
const ROW_HEIGHT: f64 = 20.0;
/// Width of the name column.
const LABEL_WIDTH: f64 = 360.0;
/// Width of the bar area.
const BARS_WIDTH: f64 = 820.0;
/// Indentation per nesting level in the name column.
const INDENT: f64 = 14.0;
/// Height of the axis above the rows.
const AXIS_HEIGHT: f64 = 24.0;
/// Ticks on the axis.
const TICKS: u32 = 5;

/// Who produced a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The extension's own subsegments (cold start, runtime, ...).
    Extension,
    /// The function's, from its X-Ray SDK.
    Function,
    /// A span from an OpenTelemetry (OTLP) document.
    OpenTelemetry,
}

impl Source {
    fn class(self) -> &'static str {
        match self {
            Self::Extension => "extension",
            Self::Function => "function",
            Self::OpenTelemetry => "otel",
        }
    }
}

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Segment, subsegment or span id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Nesting level (0: sent as a document of its own under Lambda's segment).
    pub depth: usize,
    /// Start, epoch seconds.
    pub start: f64,
    /// End, epoch seconds (the start when it has not ended).
    pub end: f64,
    /// Who produced it.
    pub source: Source,
    /// Whether it was sent as a document of its own (not embedded in another).
    pub document: bool,
    /// `fault: true`.
    pub fault: bool,
    /// `error: true` or `throttle: true`.
    pub error: bool,
    /// Shown on hover: annotations, then anything else worth knowing.
    pub details: Vec<(String, String)>,
}

/// One trace to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The trace id.
    pub id: String,
    /// What happened in it (shown beside the id).
    pub label: String,
    /// Its rows, in display order.
    pub rows: Vec<Row>,
}

/// The rows of one trace from the documents X-Ray received: each document and its embedded
/// subsegments, nested under the document that is their parent, siblings by start time.
/// `source_of` tells the function's documents from ours, and OpenTelemetry spans drawn as
/// documents (rows, but not documents X-Ray received: a T1S document holds several).
pub fn rows_from_documents(
    docs: &[ReceivedDocument],
    trace_id: &str,
    source_of: &dyn Fn(&ReceivedDocument) -> Source,
) -> Vec<Row> {
    let in_trace: Vec<&ReceivedDocument> = docs.iter().filter(|d| d.trace_id == trace_id).collect();
    let ids: HashSet<&str> = in_trace.iter().map(|d| d.id.as_str()).collect();
    let mut by_parent: HashMap<&str, Vec<&ReceivedDocument>> = HashMap::new();
    let mut tops = Vec::new();
    for d in &in_trace {
        match d.parent_id() {
            Some(p) if ids.contains(p) => by_parent.entry(p).or_default().push(d),
            _ => tops.push(*d),
        }
    }
    tops.sort_by(|a, b| start_of(&a.value).total_cmp(&start_of(&b.value)));
    let mut rows = Vec::new();
    for d in tops {
        push_document(d, 0, &by_parent, source_of, &mut rows);
    }
    rows
}

fn start_of(v: &Value) -> f64 {
    v["start_time"].as_f64().unwrap_or(0.0)
}

fn push_document(
    d: &ReceivedDocument,
    depth: usize,
    by_parent: &HashMap<&str, Vec<&ReceivedDocument>>,
    source_of: &dyn Fn(&ReceivedDocument) -> Source,
    rows: &mut Vec<Row>,
) {
    let source = source_of(d);
    rows.push(row(
        &d.value,
        depth,
        source,
        source != Source::OpenTelemetry,
    ));
    // Children: embedded subsegments and documents naming this one as parent, by start time.
    let mut children: Vec<(f64, Result<&Value, &ReceivedDocument>)> = d.value["subsegments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (start_of(v), Ok(v)))
        .collect();
    if let Some(kids) = by_parent.get(d.id.as_str()) {
        children.extend(kids.iter().map(|k| (start_of(&k.value), Err(*k))));
    }
    children.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, child) in children {
        match child {
            Ok(v) => push_embedded(v, depth + 1, source, rows),
            Err(doc) => push_document(doc, depth + 1, by_parent, source_of, rows),
        }
    }
}

fn push_embedded(v: &Value, depth: usize, source: Source, rows: &mut Vec<Row>) {
    rows.push(row(v, depth, source, false));
    let mut children: Vec<&Value> = v["subsegments"].as_array().into_iter().flatten().collect();
    children.sort_by(|a, b| start_of(a).total_cmp(&start_of(b)));
    for c in children {
        push_embedded(c, depth + 1, source, rows);
    }
}

fn row(v: &Value, depth: usize, source: Source, document: bool) -> Row {
    let start = start_of(v);
    let mut details: Vec<(String, String)> = v["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, a)| (k.clone(), scalar(a)))
        .collect();
    if let Some(message) = v["cause"]["exceptions"][0]["message"].as_str() {
        details.push(("cause".to_owned(), message.to_owned()));
    }
    if let Some(billed) = v["metadata"]["lambda"]["billedDurationMs"].as_u64() {
        details.push(("billed ms".to_owned(), billed.to_string()));
    }
    Row {
        id: v["id"].as_str().unwrap_or_default().to_owned(),
        name: v["name"].as_str().unwrap_or("?").to_owned(),
        depth,
        start,
        end: v["end_time"].as_f64().unwrap_or(start).max(start),
        source,
        document,
        fault: v["fault"] == Value::Bool(true),
        error: v["error"] == Value::Bool(true) || v["throttle"] == Value::Bool(true),
        details,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML and SVG content and attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page. Pure: the same traces give the same bytes.
pub fn render_html(title: &str, traces: &[Trace]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{STYLE}</style></head>\n<body><h1>{t}</h1>\n{LEGEND}\n",
        t = esc(title)
    );
    for trace in traces {
        render_trace(&mut html, trace);
    }
    html.push_str("</body></html>\n");
    html
}

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:16px;color:#222}\
h1{font-size:18px}h2{font-size:14px;margin:18px 0 4px;font-weight:600}\
h2 small{font-weight:400;color:#666}\
.legend span{display:inline-block;margin-right:14px}\
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px}\
svg text{font:12px system-ui,sans-serif}\
.axis{stroke:#ccc}.tick{fill:#666;font-size:11px}\
rect.extension{fill:#2f6fb5}rect.function{fill:#3a9a5b}rect.otel{fill:#8a55c2}\
rect.error{fill:#e08a1e}rect.fault{fill:#d62f2f}\
.row:hover rect.band{fill:#f2f2f2}";

const LEGEND: &str = "<p class=\"legend\">\
<span><i style=\"background:#2f6fb5\"></i>the extension's subsegments</span>\
<span><i style=\"background:#3a9a5b\"></i>the function's</span>\
<span><i style=\"background:#8a55c2\"></i>OpenTelemetry spans</span>\
<span><i style=\"background:#e08a1e\"></i>error</span>\
<span><i style=\"background:#d62f2f\"></i>fault</span>\
<span>hover a bar for its annotations</span></p>";

fn render_trace(html: &mut String, trace: &Trace) {
    let _ = writeln!(
        html,
        "<h2>{} <small>{}</small></h2>",
        esc(&trace.id),
        esc(&trace.label)
    );
    if trace.rows.is_empty() {
        html.push_str("<p>(no documents)</p>\n");
        return;
    }
    let t0 = trace.rows.iter().map(|r| r.start).fold(f64::MAX, f64::min);
    let t1 = trace.rows.iter().map(|r| r.end).fold(f64::MIN, f64::max);
    let span = (t1 - t0).max(1e-3);
    let x = |t: f64| LABEL_WIDTH + (t - t0) / span * BARS_WIDTH;
    let width = LABEL_WIDTH + BARS_WIDTH + 60.0;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a trace has far fewer than 2^52 rows"
    )]
    let height = AXIS_HEIGHT + trace.rows.len() as f64 * ROW_HEIGHT + 4.0;
    let _ = writeln!(
        html,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"trace\" data-trace=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">",
        esc(&trace.id)
    );
    for i in 0..=TICKS {
        let t = t0 + span * f64::from(i) / f64::from(TICKS);
        let _ = writeln!(
            html,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{AXIS_HEIGHT}\" x2=\"{x:.1}\" y2=\"{height}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">{ms:.1} ms</text>",
            x = x(t),
            ms = (t - t0) * 1e3
        );
    }
    for (i, r) in trace.rows.iter().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "row and depth counts are small")]
        let (y, indent) = (
            AXIS_HEIGHT + i as f64 * ROW_HEIGHT,
            6.0 + r.depth as f64 * INDENT,
        );
        let class = if r.fault {
            "fault"
        } else if r.error {
            "error"
        } else {
            r.source.class()
        };
        let mut tip = format!(
            "{} ({})\n{:.1} ms, starts at +{:.1} ms",
            r.name,
            r.source.class(),
            (r.end - r.start) * 1e3,
            (r.start - t0) * 1e3
        );
        if r.fault {
            tip.push_str("\nfault");
        }
        for (k, v) in &r.details {
            let _ = write!(tip, "\n{k} = {v}");
        }
        let bar_x = x(r.start);
        let bar_w = (x(r.end) - bar_x).max(3.0);
        let _ = writeln!(
            html,
            "<g class=\"row\" data-id=\"{id}\" data-source=\"{src}\" data-document=\"{doc}\" data-fault=\"{fault}\" data-depth=\"{depth}\"><title>{tip}</title>\
<rect class=\"band\" x=\"0\" y=\"{y:.1}\" width=\"{width}\" height=\"{ROW_HEIGHT}\" fill=\"transparent\"/>\
<text x=\"{indent:.1}\" y=\"{ty:.1}\">{name}</text>\
<rect class=\"{class}\" x=\"{bar_x:.1}\" y=\"{by:.1}\" width=\"{bar_w:.1}\" height=\"{bh:.1}\" rx=\"2\"/></g>",
            id = esc(&r.id),
            src = r.source.class(),
            doc = r.document,
            fault = r.fault,
            depth = r.depth,
            tip = esc(&tip),
            ty = y + 14.0,
            name = esc(&r.name),
            by = y + 3.0,
            bh = ROW_HEIGHT - 6.0,
        );
    }
    html.push_str("</svg>\n");
}

/// Counts, per trace id, the `<g class="row" ...>` elements of a page and how many of them are
/// documents (`data-document="true"`): what a test compares with what X-Ray received. Works on
/// the renderer's output and on a browser's serialized DOM.
pub fn count_rows(html: &str) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for piece in html.split('<') {
        if piece.starts_with("svg ") {
            current = attribute(piece, "data-trace");
        } else if piece.starts_with("g ") && attribute(piece, "class").as_deref() == Some("row") {
            let entry = out.entry(current.clone().unwrap_or_default()).or_default();
            entry.0 += 1;
            if attribute(piece, "data-document").as_deref() == Some("true") {
                entry.1 += 1;
            }
        }
    }
    out
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let rest = &tag[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    fn doc(v: Value) -> ReceivedDocument {
        ReceivedDocument {
            id: v["id"].as_str().unwrap().to_owned(),
            trace_id: v["trace_id"].as_str().unwrap().to_owned(),
            raw: v.to_string(),
            value: v,
            at: Instant::now(),
            put_index: 0,
        }
    }

    const T: &str = "1-5759e988-bd862e3fe1be46a994272793";

    fn sample() -> Vec<ReceivedDocument> {
        vec![
            doc(json!({
                "id": "a000000000000001", "trace_id": T, "parent_id": "ffffffffffffffff",
                "name": "Runtime", "start_time": 10.0, "end_time": 10.5, "type": "subsegment",
                "fault": true, "annotations": {"ColdStart": true},
                "cause": {"exceptions": [{"message": "OrderRejected <bad>"}]},
                "subsegments": [
                    {"id": "b000000000000002", "name": "Response Duration", "start_time": 10.3, "end_time": 10.4},
                    {"id": "b000000000000001", "name": "Response Latency", "start_time": 10.0, "end_time": 10.3}
                ]
            })),
            doc(json!({
                "id": "c000000000000001", "trace_id": T, "parent_id": "ffffffffffffffff",
                "name": "work-0", "start_time": 10.1, "end_time": 10.2, "type": "subsegment"
            })),
            doc(json!({
                "id": "d000000000000001", "trace_id": T, "parent_id": "c000000000000001",
                "name": "nested", "start_time": 10.15, "end_time": 10.16, "type": "subsegment", "error": true
            })),
            doc(json!({
                "id": "e000000000000001", "trace_id": "1-5759e988-00000000e1be46a994272793",
                "name": "other trace", "start_time": 1.0, "end_time": 2.0
            })),
        ]
    }

    #[test]
    fn rows_nest_documents_and_embedded_subsegments_by_start_time() {
        let source = |d: &ReceivedDocument| match d.id.as_bytes()[0] {
            b'c' => Source::Function,
            b'd' => Source::OpenTelemetry,
            _ => Source::Extension,
        };
        let rows = rows_from_documents(&sample(), T, &source);
        let view: Vec<(&str, usize, Source, bool)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.depth, r.source, r.document))
            .collect();
        assert_eq!(
            view,
            [
                ("Runtime", 0, Source::Extension, true),
                ("Response Latency", 1, Source::Extension, false),
                ("Response Duration", 1, Source::Extension, false),
                ("work-0", 0, Source::Function, true),
                ("nested", 1, Source::OpenTelemetry, false),
            ]
        );
        assert!(rows[0].fault && !rows[0].error);
        assert!(rows[4].error && !rows[4].fault);
        assert!(
            rows[0]
                .details
                .contains(&("ColdStart".to_owned(), "true".to_owned()))
        );
    }

    #[test]
    fn the_page_has_one_row_per_bar_escapes_text_and_fetches_nothing() {
        let rows = rows_from_documents(&sample(), T, &|_| Source::Extension);
        let page = render_html(
            "demo <1>",
            &[Trace {
                id: T.to_owned(),
                label: "error".to_owned(),
                rows,
            }],
        );
        assert_eq!(count_rows(&page)[T], (5, 3), "5 bars, 3 of them documents");
        assert!(
            page.contains("OrderRejected &lt;bad&gt;"),
            "cause in the tooltip, escaped"
        );
        assert!(page.contains("<title>demo &lt;1&gt;</title>"));
        assert!(page.contains("class=\"fault\""));
        assert!(page.contains("class=\"error\""));
        for remote in ["<script", "http://", "https://", "src=", "href="] {
            let outside_namespace = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!outside_namespace.contains(remote), "{remote}");
        }
    }

    #[test]
    fn a_trace_without_documents_says_so() {
        let page = render_html(
            "t",
            &[Trace {
                id: T.to_owned(),
                label: String::new(),
                rows: Vec::new(),
            }],
        );
        assert!(page.contains("(no documents)"));
        assert!(count_rows(&page).is_empty());
    }
}
