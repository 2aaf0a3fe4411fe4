//! Bad input never panics the SDK: random configurations, header maps, bodies and call
//! responses, through the testing API, the way a plugin meets them.
//!
//! - Configuration: any text, JSON of any shape, well-typed configurations and ones with one
//!   field of the wrong type, deep nesting. Each is accepted (and then parsed exactly), or
//!   rejected with a message naming the field or the position.
//! - Headers: names in any case, empty, pseudo (`:path`), non-ASCII; values that are not
//!   UTF-8, empty or huge; thousands of headers; every read and change of `Message` and
//!   `HeadersMut`, checked against a model of the proxy's header map. A value that is not UTF-8
//!   reads as `None` from `header_str` and as its bytes from `header`.
//! - Bodies: chunks of any bytes, per chunk and buffered, read and replaced; bodies at and over
//!   the buffer limit.
//! - Call responses: a missing, empty, signed, four-digit or non-UTF-8 `:status`, headers that
//!   are not UTF-8, bodies that are not UTF-8, not JSON, or JSON of the wrong shape, huge
//!   bodies. Each is a response or a typed `CallError`, as the model says.
//!
//! Natively the properties run about ten thousand cases in all; under Miri (`cargo miri
//! test`), where one case takes seconds, two each, with smaller "huge" and "many". Failures are not persisted (no files are written,
//! which Miri's isolation forbids anyway).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proxy_async::testing::{Action, CallFailure, PluginTest, TestStream};
use proxy_async::{
    CallError, ConfigError, Error, Flow, HttpClient, NoConfig, Plugin, PluginConfig, Request,
    Response, Root,
};

/// `native` cases natively; under Miri, where one case takes seconds, two.
fn cases(native: u32) -> Config {
    Config {
        cases: if cfg!(miri) { 2 } else { native },
        failure_persistence: None,
        ..Config::default()
    }
}

/// A "huge" size: 1 MiB natively, smaller under Miri, where every byte costs.
const HUGE: usize = if cfg!(miri) { 4 * 1024 } else { 1024 * 1024 };

/// "Thousands" of headers natively.
const MANY: usize = if cfg!(miri) { 20 } else { 3000 };

/// [`HUGE`] bytes that are not UTF-8 (the first cannot start a sequence), from a seed: drawing
/// each byte from proptest costs minutes under Miri.
fn huge_bytes() -> impl Strategy<Value = Vec<u8>> {
    any::<u64>().prop_map(|seed| {
        let mut state = seed | 1;
        let mut bytes: Vec<u8> = (0..HUGE)
            .map(|_| {
                // xorshift64: cheap under Miri, and every byte value comes up.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        bytes[0] = 0xff;
        bytes
    })
}

/// Bytes of any kind: mostly not UTF-8, or text in any script, or empty.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..max),
        2 => prop::string::string_regex(&format!(".{{0,{max}}}"))
            .expect("a valid regex")
            .prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Configuration.

/// A configuration with nesting, numbers, options, an enum, a map and unknown fields denied.
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    name: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    retries: Option<u8>,
    #[serde(default)]
    ratio: f64,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    upstreams: Vec<Upstream>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    inner: Option<Box<Settings>>,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Off,
    On,
    Tagged {
        level: u8,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    cluster: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl PluginConfig for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.port == 1 {
            return Err(ConfigError::field("port", "must not be 1"));
        }
        Ok(())
    }
}

/// Shows its configuration in a request header, to compare it with what was written.
struct ShowConfig {
    config: Rc<Settings>,
}

impl Plugin for ShowConfig {
    type Root = Settings;

    fn new(config: &Rc<Settings>) -> Self {
        ShowConfig {
            config: Rc::clone(config),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut()
            .insert("x-config", format!("{:?}", self.config));
        Ok(Flow::Continue)
    }
}

/// The configuration `text` gives: `Ok` with what the plugin saw, or the rejection's message,
/// which must name a field or a position.
fn configure(text: &str) -> Result<String, String> {
    match PluginTest::<ShowConfig>::new(text) {
        Ok(test) => {
            let stream = test.stream();
            stream.send_request_headers(&[(":path", "/")], true);
            Ok(stream.request_header("x-config").unwrap_or_default())
        }
        Err(rejected) => {
            let message = rejected.to_string();
            assert!(
                message.contains("invalid plugin configuration")
                    && (message.contains("field `") || message.contains(" at line ")),
                "{text:?} was rejected without a field or a position: {message}"
            );
            Err(message)
        }
    }
}

/// JSON of any shape, with keys that are sometimes the configuration's.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "name",
            "port",
            "retries",
            "ratio",
            "enabled",
            "mode",
            "upstreams",
            "labels",
            "inner",
            "cluster",
            "timeout_ms",
            "tagged",
            "level",
        ])
        .prop_map(String::from),
        ".{0,6}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        (0u16..1100).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        prop::sample::select(vec!["off", "on", "tagged"]).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Well-typed configurations (floats exactly representable, so that they print back alike).
fn settings() -> impl Strategy<Value = Settings> {
    let upstream =
        (".{0,8}", prop::option::of(any::<u64>())).prop_map(|(cluster, timeout_ms)| Upstream {
            cluster,
            timeout_ms,
        });
    let mode = prop_oneof![
        Just(Mode::Off),
        Just(Mode::On),
        any::<u8>().prop_map(|level| Mode::Tagged { level }),
    ];
    let leaf = (
        ".{0,10}",
        any::<u16>(),
        prop::option::of(any::<u8>()),
        (-64i32..64).prop_map(|quarter| f64::from(quarter) / 4.0),
        any::<bool>(),
        mode,
        prop::collection::vec(upstream, 0..3),
        prop::collection::btree_map(".{0,4}", ".{0,6}", 0..3),
    )
        .prop_map(
            |(name, port, retries, ratio, enabled, mode, upstreams, labels)| Settings {
                name,
                port,
                retries,
                ratio,
                enabled,
                mode,
                upstreams,
                labels,
                inner: None,
            },
        );
    leaf.prop_recursive(3, 4, 1, |inner| {
        (inner.clone(), prop::option::of(inner)).prop_map(|(mut outer, nested)| {
            outer.inner = nested.map(Box::new);
            outer
        })
    })
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn any_text_is_a_configuration_or_an_error_naming_where(
        text in prop_oneof![
            ".{0,64}",
            // JSON's own characters, so that many cases get past the first byte.
            "[\\[\\]{}\":,.0-9a-zA-Z \\\\\n\t+-]{0,48}",
        ]
    ) {
        let _ = configure(&text);
    }

    #[test]
    fn json_of_any_shape_is_a_configuration_or_an_error_naming_where(value in json_value()) {
        let _ = configure(&value.to_string());
    }
}

proptest! {
    #![proptest_config(cases(800))]

    #[test]
    fn well_typed_configurations_are_parsed_exactly(settings in settings()) {
        let json = serde_json::to_string(&settings).expect("serializable");
        let parsed = configure(&json);
        if settings.port == 1 {
            let message = parsed.expect_err("validate rejects port 1");
            prop_assert!(message.contains("field `port`: must not be 1"), "{message}");
        } else {
            prop_assert_eq!(parsed, Ok(format!("{settings:?}")));
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named(
        settings in settings(),
        (field, wrong) in prop::sample::select(vec![
            ("name", serde_json::json!(5)),
            ("port", serde_json::json!(-1)),
            ("port", serde_json::json!(65536)),
            ("port", serde_json::json!("8080")),
            ("retries", serde_json::json!(256)),
            ("ratio", serde_json::json!("half")),
            ("enabled", serde_json::json!("yes")),
            ("mode", serde_json::json!("sideways")),
            ("mode", serde_json::json!({"tagged": {"level": -3}})),
            ("upstreams", serde_json::json!({"cluster": "a"})),
            ("upstreams", serde_json::json!([{"cluster": "a", "timeoutMs": 5}])),
            ("labels", serde_json::json!(["a"])),
            ("labels", serde_json::json!({"a": 1})),
            ("inner", serde_json::json!(7)),
            ("inner", serde_json::json!({"port": "x"})),
        ]),
    ) {
        let mut json = serde_json::to_value(&settings).expect("serializable");
        json[field] = wrong;
        let message = configure(&json.to_string()).expect_err("a wrong type is rejected");
        prop_assert!(message.contains(&format!("field `{field}")), "{field}: {message}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash(
        depth in if cfg!(miri) {
            (1usize..40).boxed()
        } else {
            prop_oneof![1usize..8, 96usize..224, 1usize..4000].boxed()
        },
        arrays in any::<bool>(),
    ) {
        let text = if arrays {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}{{}}{}", r#"{"inner":"#.repeat(depth), "}".repeat(depth))
        };
        let parsed = configure(&text);
        if arrays {
            // `[]` is every field left out (serde reads a struct from a sequence too); a
            // nested array is not a string.
            prop_assert!(depth == 1 || parsed.is_err(), "{depth}: {parsed:?}");
        } else if depth < 100 {
            prop_assert!(parsed.is_ok(), "{depth}: {parsed:?}");
        } else if depth > 200 {
            // serde_json stops at 128 levels, long before a stack (even wasm's 1 MiB) runs out.
            let message = parsed.expect_err("too deep");
            prop_assert!(message.contains("recursion limit exceeded"), "{message}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Headers.

/// One thing a plugin does to a header map.
#[derive(Clone, Debug)]
enum HeaderOp {
    Read(String),
    ReadAll,
    Insert(String, Vec<u8>),
    Append(String, Vec<u8>),
    Remove(String),
    RemovePrefixed(String),
    SetAll(Vec<(String, Vec<u8>)>),
}

/// What the plugin saw.
#[derive(Clone, Debug, PartialEq)]
enum HeaderSeen {
    One(Option<Vec<u8>>, Option<String>),
    All(Vec<(String, Vec<u8>)>),
    Status(Option<u16>),
}

thread_local! {
    static HEADER_SCRIPT: RefCell<Vec<HeaderOp>> = const { RefCell::new(Vec::new()) };
    static HEADER_SEEN: RefCell<Vec<HeaderSeen>> = const { RefCell::new(Vec::new()) };
}

/// Runs [`HEADER_SCRIPT`] on the request headers, or on the response headers, recording what
/// it reads in [`HEADER_SEEN`].
struct HeaderScript;

fn run_header_script(message: &mut proxy_async::Message<'_>) {
    let script = HEADER_SCRIPT.with_borrow(Clone::clone);
    for op in script {
        let seen = match op {
            HeaderOp::Read(name) => Some(HeaderSeen::One(
                message.header(&name).map(|value| value.as_bytes().to_vec()),
                message.header_str(&name),
            )),
            HeaderOp::ReadAll => Some(HeaderSeen::All(message.headers().to_vec())),
            HeaderOp::Insert(name, value) => {
                message.headers_mut().insert(&name, value);
                None
            }
            HeaderOp::Append(name, value) => {
                message.headers_mut().append(&name, value);
                None
            }
            HeaderOp::Remove(name) => {
                message.headers_mut().remove(&name);
                None
            }
            HeaderOp::RemovePrefixed(prefix) => {
                message.headers_mut().remove_prefixed(&prefix);
                None
            }
            HeaderOp::SetAll(pairs) => {
                let pairs: Vec<(&str, &[u8])> = pairs
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_slice()))
                    .collect();
                message.headers_mut().set_all(&pairs);
                None
            }
        };
        if let Some(seen) = seen {
            HEADER_SEEN.with_borrow_mut(|all| all.push(seen));
        }
    }
}

impl Plugin for HeaderScript {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        HeaderScript
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        run_header_script(req);
        Ok(Flow::Continue)
    }

    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        HEADER_SEEN
            .with_borrow_mut(|all| all.push(HeaderSeen::Status(resp.status().map(u16::from))));
        run_header_script(resp);
        HEADER_SEEN
            .with_borrow_mut(|all| all.push(HeaderSeen::Status(resp.status().map(u16::from))));
        Ok(Flow::Continue)
    }
}

/// The proxy's header map as the SDK's calls should leave it: names lower-cased on the way
/// in, looked up without regard to case; `insert` replaces the first value and drops the
/// others; `remove_prefixed` matches the prefix without regard to case.
#[derive(Clone, Debug, Default)]
struct HeaderModel(Vec<(String, Vec<u8>)>);

impl HeaderModel {
    fn first(&self, name: &str) -> Option<&Vec<u8>> {
        self.0
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Applies `op`; returns what a read should see.
    fn apply(&mut self, op: &HeaderOp) -> Option<HeaderSeen> {
        match op {
            HeaderOp::Read(name) => {
                let value = self.first(name).cloned();
                let text = value
                    .clone()
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                return Some(HeaderSeen::One(value, text));
            }
            HeaderOp::ReadAll => return Some(HeaderSeen::All(self.0.clone())),
            HeaderOp::Insert(name, value) => {
                match self
                    .0
                    .iter()
                    .position(|(key, _)| key.eq_ignore_ascii_case(name))
                {
                    Some(first) => {
                        self.0[first].1 = value.clone();
                        let mut index = 0;
                        self.0.retain(|(key, _)| {
                            let keep = index <= first || !key.eq_ignore_ascii_case(name);
                            index += 1;
                            keep
                        });
                    }
                    None => self.0.push((name.to_ascii_lowercase(), value.clone())),
                }
            }
            HeaderOp::Append(name, value) => {
                self.0.push((name.to_ascii_lowercase(), value.clone()));
            }
            HeaderOp::Remove(name) => self.0.retain(|(key, _)| !key.eq_ignore_ascii_case(name)),
            HeaderOp::RemovePrefixed(prefix) => {
                let prefix = prefix.to_ascii_lowercase();
                self.0
                    .retain(|(key, _)| !key.to_ascii_lowercase().starts_with(&prefix));
            }
            HeaderOp::SetAll(pairs) => {
                self.0 = pairs
                    .iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                    .collect();
            }
        }
        None
    }

    /// As the testing API shows headers: values as lossy text.
    fn lossy(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect()
    }
}

/// Header names: ones a request has, in another case; empty; pseudo; any text.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            ":path", ":PATH", ":status", ":authority", ":method", "", ":", "x-a", "X-A", "x-",
            "X-", "x-b", "content-type", "Content-Type", "\u{e9}t\u{e9}", "\u{c9}T\u{c9}",
        ])
        .prop_map(String::from),
        2 => "[a-zA-Z:_-]{0,6}",
        1 => ".{0,8}",
    ]
}

fn header_op() -> impl Strategy<Value = HeaderOp> {
    let value = || bytes(24);
    prop_oneof![
        3 => header_name().prop_map(HeaderOp::Read),
        1 => Just(HeaderOp::ReadAll),
        3 => (header_name(), value()).prop_map(|(name, value)| HeaderOp::Insert(name, value)),
        2 => (header_name(), value()).prop_map(|(name, value)| HeaderOp::Append(name, value)),
        2 => header_name().prop_map(HeaderOp::Remove),
        1 => prop_oneof![Just(String::from("X-")), Just(String::new()), header_name()]
            .prop_map(HeaderOp::RemovePrefixed),
        1 => prop::collection::vec((header_name(), value()), 0..5).prop_map(HeaderOp::SetAll),
    ]
}

/// Headers as a client sends them (text: the testing API takes `&str`).
fn sent_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((header_name(), ".{0,16}"), 0..10)
}

fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Sets the script, clears what was seen.
fn script(ops: &[HeaderOp]) {
    HEADER_SCRIPT.with_borrow_mut(|script| *script = ops.to_vec());
    HEADER_SEEN.with_borrow_mut(Vec::clear);
}

fn seen() -> Vec<HeaderSeen> {
    HEADER_SEEN.with_borrow(Clone::clone)
}

/// What `Response::status` should read: three ASCII digits, 100 to 999.
fn status_model(value: Option<&Vec<u8>>) -> Option<u16> {
    let text = std::str::from_utf8(value?).ok()?;
    let status: u16 = text.parse().ok()?;
    (text.len() == 3 && text.bytes().all(|byte| byte.is_ascii_digit()) && status >= 100)
        .then_some(status)
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn request_header_reads_and_changes_follow_the_model(
        sent in sent_headers(),
        ops in prop::collection::vec(header_op(), 0..12),
    ) {
        let test = PluginTest::<HeaderScript>::new("").expect("no configuration");
        let stream = test.stream();
        script(&ops);
        let action = stream.send_request_headers(&as_refs(&sent), true);
        prop_assert_eq!(action, Action::Continue);

        let mut model = HeaderModel(
            sent.iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone().into_bytes()))
                .collect(),
        );
        let expected: Vec<HeaderSeen> = ops.iter().filter_map(|op| model.apply(op)).collect();
        prop_assert_eq!(seen(), expected);
        prop_assert_eq!(stream.request_headers(), model.lossy());
        prop_assert!(test.logs_at(log::Level::Warn).is_empty(), "{:?}", test.logs());
    }

    #[test]
    fn response_header_reads_changes_and_status_follow_the_model(
        status in prop_oneof![
            (100u16..1000).prop_map(|status| status.to_string()),
            prop::sample::select(vec![
                "", "20", "2000", "+200", "-200", "0200", "099", " 200", "200 ", "2O0", "65536",
            ]).prop_map(String::from),
            ".{0,4}",
        ],
        sent in sent_headers(),
        ops in prop::collection::vec(header_op(), 0..12),
    ) {
        let test = PluginTest::<HeaderScript>::new("").expect("no configuration");
        let stream = test.stream();
        script(&[]);
        stream.send_request_headers(&[(":path", "/")], true);

        let mut response = vec![(":status".to_string(), status)];
        response.extend(sent);
        script(&ops);
        let action = stream.send_response_headers(&as_refs(&response), true);
        prop_assert_eq!(action, Action::Continue);

        let mut model = HeaderModel(
            response.iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone().into_bytes()))
                .collect(),
        );
        let mut expected = vec![HeaderSeen::Status(status_model(model.first(":status")))];
        expected.extend(ops.iter().filter_map(|op| model.apply(op)));
        expected.push(HeaderSeen::Status(status_model(model.first(":status"))));
        prop_assert_eq!(seen(), expected);
        prop_assert_eq!(stream.response_headers(), model.lossy());
    }
}

proptest! {
    #![proptest_config(cases(if cfg!(miri) { 1 } else { 6 }))]

    #[test]
    fn thousands_of_headers_and_huge_values_are_read_and_changed(
        count in 1..MANY,
        huge in huge_bytes(),
        name in header_name(),
    ) {
        let sent: Vec<(String, String)> = (0..count)
            .map(|index| (format!("h-{index}"), "v".repeat(index % 7)))
            .chain([(name.clone(), "last".to_string())])
            .collect();
        let ops = [
            HeaderOp::Insert("X-Huge".to_string(), huge.clone()),
            HeaderOp::Read("x-huge".to_string()),
            HeaderOp::ReadAll,
            HeaderOp::RemovePrefixed("H-".to_string()),
            HeaderOp::ReadAll,
        ];
        let test = PluginTest::<HeaderScript>::new("").expect("no configuration");
        let stream = test.stream();
        script(&ops);
        stream.send_request_headers(&as_refs(&sent), true);

        let mut model = HeaderModel(
            sent.iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone().into_bytes()))
                .collect(),
        );
        let expected: Vec<HeaderSeen> = ops.iter().filter_map(|op| model.apply(op)).collect();
        let seen = seen();
        prop_assert_eq!(&seen[0], &HeaderSeen::One(Some(huge), None), "bytes, but no text");
        prop_assert!(seen == expected);
        prop_assert_eq!(stream.request_headers(), model.lossy());
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies.

/// One change to a body chunk.
#[derive(Clone, Debug)]
enum BodyOp {
    Replace(Vec<u8>),
    Append(Vec<u8>),
    Prepend(Vec<u8>),
}

impl BodyOp {
    fn apply(&self, body: &mut Vec<u8>) {
        match self {
            BodyOp::Replace(data) => *body = data.clone(),
            BodyOp::Append(data) => body.extend_from_slice(data),
            BodyOp::Prepend(data) => {
                body.splice(0..0, data.iter().copied());
            }
        }
    }
}

fn body_op() -> impl Strategy<Value = BodyOp> {
    prop_oneof![
        bytes(32).prop_map(BodyOp::Replace),
        bytes(32).prop_map(BodyOp::Append),
        bytes(32).prop_map(BodyOp::Prepend),
    ]
}

/// What a body hook saw: the body, as text, and whether it was the last callback.
type BodySeen = (Vec<u8>, Option<String>, bool);

thread_local! {
    static BODY_SCRIPT: RefCell<Vec<Vec<BodyOp>>> = const { RefCell::new(Vec::new()) };
    static BODY_SEEN: RefCell<Vec<BodySeen>> = const { RefCell::new(Vec::new()) };
}

/// Reads each request body callback's body, then applies the next changes of [`BODY_SCRIPT`].
async fn body_hook(req: &mut Request<'_>) -> Result<Flow, Error> {
    let seen = (req.body(), req.body_str(), req.end_of_stream());
    BODY_SEEN.with_borrow_mut(|all| all.push(seen));
    let ops = BODY_SCRIPT.with_borrow_mut(|script| {
        if script.is_empty() {
            Vec::new()
        } else {
            script.remove(0)
        }
    });
    for op in ops {
        match op {
            BodyOp::Replace(data) => req.set_body(data),
            BodyOp::Append(data) => req.append_body(data),
            BodyOp::Prepend(data) => req.prepend_body(data),
        }
    }
    Ok(Flow::Continue)
}

/// Streams the request body, chunk by chunk.
struct PerChunk;

impl Plugin for PerChunk {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        PerChunk
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        body_hook(req).await
    }
}

/// The most a [`Buffered`] body may have.
const LIMIT: usize = 256;

/// No configuration; buffers request bodies of up to `MAX` bytes.
struct Buffering<const MAX: usize>;

impl<const MAX: usize> Root for Buffering<MAX> {
    type Config = NoConfig;

    fn configure(_: NoConfig) -> Result<Self, ConfigError> {
        Ok(Buffering)
    }

    fn settings(&self) -> proxy_async::Settings {
        proxy_async::Settings::default()
            .buffer_request_body(true)
            .body_buffer_limit(MAX)
    }
}

/// Buffers the request body, up to [`LIMIT`] bytes.
struct Buffered;

impl Plugin for Buffered {
    type Root = Buffering<LIMIT>;

    fn new(_: &Rc<Buffering<LIMIT>>) -> Self {
        Buffered
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        body_hook(req).await
    }
}

/// Buffers the request body, up to [`HUGE`] bytes.
struct BufferedHuge;

impl Plugin for BufferedHuge {
    type Root = Buffering<HUGE>;

    fn new(_: &Rc<Buffering<HUGE>>) -> Self {
        BufferedHuge
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        body_hook(req).await
    }
}

fn body_script(ops: Vec<Vec<BodyOp>>) {
    BODY_SCRIPT.with_borrow_mut(|script| *script = ops);
    BODY_SEEN.with_borrow_mut(Vec::clear);
}

fn body_seen() -> Vec<BodySeen> {
    BODY_SEEN.with_borrow(Clone::clone)
}

fn text(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

/// Sends `chunks` as a request body (the last one ends the stream), stopping at a local reply.
fn send_body<'t, P: Plugin>(test: &'t PluginTest<P>, chunks: &[Vec<u8>]) -> TestStream<'t, P> {
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "POST"), (":path", "/")], false);
    for (index, chunk) in chunks.iter().enumerate() {
        if stream.local_reply().is_some() {
            break;
        }
        stream.send_request_body(chunk, index + 1 == chunks.len());
    }
    stream
}

proptest! {
    #![proptest_config(cases(600))]

    #[test]
    fn each_chunk_is_read_and_changed_as_it_passes(
        chunks in prop::collection::vec(bytes(48), 1..6),
        ops in prop::collection::vec(prop::collection::vec(body_op(), 0..3), 0..6),
    ) {
        let test = PluginTest::<PerChunk>::new("").expect("no configuration");
        body_script(ops.clone());
        let stream = send_body(&test, &chunks);

        let mut forwarded = Vec::new();
        let mut expected = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            expected.push((chunk.clone(), text(chunk), index + 1 == chunks.len()));
            let mut chunk = chunk.clone();
            for op in ops.get(index).into_iter().flatten() {
                op.apply(&mut chunk);
            }
            forwarded.extend(chunk);
        }
        prop_assert_eq!(body_seen(), expected);
        prop_assert_eq!(stream.request_body(), forwarded);
        prop_assert_eq!(stream.local_reply(), None);
    }

    #[test]
    fn a_buffered_body_is_read_whole_and_replaced_or_refused_over_the_limit(
        chunks in prop::collection::vec(bytes(96), 1..6),
        ops in prop::collection::vec(body_op(), 0..3),
    ) {
        let test = PluginTest::<Buffered>::new("").expect("no configuration");
        body_script(vec![ops.clone()]);
        let stream = send_body(&test, &chunks);

        let whole = chunks.concat();
        if whole.len() > LIMIT {
            let reply = stream.local_reply().expect("a 413");
            prop_assert_eq!((reply.status, reply.details.as_str()), (413, "request_payload_too_large"));
            prop_assert!(body_seen().is_empty(), "the hook never ran");
        } else {
            prop_assert_eq!(body_seen(), vec![(whole.clone(), text(&whole), true)]);
            let mut body = whole;
            for op in &ops {
                op.apply(&mut body);
            }
            prop_assert_eq!(stream.request_body(), body);
            prop_assert_eq!(stream.local_reply(), None);
        }
    }
}

proptest! {
    #![proptest_config(cases(if cfg!(miri) { 1 } else { 6 }))]

    #[test]
    fn huge_bodies_at_the_limit_are_read_and_over_it_refused(
        mut body in huge_bytes(),
        pieces in 1usize..5,
        over in any::<bool>(),
    ) {
        if over {
            body.push(b'!');
        }
        let size = body.len().div_ceil(pieces);
        let chunks: Vec<Vec<u8>> = body.chunks(size).map(<[u8]>::to_vec).collect();
        let test = PluginTest::<BufferedHuge>::new("").expect("no configuration");
        body_script(vec![vec![BodyOp::Replace(b"small".to_vec())]]);
        let stream = send_body(&test, &chunks);
        if over {
            prop_assert_eq!(stream.local_reply().map(|reply| reply.status), Some(413));
            prop_assert!(body_seen().is_empty());
        } else {
            let seen = body_seen();
            prop_assert_eq!(seen.len(), 1);
            prop_assert!(seen[0].0 == body, "the whole body, once");
            prop_assert_eq!(&seen[0].1, &None, "not UTF-8");
            prop_assert_eq!(stream.request_body(), b"small");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Call responses.

/// The JSON a service is expected to answer.
#[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
struct Shape {
    id: u32,
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// What the plugin made of a call's answer.
#[derive(Debug, PartialEq)]
enum CallSeen {
    Failed(CallError),
    Answered {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        /// `header(name)` of each header's name, and of one that is missing.
        header: Vec<Result<String, CallError>>,
        header_bytes: Vec<Option<Vec<u8>>>,
        body: Vec<u8>,
        text: Result<String, CallError>,
        json: Result<(u32, String, Vec<String>), CallError>,
    },
}

thread_local! {
    static CALL_SEEN: RefCell<Vec<CallSeen>> = const { RefCell::new(Vec::new()) };
}

/// The name of a header no answer has.
const MISSING: &str = "x-not-there-at-all";

/// Calls `svc` and records everything the answer offers.
struct Caller;

impl Plugin for Caller {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        Caller
    }

    async fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
        let seen = match HttpClient::new("svc").get("/").send().await {
            Err(error) => {
                // Every error has a message.
                assert!(!error.to_string().is_empty());
                CallSeen::Failed(error)
            }
            Ok(answer) => {
                let names = answer
                    .headers()
                    .iter()
                    .map(|(name, _)| name.to_string())
                    .chain([MISSING.to_string()]);
                let (header, header_bytes) = names
                    .map(|name| {
                        (
                            answer.header(&name).map(str::to_string),
                            answer.header_bytes(&name).map(<[u8]>::to_vec),
                        )
                    })
                    .unzip();
                CallSeen::Answered {
                    status: answer.status().as_u16(),
                    headers: answer.headers().to_vec(),
                    header,
                    header_bytes,
                    body: answer.body().to_vec(),
                    text: answer.text().map(str::to_string),
                    json: answer
                        .json::<Shape>()
                        .map(|shape| (shape.id, shape.name, shape.tags)),
                }
            }
        };
        CALL_SEEN.with_borrow_mut(|all| all.push(seen));
        Ok(Flow::Continue)
    }
}

/// What the answer (`None`: the call failed) should give, by the rules of `CallResponse`.
/// A call's answer: headers and body.
type Answer = (Vec<(String, Vec<u8>)>, Vec<u8>);

fn call_model(answer: Option<&Answer>) -> CallSeen {
    let no_response = CallSeen::Failed(CallError::NoResponse {
        cluster: "svc".to_string(),
        timeout: Duration::from_millis(500),
    });
    let Some((headers, body)) = answer else {
        return no_response;
    };
    // The proxy reports a response without headers as a failed call.
    if headers.is_empty() {
        return no_response;
    }
    let status = headers
        .iter()
        .find(|(name, _)| name == ":status")
        .and_then(|(_, value)| status_model(Some(value)));
    let Some(status) = status else {
        return CallSeen::Failed(CallError::InvalidStatus {
            cluster: "svc".to_string(),
        });
    };
    let invalid = |reason: String| CallError::InvalidResponse {
        cluster: "svc".to_string(),
        reason,
    };
    let first = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    // Envoy's own answer for an upstream that gave none (router.cc's local replies): plain
    // text, without the header Envoy puts on every upstream's answer.
    if status >= 502
        && first("x-envoy-upstream-service-time").is_none()
        && first("content-type").as_deref() == Some(b"text/plain".as_slice())
        && let Ok(text) = std::str::from_utf8(body)
    {
        if status == 504 && text == "upstream request timeout" {
            return CallSeen::Failed(CallError::Timeout {
                cluster: "svc".to_string(),
                timeout: Duration::from_millis(500),
            });
        }
        if let (502 | 503, Some(reason)) = (
            status,
            text.strip_prefix(
                "upstream connect error or disconnect/reset before headers. reset reason: ",
            ),
        ) {
            return CallSeen::Failed(CallError::Unreachable {
                cluster: "svc".to_string(),
                reason: reason.to_string(),
            });
        }
    }
    let names = headers
        .iter()
        .map(|(name, _)| name.clone())
        .chain([MISSING.to_string()]);
    let (header, header_bytes) = names
        .map(|name| {
            let bytes = first(&name);
            let text = match &bytes {
                None => Err(CallError::MissingHeader {
                    cluster: "svc".to_string(),
                    name: name.clone(),
                }),
                Some(bytes) => String::from_utf8(bytes.clone())
                    .map_err(|_| invalid(format!("header `{name}` is not UTF-8"))),
            };
            (text, bytes)
        })
        .unzip();
    CallSeen::Answered {
        status,
        headers: headers.clone(),
        header,
        header_bytes,
        body: body.clone(),
        text: String::from_utf8(body.clone()).map_err(|_| invalid("body is not UTF-8".to_string())),
        json: serde_json::from_slice::<Shape>(body)
            .map(|shape| (shape.id, shape.name, shape.tags))
            .map_err(|error| invalid(format!("body is not the expected JSON: {error}"))),
    }
}

/// `:status` values: statuses, near misses, garbage.
fn status_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (100u16..1000).prop_map(|status| status.to_string().into_bytes()),
        2 => prop::sample::select(vec![
            "", "0", "20", "099", "0200", "+200", "-200", " 200", "200 ", "2000", "65536", "1e2",
            "\u{664}\u{660}\u{660}",
        ])
        .prop_map(|text| text.as_bytes().to_vec()),
        1 => bytes(5),
    ]
}

/// Call response bodies: the expected JSON, JSON of another shape, text, bytes.
fn call_body() -> impl Strategy<Value = Vec<u8>> {
    let shape = (
        any::<u32>(),
        ".{0,8}",
        prop::collection::vec(".{0,4}", 0..3),
    )
        .prop_map(|(id, name, tags)| {
            serde_json::to_vec(&Shape { id, name, tags }).expect("serializable")
        });
    prop_oneof![
        3 => shape,
        2 => json_value().prop_map(|value| value.to_string().into_bytes()),
        1 => Just(br#"{"id": -1, "name": "x"}"#.to_vec()),
        1 => Just(b"{\"id\": 1, \"name\": \"\xff\"}".to_vec()),
        2 => bytes(64),
    ]
}

/// Call response headers: with or without a `:status`, names in any case, values of any bytes.
fn call_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let status = prop::option::weighted(0.85, status_value());
    let others = prop::collection::vec((header_name(), bytes(16)), 0..6);
    (status, others, any::<prop::sample::Index>()).prop_map(|(status, mut others, at)| {
        if let Some(status) = status {
            let at = at.index(others.len() + 1);
            others.insert(at, (":status".to_string(), status));
        }
        others
    })
}

fn ask(answer: Option<Answer>) -> CallSeen {
    let test = PluginTest::<Caller>::new("").expect("no configuration");
    CALL_SEEN.with_borrow_mut(Vec::clear);
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/")], true),
        Action::Pause
    );
    let call = stream.calls().pop().expect("the call");
    match &answer {
        None => test.fail(&call),
        Some((headers, body)) => {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
                .collect();
            test.respond_raw(&call, &headers, body);
        }
    }
    assert_eq!(stream.resumed_requests(), 1, "the hook finished");
    let mut seen = CALL_SEEN.with_borrow_mut(std::mem::take);
    assert_eq!(seen.len(), 1);
    seen.remove(0)
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn call_responses_are_decoded_or_typed_errors(
        answer in prop::option::weighted(0.95, (call_headers(), call_body())),
    ) {
        let seen = ask(answer.clone());
        prop_assert_eq!(seen, call_model(answer.as_ref()));
    }
}

#[test]
fn envoys_own_answers_are_typed_errors_and_the_same_from_an_upstream_is_not() {
    let failures = [
        CallFailure::Timeout,
        CallFailure::ConnectionRefused,
        CallFailure::ConnectionClosed,
        CallFailure::ResetMidResponse,
    ];
    for failure in failures {
        let answer = failure.envoy_answer();
        let seen = ask(answer.clone());
        assert_eq!(seen, call_model(answer.as_ref()), "{failure:?}");
        assert!(matches!(seen, CallSeen::Failed(_)), "{failure:?}: {seen:?}");
        // The same answer from the upstream itself (Envoy marks it): a response.
        if let Some((mut headers, body)) = answer {
            headers.push(("x-envoy-upstream-service-time".into(), b"1".to_vec()));
            let answer = Some((headers, body));
            let seen = ask(answer.clone());
            assert_eq!(
                seen,
                call_model(answer.as_ref()),
                "{failure:?} from the upstream"
            );
            assert!(
                !matches!(seen, CallSeen::Failed(_)),
                "{failure:?}: {seen:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(cases(if cfg!(miri) { 1 } else { 6 }))]

    #[test]
    fn huge_call_responses_are_decoded(
        mut body in huge_bytes(),
        json in any::<bool>(),
    ) {
        if json {
            let name = "n".repeat(HUGE);
            body = serde_json::to_vec(&Shape { id: 7, name, tags: Vec::new() }).expect("serializable");
        }
        let huge_value = vec![0xfe; HUGE];
        let answer = (
            vec![
                (":status".to_string(), b"200".to_vec()),
                ("x-huge".to_string(), huge_value),
            ],
            body,
        );
        let seen = ask(Some(answer.clone()));
        prop_assert!(seen == call_model(Some(&answer)), "huge answers differ from the model");
    }
}
