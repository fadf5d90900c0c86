use super::*;

type Env<'a> = &'a [(&'a str, &'a str)];

#[test]
fn the_endpoint_follows_the_sdk_overrides_then_the_region() {
    let settings =
        |pairs: &[(&str, &str)]| ServiceSettings::from_lookup(crate::env::lookup_from(pairs));
    // (environment, endpoint)
    let table: [(Env<'_>, Option<&str>); 5] = [
        (
            &[("AWS_REGION", "eu-west-1")],
            Some("https://xray.eu-west-1.amazonaws.com/v1/traces"),
        ),
        (
            &[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9/"),
            ],
            Some("http://127.0.0.1:9/v1/traces"),
        ),
        (
            &[
                ("AWS_ENDPOINT_URL", "http://global:1"),
                ("AWS_ENDPOINT_URL_XRAY", "http://xray:2"),
            ],
            Some("http://xray:2/v1/traces"),
        ),
        (
            &[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL_XRAY", "http://xray:2"),
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            ],
            Some("https://xray.us-east-1.amazonaws.com/v1/traces"),
        ),
        (&[], None),
    ];
    for (env, expect) in table {
        assert_eq!(endpoint(&settings(env)).as_deref(), expect, "{env:?}");
    }
}

#[test]
fn requests_are_signed_for_xray_in_the_region_with_the_session_token() {
    let credentials = Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "test");
    let time = SystemTime::UNIX_EPOCH + Duration::from_mins(29_926_750);
    let sign = |body: &[u8]| {
        signed(
            "http://127.0.0.1:4566/v1/traces",
            "eu-west-1",
            &credentials,
            body.to_vec(),
            time,
        )
        .unwrap()
    };
    let request = sign(b"body");
    let header = |name: &str| request.headers().get(name).unwrap().to_str().unwrap();
    let auth = header("authorization");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/eu-west-1/xray/aws4_request, SignedHeaders="),
        "{auth}"
    );
    for signed_header in [
        "content-encoding",
        "content-type",
        "host",
        "x-amz-date",
        "x-amz-security-token",
    ] {
        assert!(auth.contains(signed_header), "{signed_header} in {auth}");
    }
    assert_eq!(header("content-type"), "application/x-protobuf");
    assert_eq!(header("content-encoding"), "gzip");
    assert_eq!(header("host"), "127.0.0.1:4566");
    assert_eq!(header("x-amz-security-token"), "token");
    assert_eq!(request.method(), "POST");
    assert_eq!(request.uri().path(), "/v1/traces");
    // Signing the same request at the same time gives the same signature; another body does not.
    let again = sign(b"body");
    assert_eq!(
        again.headers().get("authorization"),
        request.headers().get("authorization")
    );
    let other = sign(b"other");
    assert_ne!(
        other.headers().get("authorization"),
        request.headers().get("authorization")
    );
}
