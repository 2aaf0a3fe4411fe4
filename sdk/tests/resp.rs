//! The RESP codec under arbitrary input: replies round-trip, commands are what Redis reads,
//! and no bytes make the decoder panic (they come from the network, through the proxy).

use proptest::prelude::*;
use proxy_async::redis::{MAX_DEPTH, RedisValue, RespError, encode_command};

/// Any reply Redis can send. Simple strings and errors hold no CR or LF (RESP cannot carry
/// them there).
fn value() -> impl Strategy<Value = RedisValue> {
    let line = "[^\r\n]{0,24}";
    let leaf = prop_oneof![
        line.prop_map(RedisValue::SimpleString),
        line.prop_map(RedisValue::Error),
        any::<i64>().prop_map(RedisValue::Integer),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(RedisValue::BulkString),
        Just(RedisValue::Nil),
        Just(RedisValue::NilArray),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        proptest::collection::vec(inner, 0..8).prop_map(RedisValue::Array)
    })
}

proptest! {
    // Under Miri (no file system, slow) a few cases, and no failure files.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 2_000 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn replies_round_trip(value in value()) {
        let bytes = value.to_resp();
        prop_assert_eq!(RedisValue::decode(&bytes), Ok(value));
    }

    #[test]
    fn a_cut_reply_is_incomplete_never_something_else(value in value(), cut in any::<prop::sample::Index>()) {
        let bytes = value.to_resp();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(RedisValue::decode(&bytes[..cut]), Err(RespError::Incomplete));
    }

    #[test]
    fn commands_decode_as_arrays_of_their_words(words in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 0..8)) {
        let expected = RedisValue::Array(words.iter().cloned().map(RedisValue::BulkString).collect());
        prop_assert_eq!(RedisValue::decode(&encode_command(&words)), Ok(expected));
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = RedisValue::decode(&bytes);
    }

    #[test]
    fn resp_shaped_noise_decodes_or_fails_without_panicking(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b":".to_vec()), Just(b"+".to_vec()),
                Just(b"-".to_vec()), Just(b"\r\n".to_vec()), Just(b"\n".to_vec()), Just(b"-1".to_vec()),
                Just(b"9223372036854775807".to_vec()), Just(b"99999999999999999999".to_vec()),
                (0u8..10).prop_map(|digit| vec![b'0' + digit]),
                proptest::collection::vec(any::<u8>(), 0..4),
            ],
            0..64,
        )
    ) {
        let bytes = parts.concat();
        if let Ok(value) = RedisValue::decode(&bytes) {
            // What decodes is exactly what it encodes back to.
            prop_assert_eq!(RedisValue::decode(&value.to_resp()), Ok(value));
        }
    }
}

#[test]
fn nesting_is_bounded() {
    let nested = |depth: usize| [b"*1\r\n".repeat(depth), b"$-1\r\n".to_vec()].concat();
    assert!(RedisValue::decode(&nested(MAX_DEPTH)).is_ok());
    assert!(matches!(
        RedisValue::decode(&nested(MAX_DEPTH + 1)),
        Err(RespError::Invalid { .. })
    ));
}
