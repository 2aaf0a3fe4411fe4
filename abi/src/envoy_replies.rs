//! The bodies of the replies Envoy's router makes up for a call whose upstream gave no answer
//! (`source/common/router/router.cc`). The SDK recognises them, and the emulator sends them.

/// The body of the `504` for a call whose timeout expired before its response began
/// (`onUpstreamTimeoutAbort`).
pub const TIMEOUT_BODY: &str = "upstream request timeout";

/// The start of the body of the `503` (`502` for a protocol error) for an upstream that could
/// not be reached, or that reset before its response began (`onUpstreamReset`). The reset
/// reason follows it.
pub const RESET_BEFORE_HEADERS: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: ";
