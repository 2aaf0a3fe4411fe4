//! The ABI's enumerations (spec §3.3): each a Rust enum with the spec's values and an
//! `Unknown(u32)` arm for codes this ABI version does not define, so that nothing a peer sends
//! is lost or rejected by the decoding itself.

use std::fmt;

/// Declares an ABI enumeration: named variants for the spec's codes, `Unknown(u32)` for the
/// rest, and lossless conversions from and to `u32`.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $code:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )*
            /// A code this ABI version does not define, kept as it was sent.
            Unknown(u32),
        }

        impl $name {
            /// The value for an ABI code.
            pub const fn from_code(code: u32) -> Self {
                match code {
                    $( $code => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }

            /// The ABI code.
            pub const fn code(self) -> u32 {
                match self {
                    $( $name::$variant => $code, )*
                    $name::Unknown(other) => other,
                }
            }
        }

        impl From<u32> for $name {
            fn from(code: u32) -> Self {
                $name::from_code(code)
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                value.code()
            }
        }
    };
}

abi_enum! {
    /// `proxy_status_t`: what a hostcall answers. Hostcall traits return `Err(status)` for
    /// anything but [`Status::Ok`].
    Status {
        /// `OK` (0).
        Ok = 0,
        /// `NOT_FOUND` (1).
        NotFound = 1,
        /// `BAD_ARGUMENT` (2): for a call, an unknown cluster or a missing `:method`, `:path`
        /// or `:authority`; for a stream operation, a stream that is gone.
        BadArgument = 2,
        /// `SERIALIZATION_FAILURE` (3).
        SerializationFailure = 3,
        /// `PARSE_FAILURE` (4).
        ParseFailure = 4,
        /// `INVALID_MEMORY_ACCESS` (6).
        InvalidMemoryAccess = 6,
        /// `EMPTY` (7).
        Empty = 7,
        /// `CAS_MISMATCH` (8).
        CasMismatch = 8,
        /// `INTERNAL_FAILURE` (10).
        InternalFailure = 10,
        /// `UNIMPLEMENTED` (12): the host does not offer this hostcall.
        Unimplemented = 12,
    }
}

impl Status {
    /// `Ok(())` for [`Status::Ok`], `Err(status)` for any other code: how a hostcall's return
    /// value reads.
    pub const fn check(code: u32) -> Result<(), Status> {
        match Status::from_code(code) {
            Status::Ok => Ok(()),
            status => Err(status),
        }
    }

    /// The code a hostcall returns for `result`.
    pub fn code_of<T>(result: &Result<T, Status>) -> u32 {
        match result {
            Ok(_) => Status::Ok.code(),
            Err(status) => status.code(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
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
            Status::Unknown(code) => return write!(f, "status {code}"),
        })
    }
}

impl std::error::Error for Status {}

abi_enum! {
    /// `proxy_action_t`: what a stream callback answers the proxy.
    Action {
        /// `CONTINUE` (0): the stream goes on to the next filter.
        Continue = 0,
        /// `PAUSE` (1): the proxy holds the stream until the plugin resumes it (or replies
        /// locally).
        Pause = 1,
    }
}

impl Action {
    /// Whether the proxy holds the stream: Envoy (and cpp-host) pause on 1 alone and go on
    /// for any other value.
    pub const fn pauses(self) -> bool {
        matches!(self, Action::Pause)
    }
}

abi_enum! {
    /// `proxy_log_level_t`, ordered by severity (a level the ABI does not define counts as the
    /// most severe, so that a message at it is never filtered away).
    #[derive(PartialOrd, Ord)]
    LogLevel {
        /// `TRACE` (0).
        Trace = 0,
        /// `DEBUG` (1).
        Debug = 1,
        /// `INFO` (2).
        Info = 2,
        /// `WARN` (3).
        Warn = 3,
        /// `ERROR` (4).
        Error = 4,
        /// `CRITICAL` (5); our SDK logs panics at this level.
        Critical = 5,
    }
}

impl LogLevel {
    /// How severe the level is as a number, `Trace` (0) lowest, `Critical` (5) highest; a level
    /// the ABI does not define counts as critical.
    pub const fn severity(self) -> u32 {
        match self {
            LogLevel::Unknown(_) => LogLevel::Critical.code(),
            level => level.code(),
        }
    }

    /// The name Envoy prints for the level (`trace` ... `critical`).
    pub const fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical | LogLevel::Unknown(_) => "critical",
        }
    }

    /// The levels the ABI defines, least severe first.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Critical,
    ];

    /// The level Envoy names `name` (any case); `None` for a name it does not know.
    pub fn from_name(name: &str) -> Option<LogLevel> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name))
    }

    /// This level's counterpart among `levels`, another binding's six levels listed in the
    /// ABI's order (as the WIT world lists them); a level the ABI does not define maps to the
    /// last, the most severe.
    pub fn pick<T: Copy>(self, levels: [T; 6]) -> T {
        let [.., critical] = levels;
        levels
            .get(self.severity() as usize)
            .copied()
            .unwrap_or(critical)
    }
}

abi_enum! {
    /// `proxy_map_type_t`: which header or metadata map a hostcall works on.
    MapType {
        /// `HTTP_REQUEST_HEADERS` (0).
        HttpRequestHeaders = 0,
        /// `HTTP_REQUEST_TRAILERS` (1).
        HttpRequestTrailers = 1,
        /// `HTTP_RESPONSE_HEADERS` (2).
        HttpResponseHeaders = 2,
        /// `HTTP_RESPONSE_TRAILERS` (3).
        HttpResponseTrailers = 3,
        /// `GRPC_CALL_INITIAL_METADATA` (4).
        GrpcCallInitialMetadata = 4,
        /// `GRPC_CALL_TRAILING_METADATA` (5).
        GrpcCallTrailingMetadata = 5,
        /// `HTTP_CALL_RESPONSE_HEADERS` (6): readable in `proxy_on_http_call_response` only.
        HttpCallResponseHeaders = 6,
        /// `HTTP_CALL_RESPONSE_TRAILERS` (7): readable in `proxy_on_http_call_response` only.
        HttpCallResponseTrailers = 7,
    }
}

abi_enum! {
    /// `proxy_buffer_type_t`: which byte buffer a hostcall works on.
    BufferType {
        /// `HTTP_REQUEST_BODY` (0).
        HttpRequestBody = 0,
        /// `HTTP_RESPONSE_BODY` (1).
        HttpResponseBody = 1,
        /// `DOWNSTREAM_DATA` (2), TCP plugins.
        DownstreamData = 2,
        /// `UPSTREAM_DATA` (3), TCP plugins.
        UpstreamData = 3,
        /// `HTTP_CALL_RESPONSE_BODY` (4): readable in `proxy_on_http_call_response` only.
        HttpCallResponseBody = 4,
        /// `GRPC_CALL_MESSAGE` (5): readable in the gRPC receive callback only.
        GrpcCallMessage = 5,
        /// `VM_CONFIGURATION` (6).
        VmConfiguration = 6,
        /// `PLUGIN_CONFIGURATION` (7).
        PluginConfiguration = 7,
        /// `FOREIGN_FUNCTION_ARGUMENTS` (8).
        ForeignFunctionArguments = 8,
        /// `REDIS_CALL_RESPONSE` (9), Higress's extension: the reply, readable in
        /// `proxy_on_redis_call_response` only.
        RedisCallResponse = 9,
    }
}

abi_enum! {
    /// `proxy_stream_type_t`: which stream `proxy_continue_stream` and `proxy_close_stream`
    /// act on.
    StreamType {
        /// `HTTP_REQUEST` (0).
        HttpRequest = 0,
        /// `HTTP_RESPONSE` (1).
        HttpResponse = 1,
        /// `DOWNSTREAM` (2), TCP plugins.
        Downstream = 2,
        /// `UPSTREAM` (3), TCP plugins.
        Upstream = 3,
    }
}

abi_enum! {
    /// `proxy_metric_type_t`.
    MetricType {
        /// `COUNTER` (0): only goes up.
        Counter = 0,
        /// `GAUGE` (1).
        Gauge = 1,
        /// `HISTOGRAM` (2): records values.
        Histogram = 2,
    }
}

abi_enum! {
    /// `proxy_peer_type_t`: who closed a connection (`proxy_on_*_connection_close`).
    PeerType {
        /// `UNKNOWN` (0).
        Unspecified = 0,
        /// `LOCAL` (1): the proxy closed it.
        Local = 1,
        /// `REMOTE` (2): the peer closed it.
        Remote = 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_unknown_codes_are_kept() {
        for code in 0..64 {
            assert_eq!(Status::from_code(code).code(), code);
            assert_eq!(MapType::from_code(code).code(), code);
            assert_eq!(BufferType::from_code(code).code(), code);
            assert_eq!(LogLevel::from_code(code).code(), code);
            assert_eq!(Action::from_code(code).code(), code);
        }
        assert_eq!(Status::from_code(5), Status::Unknown(5));
        assert_eq!(MapType::from_code(8), MapType::Unknown(8));
        assert_eq!(BufferType::from(9), BufferType::RedisCallResponse);
    }

    #[test]
    fn statuses_read_as_results() {
        assert_eq!(Status::check(0), Ok(()));
        assert_eq!(Status::check(2), Err(Status::BadArgument));
        assert_eq!(Status::check(99), Err(Status::Unknown(99)));
        assert_eq!(Status::code_of(&Ok::<(), Status>(())), 0);
        assert_eq!(Status::code_of::<()>(&Err(Status::CasMismatch)), 8);
        assert_eq!(Status::BadArgument.to_string(), "BAD_ARGUMENT");
        assert_eq!(Status::Unknown(99).to_string(), "status 99");
    }

    #[test]
    fn only_pause_pauses() {
        assert!(Action::from_code(1).pauses());
        assert!(!Action::from_code(0).pauses());
        assert!(!Action::from_code(2).pauses());
    }

    #[test]
    fn log_levels_by_name_and_severity() {
        assert_eq!(LogLevel::from_name("WARN"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::from_name("loud"), None);
        assert_eq!(LogLevel::Unknown(9).name(), "critical");
        assert!(LogLevel::Unknown(9).severity() >= LogLevel::Critical.severity());
        assert!(LogLevel::Debug.severity() < LogLevel::Info.severity());
        assert!(LogLevel::Debug < LogLevel::Info && LogLevel::Critical < LogLevel::Unknown(9));
    }

    #[test]
    fn a_level_picks_its_counterpart_in_another_binding() {
        let names = ["t", "d", "i", "w", "e", "c"];
        assert_eq!(LogLevel::Trace.pick(names), "t");
        assert_eq!(LogLevel::Warn.pick(names), "w");
        assert_eq!(LogLevel::Unknown(17).pick(names), "c");
        for (level, code) in LogLevel::ALL.into_iter().zip(0..) {
            assert_eq!(level.pick([0, 1, 2, 3, 4, 5]), code);
        }
    }
}
