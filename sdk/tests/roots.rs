//! A root per configuration: built once from the parsed configuration, shared by the streams it
//! serves, refusing a configuration it cannot run with, and giving the settings the streams run
//! with.

use std::cell::Cell;
use std::rc::Rc;

use proxy_async::testing::{Action, PluginTest};
use proxy_async::{ConfigError, Error, Flow, Plugin, PluginConfig, Request, Root, Settings};

/// `{"max_body_bytes": n, "tag": "..."}`.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Config {
    max_body_bytes: usize,
    tag: String,
}

impl PluginConfig for Config {}

/// Counts the streams it served; buffers request bodies up to the configured size.
struct Limits {
    max_body_bytes: usize,
    tag: String,
    streams: Cell<u32>,
}

impl Root for Limits {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.max_body_bytes == 0 {
            return Err(ConfigError::field("max_body_bytes", "must be at least 1"));
        }
        Ok(Limits {
            max_body_bytes: config.max_body_bytes,
            tag: config.tag,
            streams: Cell::new(0),
        })
    }

    fn settings(&self) -> Settings {
        Settings::default()
            .buffer_request_body(true)
            .body_buffer_limit(self.max_body_bytes)
    }
}

/// Tags each request with its root's tag after seeing its whole body.
struct Tagger {
    root: Rc<Limits>,
}

impl Plugin for Tagger {
    type Root = Limits;

    fn new(root: &Rc<Limits>) -> Self {
        root.streams.set(root.streams.get() + 1);
        Tagger {
            root: Rc::clone(root),
        }
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().insert("x-tag", self.root.tag.as_str());
        Ok(Flow::Continue)
    }
}

/// Sends a 10-byte body; returns the reply's status, if the plugin refused it.
fn send_ten_bytes(test: &PluginTest<Tagger>) -> (Option<u16>, Option<String>) {
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "POST")], false);
    stream.send_request_body("0123456789", true);
    (
        stream.local_reply().map(|reply| reply.status),
        stream.request_header("x-tag"),
    )
}

#[test]
fn one_root_serves_every_stream_of_its_configuration() {
    let test = PluginTest::<Tagger>::new(r#"{"max_body_bytes": 64, "tag": "a"}"#).unwrap();
    for _ in 0..3 {
        assert_eq!(send_ten_bytes(&test), (None, Some("a".to_string())));
    }
    assert_eq!(test.root().expect("configured").streams.get(), 3);
}

#[test]
fn the_settings_come_from_the_configuration() {
    let small = PluginTest::<Tagger>::new(r#"{"max_body_bytes": 4}"#).unwrap();
    assert_eq!(send_ten_bytes(&small).0, Some(413));
    let large = PluginTest::<Tagger>::new(r#"{"max_body_bytes": 10}"#).unwrap();
    assert_eq!(send_ten_bytes(&large).0, None);
}

#[test]
fn a_reconfiguration_builds_a_new_root_and_its_settings() {
    let test = PluginTest::<Tagger>::new(r#"{"max_body_bytes": 4, "tag": "old"}"#).unwrap();
    assert_eq!(send_ten_bytes(&test).0, Some(413));
    assert!(test.reconfigure(r#"{"max_body_bytes": 64, "tag": "new"}"#));
    assert_eq!(send_ten_bytes(&test), (None, Some("new".to_string())));
    assert_eq!(test.root().expect("configured").streams.get(), 1);
}

#[test]
fn a_root_that_refuses_its_configuration_names_the_field() {
    let Err(rejected) = PluginTest::<Tagger>::new(r#"{"max_body_bytes": 0}"#) else {
        panic!("a zero limit was accepted");
    };
    let message = rejected.to_string();
    assert!(
        message.contains("field `max_body_bytes`: must be at least 1"),
        "{message}"
    );
}

#[test]
fn a_refused_reconfiguration_keeps_the_root_in_force() {
    let test = PluginTest::<Tagger>::new(r#"{"max_body_bytes": 64, "tag": "kept"}"#).unwrap();
    let before = test.root().expect("configured");
    assert!(!test.reconfigure(r#"{"max_body_bytes": 0, "tag": "lost"}"#));
    assert!(Rc::ptr_eq(&before, &test.root().expect("still configured")));
    assert_eq!(send_ten_bytes(&test), (None, Some("kept".to_string())));
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":method", "GET")], true),
        Action::Continue
    );
}
