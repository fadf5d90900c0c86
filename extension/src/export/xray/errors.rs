//! PutTraceSegments failures, classified by the SDK's error types: the [`SdkError`] kind, the
//! operation's error variant, the connector's error kind, and for service errors the status
//! and the error code ([`ProvideErrorMetadata::code`]). Error text is only ever carried along
//! for the log line, never searched.

use aws_sdk_xray::config::http::HttpResponse;
use aws_sdk_xray::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_xray::operation::put_trace_segments::PutTraceSegmentsError;
use aws_smithy_runtime_api::client::dns::ResolveDnsError;

use crate::export::backend::ExportError;

/// Error codes of the AWS query and JSON protocols that say the caller, not the request, was
/// refused: credentials missing, invalid or expired, a signature refused (also for clock skew),
/// or a permission missing.
pub const AUTH_ERROR_CODES: [&str; 12] = [
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "RequestTimeTooSkewed",
];

/// Throttling codes of the AWS protocols besides X-Ray's own `ThrottledException` (which the
/// SDK decodes into its own variant).
pub const THROTTLING_CODES: [&str; 3] = [
    "ThrottledException",
    "ThrottlingException",
    "TooManyRequestsException",
];

/// What one failed PutTraceSegments call means for its batch.
pub fn classify(err: &SdkError<PutTraceSegmentsError, HttpResponse>) -> ExportError {
    let text = || chain(err);
    match err {
        SdkError::TimeoutError(_) => ExportError::Timeout,
        SdkError::DispatchFailure(failure) => {
            let unresolved = failure
                .as_connector_error()
                .is_some_and(|c| caused_by::<ResolveDnsError>(c));
            if failure.is_timeout() {
                ExportError::Timeout
            } else if unresolved {
                ExportError::UnknownHost(text())
            } else if failure.is_io() {
                ExportError::Refused(text())
            } else {
                ExportError::Other(text())
            }
        }
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            match e.err() {
                PutTraceSegmentsError::ThrottledException(_) => ExportError::Throttled,
                PutTraceSegmentsError::InvalidRequestException(invalid) => ExportError::Client4xx {
                    status,
                    message: invalid.message().unwrap_or_default().to_owned(),
                },
                other => by_status(
                    status,
                    other.code().unwrap_or_default(),
                    other.message().unwrap_or_default().to_owned(),
                ),
            }
        }
        SdkError::ResponseError(e) => by_status(e.raw().status().as_u16(), "", text()),
        _ => ExportError::Other(text()),
    }
}

/// The error and its sources, `: `-separated, for the log line (the SDK's `DisplayErrorContext`
/// appends a debug dump of the whole error too).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let texts: Vec<String> = std::iter::successors(Some(err), |e| e.source())
        .map(ToString::to_string)
        .collect();
    texts.join(": ")
}

/// Whether `E` is somewhere in `err`'s chain of sources (itself included).
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(<dyn std::error::Error>::is::<E>)
}

/// A service error by its status and code. Pure.
pub fn by_status(status: u16, code: &str, message: String) -> ExportError {
    if status == 429 || THROTTLING_CODES.contains(&code) {
        ExportError::Throttled
    } else if AUTH_ERROR_CODES.contains(&code) || status == 401 || status == 403 {
        ExportError::Auth {
            status,
            code: code.to_owned(),
            message,
        }
    } else if status >= 500 {
        ExportError::Server5xx { status }
    } else {
        ExportError::Client4xx { status, message }
    }
}

/// Whether an `UnprocessedTraceSegments` error code is worth another try (throttling and
/// service-side failures), rather than a verdict on the document itself.
pub fn is_retryable_code(code: &str) -> bool {
    [
        "Throttl",
        "Internal",
        "ServiceUnavailable",
        "Unavailable",
        "Timeout",
        "TooManyRequests",
    ]
    .iter()
    .any(|k| code.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_xray::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_xray::types::error::{InvalidRequestException, ThrottledException};
    use aws_smithy_types::body::SdkBody;

    type Error = SdkError<PutTraceSegmentsError, HttpResponse>;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty())
    }

    fn service(status: u16, err: PutTraceSegmentsError) -> Error {
        SdkError::service_error(err, response(status))
    }

    fn coded(status: u16, code: &str) -> Error {
        service(
            status,
            PutTraceSegmentsError::generic(
                ErrorMetadata::builder().code(code).message("no").build(),
            ),
        )
    }

    /// A lookup failure as the connector reports it: an I/O connector error whose cause is the
    /// resolver's typed error.
    fn unresolved() -> Error {
        #[derive(Debug, thiserror::Error)]
        #[error("dns error")]
        struct Connect(#[source] ResolveDnsError);
        let lookup = std::io::Error::other("failed to lookup address information");
        SdkError::dispatch_failure(ConnectorError::io(Box::new(Connect(ResolveDnsError::new(
            lookup,
        )))))
    }

    #[test]
    fn errors_are_classified_by_their_types() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let table: Vec<(&str, Error, ExportError)> = vec![
            (
                "SDK timeout",
                SdkError::timeout_error(io()),
                ExportError::Timeout,
            ),
            (
                "connector timeout",
                SdkError::dispatch_failure(ConnectorError::timeout(Box::new(io()))),
                ExportError::Timeout,
            ),
            (
                "throttled variant",
                service(
                    400,
                    PutTraceSegmentsError::ThrottledException(
                        ThrottledException::builder().build(),
                    ),
                ),
                ExportError::Throttled,
            ),
            (
                "invalid request variant",
                service(
                    400,
                    PutTraceSegmentsError::InvalidRequestException(
                        InvalidRequestException::builder().message("bad").build(),
                    ),
                ),
                ExportError::Client4xx {
                    status: 400,
                    message: "bad".into(),
                },
            ),
            (
                "5xx",
                coded(503, "ServiceUnavailable"),
                ExportError::Server5xx { status: 503 },
            ),
            ("429", coded(429, ""), ExportError::Throttled),
            (
                "generic throttling code",
                coded(400, "ThrottlingException"),
                ExportError::Throttled,
            ),
        ];
        for (name, err, expected) in table {
            assert_eq!(classify(&err), expected, "{name}");
        }
        // Connection failures carry the error chain for the log line.
        let refused = classify(&SdkError::dispatch_failure(ConnectorError::io(Box::new(
            io(),
        ))));
        assert_eq!(
            refused,
            ExportError::Refused("dispatch failure: io error: connection refused".into())
        );
        let other = classify(&SdkError::dispatch_failure(ConnectorError::other(
            Box::new(io()),
            None,
        )));
        assert!(matches!(other, ExportError::Other(_)), "{other:?}");
        let response = classify(&SdkError::response_error(io(), response(502)));
        assert_eq!(response, ExportError::Server5xx { status: 502 });
    }

    #[test]
    fn a_failed_lookup_is_an_unknown_host_by_its_type_not_its_text() {
        let e = classify(&unresolved());
        assert!(matches!(e, ExportError::UnknownHost(_)), "{e:?}");
        // The same words without the resolver's error type are a refused connection.
        let text_only = classify(&SdkError::dispatch_failure(ConnectorError::io(
            "dns error: failed to lookup address information".into(),
        )));
        assert!(
            matches!(text_only, ExportError::Refused(_)),
            "{text_only:?}"
        );
    }

    #[test]
    fn refused_credentials_and_permissions_keep_the_documents() {
        for (status, code) in [
            (403, "ExpiredTokenException"),
            (400, "ExpiredTokenException"),
            (403, "InvalidSignatureException"),
            (400, "RequestExpired"),
            (403, "UnrecognizedClientException"),
            (401, ""),
            (403, "AccessDeniedException"),
        ] {
            let e = classify(&coded(status, code));
            assert!(
                matches!(e, ExportError::Auth { .. }),
                "{status} {code}: {e:?}"
            );
            assert!(!e.is_retryable() && e.keeps_documents(), "{status} {code}");
            assert_eq!(e.is_access_denied(), code.starts_with("AccessDenied"));
        }
        let e = classify(&coded(400, "InvalidRequestException"));
        assert!(!e.is_retryable());
        assert!(!e.keeps_documents());
    }

    #[test]
    fn unprocessed_codes() {
        assert!(is_retryable_code("ThrottledException"));
        assert!(is_retryable_code("InternalFailure"));
        assert!(is_retryable_code("ServiceUnavailable"));
        assert!(!is_retryable_code("InvalidTraceId"));
        assert!(!is_retryable_code("MissingRequiredField"));
        assert!(!is_retryable_code(""));
    }
}
