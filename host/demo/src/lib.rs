//! The demo services behind `cargo xtask run auth-flow` and the end-to-end tests: an auth
//! service and a user-info service with a documented demo credential. One definition, so the
//! demo and the tests cannot drift apart.

#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Method, Response, StatusCode};

/// The credential the demo auth service accepts (`authorization` header value).
pub const DEMO_CREDENTIAL: &str = "Bearer demo-token";

/// One request to a demo service, read whole.
pub struct DemoRequest {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The path with the query.
    pub target: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl DemoRequest {
    /// Reads `request` whole (a body of at most 1 MiB); `None` when its body cannot be read or
    /// is longer.
    pub async fn read(request: hyper::Request<hyper::body::Incoming>) -> Option<DemoRequest> {
        use http_body_util::BodyExt;
        let (parts, body) = request.into_parts();
        let body = http_body_util::Limited::new(body, 1 << 20)
            .collect()
            .await
            .ok()?;
        Some(DemoRequest {
            method: parts.method,
            path: parts.uri.path().to_string(),
            target: parts
                .uri
                .path_and_query()
                .map_or("/", |target| target.as_str())
                .to_string(),
            headers: parts.headers,
            body: body.to_bytes(),
        })
    }
}

/// Serves one HTTP/1 connection until it closes: each request is read whole
/// ([`DemoRequest::read`]; one that cannot be gets a 400) and answered by `handler`.
pub async fn serve_connection<H, F>(stream: tokio::net::TcpStream, handler: H)
where
    H: Fn(DemoRequest) -> F + Clone,
    F: Future<Output = Response<Full<Bytes>>>,
{
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move {
            let response = match DemoRequest::read(request).await {
                Some(request) => handler(request).await,
                None => json(StatusCode::BAD_REQUEST, &serde_json::json!({})),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// A JSON response with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{value}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /token` with `{"credential": "..."}`: `Bearer demo-token` gets the token `t-alice`,
/// `Bearer slow` gets it after 2 s, anything else a 401.
pub async fn auth_service(request: DemoRequest) -> Response<Full<Bytes>> {
    if request.method != Method::POST || request.path != "/token" {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        );
    }
    let credential = serde_json::from_slice::<serde_json::Value>(&request.body)
        .ok()
        .and_then(|body| body.get("credential")?.as_str().map(str::to_string));
    match credential.as_deref() {
        Some(DEMO_CREDENTIAL) => json(StatusCode::OK, &serde_json::json!({"token": "t-alice"})),
        Some("Bearer slow") => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            json(StatusCode::OK, &serde_json::json!({"token": "t-alice"}))
        }
        _ => json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "unknown credential"}),
        ),
    }
}

/// `GET /me` with `authorization: Bearer t-alice`: user u-1, alice; anything else a 403.
pub async fn users_service(request: DemoRequest) -> Response<Full<Bytes>> {
    if request.method != Method::GET || request.path != "/me" {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        );
    }
    let authorized = request
        .headers
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == b"Bearer t-alice");
    if authorized {
        json(
            StatusCode::OK,
            &serde_json::json!({"id": "u-1", "name": "alice"}),
        )
    } else {
        json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "unknown token"}),
        )
    }
}
