//! The ext-auth port (Higress's ext-auth, `examples/ext-auth`) in a real Envoy, with a real
//! authorization service behind Higress's cluster name: the request cases of Higress's
//! `main_test.go` end to end.

use std::sync::{Arc, Mutex};

use e2e::{DemoRequest, Envoy, EnvoyConfig, HttpResponse, Server, Upstreams, plugin_wasm};
use hyper::StatusCode;
use hyper::header::HeaderValue;

const CLUSTER: &str = "outbound|8090||ext-auth.backend.svc.cluster.local";

/// What the authorization service received: method, path, authorization, body, and every
/// header.
type Seen = Arc<
    Mutex<
        Vec<(
            String,
            String,
            Option<String>,
            String,
            Vec<(String, String)>,
        )>,
    >,
>;

/// The authorization service: `Bearer token123` is user123 (200, `x-user-id`); a path under
/// `/auth/boom` fails (500); anything else is refused (403, `x-auth-failed`).
fn auth_service(seen: Seen) -> Server {
    Server::start(move |request: DemoRequest| {
        let seen = Arc::clone(&seen);
        async move {
            let authorization = request
                .headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            let headers = request
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            seen.lock().expect("the calls seen").push((
                request.method.to_string(),
                request.target.clone(),
                authorization.clone(),
                String::from_utf8_lossy(&request.body).into_owned(),
                headers,
            ));
            let (status, body) = if request.path.starts_with("/auth/boom") {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"error": "Internal server error"}"#,
                )
            } else if authorization.as_deref() == Some("Bearer token123") {
                (StatusCode::OK, r#"{"authorized": true}"#)
            } else {
                (
                    StatusCode::FORBIDDEN,
                    r#"{"authorized": false, "message": "Access denied"}"#,
                )
            };
            let mut response = HttpResponse::new(body.to_string().into());
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            if status == StatusCode::OK {
                headers.insert("x-user-id", HeaderValue::from_static("user123"));
            } else {
                headers.insert("x-auth-failed", HeaderValue::from_static("true"));
            }
            response
        }
    })
}

fn config(extra: &str) -> String {
    format!(
        r#"{{"http_service":{{"endpoint":{{"path_prefix":"/auth","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090}},"endpoint_mode":"envoy","timeout":1000,
            "authorization_response":{{"allowed_upstream_headers":[{{"exact":"x-user-id"}}]}}{extra}}}}}"#
    )
}

#[test]
fn ext_auth_cases_of_higress_in_envoy() {
    let seen: Seen = Arc::default();
    let service = auth_service(Arc::clone(&seen));
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("ext_auth"), upstreams.echo)
            .plugin_config(config(""))
            .cluster(CLUSTER, service.addr()),
    );
    // Allowed: the request goes on with the service's x-user-id.
    let response = envoy.send(
        "POST",
        "/users?page=2",
        &[("authorization", "Bearer token123")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].header("x-user-id"), Some("user123"));
    assert_eq!(
        seen.lock().unwrap().last().map(|call| (
            call.0.clone(),
            call.1.clone(),
            call.2.clone(),
            call.3.clone()
        )),
        Some((
            "POST".into(),
            "/auth/users?page=2".into(),
            Some("Bearer token123".into()),
            String::new()
        ))
    );

    // Refused: the service's status, headers and body reach the client.
    let response = envoy.send(
        "POST",
        "/users",
        &[("authorization", "Bearer invalid-token")],
        b"",
    );
    assert_eq!(response.status, 403);
    assert_eq!(response.header("x-auth-failed"), Some("true"));
    assert_eq!(
        response.text(),
        r#"{"authorized": false, "message": "Access denied"}"#
    );

    // The service fails: status_on_error (403), with its body.
    let response = envoy.send("GET", "/boom", &[("authorization", "Bearer token123")], b"");
    assert_eq!(response.status, 403);
    assert_eq!(response.text(), r#"{"error": "Internal server error"}"#);
    assert_eq!(
        upstreams.recorded().len(),
        1,
        "no refused request reached the upstream"
    );
}

#[test]
fn ext_auth_failure_mode_body_and_whitelist_in_envoy() {
    let seen: Seen = Arc::default();
    let service = auth_service(Arc::clone(&seen));
    let upstreams = Upstreams::start();
    let json = r#"{"http_service":{"endpoint":{"path_prefix":"/auth","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090},"endpoint_mode":"envoy","timeout":1000,
            "authorization_request":{"with_request_body":true,"max_request_body_bytes":1024}},
        "failure_mode_allow":true,"failure_mode_allow_header_add":true,"status_on_error":500,
        "match_type":"whitelist","match_list":[{"match_rule_method":["GET"],"match_rule_path":"/health","match_rule_type":"exact"}]}"#;
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("ext_auth"), upstreams.echo)
            .plugin_config(json)
            .cluster(CLUSTER, service.addr()),
    );
    // Whitelisted: no call.
    let calls = seen.lock().unwrap().len();
    assert_eq!(envoy.send("GET", "/health", &[], b"").status, 200);
    assert_eq!(seen.lock().unwrap().len(), calls);
    // The body goes to the service.
    let body = br#"{"username": "test"}"#;
    let response = envoy.send(
        "POST",
        "/users",
        &[
            ("authorization", "Bearer token123"),
            ("content-type", "application/json"),
        ],
        body,
    );
    // The call is made in the body hook from what the headers hook kept: in Envoy a body hook
    // reads no request headers once they went on.
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        seen.lock().unwrap().last().map(|call| call.3.clone()),
        Some(String::from_utf8_lossy(body).into_owned())
    );
    assert_eq!(
        upstreams
            .recorded()
            .last()
            .map(|request| request.body.clone()),
        Some(body.to_vec())
    );
    // The service fails: let through, marked.
    let response = envoy.send("GET", "/boom", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        upstreams.recorded().last().and_then(|request| request
            .header("x-envoy-auth-failure-mode-allowed")
            .map(str::to_string)),
        Some("true".into())
    );
}

/// Envoy running ext-auth with `config`, its service and an echo upstream.
fn ext_auth(config: &str) -> (Envoy, Upstreams, Seen, Server) {
    let seen: Seen = Arc::default();
    let service = auth_service(Arc::clone(&seen));
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("ext_auth"), upstreams.echo)
            .plugin_config(config)
            .cluster(CLUSTER, service.addr()),
    );
    (envoy, upstreams, seen, service)
}

/// The headers of the service's last call that start with `x-` (the plugin's choice; Envoy
/// adds its own `x-envoy-*`, left out).
fn x_headers(seen: &Seen) -> Vec<(String, String)> {
    let calls = seen.lock().expect("the calls seen");
    let mut headers: Vec<(String, String)> = calls
        .last()
        .map(|call| call.4.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("x-") && !name.starts_with("x-envoy-") || name == "x-envoy-header"
        })
        .collect();
    headers.sort();
    headers
}

#[test]
fn ext_auth_forward_auth_and_header_filters_in_envoy() {
    // main_test.go `forward auth request headers`.
    let (envoy, _upstreams, seen, _service) = ext_auth(
        r#"{"http_service":{"endpoint":{"path":"/auth","request_method":"POST","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090},"endpoint_mode":"forward_auth","timeout":1000}}"#,
    );
    let response = envoy.send(
        "GET",
        "/users",
        &[
            ("authorization", "Bearer token123"),
            ("x-custom-header", "value"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let call = seen.lock().unwrap().last().cloned().expect("a call");
    assert_eq!((call.0.as_str(), call.1.as_str()), ("POST", "/auth"));
    let expected: Vec<(String, String)> = [
        ("x-forwarded-host", "localhost"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-uri", "/users"),
        ("x-original-method", "GET"),
        ("x-original-uri", "/users"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    assert_eq!(x_headers(&seen), expected);
    drop(envoy);

    // main_test.go `headers filtered request headers`, and the service's allowed headers.
    let (envoy, upstreams, seen, _service) = ext_auth(
        r#"{"http_service":{"authorization_request":{"allowed_headers":[{"exact":"x-auth-version"},{"prefix":"x-custom"}],"headers_to_add":{"x-envoy-header":"true"}},"authorization_response":{"allowed_client_headers":[{"exact":"x-auth-failed"}],"allowed_upstream_headers":[{"exact":"x-user-id"},{"exact":"x-auth-version"}]},"endpoint":{"path_prefix":"/auth","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090},"endpoint_mode":"envoy","timeout":1000}}"#,
    );
    let headers = [
        ("authorization", "Bearer token123"),
        ("x-auth-version", "1.0"),
        ("x-custom-header", "value"),
        ("x-ignored-header", "ignored"),
    ];
    assert_eq!(envoy.send("POST", "/users", &headers, b"").status, 200);
    let expected: Vec<(String, String)> = [
        ("x-auth-version", "1.0"),
        ("x-custom-header", "value"),
        ("x-envoy-header", "true"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    assert_eq!(x_headers(&seen), expected);
    assert_eq!(
        upstreams
            .recorded()
            .last()
            .and_then(|request| request.header("x-user-id").map(str::to_string)),
        Some("user123".into())
    );
    // A denial passes only the allowed client headers.
    let response = envoy.send(
        "POST",
        "/users",
        &[("authorization", "Bearer invalid-token")],
        b"",
    );
    assert_eq!(response.status, 403);
    assert_eq!(response.header("x-auth-failed"), Some("true"));
    // Not the service's `application/json`: Envoy gives a local reply with a body its own.
    assert_eq!(
        response.header("content-type"),
        Some("text/plain"),
        "not an allowed client header"
    );
}

#[test]
fn ext_auth_match_rules_and_a_body_it_does_not_read_in_envoy() {
    let (envoy, upstreams, seen, _service) = ext_auth(
        r#"{"http_service":{"endpoint":{"path_prefix":"/auth","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090},"endpoint_mode":"envoy","timeout":1000},"match_list":[{"match_rule_domain":"api.example.com","match_rule_path":"/public","match_rule_type":"prefix"},{"match_rule_method":["GET"],"match_rule_path":"/health","match_rule_type":"exact"}],"match_type":"whitelist"}"#,
    );
    // main_test.go `match rules request headers`: whitelisted, no call.
    assert_eq!(
        envoy
            .send("GET", "http://api.example.com/public/users", &[], b"")
            .status,
        200
    );
    assert!(seen.lock().unwrap().is_empty());
    // `match rules no match request headers`: the service's 401 is the client's.
    let response = envoy.send("POST", "http://api.example.com/private/users", &[], b"");
    assert_eq!(
        response.status, 403,
        "the demo service refuses what it cannot authorize"
    );
    assert_eq!(
        seen.lock().unwrap().last().map(|call| call.1.clone()),
        Some("/auth/private/users".into())
    );
    // `without request body`: the body is not sent to the service, and reaches the upstream.
    let body = br#"{"username": "test", "password": "password123"}"#;
    let response = envoy.send(
        "POST",
        "/users",
        &[("authorization", "Bearer token123")],
        body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        seen.lock().unwrap().last().map(|call| call.3.clone()),
        Some(String::new())
    );
    assert_eq!(
        upstreams
            .recorded()
            .last()
            .map(|request| request.body.clone()),
        Some(body.to_vec())
    );
}
