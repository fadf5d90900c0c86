//! Ingest: X-Ray daemon-protocol datagrams over UDP (segment documents and OTLP documents),
//! validated into documents.

pub mod otlp;
pub mod protocol;
pub mod udp;
