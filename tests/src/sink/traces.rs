//! X-Ray's OTLP endpoint, `POST /v1/traces`, as the service documents it: an
//! `ExportTraceServiceRequest` in protobuf, gzip'd or not, `SigV4`-signed for service `xray`; at
//! most 5,000,000 bytes uncompressed and 10,000 spans a request. The signature is recomputed with
//! the AWS SDK's signer (`aws-sigv4`) over the request as received, with the credentials the
//! emulator gives the function; a request that fails any check is answered as the service would
//! (403 `InvalidSignatureException`, 400, 413, 415) and stores nothing.

use std::io::Read as _;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};

use super::otlp::{ReceivedSpan, decode_request};
use crate::emulator::{DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, DUMMY_SESSION_TOKEN};
use crate::http::Request;

/// Most bytes of one request before compression.
pub const MAX_REQUEST_BYTES: usize = 5_000_000;
/// Most spans in one request.
pub const MAX_SPANS_PER_REQUEST: usize = 10_000;

/// What one `/v1/traces` request held, as the sink checked it.
#[derive(Debug, Clone, Default)]
pub struct TracesCall {
    /// The body's bytes as sent.
    pub wire_bytes: usize,
    /// Its bytes once inflated.
    pub raw_bytes: usize,
    /// Whether it was gzip'd.
    pub gzip: bool,
    /// Its spans.
    pub spans: usize,
    /// The region and service of the signature's credential scope.
    pub scope: Option<(String, String)>,
}

/// Why a request was refused: the status, the error type, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// `x-amzn-ErrorType`.
    pub error_type: &'static str,
    /// The message.
    pub message: String,
}

fn refuse(status: u16, error_type: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error_type,
        message: message.into(),
    }
}

/// Checks and decodes one request.
pub fn check(
    req: &Request,
    endpoint_host: &str,
) -> Result<(TracesCall, Vec<ReceivedSpan>), Refusal> {
    let scope = verify_signature(req, endpoint_host)?;
    if req.header("content-type") != Some("application/x-protobuf") {
        return Err(refuse(
            415,
            "UnsupportedMediaType",
            "content-type must be application/x-protobuf",
        ));
    }
    let gzip = match req.header("content-encoding") {
        None => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(refuse(
                415,
                "UnsupportedMediaType",
                format!("content-encoding {other}"),
            ));
        }
    };
    let raw = if gzip {
        let mut out = Vec::new();
        let limit = u64::try_from(MAX_REQUEST_BYTES + 1).unwrap_or(u64::MAX);
        flate2::read::GzDecoder::new(&req.body[..])
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| refuse(400, "InvalidRequestException", format!("gzip: {e}")))?;
        out
    } else {
        req.body.to_vec()
    };
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(refuse(
            413,
            "PayloadTooLarge",
            format!("over {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let spans = decode_request(&raw, "", true, SystemTime::now())
        .map_err(|r| refuse(400, "InvalidRequestException", r.message))?;
    if spans.len() > MAX_SPANS_PER_REQUEST {
        return Err(refuse(
            400,
            "InvalidRequestException",
            format!("{} spans", spans.len()),
        ));
    }
    Ok((
        TracesCall {
            wire_bytes: req.body.len(),
            raw_bytes: raw.len(),
            gzip,
            spans: spans.len(),
            scope: Some(scope),
        },
        spans,
    ))
}

/// Recomputes the request's `SigV4` signature with the emulator's credentials; the credential
/// scope's region and service when it matches.
fn verify_signature(req: &Request, host: &str) -> Result<(String, String), Refusal> {
    let denied = |m: &str| refuse(403, "InvalidSignatureException", m);
    let host = req.header("host").unwrap_or(host);
    let auth = req
        .header("authorization")
        .ok_or_else(|| refuse(403, "MissingAuthenticationTokenException", "not signed"))?;
    let field = |name: &str| {
        auth.split(name)
            .nth(1)
            .map(|rest| rest.split([',', ' ']).next().unwrap_or_default().to_owned())
    };
    let credential = field("Credential=").ok_or_else(|| denied("no credential"))?;
    let signed_headers = field("SignedHeaders=").ok_or_else(|| denied("no signed headers"))?;
    let signature = field("Signature=").ok_or_else(|| denied("no signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, _date, region, service, "aws4_request"] = parts[..] else {
        return Err(denied("malformed credential scope"));
    };
    if key != DUMMY_ACCESS_KEY_ID {
        return Err(refuse(403, "UnrecognizedClientException", key.to_owned()));
    }
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| denied("no x-amz-date"))?;
    let time = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| denied("bad x-amz-date"))?
        .and_utc();
    let time = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(time.timestamp()).unwrap_or_default());
    let mut headers: Vec<(String, String)> = Vec::new();
    for name in signed_headers.split(';') {
        let value = if name == "host" {
            host.to_owned()
        } else {
            req.header(name)
                .ok_or_else(|| denied("a signed header is missing"))?
                .to_owned()
        };
        headers.push((name.to_owned(), value));
    }
    let url = format!("http://{host}{}", req.path);
    let signable = SignableRequest::new(
        req.method.as_str(),
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&req.body),
    )
    .map_err(|e| denied(&e.to_string()))?;
    let identity = Credentials::new(
        DUMMY_ACCESS_KEY_ID,
        DUMMY_SECRET_ACCESS_KEY,
        Some(DUMMY_SESSION_TOKEN.to_owned()),
        None,
        "sink",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| denied(&e.to_string()))?
        .into();
    let expected = sign(signable, &params)
        .map_err(|e| denied(&e.to_string()))?
        .signature()
        .to_owned();
    if expected != signature {
        return Err(denied("the signature does not match"));
    }
    if service != "xray" {
        return Err(denied("signed for another service"));
    }
    if req.header("x-amz-security-token") != Some(DUMMY_SESSION_TOKEN) {
        return Err(refuse(403, "UnrecognizedClientException", "session token"));
    }
    Ok((region.to_owned(), service.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Method};
    use std::time::Instant;

    /// A request for `/v1/traces` on `host`, signed with `secret` by the AWS SDK's signer.
    fn signed(body: &[u8], secret: &str, service: &str) -> Request {
        let host = "127.0.0.1:4566";
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, body).unwrap();
            e.finish().unwrap()
        };
        let headers = [
            ("host", host),
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ];
        let identity = Credentials::new(
            DUMMY_ACCESS_KEY_ID,
            secret,
            Some(DUMMY_SESSION_TOKEN.to_owned()),
            None,
            "t",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            format!("http://{host}/v1/traces"),
            headers.iter().copied(),
            SignableBody::Bytes(&gz),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{host}/v1/traces"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut req = req.body(()).unwrap();
        instructions.apply_to_request_http1x(&mut req);
        let mut map = HeaderMap::new();
        for (k, v) in req.headers() {
            map.insert(k.clone(), HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        Request {
            method: Method::POST,
            path: "/v1/traces".to_owned(),
            query: None,
            headers: map,
            body: gz.into(),
            received_at: Instant::now(),
            body_done_at: Instant::now(),
        }
    }

    fn one_span() -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let root = format!("1-{now:08x}-0123456789abcdef01234567");
        let span = super::super::otlp::SpanSpec {
            name: "s",
            span_id: "1bbaa244e76f8d42",
            ..Default::default()
        };
        super::super::otlp::build_request(&root, "svc", &[span])
    }

    #[test]
    fn a_request_signed_with_the_functions_credentials_is_taken() {
        let (call, spans) =
            check(&signed(&one_span(), DUMMY_SECRET_ACCESS_KEY, "xray"), "").unwrap();
        assert_eq!(spans.len(), 1);
        assert!(call.gzip);
        assert_eq!(call.scope, Some(("us-east-1".into(), "xray".into())));
    }

    #[test]
    fn a_wrong_key_another_service_or_a_changed_body_is_refused() {
        let wrong_key = check(&signed(&one_span(), "not-the-secret", "xray"), "").unwrap_err();
        assert_eq!(wrong_key.message, "the signature does not match");
        let other_service =
            check(&signed(&one_span(), DUMMY_SECRET_ACCESS_KEY, "logs"), "").unwrap_err();
        assert_eq!(other_service.status, 403);
        let mut changed = signed(&one_span(), DUMMY_SECRET_ACCESS_KEY, "xray");
        let mut body = changed.body.to_vec();
        let last = body.len() - 1;
        body[last] ^= 1;
        changed.body = body.into();
        assert_eq!(
            check(&changed, "").unwrap_err().error_type,
            "InvalidSignatureException"
        );
        let mut unsigned = signed(&one_span(), DUMMY_SECRET_ACCESS_KEY, "xray");
        unsigned.headers.remove("authorization");
        assert_eq!(check(&unsigned, "").unwrap_err().status, 403);
    }
}
