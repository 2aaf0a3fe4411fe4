//! RESP2, the Redis wire protocol: commands encoded as arrays of bulk strings, replies decoded
//! into [`RedisValue`]s.
//!
//! The decoder reads bytes the proxy hands over from the network, so it treats them as
//! hostile: any input gives a value or a [`RespError`], never a panic, and it allocates no
//! more than the input could fill (a length prefix of `2^62` does not reserve memory), and
//! nests arrays without recursion, up to [`MAX_DEPTH`] levels: a value nested deeper could
//! not even be dropped without overflowing the stack.

use std::fmt;

/// A Redis reply (RESP2).
#[derive(Debug, Clone, PartialEq)]
pub enum RedisValue {
    /// A simple string: `+OK`.
    SimpleString(String),
    /// An error reply: `-ERR unknown command`, `-WRONGTYPE ...`. Commands return it as
    /// [`RedisError::Server`](crate::redis::RedisError::Server); only
    /// [`command`](crate::redis::RedisClient::command) results and [`RedisValue::Array`]
    /// elements (`EXEC`, `EVAL`) carry it as a value.
    Error(String),
    /// An integer: `:42`.
    Integer(i64),
    /// A bulk string: binary-safe bytes, `$3\r\nabc`.
    BulkString(Vec<u8>),
    /// The nil bulk string `$-1`: a missing key or field.
    Nil,
    /// An array of replies: `*2\r\n...`.
    Array(Vec<RedisValue>),
    /// The nil array `*-1`.
    NilArray,
}

impl RedisValue {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RedisValue::BulkString(bytes) => Some(bytes),
            RedisValue::SimpleString(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// A bulk or simple string as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// An integer reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            RedisValue::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[RedisValue]> {
        match self {
            RedisValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether it is nil (bulk or array).
    pub fn is_nil(&self) -> bool {
        matches!(self, RedisValue::Nil | RedisValue::NilArray)
    }

    /// Decodes exactly one reply: bytes after it are an error too.
    pub fn decode(bytes: &[u8]) -> Result<RedisValue, RespError> {
        let (value, used) = decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(RespError::Invalid {
                offset: used,
                reason: "bytes after the reply",
            });
        }
        Ok(value)
    }

    /// The value in RESP, as a server sends it: to answer a plugin's calls in tests. Simple
    /// strings and errors are written as they are; one holding CR or LF cannot be decoded
    /// back.
    pub fn to_resp(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            RedisValue::SimpleString(text) => line(out, b'+', text.as_bytes()),
            RedisValue::Error(text) => line(out, b'-', text.as_bytes()),
            RedisValue::Integer(value) => line(out, b':', value.to_string().as_bytes()),
            RedisValue::BulkString(bytes) => bulk(out, bytes),
            RedisValue::Nil => out.extend_from_slice(b"$-1\r\n"),
            RedisValue::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.write(out);
                }
            }
            RedisValue::NilArray => out.extend_from_slice(b"*-1\r\n"),
        }
    }
}

impl fmt::Display for RedisValue {
    /// As `redis-cli` prints it, on one line: strings quoted, bytes that are not printable
    /// ASCII escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisValue::SimpleString(text) => f.write_str(text),
            RedisValue::Error(text) => write!(f, "(error) {text}"),
            RedisValue::Integer(value) => write!(f, "(integer) {value}"),
            RedisValue::BulkString(bytes) => write!(f, "\"{}\"", bytes.escape_ascii()),
            RedisValue::Nil | RedisValue::NilArray => f.write_str("(nil)"),
            RedisValue::Array(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    line(out, b'$', bytes.len().to_string().as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Encodes a command as clients send it: an array of bulk strings, binary-safe.
///
/// ```
/// use proxy_async::redis::encode_command;
/// assert_eq!(encode_command(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
/// ```
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let size: usize = args.iter().map(|arg| arg.as_ref().len() + 16).sum();
    let mut out = Vec::with_capacity(size + 16);
    line(&mut out, b'*', args.len().to_string().as_bytes());
    for arg in args {
        bulk(&mut out, arg.as_ref());
    }
    out
}

/// A reply that is not valid RESP2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    /// The reply ends before it is complete.
    Incomplete,
    /// The bytes at `offset` are not what RESP2 allows there.
    Invalid {
        /// Where, from the start of the reply.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Incomplete => f.write_str("the reply is incomplete"),
            RespError::Invalid { offset, reason } => {
                write!(f, "invalid reply at byte {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for RespError {}

/// How deep arrays may nest in a reply. Redis's own replies nest a few levels (Lua scripts
/// cannot return tables nested deeper than about 200); deeper input is rejected, because
/// dropping, comparing or printing a value recurses once per level.
pub const MAX_DEPTH: usize = 512;

/// An array whose elements are being read.
struct Frame {
    items: Vec<RedisValue>,
    remaining: usize,
}

/// Decodes the reply at the start of `bytes`; returns it and how many bytes it took.
pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<(RedisValue, usize), RespError> {
    let mut pos = 0;
    let mut open: Vec<Frame> = Vec::new();
    loop {
        let start = pos;
        let (kind, header, next) = read_line(bytes, pos)?;
        pos = next;
        let invalid = |reason| RespError::Invalid {
            offset: start,
            reason,
        };
        let mut value = match kind {
            b'+' => RedisValue::SimpleString(String::from_utf8_lossy(header).into_owned()),
            b'-' => RedisValue::Error(String::from_utf8_lossy(header).into_owned()),
            b':' => RedisValue::Integer(parse_integer(header).ok_or(invalid("not an integer"))?),
            b'$' => match parse_integer(header).ok_or(invalid("not a length"))? {
                -1 => RedisValue::Nil,
                len => {
                    let len = usize::try_from(len).map_err(|_| invalid("negative length"))?;
                    let end = pos.checked_add(len).ok_or(RespError::Incomplete)?;
                    let data = bytes.get(pos..end).ok_or(RespError::Incomplete)?;
                    match bytes.get(end..end.saturating_add(2)) {
                        Some(b"\r\n") => {}
                        Some(crlf) if crlf.len() == 2 => {
                            return Err(RespError::Invalid {
                                offset: end,
                                reason: "bulk string not followed by CRLF",
                            });
                        }
                        _ => return Err(RespError::Incomplete),
                    }
                    pos = end + 2;
                    RedisValue::BulkString(data.to_vec())
                }
            },
            b'*' => match parse_integer(header).ok_or(invalid("not a length"))? {
                -1 => RedisValue::NilArray,
                0 => RedisValue::Array(Vec::new()),
                len => {
                    let len = usize::try_from(len).map_err(|_| invalid("negative length"))?;
                    if open.len() >= MAX_DEPTH {
                        return Err(invalid("arrays nested too deep"));
                    }
                    // Every element takes at least 3 bytes (`+\r\n`): never reserve more than
                    // the rest of the input could hold.
                    let room = (bytes.len() - pos) / 3;
                    open.push(Frame {
                        items: Vec::with_capacity(len.min(room)),
                        remaining: len,
                    });
                    continue;
                }
            },
            _ => return Err(invalid("unknown reply type")),
        };
        // Hand the value to the array it belongs to, closing every array it completes.
        loop {
            let Some(frame) = open.last_mut() else {
                return Ok((value, pos));
            };
            frame.items.push(value);
            frame.remaining -= 1;
            if frame.remaining > 0 {
                break;
            }
            let Some(done) = open.pop() else {
                break;
            };
            value = RedisValue::Array(done.items);
        }
    }
}

/// The line at `pos`: its type byte, the rest of it, and where the next one starts.
fn read_line(bytes: &[u8], pos: usize) -> Result<(u8, &[u8], usize), RespError> {
    let rest = bytes.get(pos..).ok_or(RespError::Incomplete)?;
    let Some(end) = rest.iter().position(|&byte| byte == b'\n') else {
        return Err(RespError::Incomplete);
    };
    let Some(line) = rest[..end].strip_suffix(b"\r") else {
        return Err(RespError::Invalid {
            offset: pos + end,
            reason: "LF without CR",
        });
    };
    match line.split_first() {
        Some((&kind, header)) => Ok((kind, header, pos + end + 1)),
        None => Err(RespError::Invalid {
            offset: pos,
            reason: "empty line",
        }),
    }
}

/// A RESP integer: an optional `-` and decimal digits, within `i64`.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_type() {
        let cases: &[(&[u8], RedisValue)] = &[
            (b"+OK\r\n", RedisValue::SimpleString("OK".into())),
            (
                b"-WRONGTYPE Operation\r\n",
                RedisValue::Error("WRONGTYPE Operation".into()),
            ),
            (b":-42\r\n", RedisValue::Integer(-42)),
            (b":-9223372036854775808\r\n", RedisValue::Integer(i64::MIN)),
            (b"$0\r\n\r\n", RedisValue::BulkString(Vec::new())),
            (
                b"$4\r\na\r\nb\r\n",
                RedisValue::BulkString(b"a\r\nb".to_vec()),
            ),
            (b"$-1\r\n", RedisValue::Nil),
            (b"*0\r\n", RedisValue::Array(Vec::new())),
            (b"*-1\r\n", RedisValue::NilArray),
            (
                b"*2\r\n*1\r\n:1\r\n$-1\r\n",
                RedisValue::Array(vec![
                    RedisValue::Array(vec![RedisValue::Integer(1)]),
                    RedisValue::Nil,
                ]),
            ),
        ];
        for (bytes, value) in cases {
            assert_eq!(RedisValue::decode(bytes).as_ref(), Ok(value), "{bytes:?}");
            assert_eq!(&value.to_resp(), bytes);
        }
    }

    #[test]
    fn rejects_what_is_not_resp() {
        let incomplete: &[&[u8]] = &[
            b"",
            b"+OK",
            b"+OK\r",
            b"$3\r\nab",
            b"$3\r\nabc",
            b"*2\r\n:1\r\n",
        ];
        for bytes in incomplete {
            assert_eq!(
                RedisValue::decode(bytes),
                Err(RespError::Incomplete),
                "{bytes:?}"
            );
        }
        let invalid: &[&[u8]] = &[
            b"?\r\n",
            b"\r\n",
            b":\r\n",
            b":1x\r\n",
            b":9223372036854775808\r\n",
            b"$-2\r\n",
            b"*-7\r\n",
            b"$1\r\nab\r\n",
            b"+OK\n",
            b"+OK\r\n+OK\r\n",
        ];
        for bytes in invalid {
            assert!(
                matches!(RedisValue::decode(bytes), Err(RespError::Invalid { .. })),
                "{bytes:?}: {:?}",
                RedisValue::decode(bytes)
            );
        }
    }

    #[test]
    fn huge_lengths_and_deep_nesting_are_cheap() {
        assert_eq!(
            RedisValue::decode(b"*4611686018427387904\r\n"),
            Err(RespError::Incomplete)
        );
        assert_eq!(
            RedisValue::decode(b"$4611686018427387904\r\n"),
            Err(RespError::Incomplete)
        );
        let nested = |depth: usize| {
            let mut bytes = b"*1\r\n".repeat(depth);
            bytes.extend_from_slice(b":7\r\n");
            bytes
        };
        let mut value = RedisValue::decode(&nested(MAX_DEPTH)).expect("a valid deep reply");
        assert_eq!(value.to_string().len(), 2 * MAX_DEPTH + "(integer) 7".len());
        for _ in 0..MAX_DEPTH {
            value = match value {
                RedisValue::Array(mut items) => items.pop().expect("one element"),
                other => panic!("expected an array, got {other:?}"),
            };
        }
        assert_eq!(value, RedisValue::Integer(7));
        for depth in [MAX_DEPTH + 1, if cfg!(miri) { 4_000 } else { 1_000_000 }] {
            assert!(matches!(
                RedisValue::decode(&nested(depth)),
                Err(RespError::Invalid {
                    reason: "arrays nested too deep",
                    ..
                })
            ));
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode_command(&[b"SET".as_slice(), b"k", b"\r\n\0"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\r\n\0\r\n"
        );
        let empty: [&str; 0] = [];
        assert_eq!(encode_command(&empty), b"*0\r\n");
    }
}
