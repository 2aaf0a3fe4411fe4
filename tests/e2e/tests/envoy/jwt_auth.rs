//! `jwt-auth` in a real Envoy (1.40, V8): the key set fetched by the background task on the
//! root context, valid tokens through with their subject, invalid ones refused.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test: a panic is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use e2e::{Envoy, EnvoyConfig, Server, Upstreams, json, plugin_wasm, workspace};
use hyper::StatusCode;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest as _, Sha256};

const ISSUER: &str = "https://idp.example";

const CONFIG: &str = r#"{
    "jwks": {"cluster": "idp", "path": "/.well-known/jwks.json"},
    "issuer": "https://idp.example",
    "audiences": ["api"],
    "refresh_interval_s": 60,
    "forward_claim_header": "x-jwt-sub"
}"#;

/// The example's committed test key (the identity provider's signing key).
fn key(file: &str) -> RsaPrivateKey {
    let path = workspace()
        .join("examples/jwt-auth/tests/fixtures")
        .join(file);
    let pem = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    RsaPrivateKey::from_pkcs8_pem(&pem).expect("a PKCS#8 RSA key")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RS256 token by `key` under `kid`, for `sub`, valid for five minutes from now (Envoy's
/// clock is the system's).
fn token(key: &RsaPrivateKey, kid: &str, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let claims =
        serde_json::json!({"iss": ISSUER, "aud": "api", "sub": sub, "iat": now, "exp": now + 300});
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = key
        .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&input))
        .expect("signing works");
    format!("{input}.{}", b64(signature))
}

/// A JWKS server publishing `key` as `key-1`, recording the paths it was asked for.
fn jwks_server(key: &RsaPrivateKey) -> (Server, Arc<Mutex<Vec<String>>>) {
    let document = serde_json::json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "key-1",
        "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be()),
    }]});
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    let server = Server::start(move |request| {
        recorder.lock().unwrap().push(request.target.clone());
        let response = json(StatusCode::OK, &document);
        async move { response }
    });
    (server, seen)
}

/// Waits up to 10 s for the JWKS server to have been asked at least once.
fn wait_for_fetch(seen: &Mutex<Vec<String>>, envoy: &Envoy) -> Vec<String> {
    let started = Instant::now();
    loop {
        let fetched = seen.lock().unwrap().clone();
        if !fetched.is_empty() {
            return fetched;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no JWKS fetch within 10 s of Envoy being ready:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn jwt_auth_fetches_keys_in_the_background_and_checks_tokens() {
    let signing_key = key("rsa-key-1.pem");
    let upstreams = Upstreams::start();
    let (idp, seen) = jwks_server(&signing_key);
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("jwt_auth"), upstreams.echo)
            .plugin_config(CONFIG)
            .cluster("idp", idp.addr()),
    );

    // Before any traffic: the background task on the root context fetched the key set.
    let fetched = wait_for_fetch(&seen, &envoy);
    assert!(
        fetched.iter().all(|path| path == "/.well-known/jwks.json"),
        "{fetched:?}"
    );
    assert!(upstreams.recorded().is_empty());
    // The fetch is answered; give the plugin a moment to take the keys in.
    let loaded = Instant::now();
    while !envoy
        .log()
        .contains("JWKS from cluster `idp` loaded, key ids: key-1")
    {
        assert!(
            loaded.elapsed() < Duration::from_secs(10),
            "no key set loaded:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every wasm VM of Envoy (the main thread's and the worker's) fetches on its own: count
    // once no more arrive.
    let mut fetches_before_traffic = seen.lock().unwrap().len();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = seen.lock().unwrap().len();
        if now == fetches_before_traffic {
            break;
        }
        fetches_before_traffic = now;
    }

    // A valid token: the upstream gets the subject, neither the token nor the forged header.
    let valid = format!("Bearer {}", token(&signing_key, "key-1", "alice"));
    let response = envoy.send(
        "GET",
        "/orders",
        &[("authorization", &valid), ("x-jwt-sub", "admin")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    let subs: Vec<_> = recorded[0]
        .headers
        .iter()
        .filter(|(name, _)| name == "x-jwt-sub")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(subs, ["alice"], "{:?}", recorded[0].headers);
    assert_eq!(recorded[0].header("authorization"), None);

    // A token signed by another key under the same kid: 401, and the upstream sees nothing.
    let forged = format!("Bearer {}", token(&key("rsa-key-2.pem"), "key-1", "admin"));
    let response = envoy.send("GET", "/orders", &[("authorization", &forged)], b"");
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(response.text(), "Jwt verification fails");

    // No token at all: 401 with the bare challenge.
    let response = envoy.send("GET", "/orders", &[], b"");
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        upstreams.recorded().len(),
        1,
        "only the valid request went up"
    );

    // The requests were served from the cached key set: no fetch on their behalf.
    let fetched = seen.lock().unwrap().clone();
    assert_eq!(fetched.len(), fetches_before_traffic, "{fetched:?}");
    e2e::assert_no_wasm_failure_logged(&envoy);
}

#[test]
fn jwt_auth_without_a_reachable_key_server_fails_closed_with_503() {
    let signing_key = key("rsa-key-1.pem");
    let upstreams = Upstreams::start();
    // The key server answers 500: no key set is ever loaded.
    let (idp, seen) = {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        let server = Server::start(move |request| {
            recorder.lock().unwrap().push(request.target.clone());
            async { json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({})) }
        });
        (server, seen)
    };
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("jwt_auth"), upstreams.echo)
            .plugin_config(CONFIG)
            .cluster("idp", idp.addr()),
    );
    wait_for_fetch(&seen, &envoy);
    let valid = format!("Bearer {}", token(&signing_key, "key-1", "alice"));
    let response = envoy.send("GET", "/orders", &[("authorization", &valid)], b"");
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.text(), "Jwks remote fetch is failed");
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
    assert!(
        envoy.log().contains("JWKS fetch from cluster `idp` failed"),
        "{}",
        envoy.log()
    );
    e2e::assert_no_wasm_failure_logged(&envoy);
}
