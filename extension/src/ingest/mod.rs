//! Ingest: X-Ray daemon-protocol datagrams over UDP (segment documents and OTLP documents), and
//! OTLP/HTTP export requests, validated into documents.

pub mod document;
pub mod otlp;
pub mod otlp_http;
pub mod protocol;
pub mod udp;
