//! Shared test support: the compiled plugins, and a recording [`Hostcalls`].

#![allow(dead_code, reason = "each test module uses a different part")]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test support")]

use proxy_async_host::{BufferType, HeaderPairs, Hostcalls, LogLevel, MapType, Status, StreamType};

/// The proxy-wasm module of the plugin crate `name` (e.g. `hello`, `auth_flow`), as
/// `compiled-plugins` built it.
pub(crate) fn plugin_wasm(name: &str) -> Vec<u8> {
    read(&compiled_plugins::module(name))
}

/// The component of the plugin crate `name`.
pub(crate) fn component_wasm(name: &str) -> Vec<u8> {
    read(&compiled_plugins::component(name))
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// An HTTP call the plugin dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpCall {
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

/// A local response the plugin sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pairs_text(pairs: &[(&[u8], &[u8])]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (text(k), text(v))).collect()
}

/// A recording host: one request-header map, the configurations, and a log of every call.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub request_headers: HeaderPairs,
    pub response_headers: HeaderPairs,
    pub logs: Vec<(LogLevel, String)>,
    /// Every hostcall that changes something, as text, in order.
    pub calls: Vec<String>,
    pub http_calls: Vec<HttpCall>,
    pub local_responses: Vec<LocalResponse>,
    pub effective_context: Option<u32>,
}

impl Recorder {
    pub(crate) fn with_config(config: &str) -> Self {
        Recorder {
            plugin_config: config.as_bytes().to_vec(),
            ..Recorder::default()
        }
    }

    fn map(&mut self, map: MapType) -> Result<&mut HeaderPairs, Status> {
        match map {
            MapType::HttpRequestHeaders => Ok(&mut self.request_headers),
            MapType::HttpResponseHeaders => Ok(&mut self.response_headers),
            _ => Err(Status::NotFound),
        }
    }

    pub(crate) fn logs_at(&self, level: LogLevel) -> Vec<String> {
        self.logs
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.request_headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| text(v))
    }
}

impl Hostcalls for Recorder {
    fn log(&mut self, level: LogLevel, message: &[u8]) -> Result<(), Status> {
        self.logs.push((level, text(message)));
        Ok(())
    }

    fn set_effective_context(&mut self, context_id: u32) -> Result<(), Status> {
        self.effective_context = Some(context_id);
        Ok(())
    }

    fn get_buffer_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        max: u32,
    ) -> Result<Vec<u8>, Status> {
        let data = match buffer {
            BufferType::PluginConfiguration => &self.plugin_config,
            BufferType::VmConfiguration => &self.vm_config,
            _ => return Err(Status::NotFound),
        };
        let start = (start as usize).min(data.len());
        let end = start.saturating_add(max as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn get_header_map_pairs(&mut self, map: MapType) -> Result<HeaderPairs, Status> {
        Ok(self.map(map)?.clone())
    }

    fn set_header_map_pairs(
        &mut self,
        map: MapType,
        pairs: &[(&[u8], &[u8])],
    ) -> Result<(), Status> {
        self.calls.push(format!(
            "set_header_map_pairs({map:?}, {:?})",
            pairs_text(pairs)
        ));
        *self.map(map)? = pairs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        Ok(())
    }

    fn get_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
        self.map(map)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .ok_or(Status::NotFound)
    }

    fn add_header_map_value(
        &mut self,
        map: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        self.calls.push(format!(
            "add_header_map_value({map:?}, {}, {})",
            text(key),
            text(value)
        ));
        self.map(map)?.push((key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn replace_header_map_value(
        &mut self,
        map: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        self.calls.push(format!(
            "replace_header_map_value({map:?}, {}, {})",
            text(key),
            text(value)
        ));
        let pairs = self.map(map)?;
        pairs.retain(|(k, _)| k != key);
        pairs.push((key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn remove_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<(), Status> {
        self.calls
            .push(format!("remove_header_map_value({map:?}, {})", text(key)));
        self.map(map)?.retain(|(k, _)| k != key);
        Ok(())
    }

    fn continue_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        self.calls.push(format!("continue_stream({stream:?})"));
        Ok(())
    }

    fn send_local_response(
        &mut self,
        status_code: u32,
        details: &[u8],
        body: &[u8],
        headers: &[(&[u8], &[u8])],
        _grpc_status: i32,
    ) -> Result<(), Status> {
        self.calls
            .push(format!("send_local_response({status_code})"));
        self.local_responses.push(LocalResponse {
            status: status_code,
            details: text(details),
            body: body.to_vec(),
            headers: pairs_text(headers),
        });
        Ok(())
    }

    fn http_call(
        &mut self,
        upstream: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        _trailers: &[(&[u8], &[u8])],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        self.calls.push(format!("http_call({})", text(upstream)));
        self.http_calls.push(HttpCall {
            upstream: text(upstream),
            headers: pairs_text(headers),
            body: body.to_vec(),
            timeout_ms,
        });
        Ok(u32::try_from(self.http_calls.len()).unwrap())
    }
}
