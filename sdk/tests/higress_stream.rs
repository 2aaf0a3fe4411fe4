//! What a Higress plugin does to its stream beyond headers and bodies, as the Go wrapper does it
//! (higress-group/wasm-go v1.1.1, `pkg/wrapper/plugin_wrapper.go:807-973, 1033-1034`): keep the
//! route, set the buffer limits, write user attributes to the access log and the trace, and
//! give every request `x_request_id`.

use std::rc::Rc;

use proxy_async::higress::{self, Higress, HigressPlugin, Rules, UserAttributes};
use proxy_async::testing::{Action, PluginTest};
use proxy_async::{
    ConfigError, Error, Flow, Plugin, PluginConfig, Request, Response, Root, Settings,
};

#[derive(serde::Deserialize, Default)]
struct Config {
    #[serde(default)]
    request_limit: Option<u32>,
    #[serde(default)]
    response_limit: Option<u32>,
}

impl PluginConfig for Config {}

/// Buffers both bodies with a 1 KiB limit, unless the configuration sets a stream's own.
struct Limits(Config);

impl Root for Limits {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Limits(config))
    }

    fn settings(&self) -> Settings {
        Settings::default()
            .buffer_request_body(true)
            .buffer_response_body(true)
            .body_buffer_limit(1024)
    }
}

struct Tagger {
    root: Rc<Limits>,
    attributes: UserAttributes,
}

impl HigressPlugin for Tagger {
    const RULES: Rules = Rules::Separate;
}

impl Plugin for Tagger {
    type Root = Limits;

    fn new(root: &Rc<Limits>) -> Self {
        Tagger {
            root: Rc::clone(root),
            attributes: UserAttributes::default(),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        higress::disable_reroute()?;
        if let Some(bytes) = self.root.0.request_limit {
            higress::set_request_body_buffer_limit(req, bytes)?;
        }
        if let Some(bytes) = self.root.0.response_limit {
            higress::set_response_body_buffer_limit(req, bytes)?;
        }
        self.attributes.set("consumer", "alice");
        self.attributes.set("tokens", 42);
        Ok(Flow::Continue)
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        log::info!("request body: {} bytes", req.body().len());
        Ok(Flow::Continue)
    }

    async fn on_response_headers(&mut self, _resp: &mut Response<'_>) -> Result<Flow, Error> {
        self.attributes.set("note", "<ok>");
        if let Err(error) = self.attributes.write_to_log() {
            log::warn!("{error}");
        }
        self.attributes.write_to_trace()?;
        Ok(Flow::Continue)
    }

    async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        log::info!("response body: {} bytes", resp.body().len());
        Ok(Flow::Continue)
    }
}

const REQUEST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/"),
    (":authority", "a.com"),
    ("x-request-id", "r-7"),
];

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|bytes| String::from_utf8(bytes).expect("text"))
}

#[test]
fn the_route_is_kept_and_every_request_gets_x_request_id() {
    let test = PluginTest::<Higress<Tagger>>::new("{}").expect("valid");
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    assert_eq!(
        text(stream.property(&["clear_route_cache"])).as_deref(),
        Some("off")
    );
    assert_eq!(
        text(stream.property(&["x_request_id"])).as_deref(),
        Some("r-7")
    );
    // Another stream's properties are its own.
    let other = test.stream();
    other.send_request_headers(&REQUEST[..3], true);
    assert_eq!(text(other.property(&["x_request_id"])).as_deref(), Some(""));
}

#[test]
fn a_streams_own_buffer_limits_reach_the_proxy_and_the_plugin() {
    let test =
        PluginTest::<Higress<Tagger>>::new(r#"{"request_limit": 4096, "response_limit": 8}"#)
            .expect("valid");
    let stream = test.stream();
    stream.send_request_headers(REQUEST, false);
    assert_eq!(
        text(stream.property(&["set_decoder_buffer_limit"])).as_deref(),
        Some("4096")
    );
    assert_eq!(
        text(stream.property(&["set_encoder_buffer_limit"])).as_deref(),
        Some("8")
    );
    // Past the plugin's 1 KiB, within the stream's 4 KiB: read whole.
    assert_eq!(
        stream.send_request_body(vec![b'x'; 3000], true),
        Action::Continue
    );
    assert_eq!(test.logs_at(log::Level::Info), ["request body: 3000 bytes"]);
    // The response's 8 bytes: a 9-byte body is refused with Envoy's 500.
    stream.send_response_headers(&[(":status", "200")], false);
    stream.send_response_body("123456789", true);
    assert_eq!(stream.local_reply().map(|reply| reply.status), Some(500));

    // Without them, the plugin's 1 KiB: 413.
    let test = PluginTest::<Higress<Tagger>>::new("{}").expect("valid");
    let stream = test.stream();
    stream.send_request_headers(REQUEST, false);
    stream.send_request_body(vec![b'x'; 3000], true);
    assert_eq!(stream.local_reply().map(|reply| reply.status), Some(413));
}

#[test]
fn user_attributes_go_to_the_access_log_over_what_it_holds_and_to_the_trace() {
    let test = PluginTest::<Higress<Tagger>>::new("{}").expect("valid");
    let stream = test.stream();
    // Another plugin wrote an attribute before (Higress's escaped JSON object).
    stream.set_property(&["custom_log"], r#"{\"route\":\"r1\",\"tokens\":1}"#);
    stream.send_request_headers(REQUEST, true);
    stream.send_response_headers(&[(":status", "200")], true);
    // Sorted keys, the old attribute kept, ours over it, Go's escaping of `<` and `>`.
    assert_eq!(
        text(stream.property(&["custom_log"])).as_deref(),
        Some(
            r#"{\"consumer\":\"alice\",\"note\":\"\\u003cok\\u003e\",\"route\":\"r1\",\"tokens\":42}"#
        )
    );
    assert_eq!(
        text(stream.property(&["trace_span_tag.consumer"])).as_deref(),
        Some("alice")
    );
    assert_eq!(
        text(stream.property(&["trace_span_tag.tokens"])).as_deref(),
        Some("42")
    );

    // What the property holds is not Higress's encoding: it is left alone, with an error.
    let stream = test.stream();
    stream.set_property(&["custom_log"], "plain text");
    stream.send_request_headers(REQUEST, true);
    stream.send_response_headers(&[(":status", "200")], true);
    assert_eq!(
        text(stream.property(&["custom_log"])).as_deref(),
        Some("plain text")
    );
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("property `custom_log` holds \"plain text\"")),
        "{:?}",
        test.logs()
    );
}
