//! The proxy-wasm header-map serialization (spec §"Header map serialization", little-endian):
//!
//! ```text
//! u32 N
//! N × (u32 key_len, u32 value_len)
//! N × (key bytes, 0x00, value bytes, 0x00)
//! ```
//!
//! An empty map is either zero bytes or a single `0x00` byte.

use crate::abi::HeaderPairs;

/// A decoded map borrowing its names and values from the serialized bytes.
pub type BorrowedPairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Why a serialized map could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed serialized header map: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// Decodes a serialized map, borrowing keys and values from `bytes`.
///
/// Strict about lengths (every pair must lie inside `bytes`), lenient about the `0x00`
/// terminators' values (they are skipped, as Envoy does).
pub fn decode_map(bytes: &[u8]) -> Result<BorrowedPairs<'_>, DecodeError> {
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0).ok_or(DecodeError("shorter than its pair count"))?;
    let count = usize::try_from(count).map_err(|_| DecodeError("too many pairs"))?;
    // Each pair needs 8 bytes of lengths and 2 terminators: reject absurd counts before
    // allocating for them.
    if count > bytes.len() / 10 {
        return Err(DecodeError("pair count larger than the data"));
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = 4 + count * 8;
    for index in 0..count {
        let lengths = 4 + index * 8;
        let key_len = read_u32(bytes, lengths).ok_or(DecodeError("truncated lengths"))?;
        let value_len = read_u32(bytes, lengths + 4).ok_or(DecodeError("truncated lengths"))?;
        let key_len = usize::try_from(key_len).map_err(|_| DecodeError("key too long"))?;
        let value_len = usize::try_from(value_len).map_err(|_| DecodeError("value too long"))?;
        let key_end = data
            .checked_add(key_len)
            .ok_or(DecodeError("key too long"))?;
        let key = bytes
            .get(data..key_end)
            .ok_or(DecodeError("truncated key"))?;
        let value_start = key_end + 1;
        let value_end = value_start
            .checked_add(value_len)
            .ok_or(DecodeError("value too long"))?;
        let value = bytes
            .get(value_start..value_end)
            .ok_or(DecodeError("truncated value"))?;
        if value_end >= bytes.len() {
            return Err(DecodeError("missing terminator"));
        }
        data = value_end + 1;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The size of `pairs` serialized by [`encode_map`].
pub fn encoded_len(pairs: &HeaderPairs) -> usize {
    4 + pairs
        .iter()
        .map(|(key, value)| 8 + key.len() + value.len() + 2)
        .sum::<usize>()
}

/// Serializes `pairs`. Lengths are written as `u32`; the caller checks that the result fits
/// the guest (a 32-bit guest cannot hold a longer map anyway).
pub fn encode_map(pairs: &HeaderPairs) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(pairs));
    let count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in pairs {
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let value_len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(&value_len.to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_round_trips() {
        let bytes = [
            2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b', 0,
            b'2', b'2', 0,
        ];
        let decoded = decode_map(&bytes).expect("valid map");
        assert_eq!(
            decoded,
            vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]
        );
        let owned: HeaderPairs = decoded
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(encode_map(&owned), bytes);
        assert_eq!(encoded_len(&owned), bytes.len());
    }

    #[test]
    fn empty_forms_and_garbage() {
        assert_eq!(decode_map(&[]), Ok(Vec::new()));
        assert_eq!(decode_map(&[0]), Ok(Vec::new()));
        assert!(decode_map(&[1, 0, 0]).is_err());
        assert!(decode_map(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // One pair whose key length points past the end.
        let bad = [1, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, b'a', 0, 0];
        assert!(decode_map(&bad).is_err());
        // Missing final terminator.
        let bad = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', 0, b'1'];
        assert!(decode_map(&bad).is_err());
    }
}
