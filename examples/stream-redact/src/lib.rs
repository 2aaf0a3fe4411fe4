//! Redacts secrets from streamed response bodies, chunk by chunk, without buffering the body.
//!
//! Every occurrence of a configured literal pattern (an API key prefix, a token, an internal
//! host name) in a response body is replaced with a fixed text before the client sees it. The
//! body is never buffered whole (the default [`Settings`](proxy_async::Settings)): each chunk
//! goes on as soon as it arrived, minus at most the last `longest pattern - 1` bytes, which
//! could be the start of a match that the next chunk completes. So a pattern split across any
//! number of chunks (down to one byte per chunk) is found, and memory per stream stays at most
//! the longest pattern, whatever the body's size.
//!
//! # Configuration
//!
//! ```json
//! {
//!   "patterns": ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "internal.corp.example"],
//!   "replacement": "[REDACTED]",
//!   "ignore_case": false,
//!   "content_types": ["text/*", "application/json"]
//! }
//! ```
//!
//! | field           | type            | default                          | meaning |
//! |-----------------|-----------------|----------------------------------|---------|
//! | `patterns`      | list of strings | (required)                       | the literal texts to redact; at least one, none empty, each at most [`MAX_PATTERN_LEN`] bytes |
//! | `replacement`   | string          | `"[REDACTED]"`                   | what each match becomes (may be empty: matches are then deleted) |
//! | `ignore_case`   | bool            | `false`                          | match ASCII letters in any case (other bytes exactly) |
//! | `content_types` | list of strings | `["text/*", "application/json"]` | the media types whose bodies are redacted: `type/subtype`, `type/*` or `*/*` (any case) |
//!
//! A configuration that is empty, has no pattern, an empty or overlong pattern, a malformed
//! content type, a value of the wrong type or an unknown key is rejected at configure time
//! (Envoy refuses it) with an error naming the field, e.g. ``field `patterns[1]`: must not be
//! empty``. Keys starting with `_` are ignored: Istio and Higress add their own (`_rules_`,
//! `_plugin_id_`).
//!
//! # What it does
//!
//! - **Matching** is on bytes, not text: a body need not be UTF-8, and patterns match their
//!   UTF-8 bytes. It is leftmost-longest and non-overlapping, the way a reader scans: at each
//!   position the longest pattern that matches there is replaced, and the scan goes on after
//!   it. With patterns `secret` and `secret-token`, `a secret-token` becomes `a [REDACTED]`;
//!   with pattern `aba`, `ababa` becomes `[REDACTED]ba`. The replacement is never scanned
//!   again. The result is the same for every way the body is split into chunks.
//! - **Which responses**: those whose `content-type` (parameters such as `charset` ignored)
//!   matches `content_types`, and those without a readable `content-type` (a body that does
//!   not say what it is may be anything, so it is redacted). Other responses pass untouched.
//! - **Compressed responses** cannot be searched: the plugin removes `accept-encoding` from
//!   every request, so that upstreams answer uncompressed (what nginx's `sub_filter` asks for
//!   too). A response that is encoded anyway (`content-encoding` other than `identity`) passes
//!   untouched, with a warning in the log. To compress toward clients, put Envoy's compressor
//!   filter *before* this plugin in `http_filters`: responses go through the filters in
//!   reverse order, so it compresses what this plugin already redacted.
//! - **Headers of a redacted response**: the body's size may change, so `content-length` is
//!   removed (Envoy then frames the body itself, chunked for HTTP/1.1), as are the digests of
//!   the body that would no longer match (`content-md5`, `digest`, `content-digest`,
//!   `repr-digest`) and `accept-ranges` (a byte range of the original body means nothing in
//!   the redacted one); a strong `etag` becomes weak (`W/"..."`), as Envoy's compressor does.
//!   The plugin cannot know before the body has gone by whether anything will be redacted, so
//!   this happens for every response it scans.
//! - **Logs**: at `debug`, how many matches each scanned response had; response headers cannot
//!   carry that count, since they have left before the body is scanned.
//!
//! # Limits
//!
//! - The scan costs about `body bytes x patterns` comparisons at the positions where some
//!   pattern's first byte occurs (other bytes are skipped with one table lookup): fine for
//!   tens of patterns, not for thousands.
//! - A response with trailers (HTTP/2 or gRPC) ends without a last data chunk: the held-back
//!   tail (a partial match at the very end of the body, shorter than the longest pattern) is
//!   then lost, since a proxy-wasm plugin cannot add body bytes in the trailers callback. Do
//!   not list content types that carry trailers (`application/grpc`).
//! - A `206 Partial Content` response is redacted within its range only, and its
//!   `content-range` is left as the upstream sent it.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use proxy_async::{ConfigError, Error, Flow, Plugin, PluginConfig, Request, Response};

/// The longest pattern accepted, in bytes: it bounds what a stream holds back between chunks.
pub const MAX_PATTERN_LEN: usize = 1024;

/// The response headers that describe the body as the upstream sent it, removed from every
/// response the plugin scans because redaction may change the body.
pub const STALE_HEADERS: [&str; 6] = [
    "content-length",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "accept-ranges",
];

/// The plugin configuration; see the [crate documentation](crate).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// The literal texts to redact.
    pub patterns: Vec<String>,
    /// What each match becomes.
    pub replacement: String,
    /// Whether ASCII letters match in any case.
    pub ignore_case: bool,
    /// The media types whose bodies are redacted (`type/subtype`, `type/*` or `*/*`).
    pub content_types: Vec<String>,
    /// Every other key: those starting with `_` belong to Istio or Higress; others are
    /// rejected by `validate`, since they are most likely typos (`replacment`).
    #[serde(flatten)]
    other: BTreeMap<String, serde::de::IgnoredAny>,
    /// The patterns compiled for scanning, built once per configuration rather than per stream.
    #[serde(skip)]
    redactor: OnceCell<Redactor>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            patterns: Vec::new(),
            replacement: "[REDACTED]".to_string(),
            ignore_case: false,
            content_types: vec!["text/*".to_string(), "application/json".to_string()],
            other: BTreeMap::new(),
            redactor: OnceCell::new(),
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = self.other.keys().find(|key| !key.starts_with('_')) {
            return Err(ConfigError::field(
                key.as_str(),
                "unknown field, expected `patterns`, `replacement`, `ignore_case` or `content_types`",
            ));
        }
        if self.patterns.is_empty() {
            return Err(ConfigError::field(
                "patterns",
                "must list at least one text to redact",
            ));
        }
        for (index, pattern) in self.patterns.iter().enumerate() {
            if pattern.is_empty() {
                return Err(ConfigError::field(
                    format!("patterns[{index}]"),
                    "must not be empty",
                ));
            }
            if pattern.len() > MAX_PATTERN_LEN {
                return Err(ConfigError::field(
                    format!("patterns[{index}]"),
                    format!(
                        "is {} bytes long, at most {MAX_PATTERN_LEN} are allowed",
                        pattern.len()
                    ),
                ));
            }
        }
        if self.content_types.is_empty() {
            return Err(ConfigError::field(
                "content_types",
                "must list at least one media type (`*/*` for every response)",
            ));
        }
        for (index, media_type) in self.content_types.iter().enumerate() {
            if MediaRange::parse(media_type).is_none() {
                return Err(ConfigError::field(
                    format!("content_types[{index}]"),
                    format!("`{media_type}` is not `type/subtype`, `type/*` or `*/*`"),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The compiled patterns.
    pub fn redactor(&self) -> &Redactor {
        self.redactor.get_or_init(|| {
            Redactor::new(
                &self.patterns,
                self.replacement.as_bytes(),
                self.ignore_case,
            )
        })
    }

    /// Whether a response with this `content-type` value is redacted: it matches one of
    /// `content_types`, or it is missing or unreadable (not UTF-8, no `type/subtype`).
    pub fn redacts_content_type(&self, content_type: Option<&[u8]>) -> bool {
        let Some(essence) = content_type
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.split(';').next())
            .and_then(MediaRange::parse)
        else {
            return true;
        };
        self.content_types
            .iter()
            .filter_map(|range| MediaRange::parse(range))
            .any(|range| range.covers(&essence))
    }
}

/// A media type or range (`text/plain`, `text/*`, `*/*`), lower-cased; `*` stands for any.
struct MediaRange {
    kind: String,
    subtype: String,
}

impl MediaRange {
    /// `type/subtype` with both parts non-empty tokens; `None` for anything else.
    fn parse(text: &str) -> Option<MediaRange> {
        let (kind, subtype) = text.trim().split_once('/')?;
        let token = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && !b"/;,\"()<>@:[]?={}\\".contains(&byte))
        };
        if !token(kind) || !token(subtype) || (kind == "*" && subtype != "*") {
            return None;
        }
        Some(MediaRange {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
        })
    }

    /// Whether this range covers the media type `other`.
    fn covers(&self, other: &MediaRange) -> bool {
        (self.kind == "*" || self.kind == other.kind)
            && (self.subtype == "*" || self.subtype == other.subtype)
    }
}

/// The compiled patterns and their replacement: finds and replaces matches in bytes.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// The patterns, ASCII-lower-cased when matching ignores case.
    patterns: Vec<Vec<u8>>,
    /// Whether a byte can start a match: the scan skips every other byte with one lookup.
    starts: [bool; 256],
    replacement: Vec<u8>,
    ignore_case: bool,
    longest: usize,
}

/// What the scan found at one position of its input.
enum Found {
    /// A pattern of this length matches here (the longest one that does).
    Match(usize),
    /// No pattern matches here.
    Nothing,
    /// The input ends inside what may still become a match: more bytes must come first.
    Undecided,
}

impl Redactor {
    /// Compiles `patterns` (empty ones are ignored) with their `replacement`.
    pub fn new(patterns: &[impl AsRef<[u8]>], replacement: &[u8], ignore_case: bool) -> Redactor {
        let patterns: Vec<Vec<u8>> = patterns
            .iter()
            .map(AsRef::as_ref)
            .filter(|pattern| !pattern.is_empty())
            .map(|pattern| {
                if ignore_case {
                    pattern.to_ascii_lowercase()
                } else {
                    pattern.to_vec()
                }
            })
            .collect();
        let mut starts = [false; 256];
        for first in patterns.iter().filter_map(|pattern| pattern.first()) {
            starts[usize::from(*first)] = true;
            if ignore_case {
                starts[usize::from(first.to_ascii_uppercase())] = true;
            }
        }
        Redactor {
            longest: patterns.iter().map(Vec::len).max().unwrap_or(0),
            patterns,
            starts,
            replacement: replacement.to_vec(),
            ignore_case,
        }
    }

    /// The length of the longest pattern: a stream holds back at most one byte less.
    pub fn longest_pattern(&self) -> usize {
        self.longest
    }

    /// Redacts a whole body at once; what a stream produces, however it is chunked.
    pub fn redact(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len());
        self.scan(body, true, &mut out);
        out
    }

    /// Scans `input`, appending its redacted form to `out`, and returns how many input bytes
    /// it consumed and how many matches it replaced. Unless `complete` (no more input will
    /// follow), it stops at the first position that could start a match `input` ends in the
    /// middle of: those bytes must be scanned again with what comes next.
    fn scan(&self, input: &[u8], complete: bool, out: &mut Vec<u8>) -> (usize, u64) {
        let mut rest = input;
        let mut matches = 0;
        loop {
            // Bytes no pattern starts with go out as they are.
            let plain = rest
                .iter()
                .position(|byte| self.starts[usize::from(*byte)])
                .unwrap_or(rest.len());
            let (copied, candidate) = rest.split_at(plain);
            out.extend_from_slice(copied);
            rest = candidate;
            let Some((first, after)) = rest.split_first() else {
                break;
            };
            match self.find_at(rest, complete) {
                Found::Match(len) => {
                    out.extend_from_slice(&self.replacement);
                    matches += 1;
                    rest = rest.get(len..).unwrap_or_default();
                }
                Found::Nothing => {
                    out.push(*first);
                    rest = after;
                }
                Found::Undecided => break,
            }
        }
        (input.len() - rest.len(), matches)
    }

    /// What starts at the beginning of `rest` (non-empty).
    fn find_at(&self, rest: &[u8], complete: bool) -> Found {
        let mut longest = 0;
        for pattern in &self.patterns {
            match rest.get(..pattern.len()) {
                Some(candidate) => {
                    if pattern.len() > longest && self.same(candidate, pattern) {
                        longest = pattern.len();
                    }
                }
                // `rest` ends inside this pattern's length: if what is there agrees with the
                // pattern, the next bytes decide. Even when a shorter pattern matches here,
                // since this longer one would win.
                None => {
                    let start = pattern.get(..rest.len()).unwrap_or_default();
                    if !complete && self.same(rest, start) {
                        return Found::Undecided;
                    }
                }
            }
        }
        if longest == 0 {
            Found::Nothing
        } else {
            Found::Match(longest)
        }
    }

    fn same(&self, bytes: &[u8], pattern: &[u8]) -> bool {
        if self.ignore_case {
            bytes.eq_ignore_ascii_case(pattern)
        } else {
            bytes == pattern
        }
    }
}

/// The redaction state of one streamed body: the held-back tail and the matches so far.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Input bytes that may be the start of a match the next chunk completes; shorter than
    /// the longest pattern.
    held: Vec<u8>,
    matches: u64,
}

impl Scanner {
    /// Takes the next chunk and returns what goes out in its place: the held-back bytes and
    /// the chunk, redacted, minus a new held-back tail; with `end_of_stream`, everything.
    /// `None` when that is exactly `chunk`, so that the caller need not rewrite it.
    pub fn push(
        &mut self,
        redactor: &Redactor,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.held.len() + chunk.len());
        if self.held.is_empty() {
            // The common case: no copy of the chunk before the scan.
            let (consumed, matches) = redactor.scan(chunk, end_of_stream, &mut out);
            self.matches += matches;
            self.held = chunk.get(consumed..).unwrap_or_default().to_vec();
            if matches == 0 && consumed == chunk.len() {
                return None;
            }
        } else {
            let mut input = std::mem::take(&mut self.held);
            input.extend_from_slice(chunk);
            let (consumed, matches) = redactor.scan(&input, end_of_stream, &mut out);
            self.matches += matches;
            input.drain(..consumed);
            self.held = input;
        }
        Some(out)
    }

    /// How many bytes are held back now.
    pub fn held_back(&self) -> usize {
        self.held.len()
    }

    /// How many matches were replaced so far.
    pub fn matches(&self) -> u64 {
        self.matches
    }
}

/// The plugin: one value per HTTP stream.
pub struct StreamRedact {
    config: Rc<Config>,
    /// The body's redaction state, when this response is scanned.
    scanner: Option<Scanner>,
}

impl Plugin for StreamRedact {
    type Root = Config;

    fn new(config: &Rc<Config>) -> Self {
        StreamRedact {
            config: Rc::clone(config),
            scanner: None,
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        // A compressed body cannot be searched: ask for the uncompressed one.
        req.headers_mut().remove("accept-encoding");
        Ok(Flow::Continue)
    }

    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        if let Some(encoding) = resp.header("content-encoding")
            && !is_identity(encoding.as_bytes())
        {
            log::warn!(
                "not redacting a response with content-encoding `{encoding}`: its bytes cannot be searched"
            );
            return Ok(Flow::Continue);
        }
        let content_type = resp.header("content-type");
        if !self
            .config
            .redacts_content_type(content_type.as_ref().map(|value| value.as_bytes()))
        {
            log::debug!(
                "not redacting a response of content-type `{}`",
                content_type
                    .map(|value| value.to_string())
                    .unwrap_or_default()
            );
            return Ok(Flow::Continue);
        }
        let etag = resp.header("etag");
        let mut headers = resp.headers_mut();
        for name in STALE_HEADERS {
            headers.remove(name);
        }
        // The redacted body is no longer byte-identical to the one the strong validator named.
        if let Some(etag) = etag
            && !etag.as_bytes().starts_with(b"W/")
        {
            headers.insert("etag", [b"W/".as_slice(), etag.as_bytes()].concat());
        }
        self.scanner = Some(Scanner::default());
        Ok(Flow::Continue)
    }

    async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        let Some(scanner) = self.scanner.as_mut() else {
            return Ok(Flow::Continue);
        };
        let end_of_stream = resp.end_of_stream();
        if let Some(out) = scanner.push(self.config.redactor(), &resp.body(), end_of_stream) {
            resp.set_body(out);
        }
        if end_of_stream {
            log::debug!(
                "redacted {} matches in the response body",
                scanner.matches()
            );
        }
        Ok(Flow::Continue)
    }
}

/// Whether a `content-encoding` value leaves the body as it is (empty or `identity`).
fn is_identity(encoding: &[u8]) -> bool {
    encoding
        .split(|byte| *byte == b',')
        .map(<[u8]>::trim_ascii)
        .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case(b"identity"))
}

proxy_async::main!(StreamRedact);

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference semantics, written as plainly as possible: at each position the longest
    /// pattern that matches is replaced, else the byte is copied.
    fn reference(patterns: &[&str], replacement: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let longest = patterns
                .iter()
                .filter(|pattern| body[at..].starts_with(pattern.as_bytes()))
                .map(|pattern| pattern.len())
                .max();
            match longest {
                Some(len) => {
                    out.extend_from_slice(replacement.as_bytes());
                    at += len;
                }
                None => {
                    out.push(body[at]);
                    at += 1;
                }
            }
        }
        out
    }

    /// Streams `body` cut at the positions whose bit is set in `cuts`.
    fn streamed(redactor: &Redactor, body: &[u8], cuts: u32) -> Vec<u8> {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        let mut start = 0;
        for end in 1..=body.len() {
            let last = end == body.len();
            if last || cuts & (1 << (end - 1)) != 0 {
                let chunk = &body[start..end];
                match scanner.push(redactor, chunk, last) {
                    Some(replaced) => out.extend_from_slice(&replaced),
                    None => out.extend_from_slice(chunk),
                }
                assert!(scanner.held_back() < redactor.longest_pattern());
                start = end;
            }
        }
        out
    }

    #[test]
    fn every_chunking_of_tricky_bodies_gives_the_reference_result() {
        let patterns = ["aba", "ab", "abab", "b", "xyz"];
        let redactor = Redactor::new(&patterns, b"#", false);
        for body in [
            "ababababa".as_bytes(),
            b"xxyzabxyaababbz",
            b"abaXabab",
            b"zzzzzzzzzzzzzzz",
            b"xyxyzxy",
            b"",
        ] {
            let expected = reference(&patterns, "#", body);
            assert_eq!(redactor.redact(body), expected, "{body:?} at once");
            for cuts in 0..1u32 << body.len().saturating_sub(1) {
                assert_eq!(
                    streamed(&redactor, body, cuts),
                    expected,
                    "{body:?} cut at {cuts:b}"
                );
            }
        }
    }

    #[test]
    fn ignore_case_folds_ascii_letters_only() {
        let redactor = Redactor::new(&["Secret-É"], b"*", true);
        assert_eq!(redactor.redact("a sECRET-É b".as_bytes()), b"a * b");
        // `é` is not the ASCII fold of `É`.
        assert_eq!(
            redactor.redact("a secret-é b".as_bytes()),
            "a secret-é b".as_bytes()
        );
    }

    #[test]
    fn content_types_match_by_type_and_range() {
        let config = Config {
            content_types: vec!["text/*".into(), "Application/JSON".into()],
            ..Config::default()
        };
        let redacts = |value: &str| config.redacts_content_type(Some(value.as_bytes()));
        assert!(redacts("text/html; charset=utf-8"));
        assert!(redacts("application/json"));
        assert!(redacts("APPLICATION/json;charset=UTF-8"));
        assert!(!redacts("application/octet-stream"));
        assert!(!redacts("image/png"));
        assert!(!redacts("application/jsonp"));
        // Unknown or unreadable: redacted.
        assert!(config.redacts_content_type(None));
        assert!(redacts("nonsense"));
        assert!(config.redacts_content_type(Some(b"text/\xff")));
    }

    #[test]
    fn identity_encodings() {
        assert!(is_identity(b"identity"));
        assert!(is_identity(b" Identity "));
        assert!(is_identity(b""));
        assert!(!is_identity(b"gzip"));
        assert!(!is_identity(b"identity, br"));
    }
}
