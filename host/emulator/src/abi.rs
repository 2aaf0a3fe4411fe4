//! The ABI's codes: statuses, actions, and the ids of header maps, buffers and stream sides.

use std::fmt;

/// `proxy_status_t`: what a hostcall answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// OK (0).
    Ok = 0,
    /// NOT_FOUND (1).
    NotFound = 1,
    /// BAD_ARGUMENT (2).
    BadArgument = 2,
    /// SERIALIZATION_FAILURE (3).
    SerializationFailure = 3,
    /// PARSE_FAILURE (4).
    ParseFailure = 4,
    /// INVALID_MEMORY_ACCESS (6).
    InvalidMemoryAccess = 6,
    /// EMPTY (7).
    Empty = 7,
    /// CAS_MISMATCH (8).
    CasMismatch = 8,
    /// INTERNAL_FAILURE (10).
    InternalFailure = 10,
    /// UNIMPLEMENTED (12).
    Unimplemented = 12,
}

impl Status {
    /// The status code written to the guest.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The status for a code, if `proxy_status_t` defines it.
    pub fn from_code(code: u32) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            6 => Status::InvalidMemoryAccess,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            10 => Status::InternalFailure,
            12 => Status::Unimplemented,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::BadArgument => "BAD_ARGUMENT",
            Status::SerializationFailure => "SERIALIZATION_FAILURE",
            Status::ParseFailure => "PARSE_FAILURE",
            Status::InvalidMemoryAccess => "INVALID_MEMORY_ACCESS",
            Status::Empty => "EMPTY",
            Status::CasMismatch => "CAS_MISMATCH",
            Status::InternalFailure => "INTERNAL_FAILURE",
            Status::Unimplemented => "UNIMPLEMENTED",
        };
        f.write_str(name)
    }
}

/// `proxy_action_t`: what a stream callback answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the stream go on.
    Continue,
    /// Hold the stream until the plugin resumes it (or replies locally).
    Pause,
}

impl Action {
    /// Decodes a callback's return value; anything but 1 continues, as in cpp-host.
    pub fn from_code(code: u32) -> Action {
        if code == 1 {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

/// `proxy_map_type_t`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    /// Request headers (0).
    RequestHeaders,
    /// Request trailers (1).
    RequestTrailers,
    /// Response headers (2).
    ResponseHeaders,
    /// Response trailers (3).
    ResponseTrailers,
    /// gRPC initial metadata (4).
    GrpcInitialMetadata,
    /// gRPC trailing metadata (5).
    GrpcTrailingMetadata,
    /// Headers of an HTTP call's response (6), readable in `on_http_call_response` only.
    CallResponseHeaders,
    /// Trailers of an HTTP call's response (7), readable in `on_http_call_response` only.
    CallResponseTrailers,
}

impl MapType {
    /// Decodes a map id; `None` for ids the ABI does not define.
    pub fn from_code(code: u32) -> Option<MapType> {
        Some(match code {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// Request body (0).
    RequestBody,
    /// Response body (1).
    ResponseBody,
    /// Downstream data (2), TCP plugins.
    DownstreamData,
    /// Upstream data (3), TCP plugins.
    UpstreamData,
    /// Body of an HTTP call's response (4), readable in `on_http_call_response` only.
    CallResponseBody,
    /// A gRPC message (5).
    GrpcMessage,
    /// The VM configuration (6).
    VmConfiguration,
    /// The plugin configuration (7).
    PluginConfiguration,
    /// Foreign function arguments (8).
    ForeignFunctionArguments,
    /// The reply to a Redis call (9), Higress's extension: readable in
    /// `proxy_on_redis_call_response` only.
    RedisCallResponse,
}

impl BufferType {
    /// Decodes a buffer id; `None` for ids the ABI does not define.
    pub fn from_code(code: u32) -> Option<BufferType> {
        Some(match code {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::CallResponseBody,
            5 => BufferType::GrpcMessage,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::ForeignFunctionArguments,
            9 => BufferType::RedisCallResponse,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t` for HTTP: which side of a stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The request (0).
    Request,
    /// The response (1).
    Response,
}

impl Side {
    /// Decodes an HTTP stream type; `None` for TCP streams and unknown ids.
    pub fn from_code(code: u32) -> Option<Side> {
        match code {
            0 => Some(Side::Request),
            1 => Some(Side::Response),
            _ => None,
        }
    }
}

/// `proxy_metric_type_t`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// A counter (0): only increments.
    Counter,
    /// A gauge (1).
    Gauge,
    /// A histogram (2): records values.
    Histogram,
}

impl MetricType {
    /// Decodes a metric type; `None` for ids the ABI does not define.
    pub fn from_code(code: u32) -> Option<MetricType> {
        match code {
            0 => Some(MetricType::Counter),
            1 => Some(MetricType::Gauge),
            2 => Some(MetricType::Histogram),
            _ => None,
        }
    }
}

/// `proxy_log_level_t`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// TRACE (0).
    Trace,
    /// DEBUG (1).
    Debug,
    /// INFO (2).
    Info,
    /// WARN (3).
    Warn,
    /// ERROR (4).
    Error,
    /// CRITICAL (5).
    Critical,
}

impl LogLevel {
    /// Decodes a level; unknown levels count as critical, so they are never lost.
    pub fn from_code(code: u32) -> LogLevel {
        match code {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }

    /// The ABI code.
    pub fn code(self) -> u32 {
        self as u32
    }
}
