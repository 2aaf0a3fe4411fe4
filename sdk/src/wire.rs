//! The proxy-wasm header-map wire format, decoded without trusting the host.
//!
//! ```text
//! u32 N | N × (u32 name_len, u32 value_len) | N × (name, 0x00, value, 0x00)   (little-endian)
//! ```
//! An empty map is 0 bytes or a lone 0x00.

use std::fmt;

use crate::host::Pairs;

/// The host sent a header map that does not follow the wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedMap {
    pub(crate) reason: &'static str,
}

impl fmt::Display for MalformedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed header map from the host: {}", self.reason)
    }
}

/// Encodes pairs in the wire format.
pub(crate) fn encode_map<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> Vec<u8> {
    let payload: usize = pairs
        .iter()
        .map(|(name, value)| name.len() + value.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + payload);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&len_u32(name.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.as_ref().len()).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

// Lengths that do not fit u32 cannot be addressed in a wasm32 module at all; saturating keeps
// the encoder total (the host then refuses the map) instead of panicking.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Decodes the wire format. Names that are not UTF-8 are decoded lossily (proxies only emit
/// token characters); values stay bytes. Any inconsistency is an error, never a panic.
pub(crate) fn decode_map(bytes: &[u8]) -> Result<Pairs, MalformedMap> {
    if bytes.len() <= 1 {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0).ok_or(MalformedMap {
        reason: "truncated count",
    })? as usize;
    let sizes_end = count
        .checked_mul(8)
        .and_then(|sizes| sizes.checked_add(4))
        .filter(|&end| end <= bytes.len())
        .ok_or(MalformedMap {
            reason: "count larger than the map",
        })?;
    let mut pairs = Vec::with_capacity(count);
    let mut data = sizes_end;
    for index in 0..count {
        let at = 4 + index * 8;
        let (Some(name_len), Some(value_len)) = (read_u32(bytes, at), read_u32(bytes, at + 4))
        else {
            return Err(MalformedMap {
                reason: "truncated sizes",
            });
        };
        let name = take(bytes, &mut data, name_len as usize)?;
        let value = take(bytes, &mut data, value_len as usize)?;
        pairs.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    Ok(pairs)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

// Takes `len` bytes at `*at` followed by the 0x00 terminator, and moves past both.
fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], MalformedMap> {
    let end = at.checked_add(len).ok_or(MalformedMap {
        reason: "size overflow",
    })?;
    let field = bytes.get(*at..end).ok_or(MalformedMap {
        reason: "field runs past the end",
    })?;
    if bytes.get(end) != Some(&0) {
        return Err(MalformedMap {
            reason: "missing 0x00 terminator",
        });
    }
    *at = end + 1;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `{a: 1, b: 22}` as in the ABI reference (with its erratum corrected: values are ASCII).
    #[rustfmt::skip]
    const TWO_PAIRS: &[u8] = &[
        2, 0, 0, 0,
        1, 0, 0, 0, 1, 0, 0, 0,
        1, 0, 0, 0, 2, 0, 0, 0,
        b'a', 0, b'1', 0,
        b'b', 0, b'2', b'2', 0,
    ];

    #[test]
    fn encodes_the_reference_example() {
        assert_eq!(encode_map(&[("a", "1"), ("b", "22")]), TWO_PAIRS);
    }

    #[test]
    fn decodes_the_reference_example() {
        assert_eq!(
            decode_map(TWO_PAIRS).unwrap(),
            [
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"22".to_vec())
            ]
        );
    }

    #[test]
    fn empty_maps_decode_to_nothing() {
        assert!(decode_map(&[]).unwrap().is_empty());
        assert!(decode_map(&[0]).unwrap().is_empty());
        assert!(decode_map(&encode_map::<&str>(&[])).unwrap().is_empty());
    }

    #[test]
    fn values_are_bytes_and_names_never_panic() {
        let raw = encode_map(&[("x-bin", &[0xff, 0x00, 0xfe][..])]);
        assert_eq!(decode_map(&raw).unwrap()[0].1, [0xff, 0x00, 0xfe]);
        let mut bad_name = encode_map(&[("ab", "v")]);
        bad_name[12] = 0xff;
        assert_eq!(decode_map(&bad_name).unwrap()[0].0, "\u{fffd}b");
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        for len in 2..TWO_PAIRS.len() {
            assert!(
                decode_map(&TWO_PAIRS[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        let mut huge = TWO_PAIRS.to_vec();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_map(&huge).is_err());
        let mut long_value = TWO_PAIRS.to_vec();
        long_value[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_map(&long_value).is_err());
        let mut no_terminator = TWO_PAIRS.to_vec();
        no_terminator[21] = b'x';
        assert!(decode_map(&no_terminator).is_err());
        // Every single-byte change decodes or fails cleanly.
        for at in 0..TWO_PAIRS.len() {
            for byte in [0u8, 1, 0x7f, 0xff] {
                let mut mutated = TWO_PAIRS.to_vec();
                mutated[at] = byte;
                let _ = decode_map(&mutated);
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

        fn pairs() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
            prop::collection::vec((".{0,8}", prop::collection::vec(any::<u8>(), 0..12)), 0..8)
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
                let _ = decode_map(&bytes);
            }

            #[test]
            fn encoded_maps_decode_to_themselves(pairs in pairs()) {
                let borrowed: Vec<(&str, &[u8])> = pairs
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_slice()))
                    .collect();
                prop_assert_eq!(decode_map(&encode_map(&borrowed)), Ok(pairs));
            }

            #[test]
            fn a_corrupted_map_decodes_or_fails_cleanly(
                pairs in pairs(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
            ) {
                let borrowed: Vec<(&str, &[u8])> = pairs
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_slice()))
                    .collect();
                let mut bytes = encode_map(&borrowed);
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                let _ = decode_map(&bytes);
                let _ = decode_map(&bytes[..cut.index(bytes.len() + 1)]);
            }
        }
    }
}
