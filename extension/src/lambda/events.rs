//! The Extensions API's events (`/event/next` bodies, contracts §1) and what we register for.
//! Pure: decoding only.
//!
//! Decoding is lenient: only what the lifecycle needs is required (`eventType`, and an INVOKE's
//! `requestId`); everything else is optional, so one odd field never stops the event loop.

use serde::Deserialize;
use serde_json::Value;

use super::telemetry::InitializationType;

/// The events we ask for at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSet {
    /// `INVOKE` and `SHUTDOWN`: flush points at every invocation.
    InvokeAndShutdown,
    /// `SHUTDOWN` only: Lambda Managed Instances refuses `INVOKE` (contracts §8); we then send
    /// on a timer and at SHUTDOWN.
    ShutdownOnly,
}

impl EventSet {
    /// The `events` list of the registration body.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::InvokeAndShutdown => &["INVOKE", "SHUTDOWN"],
            Self::ShutdownOnly => &["SHUTDOWN"],
        }
    }

    /// What to register for in an environment of `initialization_type`
    /// (`AWS_LAMBDA_INITIALIZATION_TYPE`): `SHUTDOWN` only on Lambda Managed Instances.
    pub fn for_initialization_type(initialization_type: Option<&InitializationType>) -> Self {
        if initialization_type == Some(&InitializationType::LambdaManagedInstances) {
            Self::ShutdownOnly
        } else {
            Self::InvokeAndShutdown
        }
    }
}

/// Reads `AWS_LAMBDA_INITIALIZATION_TYPE` (trimmed, in any case: Lambda writes it in lower
/// case, tools and tests that set it by hand may not); empty is none.
pub fn initialization_type(variable: &str) -> Option<InitializationType> {
    let value = variable.trim();
    (!value.is_empty()).then(|| InitializationType::parse(&value.to_ascii_lowercase()))
}

/// One event from `/event/next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextEvent {
    /// An invocation starts.
    Invoke(Invoke),
    /// The environment shuts down.
    Shutdown(Shutdown),
}

/// An `INVOKE` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoke {
    /// `requestId`.
    pub request_id: String,
    /// `deadlineMs` (epoch milliseconds), when present.
    pub deadline_ms: Option<u64>,
    /// `tracing.value` (the `X-Amzn-Trace-Id` header), when present and not empty.
    pub trace_header: Option<String>,
}

/// A `SHUTDOWN` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    /// `deadlineMs` (epoch milliseconds), when present.
    pub deadline_ms: Option<u64>,
    /// `shutdownReason`.
    pub reason: ShutdownReason,
}

/// Why the environment shuts down: `shutdownReason` (any case), or SIGTERM standing in for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    /// `spindown`: Lambda reclaims an idle environment.
    Spindown,
    /// `timeout`: the invocation ran out of time.
    Timeout,
    /// `failure`: the runtime or an extension failed.
    Failure,
    /// No SHUTDOWN event: SIGTERM came first (`sigterm`).
    Sigterm,
    /// A value this version does not know, lowercased; empty when absent.
    Unknown(String),
}

impl ShutdownReason {
    /// Reads `shutdownReason` in any case.
    pub fn parse(s: &str) -> Self {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "spindown" => Self::Spindown,
            "timeout" => Self::Timeout,
            "failure" => Self::Failure,
            "sigterm" => Self::Sigterm,
            _ => Self::Unknown(lower),
        }
    }

    /// The lowercase name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Spindown => "spindown",
            Self::Timeout => "timeout",
            Self::Failure => "failure",
            Self::Sigterm => "sigterm",
            Self::Unknown(s) => s,
        }
    }
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an `/event/next` body was not an event we act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// No `eventType` string.
    #[error("no eventType")]
    NoEventType,
    /// An `eventType` we do not know (ignored: the loop calls `/event/next` again).
    #[error("unknown eventType {0:?}")]
    UnknownType(String),
    /// An `INVOKE` without a `requestId` string.
    #[error("INVOKE without requestId")]
    NoRequestId,
}

/// Decodes an `/event/next` body. `eventType` is matched in any case.
pub fn parse_next_event(body: &[u8]) -> Result<NextEvent, EventError> {
    #[derive(Deserialize)]
    struct Tracing {
        value: Option<Value>,
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| EventError::NotAnObject)?;
    let object = value.as_object().ok_or(EventError::NotAnObject)?;
    let event_type = object
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or(EventError::NoEventType)?;
    let deadline_ms = object.get("deadlineMs").and_then(deadline_ms);
    if event_type.eq_ignore_ascii_case("INVOKE") {
        let request_id = object
            .get("requestId")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or(EventError::NoRequestId)?
            .to_owned();
        let trace_header = object
            .get("tracing")
            .cloned()
            .and_then(|t| serde_json::from_value::<Tracing>(t).ok())
            .and_then(|t| t.value)
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|v| !v.trim().is_empty());
        Ok(NextEvent::Invoke(Invoke {
            request_id,
            deadline_ms,
            trace_header,
        }))
    } else if event_type.eq_ignore_ascii_case("SHUTDOWN") {
        let reason = ShutdownReason::parse(
            object
                .get("shutdownReason")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        Ok(NextEvent::Shutdown(Shutdown {
            deadline_ms,
            reason,
        }))
    } else {
        Err(EventError::UnknownType(event_type.to_owned()))
    }
}

/// `deadlineMs` as an integer, a float or a numeric string.
fn deadline_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "finite, non-negative, and epoch milliseconds fit u64"
                )]
                let ms = f as u64;
                ms
            })
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NextEvent, EventError> {
        parse_next_event(s.as_bytes())
    }

    #[test]
    fn the_documented_events_decode() {
        let invoke = r#"{"eventType":"INVOKE","deadlineMs":1795605000123,"requestId":"3da1f2dc",
            "invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:f",
            "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Sampled=1"}}"#;
        assert_eq!(
            parse(invoke),
            Ok(NextEvent::Invoke(Invoke {
                request_id: "3da1f2dc".into(),
                deadline_ms: Some(1_795_605_000_123),
                trace_header: Some("Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Sampled=1".into()),
            }))
        );
        let shutdown =
            r#"{"eventType":"SHUTDOWN","deadlineMs":1795605002123,"shutdownReason":"spindown"}"#;
        assert_eq!(
            parse(shutdown),
            Ok(NextEvent::Shutdown(Shutdown {
                deadline_ms: Some(1_795_605_002_123),
                reason: ShutdownReason::Spindown,
            }))
        );
    }

    #[test]
    fn shutdown_reasons_are_read_in_any_case_and_unknown_ones_kept_lowercased() {
        let cases: &[(&str, ShutdownReason, &str)] = &[
            ("spindown", ShutdownReason::Spindown, "spindown"),
            ("TIMEOUT", ShutdownReason::Timeout, "timeout"),
            ("Failure", ShutdownReason::Failure, "failure"),
            ("sigterm", ShutdownReason::Sigterm, "sigterm"),
            (
                "Eviction",
                ShutdownReason::Unknown("eviction".into()),
                "eviction",
            ),
            ("", ShutdownReason::Unknown(String::new()), ""),
        ];
        for (wire, want, shown) in cases {
            let got = ShutdownReason::parse(wire);
            assert_eq!(&got, want, "{wire:?}");
            assert_eq!(got.to_string(), *shown, "{wire:?}");
        }
    }

    #[test]
    fn decoding_is_lenient_where_the_lifecycle_allows() {
        let cases: &[(&str, Result<NextEvent, EventError>)] = &[
            // Any case, no ARN, no tracing, a float deadline.
            (
                r#"{"eventType":"invoke","requestId":"r","deadlineMs":12.0}"#,
                Ok(NextEvent::Invoke(Invoke {
                    request_id: "r".into(),
                    deadline_ms: Some(12),
                    trace_header: None,
                })),
            ),
            // Tracing of the wrong shape, deadline as a string, extra fields.
            (
                r#"{"eventType":"INVOKE","requestId":"r","deadlineMs":"7","tracing":null,"x":[1]}"#,
                Ok(NextEvent::Invoke(Invoke {
                    request_id: "r".into(),
                    deadline_ms: Some(7),
                    trace_header: None,
                })),
            ),
            (
                r#"{"eventType":"INVOKE","requestId":"r","tracing":{"value":""}}"#,
                Ok(NextEvent::Invoke(Invoke {
                    request_id: "r".into(),
                    deadline_ms: None,
                    trace_header: None,
                })),
            ),
            // A SHUTDOWN with nothing else still shuts down.
            (
                r#"{"eventType":"Shutdown"}"#,
                Ok(NextEvent::Shutdown(Shutdown {
                    deadline_ms: None,
                    reason: ShutdownReason::Unknown(String::new()),
                })),
            ),
            (
                r#"{"eventType":"SHUTDOWN","deadlineMs":-5,"shutdownReason":"TIMEOUT"}"#,
                Ok(NextEvent::Shutdown(Shutdown {
                    deadline_ms: None,
                    reason: ShutdownReason::Timeout,
                })),
            ),
            (
                r#"{"eventType":"RESTORE"}"#,
                Err(EventError::UnknownType("RESTORE".into())),
            ),
            (r#"{"eventType":"INVOKE"}"#, Err(EventError::NoRequestId)),
            (
                r#"{"eventType":"INVOKE","requestId":""}"#,
                Err(EventError::NoRequestId),
            ),
            (r#"{"eventType":7}"#, Err(EventError::NoEventType)),
            ("[]", Err(EventError::NotAnObject)),
            ("", Err(EventError::NotAnObject)),
        ];
        for (body, expected) in cases {
            assert_eq!(&parse(body), expected, "{body}");
        }
    }

    #[test]
    fn managed_instances_register_for_shutdown_only() {
        let cases = [
            ("", None, EventSet::InvokeAndShutdown),
            (
                "on-demand",
                Some(InitializationType::OnDemand),
                EventSet::InvokeAndShutdown,
            ),
            (
                "provisioned-concurrency",
                Some(InitializationType::ProvisionedConcurrency),
                EventSet::InvokeAndShutdown,
            ),
            (
                "snap-start",
                Some(InitializationType::SnapStart),
                EventSet::InvokeAndShutdown,
            ),
            (
                "lambda-managed-instances",
                Some(InitializationType::LambdaManagedInstances),
                EventSet::ShutdownOnly,
            ),
            (
                " Lambda-Managed-Instances ",
                Some(InitializationType::LambdaManagedInstances),
                EventSet::ShutdownOnly,
            ),
            (
                "future-type",
                Some(InitializationType::Unknown("future-type".into())),
                EventSet::InvokeAndShutdown,
            ),
        ];
        for (variable, parsed, expected) in cases {
            let read = initialization_type(variable);
            assert_eq!(read, parsed, "{variable:?}");
            assert_eq!(
                EventSet::for_initialization_type(read.as_ref()),
                expected,
                "{variable:?}"
            );
        }
        assert_eq!(
            EventSet::for_initialization_type(None),
            EventSet::InvokeAndShutdown
        );
        assert_eq!(EventSet::ShutdownOnly.names(), ["SHUTDOWN"]);
        assert_eq!(EventSet::InvokeAndShutdown.names(), ["INVOKE", "SHUTDOWN"]);
    }
}
