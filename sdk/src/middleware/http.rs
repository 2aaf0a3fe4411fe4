//! `wasi:http@0.3.0` plumbing: outgoing requests, body streams read a chunk ahead, responses
//! made here, and the names `wasi:http` gives methods.

use std::collections::HashMap;

use super::bindings::wasi::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use super::bindings::{wit_future, wit_stream};
use crate::plugin::LocalReply;

/// The most bytes read from a body stream at once.
pub(super) const CHUNK: usize = 64 * 1024;

/// Headers `wasi:http` refuses in `fields` (its hosts set them themselves).
pub(super) fn forbidden(name: &str) -> bool {
    matches!(
        name,
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "http2-settings"
    ) || name.starts_with("proxy-")
        || name.starts_with(':')
}

pub(super) fn method_of(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

pub(super) fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// A request about to go out, and the writers of its body and trailers.
pub(super) struct Outgoing {
    pub(super) request: Request,
    pub(super) contents: wit_bindgen::StreamWriter<u8>,
    pub(super) trailers: wit_bindgen::FutureWriter<Result<Option<Fields>, ErrorCode>>,
    pub(super) sent: wit_bindgen::FutureReader<Result<(), ErrorCode>>,
}

impl Outgoing {
    /// The request with `body` written to it by a task of its own.
    pub(super) fn with_body(
        self,
        body: Vec<u8>,
    ) -> (Request, wit_bindgen::FutureReader<Result<(), ErrorCode>>) {
        let Outgoing {
            request,
            mut contents,
            trailers,
            sent,
        } = self;
        wit_bindgen::spawn_local(async move {
            if !body.is_empty() {
                let _ = contents.write_all(body).await;
            }
            drop(contents);
            let _ = trailers.write(Ok(None)).await;
        });
        (request, sent)
    }
}

/// A request with these fields and pseudo-headers.
pub(super) fn outgoing(
    fields: &[(String, Vec<u8>)],
    method: Method,
    path: &str,
    scheme: Scheme,
    authority: &str,
) -> Result<Outgoing, String> {
    let headers =
        Fields::from_list(fields).map_err(|error| format!("headers refused: {error:?}"))?;
    let (contents, reader) = wit_stream::new::<u8>();
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    let (request, sent) = Request::new(headers, Some(reader), trailers_reader, None);
    request
        .set_method(&method)
        .map_err(|()| "the method is refused".to_string())?;
    let path = if path.is_empty() { "/" } else { path };
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("the path `{path}` is refused"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "the scheme is refused".to_string())?;
    if !authority.is_empty() {
        request
            .set_authority(Some(authority))
            .map_err(|()| format!("the authority `{authority}` is refused"))?;
    }
    Ok(Outgoing {
        request,
        contents,
        trailers,
        sent,
    })
}

/// `PROXY_ASYNC_CLUSTERS`: `{"auth": "http://127.0.0.1:9001", ...}`.
pub(super) fn parse_clusters(text: &str) -> Result<HashMap<String, (Scheme, String)>, String> {
    let map: HashMap<String, String> = serde_json::from_str(text).map_err(|error| {
        format!("PROXY_ASYNC_CLUSTERS is not a JSON object of strings: {error}")
    })?;
    map.into_iter()
        .map(|(name, url)| {
            let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
                (Scheme::Https, rest)
            } else {
                (Scheme::Http, url.strip_prefix("http://").unwrap_or(&url))
            };
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!(
                    "PROXY_ASYNC_CLUSTERS: cluster `{name}`: `{url}` is not http://host:port"
                ));
            }
            Ok((name, (scheme, authority.to_string())))
        })
        .collect()
}

/// A body stream, read one chunk ahead so that each chunk knows whether it is the last.
pub(super) struct BodyReader {
    pub(super) contents: wit_bindgen::StreamReader<u8>,
    pub(super) ahead: Option<Vec<u8>>,
    pub(super) ended: bool,
}

impl BodyReader {
    pub(super) fn new(contents: wit_bindgen::StreamReader<u8>) -> Self {
        BodyReader {
            contents,
            ahead: None,
            ended: false,
        }
    }

    pub(super) async fn read(&mut self) -> Option<Vec<u8>> {
        while !self.ended {
            let (result, chunk) = self.contents.read(Vec::with_capacity(CHUNK)).await;
            if !matches!(result, wit_bindgen::StreamResult::Complete(_)) {
                self.ended = true;
            }
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
        None
    }

    /// The next chunk and whether the body ends with it; `None` once it ended.
    pub(super) async fn next(&mut self) -> Option<(Vec<u8>, bool)> {
        let chunk = match self.ahead.take() {
            Some(chunk) => chunk,
            None => self.read().await?,
        };
        self.ahead = self.read().await;
        Some((chunk, self.ahead.is_none()))
    }

    /// Whether the body is empty (reads its first chunk ahead).
    pub(super) async fn is_empty(&mut self) -> bool {
        if self.ahead.is_none() {
            self.ahead = self.read().await;
        }
        self.ahead.is_none()
    }

    /// The whole body; `Err(len)` past `limit` bytes.
    pub(super) async fn whole(&mut self, limit: usize) -> Result<Vec<u8>, usize> {
        let mut body = Vec::new();
        while let Some((chunk, _)) = self.next().await {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(body.len());
            }
        }
        Ok(body)
    }
}

/// A response made here (a local reply, or a failure).
pub(super) fn local_response(
    status: u16,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Response {
    let mut fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| !forbidden(name) && name != "content-length")
        .cloned()
        .collect();
    if !body.is_empty() && !fields.iter().any(|(name, _)| name == "content-type") {
        // What Envoy adds to a local reply with a body and no type.
        fields.push(("content-type".to_string(), b"text/plain".to_vec()));
    }
    fields.push((
        "content-length".to_string(),
        body.len().to_string().into_bytes(),
    ));
    let headers = Fields::from_list(&fields).unwrap_or_else(|_| Fields::new());
    let (mut contents, reader) = wit_stream::new::<u8>();
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(reader), trailers_reader);
    let _ = response.set_status_code(status);
    wit_bindgen::spawn_local(async move {
        if !body.is_empty() {
            let _ = contents.write_all(body).await;
        }
        drop(contents);
        let _ = trailers.write(Ok(None)).await;
    });
    response
}

pub(super) fn reply_response(reply: LocalReply) -> Response {
    local_response(reply.status, &reply.headers.to_vec(), reply.body.into_vec())
}

pub(super) fn header_of<'a>(pairs: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_slice())
}
