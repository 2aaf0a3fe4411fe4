//! What a Higress plugin does to the stream it serves beyond headers and bodies, as Higress's
//! Go wrapper does it (higress-group/wasm-go v1.1.1, `pkg/wrapper/plugin_wrapper.go:807-973`):
//! keep the route, set the proxy's buffer limits, and hand user attributes to the access log and
//! the trace. Each is a property of Higress's Envoy; vanilla Envoy stores it and does nothing
//! with it.

use std::collections::BTreeMap;
use std::fmt;

use proxy_async_abi::Direction;
use serde_json::Value;

use crate::host::HostError;
use crate::message::Message;
use crate::properties::{get_property, set_property};

/// The property Higress's access log reads the plugin's attributes from (`CustomLogKey`).
pub const CUSTOM_LOG: &str = "custom_log";

/// The property prefix of a span tag (`TraceSpanTagPrefix`).
const TRACE_SPAN_TAG: &str = "trace_span_tag.";

/// Keeps the request on the route it matched although the plugin changes its headers
/// (`DisableReroute`: property `clear_route_cache` = `off`). Call it before changing headers
/// in `on_request_headers`.
pub fn disable_reroute() -> Result<(), HostError> {
    set_property(&["clear_route_cache"], "off")
}

/// The most bytes of the request body the proxy buffers for this stream
/// (`SetRequestBodyBufferLimit`: property `set_decoder_buffer_limit`), and the plugin's own
/// limit for it ([`Request::set_body_buffer_limit`](crate::Request::set_body_buffer_limit)).
pub fn set_request_body_buffer_limit(
    message: &mut Message<'_>,
    bytes: u32,
) -> Result<(), HostError> {
    set_body_buffer_limit(
        message,
        Direction::Request,
        "set_decoder_buffer_limit",
        bytes,
    )
}

/// The most bytes of the response body the proxy buffers for this stream
/// (`SetResponseBodyBufferLimit`: property `set_encoder_buffer_limit`), and the plugin's own
/// limit for it; callable from the request's hooks, as in Go.
pub fn set_response_body_buffer_limit(
    message: &mut Message<'_>,
    bytes: u32,
) -> Result<(), HostError> {
    set_body_buffer_limit(
        message,
        Direction::Response,
        "set_encoder_buffer_limit",
        bytes,
    )
}

/// `direction`'s buffer limit, the plugin's and the proxy's (its `property`, in decimal).
fn set_body_buffer_limit(
    message: &mut Message<'_>,
    direction: Direction,
    property: &str,
    bytes: u32,
) -> Result<(), HostError> {
    message.set_body_buffer_limit_of(direction, usize::try_from(bytes).unwrap_or(usize::MAX));
    set_property(&[property], bytes.to_string())
}

/// Attributes a plugin collects about a request for Higress's access log and trace
/// (`SetUserAttribute`, `WriteUserAttributeToLog`, `WriteUserAttributeToTrace`); a plugin
/// keeps one in its per-stream value.
///
/// ```
/// use proxy_async::higress::UserAttributes;
///
/// let mut attributes = UserAttributes::default();
/// attributes.set("consumer", "alice");
/// attributes.set("tokens", 42);
/// assert_eq!(attributes.get("tokens"), Some(&serde_json::json!(42)));
/// // In a hook: attributes.write_to_log()?;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserAttributes {
    attributes: BTreeMap<String, Value>,
}

/// Why user attributes were not written.
#[derive(Debug)]
pub enum UserAttributesError {
    /// The property already holds something that is not Higress's encoding of a JSON object;
    /// nothing was written (as in Go, which does not overwrite it).
    Unreadable {
        /// The property.
        key: String,
        /// What it holds.
        value: String,
    },
    /// The proxy refused the property.
    Host(HostError),
}

impl fmt::Display for UserAttributesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserAttributesError::Unreadable { key, value } => write!(
                f,
                "property `{key}` holds {value:?}, which is not an escaped JSON object: not overwritten"
            ),
            UserAttributesError::Host(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for UserAttributesError {}

impl From<HostError> for UserAttributesError {
    fn from(error: HostError) -> Self {
        UserAttributesError::Host(error)
    }
}

impl UserAttributes {
    /// Sets attribute `key` (`SetUserAttribute`).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.attributes.insert(key.into(), value.into());
    }

    /// Attribute `key` (`GetUserAttribute`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    /// Every attribute, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attributes
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }

    /// Writes the attributes into the access log's [`CUSTOM_LOG`] property
    /// (`WriteUserAttributeToLog`).
    pub fn write_to_log(&self) -> Result<(), UserAttributesError> {
        self.write_to_log_key(CUSTOM_LOG)
    }

    /// Writes the attributes into property `key`, over what it holds (`WriteUserAttributeToLogWithKey`):
    /// the attributes already there are kept unless set again, and the whole is stored as
    /// Higress's log reads it, a JSON object with sorted keys escaped as the inside of a JSON
    /// string (`{\"a\":1}`).
    pub fn write_to_log_key(&self, key: &str) -> Result<(), UserAttributesError> {
        let held = get_property(&[key])?.unwrap_or_default();
        let mut merged = if held.is_empty() {
            BTreeMap::new()
        } else {
            decode_log_value(&held).ok_or_else(|| UserAttributesError::Unreadable {
                key: key.to_string(),
                value: String::from_utf8_lossy(&held).into_owned(),
            })?
        };
        merged.extend(self.attributes.clone());
        set_property(&[key], encode_log_value(&merged))?;
        Ok(())
    }

    /// Writes each attribute as the span tag `trace_span_tag.<key>` (`WriteUserAttributeToTrace`):
    /// a string as it is, anything else as JSON; an empty string is skipped.
    pub fn write_to_trace(&self) -> Result<(), HostError> {
        for (key, value) in &self.attributes {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if text.is_empty() {
                log::warn!("user attribute `{key}` is empty: not written to the trace");
                continue;
            }
            set_property(&[&format!("{TRACE_SPAN_TAG}{key}")], text)?;
        }
        Ok(())
    }
}

/// Higress's stored form (`UnmarshalStr` then a JSON object): the inside of a JSON string
/// whose text is a JSON object.
fn decode_log_value(held: &[u8]) -> Option<BTreeMap<String, Value>> {
    let quoted = [b"\"".as_slice(), held, b"\""].concat();
    let text: String = serde_json::from_slice(&quoted).ok()?;
    serde_json::from_str(&text).ok()
}

/// Go's `json.Marshal` of the map (sorted keys, `<`, `>`, `&`, U+2028 and U+2029 escaped), then
/// `MarshalStr`: the same escaping of that text as a JSON string, without its quotes.
fn encode_log_value(attributes: &BTreeMap<String, Value>) -> String {
    let object = go_escape(&serde_json::to_string(attributes).unwrap_or_default());
    let quoted = go_escape(&serde_json::to_string(&object).unwrap_or_default());
    quoted
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// The characters Go's JSON encoder escapes beyond serde_json's (they only occur inside
/// strings of the encoded text, so replacing them keeps it valid JSON).
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for character in json.chars() {
        match character {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_value_is_an_escaped_json_object_with_sorted_keys_as_go_writes_it() {
        let mut attributes = BTreeMap::new();
        attributes.insert("z".to_string(), Value::from(1));
        attributes.insert("a".to_string(), Value::from("x<y>&\"q\""));
        // What Go's MarshalStr(json.Marshal(map)) gives for the same map.
        let expected = r#"{\"a\":\"x\\u003cy\\u003e\\u0026\\\"q\\\"\",\"z\":1}"#;
        assert_eq!(encode_log_value(&attributes), expected);
        assert_eq!(decode_log_value(expected.as_bytes()), Some(attributes));
        assert_eq!(decode_log_value(b"not json"), None);
        assert_eq!(decode_log_value(br#"[1]"#), None);
    }
}
