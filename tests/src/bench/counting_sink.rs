//! A minimal X-Ray endpoint for the load runs: it answers `PutTraceSegments` with no
//! unprocessed documents and only counts (calls, documents per call, which generator documents
//! arrived). The full [`crate::sink::XraySink`] parses, validates and keeps every document,
//! which at 20k documents/s costs more CPU than the extension itself on a 2-core machine and
//! would make the harness, not the extension, the bottleneck.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{Request, Server, json_response};

/// Request bodies up to this size are read (X-Ray's own limit is far below).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
struct PutTraceSegments<'a> {
    #[serde(rename = "TraceSegmentDocuments", borrow)]
    documents: Vec<Cow<'a, str>>,
}

/// What the endpoint saw.
#[derive(Debug, Default)]
pub struct Counts {
    /// `(when, documents)` of each `PutTraceSegments` call.
    pub calls: Vec<(Instant, usize)>,
    /// Distinct generator documents (ids whose top 32 bits are the run's tag).
    pub tagged: HashSet<u64>,
}

/// The running endpoint.
pub struct CountingSink {
    server: Server,
    counts: Arc<Mutex<Counts>>,
}

fn handle(counts: &Mutex<Counts>, tag: u64, request: &Request) -> crate::http::Response {
    if request.path != "/TraceSegments" {
        return json_response(StatusCode::OK, &json!({}));
    }
    let Ok(body) = serde_json::from_slice::<PutTraceSegments<'_>>(&request.body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"__type": "InvalidRequestException", "message": "bad body"}),
        );
    };
    let ids = body.documents.iter().filter_map(|d| {
        let hex = d.strip_prefix(r#"{"id":""#)?.get(..16)?;
        let id = u64::from_str_radix(hex, 16).ok()?;
        (id >> 32 == tag).then_some(id)
    });
    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
    c.tagged.extend(ids);
    c.calls.push((request.received_at, body.documents.len()));
    drop(c);
    json_response(StatusCode::OK, &json!({"UnprocessedTraceSegments": []}))
}

impl CountingSink {
    /// Starts on `127.0.0.1:0`, counting generator documents tagged `tag`.
    pub async fn start(tag: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = Arc::clone(&counts);
        let server = Server::start(
            listener,
            BODY_LIMIT,
            Arc::new(move |request| {
                let response = handle(&shared, tag, &request);
                Box::pin(async move { response })
            }),
        )?;
        Ok(Self { server, counts })
    }

    /// `http://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    /// Runs `f` over the counts.
    pub fn with_counts<T>(&self, f: impl FnOnce(&Counts) -> T) -> T {
        f(&self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
