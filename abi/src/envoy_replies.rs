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

/// The reply Envoy's router makes up with `status` and the plain-text `body`: its headers are
/// these three and no others (`Utility::prepareLocalReply`), and the body.
pub fn router_reply(status: u16, body: String) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let headers = vec![
        (":status".to_string(), status.to_string().into_bytes()),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
        ("content-type".to_string(), b"text/plain".to_vec()),
    ];
    (headers, body.into_bytes())
}
