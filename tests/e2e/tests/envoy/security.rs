//! `auth-flow` against a hostile client and misbehaving services, in a real Envoy (1.40, V8):
//! identity headers a client made up (in any case, repeated, with `_` for `-`), repeated
//! credentials, and auth or users services answering unexpected statuses, statuses no HTTP
//! library would send, something other than JSON, or too slowly. Every case fails closed: the
//! upstream sees nothing, or, on success, exactly the identity the plugin set.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{
    DemoRequest, Envoy, EnvoyConfig, HttpResponse, RawPart, RawServer, Recorded, Response, Server,
    Upstreams, json, plugin_wasm, raw_bytes, raw_response,
};
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};

const CONFIG: &str = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;

/// Every spelling of a made-up identity a client could try: mixed case, the same name twice
/// with different values, and `_` for `-` (which CGI-style upstreams read as the same header;
/// Envoy lets such names through by default).
const SPOOFED: &[(&str, &str)] = &[
    ("X-User-Id", "admin"),
    ("x-user-id", "root"),
    ("X-USER-NAME", "Mallory"),
    ("x-user-admin", "true"),
    ("X-User-Admin", "yes"),
    ("x_user_id", "underscored"),
    ("X_USER_NAME", "underscored"),
    ("x-user_role", "admin"),
];

/// Envoy running `auth-flow` with `config`, in front of the recording echo upstream.
fn envoy(upstreams: &Upstreams, auth: SocketAddr, users: SocketAddr, config: &str) -> Envoy {
    Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(config)
            .cluster("auth", auth)
            .cluster("users", users),
    )
}

/// The headers an upstream would take for identity headers: CGI-style servers read `_` and
/// `-` alike, and every server ignores case. Sorted.
fn identity_headers(recorded: &Recorded) -> Vec<(String, String)> {
    let mut identity: Vec<(String, String)> = recorded
        .headers
        .iter()
        .filter(|(name, _)| {
            name.to_ascii_lowercase()
                .replace('_', "-")
                .starts_with("x-user-")
        })
        .cloned()
        .collect();
    identity.sort();
    identity
}

/// Sends `GET /orders` with `headers` and the spoofed identity headers, and checks that the
/// client got `status` and the upstream nothing. For a 503 it also checks that the reply is
/// the plugin's (not Envoy's own, nor a failed VM's).
fn assert_refused(
    envoy: &Envoy,
    upstreams: &Upstreams,
    headers: &[(&str, &str)],
    status: u16,
) -> Response {
    let all: Vec<(&str, &str)> = headers.iter().chain(SPOOFED).copied().collect();
    let response = envoy.send("GET", "/orders", &all, b"");
    assert_eq!(
        response.status,
        status,
        "{headers:?}: {}\n{}",
        response.text(),
        envoy.log()
    );
    if status == 503 {
        assert_eq!(response.text(), "Service Unavailable", "{headers:?}");
    }
    let recorded = upstreams.recorded();
    assert!(
        recorded.is_empty(),
        "{headers:?}: the upstream was called: {recorded:?}"
    );
    response
}

/// How a hostile service answers, chosen by the client through its credential (for the auth
/// service) or the token the auth service hands out (for the users service):
/// - `ok`: `200`, JSON, the expected body;
/// - `deny`: `401`;
/// - `status-NNN`: status `NNN`, JSON, the expected body all the same;
/// - `type-T`: `200` with `content-type: T` and the expected JSON body;
/// - `no-type`: `200` with the expected JSON body but no `content-type`;
/// - `slow`: `200`, JSON, the expected body, after 2 s (the plugin waits 500 ms).
async fn behave(behaviour: String, expected: serde_json::Value) -> HttpResponse {
    if behaviour == "slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if behaviour == "deny" {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "denied"}),
        );
    }
    if let Some(code) = behaviour.strip_prefix("status-") {
        return json(StatusCode::from_bytes(code.as_bytes()).unwrap(), &expected);
    }
    let mut response = json(StatusCode::OK, &expected);
    if behaviour == "no-type" {
        response.headers_mut().remove(CONTENT_TYPE);
    } else if let Some(content_type) = behaviour.strip_prefix("type-") {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    }
    response
}

/// The hostile auth service: the credential `users-B` gets the token `B` (so that the users
/// service behaves as `B`); any other credential is the behaviour of this service, whose
/// token is then `ok`.
fn hostile_auth() -> Server {
    Server::start(|request: DemoRequest| {
        let credential = serde_json::from_slice::<serde_json::Value>(&request.body)
            .ok()
            .and_then(|body| body.get("credential")?.as_str().map(str::to_string))
            .unwrap_or_default();
        match credential.strip_prefix("users-") {
            Some(token) => behave("ok".to_string(), serde_json::json!({"token": token})),
            None => behave(credential, serde_json::json!({"token": "ok"})),
        }
    })
}

/// The hostile users service: the bearer token is its behaviour.
fn hostile_users() -> Server {
    Server::start(|request: DemoRequest| {
        let token = request
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        behave(token, serde_json::json!({"id": "u-7", "name": "eve"}))
    })
}

/// The plugin logged an error for `cluster` containing `words`.
fn assert_logged(envoy: &Envoy, words: &[&str]) {
    let log = envoy.log();
    assert!(
        log.lines()
            .any(|line| line.contains("on_request_headers failed")
                && words.iter().all(|word| line.contains(word))),
        "no error of the plugin with {words:?} in Envoy's log:\n{log}"
    );
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream_only_the_plugins_do() {
    let upstreams = Upstreams::start();
    let envoy = envoy(&upstreams, upstreams.auth, upstreams.users, CONFIG);
    let mut headers = vec![
        ("authorization", "Bearer demo-token"),
        ("x-request-id", "r1"),
    ];
    headers.extend_from_slice(SPOOFED);
    let response = envoy.send("GET", "/orders", &headers, b"");
    assert_eq!(response.status, 200, "{}", response.text());

    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        identity_headers(&recorded[0]),
        [
            ("x-user-id".to_string(), "u-1".to_string()),
            ("x-user-name".to_string(), "alice".to_string()),
        ],
        "{:?}",
        recorded[0].headers
    );
    assert_eq!(recorded[0].header("x-request-id"), Some("r1"));
}

#[test]
fn spoofed_identity_headers_go_nowhere_on_every_rejection_path() {
    let upstreams = Upstreams::start();
    let (auth, users) = (hostile_auth(), hostile_users());
    let envoy = envoy(&upstreams, auth.addr(), users.addr(), CONFIG);
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[], 401),
        (&[("authorization", "  ")], 401),
        (&[("authorization", "deny")], 403),
        (&[("authorization", "users-deny")], 403),
        (&[("authorization", "status-500")], 503),
        (&[("authorization", "users-status-502")], 503),
        (&[("authorization", "type-text/html")], 503),
        (&[("authorization", "users-no-type")], 503),
        (&[("authorization", "slow")], 503),
        (&[("authorization", "users-slow")], 503),
    ];
    for &(headers, status) in cases {
        assert_refused(&envoy, &upstreams, headers, status);
    }

    // The services work: the same Envoy lets a good credential through, with its identity.
    let response = envoy.send("GET", "/orders", &[("authorization", "ok")], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstreams.recorded()[0].header("x-user-id"), Some("u-7"));
}

#[test]
fn credential_headers_are_read_in_any_case_and_refused_when_repeated() {
    let upstreams = Upstreams::start();
    let (auth, users) = (hostile_auth(), hostile_users());
    let config = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}, "credential_header": "X-Api-Key"}"#;
    let envoy = envoy(&upstreams, auth.addr(), users.addr(), config);

    // Twice: which one would the upstream believe? Refused before any call.
    for values in [["ok", "deny"], ["ok", "ok"]] {
        let response = assert_refused(
            &envoy,
            &upstreams,
            &[("x-api-key", values[0]), ("X-API-KEY", values[1])],
            401,
        );
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        assert_eq!(response.text(), "more than one credential");
    }

    for name in ["X-API-KEY", "x-api-key", "X-Api-Key"] {
        let response = envoy.send("GET", "/orders", &[(name, "ok")], b"");
        assert_eq!(response.status, 200, "{name}: {}", response.text());
    }
    assert_eq!(upstreams.recorded().len(), 3);
}

#[test]
fn a_repeated_authorization_header_is_refused() {
    // Envoy joins the values of a repeated `authorization` into one, `a,b`: the plugin sees a
    // single credential, which the auth service does not know.
    let upstreams = Upstreams::start();
    let envoy = envoy(&upstreams, upstreams.auth, upstreams.users, CONFIG);
    for second in ["Bearer demo-token", "Bearer other"] {
        assert_refused(
            &envoy,
            &upstreams,
            &[
                ("Authorization", "Bearer demo-token"),
                ("AUTHORIZATION", second),
            ],
            403,
        );
    }
    // One `authorization`, in any case, is read.
    let response = envoy.send(
        "GET",
        "/orders",
        &[("AUTHORIZATION", "Bearer demo-token")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn unexpected_statuses_never_let_a_request_through() {
    let upstreams = Upstreams::start();
    let (auth, users) = (hostile_auth(), hostile_users());
    let envoy = envoy(&upstreams, auth.addr(), users.addr(), CONFIG);
    for status in [
        201, 202, 204, 206, 301, 302, 304, 307, 400, 404, 418, 429, 500, 502, 503, 504,
    ] {
        let credential = format!("status-{status}");
        assert_refused(&envoy, &upstreams, &[("authorization", &credential)], 503);
        assert_logged(&envoy, &["cluster `auth`", &format!("answered {status}")]);

        let credential = format!("users-status-{status}");
        assert_refused(&envoy, &upstreams, &[("authorization", &credential)], 503);
        assert_logged(&envoy, &["cluster `users`", &format!("answered {status}")]);
    }
}

#[test]
fn a_200_that_does_not_say_json_is_503() {
    let upstreams = Upstreams::start();
    let (auth, users) = (hostile_auth(), hostile_users());
    let envoy = envoy(&upstreams, auth.addr(), users.addr(), CONFIG);
    for behaviour in [
        "type-text/html",
        "type-text/plain;charset=utf-8",
        "type-application/jsonp",
        "type-application/problem+json",
        "no-type",
    ] {
        assert_refused(&envoy, &upstreams, &[("authorization", behaviour)], 503);
        assert_logged(&envoy, &["cluster `auth`", "answered 200"]);
        let credential = format!("users-{behaviour}");
        assert_refused(&envoy, &upstreams, &[("authorization", &credential)], 503);
        assert_logged(&envoy, &["cluster `users`", "answered 200"]);
    }
    assert_logged(&envoy, &["cluster `auth`", "no content-type"]);
    assert_logged(&envoy, &["cluster `users`", r#"content-type "text/html""#]);

    // Parameters and case do not matter.
    for behaviour in [
        "type-application/json;charset=utf-8",
        "type-Application/JSON",
        // No space: the token must be one that can be sent as a bearer token.
        "users-type-APPLICATION/JSON;charset=UTF-8",
    ] {
        let response = envoy.send("GET", "/orders", &[("authorization", behaviour)], b"");
        assert_eq!(response.status, 200, "{behaviour}: {}", response.text());
    }
}

/// The raw answers of [`statuses_no_http_library_sends_are_503`], by credential.
fn raw_answer(request: &[u8]) -> Vec<RawPart> {
    let request = String::from_utf8_lossy(request);
    let credential = request
        .split(r#""credential":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let token = r#"{"token": "t-alice"}"#;
    let json = [("content-type", "application/json")];
    match credential {
        "not-a-number" => raw_response("HTTP/1.1 abc OK", &json, token),
        "four-digits" => raw_response("HTTP/1.1 2000 OK", &json, token),
        "two-digits" => raw_response("HTTP/1.1 20 OK", &json, token),
        "continue-only" => raw_response("HTTP/1.1 100 Continue", &[], ""),
        "informational" => raw_response("HTTP/1.1 199 Whatever", &json, token),
        "switching" => raw_response("HTTP/1.1 101 Switching Protocols", &[], ""),
        "not-http" => vec![(Duration::ZERO, b"hello, I am not HTTP\r\n\r\n".to_vec())],
        "nothing" => Vec::new(),
        // The head at once, the body after the plugin's timeout.
        "trickle" => {
            let whole = raw_bytes("HTTP/1.1 200 OK", &json, token);
            let split = whole.len() - token.len();
            vec![
                (Duration::ZERO, whole[..split].to_vec()),
                (Duration::from_secs(2), whole[split..].to_vec()),
            ]
        }
        _ => raw_response("HTTP/1.1 200 OK", &json, token),
    }
}

#[test]
fn statuses_no_http_library_sends_are_503() {
    let upstreams = Upstreams::start();
    let auth = RawServer::start(raw_answer);
    let envoy = envoy(&upstreams, auth.addr(), upstreams.users, CONFIG);
    for credential in [
        "not-a-number",
        "four-digits",
        "two-digits",
        "continue-only",
        "informational",
        "switching",
        "not-http",
        "nothing",
        "trickle",
    ] {
        assert_refused(&envoy, &upstreams, &[("authorization", credential)], 503);
    }
    // Envoy answers most of these itself (502, 503) before the plugin sees them, but hands a
    // four-digit status and a `101` over as they are.
    assert_logged(&envoy, &["cluster `auth`", "no valid :status"]);
    assert_logged(&envoy, &["cluster `auth`", "answered 101"]);
    // The trickle: its head came in time, its body did not.
    assert_logged(
        &envoy,
        &["response from cluster `auth` broke off before it was whole"],
    );
    // The raw service itself answers well-formed requests: `t-alice` is the demo user.
    let response = envoy.send("GET", "/orders", &[("authorization", "fine")], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstreams.recorded()[0].header("x-user-id"), Some("u-1"));
}
