//! Ingest: X-Ray daemon-protocol datagrams over UDP (segment documents and OTLP documents), and
//! OTLP/HTTP export requests, validated into [`crate::document::Document`]s (OTLP bodies read
//! with [`crate::otlp`]).

pub mod otlp_http;
pub mod protocol;
pub mod udp;
