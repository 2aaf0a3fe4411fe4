//! The header-map wire format (spec §3.4), little-endian:
//!
//! ```text
//! u32 N | N × (u32 name_len, u32 value_len) | N × (name, 0x00, value, 0x00)
//! ```
//!
//! An empty map is zero bytes or a lone `0x00`. Decoding never trusts the other side: it is as
//! strict as Envoy's own decoder (proxy-wasm-cpp-host's `PairsUtil::toPairs`): every length
//! within the bytes, every terminator a `0x00`, nothing left over. Any inconsistency is an
//! error, never a panic.

use std::fmt;

/// A decoded map, borrowing its names and values from the encoded bytes.
pub type BorrowedPairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// A map that does not follow the wire format, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMap {
    /// What is wrong, e.g. `missing 0x00 terminator`.
    pub reason: &'static str,
}

impl fmt::Display for MalformedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed header map: {}", self.reason)
    }
}

impl std::error::Error for MalformedMap {}

fn malformed(reason: &'static str) -> MalformedMap {
    MalformedMap { reason }
}

/// The size of `pairs` encoded.
pub fn encoded_len<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> usize {
    4 + pairs
        .iter()
        .map(|(name, value)| 8 + name.as_ref().len() + value.as_ref().len() + 2)
        .sum::<usize>()
}

/// Encodes `pairs`, in order.
pub fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(pairs));
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&len_u32(name.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.as_ref().len()).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

// Lengths that do not fit u32 cannot be addressed by a wasm32 peer at all; saturating keeps
// the encoder total (the peer then rejects the map) instead of panicking.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Decodes a map, borrowing names and values from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<BorrowedPairs<'_>, MalformedMap> {
    let mut pairs = Vec::new();
    walk(bytes, |count, name, value| {
        if pairs.capacity() == 0 {
            pairs.reserve_exact(count);
        }
        pairs.push((name, value));
    })?;
    Ok(pairs)
}

// Checks `bytes` against the format, handing `each` the number of pairs and every pair, in
// order.
fn walk<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(usize, &'a [u8], &'a [u8]),
) -> Result<usize, MalformedMap> {
    if bytes.len() <= 1 {
        if bytes.first().is_some_and(|&byte| byte != 0) {
            return Err(malformed("a one-byte map that is not 0x00"));
        }
        return Ok(0);
    }
    let count = read_u32(bytes, 0).ok_or(malformed("truncated count"))?;
    let count = usize::try_from(count).map_err(|_| malformed("count larger than the map"))?;
    // Each pair needs 8 bytes of lengths and 2 terminators: an absurd count is rejected before
    // anything is allocated for it.
    let sizes_end = count
        .checked_mul(8)
        .and_then(|sizes| sizes.checked_add(4))
        .filter(|&end| end <= bytes.len() && count <= bytes.len() / 10)
        .ok_or(malformed("count larger than the map"))?;
    let mut at = sizes_end;
    // `sizes_end` is within the bytes: each pair's sizes are there, read without a check.
    for sizes in bytes.get(4..sizes_end).unwrap_or_default().chunks_exact(8) {
        let (name_len, value_len) = pair_sizes(sizes);
        let name = take(bytes, &mut at, name_len)?;
        let value = take(bytes, &mut at, value_len)?;
        each(count, name, value);
    }
    if at != bytes.len() {
        return Err(malformed("bytes after the last pair"));
    }
    Ok(count)
}

// Whether `walk` would accept `bytes`, checked with no slice made and no error built: only the
// sizes, each field's 0x00 terminator and the total length.
fn is_well_formed(bytes: &[u8]) -> bool {
    if bytes.len() <= 1 {
        return bytes.first().is_none_or(|&byte| byte == 0);
    }
    let Some(count) = read_u32(bytes, 0) else {
        return false;
    };
    // At most one pair per 10 bytes, so the sizes' end below cannot overflow.
    let Some(count) = usize::try_from(count)
        .ok()
        .filter(|&count| count <= bytes.len() / 10)
    else {
        return false;
    };
    let sizes_end = 4 + count * 8;
    let Some(sizes) = bytes.get(4..sizes_end) else {
        return false;
    };
    // Offsets in u64: a u32 size added to an offset within the bytes cannot overflow it.
    let len = bytes.len() as u64;
    let terminated = |end: u64| end < len && bytes.get(end as usize) == Some(&0);
    let mut at = sizes_end as u64;
    for pair in sizes.chunks_exact(8) {
        let (name_len, value_len) = pair_sizes(pair);
        let name_end = at + u64::from(name_len);
        if !terminated(name_end) {
            return false;
        }
        let value_end = name_end + 1 + u64::from(value_len);
        if !terminated(value_end) {
            return false;
        }
        at = value_end + 1;
    }
    at == len
}

// Room kept past a map's first pair for a few more (a local reply's headers), so that the
// usual handful fits the first allocation.
const PUSH_SPARE: usize = 48;

/// A map in the wire format, checked once, whose pairs are then read in place: a map the proxy
/// returned is kept as the one buffer it arrived in, with no allocation per name or value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncodedMap {
    // The count of pairs is read from the bytes: a map is moved more often than it is read.
    bytes: Vec<u8>,
}

impl EncodedMap {
    /// A map of no pairs.
    pub const EMPTY: EncodedMap = EncodedMap { bytes: Vec::new() };

    /// Checks `bytes` (as [`decode`] does) and keeps them.
    pub fn new(bytes: Vec<u8>) -> Result<EncodedMap, MalformedMap> {
        // The quick check passes every map a proxy sends; `walk` only names what is wrong.
        if !is_well_formed(&bytes) {
            walk(&bytes, |_, _, _| {})?;
        }
        Ok(EncodedMap { bytes })
    }

    /// `pairs`, encoded.
    pub fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> EncodedMap {
        EncodedMap {
            bytes: encode(pairs),
        }
    }

    /// Adds a pair after the others. The map stays one buffer: the new pair's sizes go after
    /// the others' (the pairs' bytes move up 8), its name and value at the end.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name_len = len_u32(name.len()).to_le_bytes();
        let value_len = len_u32(value.len()).to_le_bytes();
        let count = self.len();
        if count == 0 {
            // The first pair: nothing to move, and one allocation of the size it needs.
            let mut head = [0; 12];
            head[0] = 1;
            head[4..8].copy_from_slice(&name_len);
            head[8..].copy_from_slice(&value_len);
            let mut bytes =
                Vec::with_capacity(head.len() + name.len() + value.len() + 2 + PUSH_SPARE);
            bytes.extend_from_slice(&head);
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(value);
            bytes.push(0);
            self.bytes = bytes;
            return;
        }
        let sizes_end = 4 + count * 8;
        let end = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 8]);
        self.bytes.copy_within(sizes_end..end, sizes_end + 8);
        let mut sizes = [0; 8];
        sizes[..4].copy_from_slice(&name_len);
        sizes[4..].copy_from_slice(&value_len);
        if let Some(slot) = self.bytes.get_mut(sizes_end..sizes_end + 8) {
            slot.copy_from_slice(&sizes);
        }
        self.bytes.extend_from_slice(name);
        self.bytes.push(0);
        self.bytes.extend_from_slice(value);
        self.bytes.push(0);
        if let Some(slot) = self.bytes.get_mut(..4) {
            slot.copy_from_slice(&len_u32(count + 1).to_le_bytes());
        }
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        // Checked when made: the count is there, or the map is empty (zero bytes or one).
        read_u32(&self.bytes, 0).map_or(0, |count| count as usize)
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pairs, in order.
    pub fn iter(&self) -> EncodedPairs<'_> {
        let count = self.len();
        EncodedPairs {
            bytes: &self.bytes,
            index: 0,
            count,
            at: 4 + count * 8,
        }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for EncodedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, value)| {
                (
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(value),
                )
            }))
            .finish()
    }
}

/// The pairs of an [`EncodedMap`], borrowed from it.
#[derive(Debug, Clone)]
pub struct EncodedPairs<'a> {
    bytes: &'a [u8],
    index: usize,
    count: usize,
    at: usize,
}

impl<'a> Iterator for EncodedPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let sizes = 4 + self.index * 8;
        self.index += 1;
        // The map was checked when it was made: none of these can fail, and if one did, the
        // iteration would end rather than panic.
        let (name_len, value_len) = pair_sizes(self.bytes.get(sizes..sizes + 8)?);
        let (name_len, value_len) = (name_len as usize, value_len as usize);
        let name = self.bytes.get(self.at..self.at + name_len)?;
        let value_at = self.at + name_len + 1;
        let value = self.bytes.get(value_at..value_at + value_len)?;
        self.at = value_at + value_len + 1;
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.index;
        (left, Some(left))
    }
}

impl<'a> IntoIterator for &'a EncodedMap {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = EncodedPairs<'a>;

    fn into_iter(self) -> EncodedPairs<'a> {
        self.iter()
    }
}

// A pair's name and value sizes, from its 8 bytes of them (a slice of exactly 8).
#[inline(always)]
fn pair_sizes(sizes: &[u8]) -> (u32, u32) {
    match *sizes {
        [a, b, c, d, e, f, g, h] => (
            u32::from_le_bytes([a, b, c, d]),
            u32::from_le_bytes([e, f, g, h]),
        ),
        _ => (u32::MAX, u32::MAX),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

// Takes `len` bytes at `*at` followed by their 0x00 terminator, and moves past both.
#[inline(always)]
fn take<'a>(bytes: &'a [u8], at: &mut usize, len: u32) -> Result<&'a [u8], MalformedMap> {
    let start = *at;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .ok_or(malformed("size overflow"))?;
    // The terminator's place decides: inside the bytes, the field before it is too.
    match bytes.get(end) {
        Some(0) => {}
        Some(_) => return Err(malformed("missing 0x00 terminator")),
        None if end == bytes.len() => return Err(malformed("missing 0x00 terminator")),
        None => return Err(malformed("field runs past the end")),
    }
    *at = end + 1;
    Ok(bytes.get(start..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    // `{a: 1, b: 22}` as in the spec (with its erratum corrected: the values are ASCII).
    #[rustfmt::skip]
    const TWO_PAIRS: &[u8] = &[
        2, 0, 0, 0,
        1, 0, 0, 0, 1, 0, 0, 0,
        1, 0, 0, 0, 2, 0, 0, 0,
        b'a', 0, b'1', 0,
        b'b', 0, b'2', b'2', 0,
    ];

    #[test]
    fn an_encoded_map_reads_what_decode_reads() {
        let map = EncodedMap::new(TWO_PAIRS.to_vec()).unwrap();
        assert_eq!(map.len(), 2);
        let pairs: Vec<(&[u8], &[u8])> = map.iter().collect();
        assert_eq!(pairs, decode(TWO_PAIRS).unwrap());
        assert_eq!(EncodedMap::encode(&[("a", "1"), ("b", "22")]), map);
        assert!(EncodedMap::new(vec![]).unwrap().is_empty());
        assert!(EncodedMap::new(TWO_PAIRS[..TWO_PAIRS.len() - 1].to_vec()).is_err());
    }

    #[test]
    fn the_spec_example_round_trips() {
        assert_eq!(encode(&[("a", "1"), ("b", "22")]), TWO_PAIRS);
        assert_eq!(encoded_len(&[("a", "1"), ("b", "22")]), TWO_PAIRS.len());
        assert_eq!(
            decode(TWO_PAIRS).unwrap(),
            [(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]
        );
    }

    #[test]
    fn empty_maps_decode_to_nothing() {
        assert!(decode(&[]).unwrap().is_empty());
        assert!(decode(&[0]).unwrap().is_empty());
        assert!(decode(&encode::<&str, &str>(&[])).unwrap().is_empty());
        assert!(decode(&[7]).is_err());
    }

    #[test]
    fn values_are_bytes() {
        let raw = encode(&[("x-bin", &[0xff, 0x00, 0xfe][..])]);
        assert_eq!(decode(&raw).unwrap()[0].1, [0xff, 0x00, 0xfe]);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        for len in 2..TWO_PAIRS.len() {
            assert!(decode(&TWO_PAIRS[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut huge = TWO_PAIRS.to_vec();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        let mut long_value = TWO_PAIRS.to_vec();
        long_value[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&long_value).is_err());
        let mut no_terminator = TWO_PAIRS.to_vec();
        no_terminator[21] = b'x';
        assert_eq!(
            decode(&no_terminator),
            Err(malformed("missing 0x00 terminator"))
        );
        let mut trailing = TWO_PAIRS.to_vec();
        trailing.push(0);
        assert_eq!(
            decode(&trailing),
            Err(malformed("bytes after the last pair"))
        );
        // Every single-byte change decodes or fails cleanly.
        for at in 0..TWO_PAIRS.len() {
            for byte in [0u8, 1, 0x7f, 0xff] {
                let mut mutated = TWO_PAIRS.to_vec();
                mutated[at] = byte;
                let _ = decode(&mutated);
            }
        }
    }

    mod random {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::super::*;

        fn config() -> Config {
            Config {
                cases: if cfg!(miri) { 4 } else { 3000 },
                failure_persistence: None,
                ..Config::default()
            }
        }

        fn pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
            let bytes = || prop::collection::vec(any::<u8>(), 0..12);
            prop::collection::vec((bytes(), bytes()), 0..8)
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
                let _ = decode(&bytes);
            }

            #[test]
            fn an_encoded_map_accepts_and_reads_exactly_what_decode_does(pairs in pairs(), flip in any::<(usize, u8)>()) {
                let mut bytes = encode(&pairs);
                if !bytes.is_empty() && flip.1 != 0 {
                    let at = flip.0 % bytes.len();
                    bytes[at] ^= flip.1;
                }
                let read = EncodedMap::new(bytes.clone())
                    .map(|map| map.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>());
                let decoded = decode(&bytes)
                    .map(|pairs| pairs.into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>());
                prop_assert_eq!(read, decoded);
            }

            #[test]
            fn pushing_pairs_one_by_one_encodes_them(pairs in pairs()) {
                let mut map = EncodedMap::default();
                for (name, value) in &pairs {
                    map.push(name, value);
                }
                prop_assert_eq!(map.len(), pairs.len());
                // An empty map is zero bytes, as `encode` makes it only with pairs.
                if pairs.is_empty() {
                    prop_assert!(map.as_bytes().is_empty());
                } else {
                    prop_assert_eq!(map.as_bytes(), &encode(&pairs)[..]);
                }
                let checked = EncodedMap::new(map.as_bytes().to_vec());
                prop_assert_eq!(checked.as_ref(), Ok(&map));
            }

            #[test]
            fn encoded_maps_decode_to_themselves(pairs in pairs()) {
                let encoded = encode(&pairs);
                let decoded: Vec<(Vec<u8>, Vec<u8>)> = decode(&encoded)
                    .unwrap()
                    .into_iter()
                    .map(|(name, value)| (name.to_vec(), value.to_vec()))
                    .collect();
                prop_assert_eq!(decoded, pairs);
            }

            #[test]
            fn a_corrupted_map_decodes_or_fails_cleanly(
                pairs in pairs(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut bytes = encode(&pairs);
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                let _ = decode(&bytes);
                let _ = decode(&bytes[..cut.index(bytes.len() + 1)]);
            }
        }
    }
}
