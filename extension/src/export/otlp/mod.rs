//! X-Ray's OTLP endpoint (`/v1/traces`): sampled OpenTelemetry spans, whole, in requests of up
//! to 5 MB and 10,000 spans, gzip'd and SigV4-signed (service `xray`). The request's body and
//! answer are pure ([`request`]); this is the call.
//!
//! No SDK client exists for this endpoint: the request is signed with the SDK's own signer
//! (`aws-sigv4`) and sent through the SDK's HTTP stack (the same TLS roots and resolver as
//! PutTraceSegments), with the same credential chain.

pub mod request;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_xray::config::{AsyncSleep, Sleep};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::backend::{Answer, Backend, ExportError, PutFuture, WarmFuture};
use super::xray::client::{self, CONNECT_TIMEOUT, ServiceSettings, TlsRoots};
use crate::document::Document;
use crate::metrics::{self, Metrics};

/// The signing name of X-Ray's OTLP endpoint.
pub const SIGNING_NAME: &str = "xray";
/// The path of the traces endpoint.
pub const TRACES_PATH: &str = "/v1/traces";
/// Credentials closer than this to their expiry are fetched again.
pub const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_mins(5);

/// Where the spans go: `AWS_ENDPOINT_URL_XRAY`, else `AWS_ENDPOINT_URL`, else X-Ray in the
/// region, followed by [`TRACES_PATH`]. `None` without a region or an endpoint. Pure.
pub fn endpoint(settings: &ServiceSettings) -> Option<String> {
    let base = match (&settings.endpoint_url, &settings.region) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(region)) => format!("https://xray.{region}.amazonaws.com"),
        (None, None) => return None,
    };
    Some(format!("{base}{TRACES_PATH}"))
}

/// Tokio's timer, for the connector's connect timeout.
#[derive(Debug, Clone, Copy)]
struct TokioSleep;

impl AsyncSleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::new(tokio::time::sleep(duration))
    }
}

/// What the backend builds once, at its first call (or when warmed).
#[derive(Debug)]
struct Client {
    connector: aws_smithy_http_client::Connector,
    credentials: CredentialsProviderChain,
    settings: ServiceSettings,
}

/// The OTLP endpoint as a [`Backend`]: each batch of `T1S` documents is one request.
#[derive(Debug, Clone)]
pub struct OtlpBackend {
    client: Arc<OnceCell<Client>>,
    cached: Arc<Mutex<Option<Credentials>>>,
    roots: TlsRoots,
    metrics: Arc<Metrics>,
}

impl OtlpBackend {
    /// A backend trusting `roots`, configured from the environment at its first use, counting
    /// what the endpoint accepted into `metrics`.
    pub fn new(roots: TlsRoots, metrics: Arc<Metrics>) -> Self {
        Self {
            client: Arc::default(),
            cached: Arc::default(),
            roots,
            metrics,
        }
    }

    async fn client(&self) -> &Client {
        let roots = self.roots;
        self.client
            .get_or_init(|| async move {
                use aws_smithy_http_client::tls;
                use aws_smithy_runtime::client::dns::TokioDnsResolver;
                let builder = aws_smithy_http_client::Connector::builder()
                    .connector_settings(
                        HttpConnectorSettings::builder()
                            .connect_timeout(CONNECT_TIMEOUT)
                            .build(),
                    )
                    .sleep_impl(TokioSleep)
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::Ring,
                    ));
                let builder = match client::tls_context(roots) {
                    Some(context) => builder.tls_context(context),
                    None => builder,
                };
                let connector = builder.build_with_resolver(TokioDnsResolver::new());
                Client {
                    connector,
                    credentials: client::credentials(client::http_client(roots)),
                    settings: ServiceSettings::from_lookup(crate::env::process),
                }
            })
            .await
    }

    /// The function's credentials, from the cache while they are fresh.
    async fn credentials(
        &self,
        chain: &CredentialsProviderChain,
    ) -> Result<Credentials, ExportError> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + CREDENTIALS_REFRESH_MARGIN)
        };
        if let Some(c) = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let c = chain
            .provide_credentials()
            .await
            .map_err(|e| ExportError::Auth {
                status: 0,
                code: "CredentialsNotLoaded".to_owned(),
                message: e.to_string(),
            })?;
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
        Ok(c)
    }

    async fn call(&self, batch: &[&Document]) -> Result<Answer, ExportError> {
        let client = self.client().await;
        let url = endpoint(&client.settings)
            .ok_or_else(|| ExportError::Other("no AWS_REGION and no endpoint URL".to_owned()))?;
        let region = client.settings.region.clone().unwrap_or_default();
        let body = request::gzipped_body(batch).map_err(|e| ExportError::Client4xx {
            status: 0,
            message: e.to_string(),
        })?;
        let sizes = (
            body.raw_bytes as u64,
            body.wire.len() as u64,
            body.spans as u64,
        );
        let gzipped = body.wire;
        let credentials = self.credentials(&client.credentials).await?;
        let request = signed(&url, &region, &credentials, gzipped, SystemTime::now())?;
        let request = aws_smithy_runtime_api::http::Request::try_from(request)
            .map_err(|e| ExportError::Other(e.to_string()))?;
        let response = client
            .connector
            .call(request)
            .await
            .map_err(|e| connector_error(&e))?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(str::to_owned);
        let body = http_body_util::Limited::new(response.into_body(), request::MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let answer = request::answer(status, error_type.as_deref(), &body)?;
        let (raw, wire, spans) = sizes;
        let m = &self.metrics;
        metrics::add(&m.otlp_out_requests, 1);
        metrics::add(&m.otlp_out_spans, spans);
        metrics::add(&m.otlp_out_raw_bytes, raw);
        metrics::add(&m.otlp_out_wire_bytes, wire);
        Ok(answer)
    }
}

/// The request for `url`, signed with `SigV4` for `region` at `time`.
fn signed(
    url: &str,
    region: &str,
    credentials: &Credentials,
    gzipped: Vec<u8>,
    time: SystemTime,
) -> Result<http::Request<SdkBody>, ExportError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let invalid = |e: &dyn std::fmt::Display| ExportError::Other(e.to_string());
    let uri: http::Uri = url.parse().map_err(|e| invalid(&e))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let length = gzipped.len().to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "gzip"),
        ("content-length", length.as_str()),
    ];
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| invalid(&e))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(&gzipped),
    )
    .map_err(|e| invalid(&e))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| invalid(&e))?
        .into_parts();
    let mut builder = http::Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(SdkBody::from(gzipped))
        .map_err(|e| invalid(&e))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

/// A failed connection, by the daemon's backend-error kinds.
fn connector_error(e: &aws_smithy_runtime_api::client::result::ConnectorError) -> ExportError {
    let text = e.to_string();
    let unresolved = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(<dyn std::error::Error>::is::<aws_smithy_runtime_api::client::dns::ResolveDnsError>);
    if e.is_timeout() {
        ExportError::Timeout
    } else if unresolved {
        ExportError::UnknownHost(text)
    } else if e.is_io() {
        ExportError::Refused(text)
    } else {
        ExportError::Other(text)
    }
}

impl Backend for OtlpBackend {
    fn name(&self) -> &'static str {
        "OTLP /v1/traces"
    }

    fn max_batch(&self) -> usize {
        request::MAX_SPANS_PER_REQUEST
    }

    fn put<'a>(&'a self, batch: &'a [&'a Document], _deadline: Instant) -> PutFuture<'a> {
        // The retry loop stops waiting for the call at the deadline, whatever the backend.
        Box::pin(self.call(batch))
    }

    fn warm(&self) -> Option<WarmFuture> {
        let backend = self.clone();
        Some(Box::pin(async move {
            backend.client().await;
        }))
    }
}

#[cfg(test)]
mod tests;
