//! `jwt-auth` as a client, the upstream and the key server see it, through the testing API
//! (natively and, in lockstep, as the compiled wasm32-wasip1 module and wasm32-wasip2 component).

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use jwt_auth::JwtAuth;
use p256::ecdsa::signature::Signer as _;
use proxy_async::testing::{Action, Call, PluginTest, TestStream};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The testing API's clock at the start of every test: 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

const ISSUER: &str = "https://idp.example";

const CONFIG: &str = r#"{
    "jwks": {"cluster": "idp", "path": "/.well-known/jwks.json"},
    "issuer": "https://idp.example",
    "audiences": ["api"],
    "refresh_interval_s": 60,
    "forward_claim_header": "x-jwt-sub"
}"#;

/// The identity provider's first signing key, and the one it rotates to.
static KEY_1: LazyLock<RsaPrivateKey> =
    LazyLock::new(|| rsa_key(include_str!("fixtures/rsa-key-1.pem")));
static KEY_2: LazyLock<RsaPrivateKey> =
    LazyLock::new(|| rsa_key(include_str!("fixtures/rsa-key-2.pem")));

/// A P-256 key for ES256 (a fixed scalar: any 32 bytes below the group order will do).
static EC_KEY: LazyLock<p256::ecdsa::SigningKey> = LazyLock::new(|| {
    p256::ecdsa::SigningKey::from_slice(&[0x5a; 32]).expect("a valid P-256 scalar")
});

fn rsa_key(pem: &str) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(pem).expect("a PKCS#8 RSA key")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The public half of `key` as a JWK.
fn rsa_jwk(kid: &str, key: &RsaPrivateKey) -> Value {
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be()),
    })
}

fn ec_jwk(kid: &str) -> Value {
    let point = EC_KEY.verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
        "x": b64(point.x().expect("uncompressed")), "y": b64(point.y().expect("uncompressed")),
    })
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// The key server's document before the rotation.
fn jwks_1() -> String {
    jwks(&[rsa_jwk("key-1", &KEY_1)])
}

/// A compact JWS of `claims` with `header`, signed by `sign` over the signing input.
fn token_with(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(signature))
}

/// An RS256 token signed by `key`, naming `kid`.
fn rs256(key: &RsaPrivateKey, kid: &str, claims: &Value) -> String {
    token_with(
        &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        claims,
        |input| {
            key.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input))
                .expect("signing works")
        },
    )
}

/// The claims of a token the plugin must accept.
fn good_claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 300})
}

/// `good_claims` with `changes` applied (a `null` removes the claim).
fn claims_with(changes: &Value) -> Value {
    let mut claims = good_claims();
    if let (Some(claims), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (name, value) in changes {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
    }
    claims
}

fn good_token() -> String {
    rs256(&KEY_1, "key-1", &good_claims())
}

fn plugin(config: &str) -> PluginTest<JwtAuth> {
    PluginTest::new(config).expect("the configuration is valid")
}

/// The one pending call, checked to be a JWKS fetch to `cluster`.
fn jwks_call(test: &PluginTest<JwtAuth>, cluster: &str) -> Call {
    let calls = test.calls();
    assert_eq!(calls.len(), 1, "exactly one call in flight: {calls:?}");
    let call = calls[0].clone();
    assert_eq!(call.cluster(), cluster);
    assert_eq!(call.method(), "GET");
    assert_eq!(call.path(), "/.well-known/jwks.json");
    call
}

/// The plugin with the configuration, its first fetch answered with `document`.
fn loaded(config: &str, document: &str) -> PluginTest<JwtAuth> {
    let test = plugin(config);
    let call = jwks_call(&test, "idp");
    test.respond(
        &call,
        200,
        &[("content-type", "application/json")],
        document,
    );
    assert!(test.calls().is_empty());
    test
}

/// A request with `authorization` (if any) and a forged claim header.
fn request<'t>(
    test: &'t PluginTest<JwtAuth>,
    authorization: Option<&str>,
) -> (TestStream<'t, JwtAuth>, Action) {
    let stream = test.stream();
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "shop.example"),
        ("X-Jwt-Sub", "admin"),
    ];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    let action = stream.send_request_headers(&headers, true);
    (stream, action)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The request went upstream as `alice`, without the token and without the forged header.
fn assert_accepted(stream: &TestStream<'_, JwtAuth>) {
    assert!(stream.local_reply().is_none(), "{:?}", stream.local_reply());
    let subs: Vec<_> = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-jwt-sub"))
        .collect();
    assert_eq!(subs, [("x-jwt-sub".to_string(), "alice".to_string())]);
    assert_eq!(
        stream.request_header("authorization"),
        None,
        "the token is not forwarded by default"
    );
}

/// The client got `status` with Envoy's body, the request never went upstream, and the forged
/// claim header is gone.
fn assert_refused(stream: &TestStream<'_, JwtAuth>, status: u16, body: &str) {
    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body_str(), body);
    assert_eq!(
        reply.details,
        format!("jwt_authn_access_denied{{{}}}", body.replace(' ', "_"))
    );
    assert_eq!(
        stream.resumed_requests(),
        0,
        "a refused request never resumes"
    );
    assert_eq!(stream.request_header("x-jwt-sub"), None);
}

fn assert_unauthorized(stream: &TestStream<'_, JwtAuth>, body: &str) {
    assert_refused(stream, 401, body);
    let challenge = stream.response_header("www-authenticate");
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer error="invalid_token""#),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Accepted tokens.

#[test]
fn keys_are_fetched_at_start_by_the_background_task() {
    let test = plugin(CONFIG);
    // Before any request: the call is the root context's, not a stream's.
    let call = jwks_call(&test, "idp");
    assert_eq!(call.authority(), "idp");
    assert_eq!(call.header("accept"), Some("application/json"));
    assert_eq!(call.timeout(), Duration::from_millis(1000));
    test.respond(&call, 200, &[], jwks_1());
    let info = test.logs_at(log::Level::Info);
    assert!(
        info.iter()
            .any(|line| line.contains("JWKS from cluster `idp` loaded, key ids: key-1")),
        "{info:?}"
    );

    let (stream, action) = request(&test, Some(&bearer(&good_token())));
    assert_ne!(stream.context_id(), call.context_id());
    // The keys are in memory: no wait, no call.
    assert_eq!(action, Action::Continue);
    assert!(test.calls().is_empty());
    assert_accepted(&stream);
}

#[test]
fn a_valid_token_continues_with_the_subject() {
    let test = loaded(CONFIG, &jwks_1());
    let (stream, action) = request(&test, Some(&bearer(&good_token())));
    assert_eq!(action, Action::Continue);
    assert_accepted(&stream);
    assert_eq!(stream.resumed_requests(), 0);
    // The scheme is case-insensitive.
    let (stream, _) = request(&test, Some(&format!("bearer  {}", good_token())));
    assert_accepted(&stream);
}

#[test]
fn an_array_audience_with_one_allowed_value_is_accepted() {
    let test = loaded(CONFIG, &jwks_1());
    let token = rs256(
        &KEY_1,
        "key-1",
        &claims_with(&json!({"aud": ["other", "api"]})),
    );
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_accepted(&stream);
}

#[test]
fn the_clock_skew_is_60_seconds_by_default() {
    let test = loaded(CONFIG, &jwks_1());
    for (changes, accepted) in [
        (json!({"exp": NOW - 60}), true),
        (json!({"exp": NOW - 61}), false),
        (json!({"nbf": NOW + 60}), true),
        (json!({"nbf": NOW + 61}), false),
    ] {
        let token = rs256(&KEY_1, "key-1", &claims_with(&changes));
        let (stream, _) = request(&test, Some(&bearer(&token)));
        assert_eq!(stream.local_reply().is_none(), accepted, "{changes}");
    }
}

#[test]
fn the_proxy_clock_decides_expiry() {
    let test = loaded(CONFIG, &jwks_1());
    let token = good_token();
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_accepted(&stream);
    // exp is NOW + 300; the skew allows 60 s more.
    test.advance_time(Duration::from_secs(361));
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_unauthorized(&stream, "Jwt is expired");
}

#[test]
fn es256_tokens_verify_with_an_ec_key() {
    let test = loaded(CONFIG, &jwks(&[rsa_jwk("key-1", &KEY_1), ec_jwk("ec-1")]));
    let sign = |input: &[u8]| {
        let signature: p256::ecdsa::Signature = EC_KEY.sign(input);
        signature.to_bytes().to_vec()
    };
    let token = token_with(
        &json!({"alg": "ES256", "kid": "ec-1"}),
        &good_claims(),
        sign,
    );
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_accepted(&stream);

    // The RSA key cannot vouch for an ES256 token, nor the EC key for an RS256 one.
    let token = token_with(
        &json!({"alg": "ES256", "kid": "key-1"}),
        &good_claims(),
        sign,
    );
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_unauthorized(
        &stream,
        "Jwks doesn't have key to match kid or alg from Jwt",
    );
}

#[test]
fn a_token_without_kid_is_tried_with_every_key_of_its_alg() {
    let test = loaded(
        CONFIG,
        &jwks(&[rsa_jwk("key-2", &KEY_2), rsa_jwk("key-1", &KEY_1)]),
    );
    let token = token_with(&json!({"alg": "RS256"}), &good_claims(), |input| {
        KEY_1
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input))
            .expect("signing works")
    });
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_accepted(&stream);
}

#[test]
fn forward_keeps_the_token_and_the_payload_header_carries_the_claims() {
    let config = r#"{"jwks": {"cluster": "idp"}, "issuer": "https://idp.example",
        "forward": true, "forward_payload_header": "X-Jwt-Payload"}"#;
    let test = loaded(config, &jwks_1());
    let token = good_token();
    let stream = test.stream();
    stream.send_request_headers(
        &[
            (":path", "/"),
            ("authorization", &bearer(&token)),
            ("x-jwt-payload", "forged"),
        ],
        true,
    );
    assert!(stream.local_reply().is_none());
    assert_eq!(stream.request_header("authorization"), Some(bearer(&token)));
    let payload = stream
        .request_header("x-jwt-payload")
        .expect("the payload header");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(claims, good_claims());
    // No claim header was configured: the client's one goes through untouched.
    assert_eq!(stream.request_header("x-jwt-sub"), None);
}

// ---------------------------------------------------------------------------------------------
// Refused tokens.

#[test]
fn a_missing_token_is_401_with_a_bare_challenge() {
    let test = loaded(CONFIG, &jwks_1());
    for authorization in [
        None,
        Some("Basic YWxpY2U6cHc="),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let (stream, action) = request(&test, authorization);
        assert_eq!(action, Action::Pause, "a local reply stops the request");
        assert_refused(&stream, 401, "Jwt is missing");
        assert_eq!(
            stream.response_header("www-authenticate").as_deref(),
            Some("Bearer")
        );
    }
}

#[test]
fn bad_tokens_are_401() {
    let test = loaded(CONFIG, &jwks_1());
    let none_alg = token_with(&json!({"alg": "none"}), &good_claims(), |_| Vec::new());
    let hs256 = token_with(
        &json!({"alg": "HS256", "kid": "key-1"}),
        &good_claims(),
        |_| b"mac".to_vec(),
    );
    let good = good_token();
    let mut tampered: Vec<&str> = good.split('.').collect();
    let other_payload = b64(claims_with(&json!({"sub": "admin"})).to_string());
    tampered[1] = &other_payload;
    let cases = [
        (
            "garbage".to_string(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        ("a.b.c".to_string(), "Jwt header is an invalid JSON"),
        ("e30.e30.!!".to_string(), "Jwt header is an invalid JSON"),
        (none_alg, "Jwt header [alg] is not supported"),
        (hs256, "Jwt header [alg] is not supported"),
        (
            // Signed by the second key under the first key's id.
            rs256(&KEY_2, "key-1", &good_claims()),
            "Jwt verification fails",
        ),
        (tampered.join("."), "Jwt verification fails"),
        (
            rs256(&KEY_1, "key-1", &claims_with(&json!({"exp": NOW - 3600}))),
            "Jwt is expired",
        ),
        (
            rs256(&KEY_1, "key-1", &claims_with(&json!({"nbf": NOW + 3600}))),
            "Jwt not yet valid",
        ),
        (
            rs256(
                &KEY_1,
                "key-1",
                &claims_with(&json!({"iss": "https://evil.example"})),
            ),
            "Jwt issuer is not configured",
        ),
        (
            rs256(&KEY_1, "key-1", &claims_with(&json!({"iss": null}))),
            "Jwt issuer is not configured",
        ),
        (
            rs256(&KEY_1, "unknown", &good_claims()),
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            rs256(&KEY_1, "key-1", &claims_with(&json!({"exp": "tomorrow"}))),
            "Jwt payload is an invalid JSON",
        ),
    ];
    for (token, body) in cases {
        let (stream, _) = request(&test, Some(&bearer(&token)));
        assert_unauthorized(&stream, body);
    }
    // An unknown kid right after a fetch causes no other fetch.
    assert!(test.calls().is_empty());
}

#[test]
fn hostile_tokens_are_401_never_a_trap() {
    let test = loaded(CONFIG, &jwks_1());
    let deep = b64("[".repeat(10_000));
    let huge_signature = format!("{}.{}", good_token(), "A".repeat(50_000));
    let tokens = [
        ".".repeat(5_000),
        "a".repeat(50_000),
        "Ж.Ж.Ж".to_string(),
        format!("{deep}.{deep}.{deep}"),
        format!("{}.{deep}.c2ln", b64(r#"{"alg":"RS256","kid":"key-1"}"#)),
        huge_signature,
        format!("{} trailing", good_token()),
        good_token().replace('.', ".="),
    ];
    for token in tokens {
        let (stream, _) = request(&test, Some(&bearer(&token)));
        let reply = stream.local_reply().expect("a local reply");
        assert_eq!(reply.status, 401, "{}", reply.body_str());
    }
    // The plugin is still serving.
    let (stream, _) = request(&test, Some(&bearer(&good_token())));
    assert_accepted(&stream);
}

#[test]
fn a_token_for_another_audience_is_403() {
    let test = loaded(CONFIG, &jwks_1());
    for aud in [json!("web"), json!(["web", "mobile"]), Value::Null] {
        let token = rs256(&KEY_1, "key-1", &claims_with(&json!({ "aud": aud })));
        let (stream, _) = request(&test, Some(&bearer(&token)));
        assert_refused(&stream, 403, "Audiences in Jwt are not allowed");
        assert_eq!(
            stream.response_header("www-authenticate").as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
    }
}

#[test]
fn two_authorization_headers_are_401() {
    let test = loaded(CONFIG, &jwks_1());
    let stream = test.stream();
    let token = bearer(&good_token());
    stream.send_request_headers(
        &[
            (":path", "/"),
            ("authorization", &token),
            ("authorization", &token),
        ],
        true,
    );
    assert_unauthorized(
        &stream,
        "Jwt is ambiguous: more than one Authorization header",
    );
}

#[test]
fn require_expiration_refuses_tokens_without_exp() {
    let test = loaded(
        r#"{"jwks": {"cluster": "idp"}, "require_expiration": true, "forward_claim_header": "x-jwt-sub"}"#,
        &jwks_1(),
    );
    let token = rs256(&KEY_1, "key-1", &claims_with(&json!({"exp": null})));
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_unauthorized(&stream, "Jwt has no expiration");
    // Without issuer and audiences configured, any issuer and audience is fine.
    let token = rs256(
        &KEY_1,
        "key-1",
        &claims_with(&json!({"iss": "https://other", "aud": "x"})),
    );
    let (stream, _) = request(&test, Some(&bearer(&token)));
    assert_accepted(&stream);
}

// ---------------------------------------------------------------------------------------------
// The key set over time.

#[test]
fn the_key_set_is_refreshed_after_the_interval_and_rotation_takes_effect() {
    let test = loaded(CONFIG, &jwks_1());
    let new_token = rs256(&KEY_2, "key-2", &good_claims());

    test.advance_time(Duration::from_secs(59));
    assert!(test.calls().is_empty(), "no fetch before the interval");
    test.advance_time(Duration::from_secs(1));
    let call = jwks_call(&test, "idp");
    // The identity provider rotated: only the new key is published now.
    test.respond(&call, 200, &[], jwks(&[rsa_jwk("key-2", &KEY_2)]));

    let (stream, _) = request(&test, Some(&bearer(&new_token)));
    assert_accepted(&stream);
    let old_token = rs256(&KEY_1, "key-1", &good_claims());
    let (stream, action) = request(&test, Some(&bearer(&old_token)));
    // Fetched just now: the unknown kid causes no other fetch.
    assert_eq!(action, Action::Pause);
    assert_unauthorized(
        &stream,
        "Jwks doesn't have key to match kid or alg from Jwt",
    );
    assert!(test.calls().is_empty());

    // And the refresh goes on.
    test.advance_time(Duration::from_secs(60));
    jwks_call(&test, "idp");
}

#[test]
fn a_failed_refresh_keeps_the_old_keys_and_retries_soon() {
    let test = loaded(CONFIG, &jwks_1());
    test.advance_time(Duration::from_secs(60));
    let call = jwks_call(&test, "idp");
    test.fail(&call);
    let warnings = test.logs_at(log::Level::Warn);
    assert!(
        warnings.iter().any(|line| line
            .contains("JWKS refresh from cluster `idp` failed, keeping the 1 keys loaded before")),
        "{warnings:?}"
    );
    let (stream, _) = request(&test, Some(&bearer(&good_token())));
    assert_accepted(&stream);

    // Retried after retry_interval_s (1 s), not after a whole refresh interval; a document
    // without usable keys and an error status are failures too.
    test.advance_time(Duration::from_secs(1));
    let call = jwks_call(&test, "idp");
    test.respond(
        &call,
        200,
        &[],
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    );
    test.advance_time(Duration::from_secs(1));
    let call = jwks_call(&test, "idp");
    test.respond(&call, 500, &[], "oops");
    let (stream, _) = request(&test, Some(&bearer(&good_token())));
    assert_accepted(&stream);

    // Once the key server is back, the interval is the refresh interval again.
    test.advance_time(Duration::from_secs(1));
    let call = jwks_call(&test, "idp");
    test.respond(&call, 200, &[], jwks_1());
    test.advance_time(Duration::from_secs(59));
    assert!(test.calls().is_empty());
    test.advance_time(Duration::from_secs(1));
    jwks_call(&test, "idp");
}

#[test]
fn an_unknown_kid_refetches_once_the_last_fetch_is_10_seconds_old() {
    let test = loaded(CONFIG, &jwks_1());
    test.advance_time(Duration::from_secs(10));
    let new_token = rs256(&KEY_2, "key-2", &good_claims());
    let (stream, action) = request(&test, Some(&bearer(&new_token)));
    // The request waits for a fetch of its own.
    assert_eq!(action, Action::Pause);
    let calls = stream.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    // A second request with an unknown kid meanwhile shares that fetch.
    let (second, _) = request(&test, Some(&bearer(&new_token)));
    assert_eq!(test.calls().len(), 1);
    test.respond(
        &calls[0],
        200,
        &[],
        jwks(&[rsa_jwk("key-1", &KEY_1), rsa_jwk("key-2", &KEY_2)]),
    );
    assert_accepted(&stream);
    assert_eq!(stream.resumed_requests(), 1);
    assert_accepted(&second);
    assert_eq!(second.resumed_requests(), 1);

    // A kid the key server does not know either: refused, and no fetch for 10 s.
    let forged = rs256(&KEY_2, "key-3", &good_claims());
    let (stream, _) = request(&test, Some(&bearer(&forged)));
    assert_unauthorized(
        &stream,
        "Jwks doesn't have key to match kid or alg from Jwt",
    );
    assert!(test.calls().is_empty());
}

#[test]
fn a_request_before_the_first_key_set_waits_for_it() {
    let test = plugin(CONFIG);
    let call = jwks_call(&test, "idp");
    let (stream, action) = request(&test, Some(&bearer(&good_token())));
    assert_eq!(action, Action::Pause);
    // It shares the background task's fetch rather than making its own.
    assert_eq!(test.calls().len(), 1);
    // The forged header is gone while the request waits.
    assert_eq!(stream.request_header("x-jwt-sub"), None);
    test.respond(&call, 200, &[], jwks_1());
    assert_accepted(&stream);
    assert_eq!(stream.resumed_requests(), 1);
}

#[test]
fn without_any_key_set_requests_get_503_until_one_loads() {
    let test = plugin(CONFIG);
    let call = jwks_call(&test, "idp");
    // A request waiting for the first fetch, which fails.
    let (waiting, _) = request(&test, Some(&bearer(&good_token())));
    test.fail(&call);
    assert_refused(&waiting, 503, "Jwks remote fetch is failed");
    assert_eq!(waiting.response_header("retry-after").as_deref(), Some("1"));
    let warnings = test.logs_at(log::Level::Warn);
    assert!(
        warnings.iter().any(|line| line
            .contains("JWKS fetch from cluster `idp` failed, no keys yet (requests get 503)")),
        "{warnings:?}"
    );

    // The fetch just failed: a request now does not hammer the key server, it gets 503 at
    // once.
    let (stream, action) = request(&test, Some(&bearer(&good_token())));
    assert_eq!(action, Action::Pause);
    assert_refused(&stream, 503, "Jwks remote fetch is failed");
    assert!(test.calls().is_empty());
    // A request without a token is still a 401: no keys are needed to say so.
    let (stream, _) = request(&test, None);
    assert_refused(&stream, 401, "Jwt is missing");

    // The background task tries again after retry_interval_s.
    test.advance_time(Duration::from_secs(1));
    let call = jwks_call(&test, "idp");
    test.respond(&call, 200, &[], jwks_1());
    let (stream, _) = request(&test, Some(&bearer(&good_token())));
    assert_accepted(&stream);
}

#[test]
fn a_request_fetches_the_keys_itself_once_the_last_fetch_is_a_retry_interval_old() {
    let config = r#"{"jwks": {"cluster": "idp"}, "retry_interval_s": 2,
        "forward_claim_header": "x-jwt-sub"}"#;
    let test = plugin(config);
    // The first fetch times out after its second (Envoy's 504): the background task retries
    // 2 s after that, at 3 s.
    let _call = jwks_call(&test, "idp");
    test.advance_time(Duration::from_secs(1));
    assert!(test.calls().is_empty(), "the fetch ended at its timeout");

    // At 1.5 s the last fetch started less than 2 s ago: 503 at once, no call.
    test.advance_time(Duration::from_millis(500));
    let (stream, _) = request(&test, Some(&bearer(&good_token())));
    assert_refused(&stream, 503, "Jwks remote fetch is failed");
    assert_eq!(stream.response_header("retry-after").as_deref(), Some("2"));
    assert!(test.calls().is_empty());

    // At 2.5 s it started 2.5 s ago: the request fetches the keys itself.
    test.advance_time(Duration::from_secs(1));
    let (stream, action) = request(&test, Some(&bearer(&good_token())));
    assert_eq!(action, Action::Pause);
    let calls = stream.calls();
    assert_eq!(calls.len(), 1, "the request's own fetch: {calls:?}");
    test.respond(&calls[0], 200, &[], jwks_1());
    assert_accepted(&stream);
    assert_eq!(stream.resumed_requests(), 1);
}

#[test]
fn a_reconfiguration_fetches_the_new_key_set() {
    let test = loaded(CONFIG, &jwks_1());
    let other = CONFIG.replace(r#""cluster": "idp""#, r#""cluster": "idp-2""#);
    assert!(test.reconfigure(&other));
    let call = jwks_call(&test, "idp-2");
    test.respond(&call, 200, &[], jwks(&[rsa_jwk("key-2", &KEY_2)]));
    let (stream, _) = request(
        &test,
        Some(&bearer(&rs256(&KEY_2, "key-2", &good_claims()))),
    );
    assert_accepted(&stream);
    // The old configuration's task is gone: one fetch per interval, from the new one.
    test.advance_time(Duration::from_secs(60));
    jwks_call(&test, "idp-2");
}

#[test]
fn a_key_server_that_is_not_in_the_proxy_is_a_503_not_a_trap() {
    let test = PluginTest::<JwtAuth>::builder()
        .config(CONFIG)
        .clusters(&["upstream"])
        .build()
        .expect("the configuration is valid");
    let (stream, _) = request(&test, Some(&bearer(&good_token())));
    assert_refused(&stream, 503, "Jwks remote fetch is failed");
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("cluster `idp`")),
        "{:?}",
        test.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration.

fn rejection(config: &str) -> String {
    let result = PluginTest::<JwtAuth>::new(config);
    assert!(result.is_err(), "accepted: {config}");
    result
        .err()
        .map(|rejected| rejected.to_string())
        .unwrap_or_default()
}

#[test]
fn invalid_configurations_are_rejected_naming_the_field() {
    for (config, field) in [
        ("", "jwks.cluster"),
        (r#"{"jwks": {"cluster": " "}}"#, "jwks.cluster"),
        (
            r#"{"jwks": {"cluster": "idp", "path": "jwks"}}"#,
            "jwks.path",
        ),
        (
            r#"{"jwks": {"cluster": "idp", "timeout_ms": 0}}"#,
            "jwks.timeout_ms",
        ),
        (r#"{"jwks": {"cluster": "idp", "url": "/x"}}"#, "jwks.url"),
        (r#"{"jwks": {"cluster": "idp"}, "issuer": ""}"#, "issuer"),
        (
            r#"{"jwks": {"cluster": "idp"}, "audiences": ["api", ""]}"#,
            "audiences[1]",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "audiences": "api"}"#,
            "audiences",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "refresh_interval_s": 0}"#,
            "refresh_interval_s",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "refresh_interval_s": "soon"}"#,
            "refresh_interval_s",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "retry_interval_s": 0}"#,
            "retry_interval_s",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "forward_claim_header": "x jwt"}"#,
            "forward_claim_header",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "forward_claim_header": "Authorization"}"#,
            "forward_claim_header",
        ),
        (
            r#"{"jwks": {"cluster": "idp"}, "forward_claim_header": "x-a", "forward_payload_header": "X-A"}"#,
            "forward_payload_header",
        ),
    ] {
        let message = rejection(config);
        assert!(
            message.contains(&format!("field `{field}`")),
            "{config}: {message}"
        );
    }
    assert!(
        rejection(r#"{"jwks": {"cluster": "idp", "url": "/x"}}"#).contains("unknown field `url`")
    );
}

#[test]
fn unknown_top_level_keys_are_ignored() {
    let test = plugin(r#"{"jwks": {"cluster": "idp"}, "_plugin_id_": "jwt", "_rules_": []}"#);
    jwks_call(&test, "idp");
}
