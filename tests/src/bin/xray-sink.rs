//! The X-Ray API sink as a standalone server: `xray-sink [ADDR]` (default `127.0.0.1:4317`).
//!
//! Prints `listening on http://ADDR` first, then every stored trace document as one JSON line on
//! stdout, until interrupted.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use xray_extension_tests::sink::XraySink;

const ADDR_DEFAULT: &str = "127.0.0.1:4317";
/// How long one wait for new documents lasts before it is simply renewed.
const WAIT_SLICE: Duration = Duration::from_hours(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| ADDR_DEFAULT.to_owned());
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not host:port"))?;
    let sink = XraySink::start_on(addr).await?;
    println!("listening on {}", sink.endpoint());
    let mut printed = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            waited = sink.wait_for("a new document", WAIT_SLICE, |r| r.all_documents().len() > printed) => {
                if waited.is_ok() {
                    let documents = sink.all_documents();
                    for doc in &documents[printed..] {
                        println!("{}", doc.raw);
                    }
                    printed = documents.len();
                }
            }
        }
    }
}
