//! Where in an HTTP stream a callback falls: its [`Direction`] and its [`Phase`].

use crate::codes::{MapType, StreamType};

/// One direction of an HTTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The request, from the client to the upstream.
    Request,
    /// The response, from the upstream to the client.
    Response,
}

impl Direction {
    /// The direction `proxy_continue_stream` and `proxy_close_stream` name with `stream`;
    /// `None` for the TCP stream types and unknown codes.
    pub const fn of_stream(stream: StreamType) -> Option<Direction> {
        match stream {
            StreamType::HttpRequest => Some(Direction::Request),
            StreamType::HttpResponse => Some(Direction::Response),
            _ => None,
        }
    }

    /// This direction as a `proxy_stream_type_t`.
    pub const fn stream_type(self) -> StreamType {
        match self {
            Direction::Request => StreamType::HttpRequest,
            Direction::Response => StreamType::HttpResponse,
        }
    }

    /// This direction's header map.
    pub const fn headers(self) -> MapType {
        match self {
            Direction::Request => MapType::HttpRequestHeaders,
            Direction::Response => MapType::HttpResponseHeaders,
        }
    }

    /// This direction's trailer map.
    pub const fn trailers(self) -> MapType {
        match self {
            Direction::Request => MapType::HttpRequestTrailers,
            Direction::Response => MapType::HttpResponseTrailers,
        }
    }

    /// This direction's body buffer.
    pub const fn body(self) -> crate::BufferType {
        match self {
            Direction::Request => crate::BufferType::HttpRequestBody,
            Direction::Response => crate::BufferType::HttpResponseBody,
        }
    }
}

/// A stream callback: which part of which direction it delivers, or the stream's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_request_trailers`.
    RequestTrailers,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_response_trailers`.
    ResponseTrailers,
    /// `proxy_on_log`: the stream is over.
    Log,
}

impl Phase {
    /// Every phase, in the order a stream passes them.
    pub const ALL: [Phase; 7] = [
        Phase::RequestHeaders,
        Phase::RequestBody,
        Phase::RequestTrailers,
        Phase::ResponseHeaders,
        Phase::ResponseBody,
        Phase::ResponseTrailers,
        Phase::Log,
    ];

    /// The headers phase of `direction`.
    pub const fn headers(direction: Direction) -> Phase {
        match direction {
            Direction::Request => Phase::RequestHeaders,
            Direction::Response => Phase::ResponseHeaders,
        }
    }

    /// The body phase of `direction`.
    pub const fn body(direction: Direction) -> Phase {
        match direction {
            Direction::Request => Phase::RequestBody,
            Direction::Response => Phase::ResponseBody,
        }
    }

    /// The trailers phase of `direction`.
    pub const fn trailers(direction: Direction) -> Phase {
        match direction {
            Direction::Request => Phase::RequestTrailers,
            Direction::Response => Phase::ResponseTrailers,
        }
    }

    /// The direction the phase belongs to; `on_log` comes after the response.
    pub const fn direction(self) -> Direction {
        match self {
            Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers => {
                Direction::Request
            }
            Phase::ResponseHeaders | Phase::ResponseBody | Phase::ResponseTrailers | Phase::Log => {
                Direction::Response
            }
        }
    }

    /// Whether the phase delivers body bytes.
    pub const fn is_body(self) -> bool {
        matches!(self, Phase::RequestBody | Phase::ResponseBody)
    }

    /// Whether the phase delivers headers.
    pub const fn is_headers(self) -> bool {
        matches!(self, Phase::RequestHeaders | Phase::ResponseHeaders)
    }

    /// For a trailers phase, the body phase of its direction.
    pub const fn body_before_trailers(self) -> Option<Phase> {
        match self {
            Phase::RequestTrailers => Some(Phase::RequestBody),
            Phase::ResponseTrailers => Some(Phase::ResponseBody),
            _ => None,
        }
    }

    /// The callback's name without its `proxy_` prefix, e.g. `on_request_headers`.
    pub const fn callback_name(self) -> &'static str {
        match self {
            Phase::RequestHeaders => "on_request_headers",
            Phase::RequestBody => "on_request_body",
            Phase::RequestTrailers => "on_request_trailers",
            Phase::ResponseHeaders => "on_response_headers",
            Phase::ResponseBody => "on_response_body",
            Phase::ResponseTrailers => "on_response_trailers",
            Phase::Log => "on_log",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_know_their_direction_and_parts() {
        for direction in [Direction::Request, Direction::Response] {
            for phase in [
                Phase::headers(direction),
                Phase::body(direction),
                Phase::trailers(direction),
            ] {
                assert_eq!(phase.direction(), direction);
            }
            assert_eq!(
                Phase::trailers(direction).body_before_trailers(),
                Some(Phase::body(direction))
            );
            assert_eq!(
                Direction::of_stream(direction.stream_type()),
                Some(direction)
            );
        }
        assert_eq!(Phase::Log.direction(), Direction::Response);
        assert_eq!(Direction::of_stream(StreamType::Downstream), None);
        assert_eq!(Phase::ALL.iter().filter(|phase| phase.is_body()).count(), 2);
    }
}
