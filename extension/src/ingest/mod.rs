//! Ingest: X-Ray daemon-protocol datagrams over UDP, validated into documents.

pub mod protocol;
pub mod udp;
