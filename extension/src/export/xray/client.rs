//! Building the aws-sdk-xray client: TLS roots, credentials, service settings, DNS.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_xray::config::Region;

/// Amazon Trust Services' roots (and the Starfield root that cross-signs them): AWS endpoints
/// chain to these. Compiled in so startup does not read the system store (~15 ms).
pub const AMAZON_ROOTS_PEM: &[u8] = include_bytes!("../../../certs/amazon-trust-services.pem");

/// TCP/TLS connect timeout for the X-Ray endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which certificates the TLS client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRoots {
    /// The compiled-in Amazon Trust Services roots.
    Amazon,
    /// The system store (for proxies or endpoints with other certificate authorities).
    System,
}

/// Where the X-Ray API is and how to reach it, from the standard AWS variables (the ones
/// aws-config's loader reads for a service whose id is `XRay`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL_XRAY`, else `AWS_ENDPOINT_URL`; neither when
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true.
    pub endpoint_url: Option<String>,
    /// `AWS_USE_FIPS_ENDPOINT`.
    pub use_fips: bool,
    /// `AWS_USE_DUALSTACK_ENDPOINT`.
    pub use_dual_stack: bool,
}

impl ServiceSettings {
    /// Reads the settings through `lookup` (the environment, or a map in tests). Empty values
    /// count as unset, as in aws-config.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let flag = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint_url = if flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
            None
        } else {
            get("AWS_ENDPOINT_URL_XRAY").or_else(|| get("AWS_ENDPOINT_URL"))
        };
        Self {
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            endpoint_url,
            use_fips: flag("AWS_USE_FIPS_ENDPOINT"),
            use_dual_stack: flag("AWS_USE_DUALSTACK_ENDPOINT"),
        }
    }
}

/// Builds a client from the standard AWS environment (region, credentials,
/// `AWS_ENDPOINT_URL_XRAY` / `AWS_ENDPOINT_URL`) with one TLS stack (rustls + ring).
///
/// Not `aws_config::defaults(..).load()`: its default chain links in profile files, SSO,
/// STS (web identity, assume role) and IMDS, none of which exist inside Lambda, and they
/// are a fifth of the binary. Lambda gives credentials in the environment, or (SnapStart,
/// Lambda Managed Instances) through the container credentials endpoint: that chain, and
/// the service settings from the same variables aws-config reads (`ServiceSettings`).
///
/// Names are resolved by the SDK's own resolver (the system's, on a blocking thread, as the
/// default connector does) so that a failed lookup reaches us as its typed error.
pub fn from_env(roots: TlsRoots) -> aws_sdk_xray::Client {
    let http = http_client(roots);
    let settings = ServiceSettings::from_lookup(crate::env::process);
    let credentials = credentials(http.clone());
    let mut config = aws_sdk_xray::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .credentials_provider(credentials)
        .region(settings.region.map(Region::new))
        .use_fips(settings.use_fips)
        .use_dual_stack(settings.use_dual_stack)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
    if let Some(url) = settings.endpoint_url {
        config = config.endpoint_url(url);
    }
    aws_sdk_xray::Client::from_conf(config.build())
}

/// The TLS stack every call to AWS uses (rustls + ring), trusting `roots`.
pub fn tls_context(roots: TlsRoots) -> Option<aws_smithy_http_client::tls::TlsContext> {
    use aws_smithy_http_client::tls;
    let trust = match roots {
        TlsRoots::Amazon => tls::TrustStore::empty().with_pem_certificate(AMAZON_ROOTS_PEM),
        TlsRoots::System => tls::TrustStore::empty().with_native_roots(true),
    };
    tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .ok()
}

/// The SDK's HTTP client on that TLS stack, resolving names with the system's resolver (on a
/// blocking thread, as the default connector does) so that a failed lookup reaches us as its
/// typed error.
pub fn http_client(roots: TlsRoots) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    use aws_smithy_runtime::client::dns::TokioDnsResolver;
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    let builder = match tls_context(roots) {
        Some(context) => builder.tls_context(context),
        None => builder,
    };
    builder.build_with_resolver(TokioDnsResolver::new())
}

/// The function's credentials: the environment's, else the container credentials endpoint's
/// (SnapStart, Lambda Managed Instances), fetched through `http`.
pub fn credentials(
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
) -> aws_config::meta::credentials::CredentialsProviderChain {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_config::provider_config::ProviderConfig;
    let container = aws_config::ecs::EcsCredentialsProvider::builder()
        .configure(&ProviderConfig::empty().with_http_client(http))
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Container", container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_are_five_certificates() {
        let text = std::str::from_utf8(AMAZON_ROOTS_PEM).unwrap();
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 5);
        assert_eq!(text.matches("-----END CERTIFICATE-----").count(), 5);
    }

    fn settings(pairs: &[(&str, &str)]) -> ServiceSettings {
        ServiceSettings::from_lookup(crate::env::lookup_from(pairs))
    }

    #[test]
    fn the_service_specific_endpoint_wins_over_the_global_one() {
        let s = settings(&[
            ("AWS_ENDPOINT_URL", "http://global:1"),
            ("AWS_ENDPOINT_URL_XRAY", "http://xray:2"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]);
        assert_eq!(s.endpoint_url.as_deref(), Some("http://xray:2"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let s = settings(&[
            ("AWS_ENDPOINT_URL", "http://global:1"),
            ("AWS_ENDPOINT_URL_XRAY", " "),
        ]);
        assert_eq!(s.endpoint_url.as_deref(), Some("http://global:1"));
    }

    #[test]
    fn configured_endpoints_can_be_ignored_and_flags_read() {
        let s = settings(&[
            ("AWS_ENDPOINT_URL_XRAY", "http://xray:2"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "false"),
        ]);
        assert_eq!(s.endpoint_url, None);
        assert_eq!(s.region.as_deref(), Some("us-east-1"));
        assert!(s.use_fips);
        assert!(!s.use_dual_stack);
        assert_eq!(settings(&[]), ServiceSettings::default());
    }
}
