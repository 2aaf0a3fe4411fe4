//! A list of headers read from the proxy, kept as the one buffer the proxy handed over.

use std::fmt;

use proxy_async_abi::map::{EncodedMap, EncodedPairs};

/// Headers (or trailers) read from the proxy, in order, pseudo-headers (`:status`, `:path`,
/// ...) included: a request's headers from [`Message::headers`](crate::Message::headers), a
/// call's response from [`CallResponse::headers`](crate::CallResponse::headers).
///
/// They are kept as the proxy encoded them, in one buffer, and read in place: no allocation
/// per name or value. Names are as the proxy keeps them (lower case); lookups ignore case.
///
/// ```
/// use proxy_async::Headers;
///
/// let headers = Headers::from_pairs(&[(":status", "200"), ("content-type", "text/plain")]);
/// assert_eq!(headers.get("Content-Type"), Some(&b"text/plain"[..]));
/// for (name, value) in &headers {
///     println!("{name}: {}", String::from_utf8_lossy(value));
/// }
/// assert_eq!(headers.len(), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    map: EncodedMap,
}

/// No headers, to lend where none were read.
pub(crate) static NO_HEADERS: Headers = Headers {
    map: EncodedMap::EMPTY,
};

impl Headers {
    /// Headers from name and value pairs.
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Headers {
        Headers {
            map: EncodedMap::encode(pairs),
        }
    }

    /// Headers from a checked map.
    #[cfg_attr(
        not(all(target_arch = "wasm32", not(target_env = "p2"))),
        allow(dead_code, reason = "only the proxy-wasm host hands maps over encoded")
    )]
    pub(crate) fn from_map(map: EncodedMap) -> Headers {
        Headers { map }
    }

    /// The number of headers (a repeated one counts each time).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Trailers as a reply keeps them: boxed, and only if there are any, since most replies
    /// have none and a reply is moved several times on its way to the plugin.
    pub(crate) fn boxed_unless_empty(self) -> Option<Box<Headers>> {
        (!self.is_empty()).then(|| Box::new(self))
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.map
            .iter()
            .find(|(key, _)| same_name(key, name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The first value of `name` as text; `None` when missing or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.map
            .iter()
            .filter(move |(key, _)| same_name(key, name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// The headers, in order: names as text, values as bytes (HTTP allows values that are
    /// not UTF-8).
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter(self.map.iter())
    }

    /// Adds a header after the others.
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        self.map.push(name.as_bytes(), value);
    }

    /// The headers in the proxy-wasm map format (zero bytes for none).
    #[cfg_attr(
        not(all(target_arch = "wasm32", not(target_env = "p2"))),
        allow(dead_code, reason = "only the proxy-wasm host takes maps encoded")
    )]
    pub(crate) fn encoded(&self) -> &[u8] {
        self.map.as_bytes()
    }

    /// An owned copy of every pair.
    pub fn to_vec(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_vec()))
            .collect()
    }
}

// Names the proxy keeps are lower case, and so are most names plugins ask for: an exact
// comparison (a length check, then a word-wise one) settles nearly every case before the
// byte-by-byte case-insensitive one.
fn same_name(key: &[u8], name: &[u8]) -> bool {
    key.len() == name.len() && (key == name || key.eq_ignore_ascii_case(name))
}

/// The pairs of [`Headers`], borrowed.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a>(EncodedPairs<'a>);

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = self.0.next()?;
        // Proxies only pass names of token characters (Envoy's codecs reject others); one that
        // is not UTF-8 all the same reads as U+FFFD rather than being skipped or copied.
        Some((std::str::from_utf8(name).unwrap_or("\u{fffd}"), value))
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.map, f)
    }
}
