//! The common commands, typed: keys, strings, lists, hashes, sets and sorted sets, with the
//! names and arguments of Higress's Go client.

use crate::redis::client::RedisClient;
use crate::redis::error::RedisError;
use crate::redis::resp::RedisValue;

/// Bytes a command takes: a key, a value, a field, a member.
type Bytes = Vec<u8>;

fn ok(reply: &RedisValue) -> Option<()> {
    matches!(reply, RedisValue::SimpleString(_)).then_some(())
}

fn integer(reply: &RedisValue) -> Option<i64> {
    reply.as_integer()
}

fn flag(reply: &RedisValue) -> Option<bool> {
    reply.as_integer().map(|value| value != 0)
}

fn optional_integer(reply: &RedisValue) -> Option<Option<i64>> {
    match reply {
        RedisValue::Nil => Some(None),
        other => other.as_integer().map(Some),
    }
}

fn optional_bytes(reply: &RedisValue) -> Option<Option<Bytes>> {
    match reply {
        RedisValue::BulkString(bytes) => Some(Some(bytes.clone())),
        RedisValue::Nil => Some(None),
        _ => None,
    }
}

fn bytes_list(reply: &RedisValue) -> Option<Vec<Bytes>> {
    match reply {
        RedisValue::NilArray => Some(Vec::new()),
        other => other
            .as_array()?
            .iter()
            .map(|item| item.as_bytes().map(<[u8]>::to_vec))
            .collect(),
    }
}

fn optional_bytes_list(reply: &RedisValue) -> Option<Vec<Option<Bytes>>> {
    reply.as_array()?.iter().map(optional_bytes).collect()
}

fn pairs(reply: &RedisValue) -> Option<Vec<(Bytes, Bytes)>> {
    let items = bytes_list(reply)?;
    if items.len() % 2 != 0 {
        return None;
    }
    let mut items = items.into_iter();
    let mut pairs = Vec::with_capacity(items.len() / 2);
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        pairs.push((field, value));
    }
    Some(pairs)
}

fn float(reply: &RedisValue) -> Option<f64> {
    reply.as_str()?.parse().ok()
}

fn optional_float(reply: &RedisValue) -> Option<Option<f64>> {
    match reply {
        RedisValue::Nil => Some(None),
        other => float(other).map(Some),
    }
}

/// A score or bound as Redis writes it (`+inf`, `-inf`, `1.5`).
fn score(value: f64) -> String {
    if value == f64::INFINITY {
        "+inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-inf".to_string()
    } else {
        value.to_string()
    }
}

fn with<'a, A: AsRef<[u8]>>(head: &[&'a [u8]], rest: &'a [A]) -> Vec<&'a [u8]> {
    let mut words = head.to_vec();
    words.extend(rest.iter().map(AsRef::as_ref));
    words
}

/// Keys.
impl RedisClient {
    /// `DEL key`: whether the key existed.
    pub async fn del(&self, key: impl AsRef<[u8]>) -> Result<bool, RedisError> {
        self.typed(&[b"DEL", key.as_ref()], flag).await
    }

    /// `EXISTS key`.
    pub async fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool, RedisError> {
        self.typed(&[b"EXISTS", key.as_ref()], flag).await
    }

    /// `EXPIRE key seconds`: whether the key exists (and now expires).
    pub async fn expire(&self, key: impl AsRef<[u8]>, seconds: u64) -> Result<bool, RedisError> {
        let seconds = seconds.to_string();
        self.typed(&[b"EXPIRE", key.as_ref(), seconds.as_bytes()], flag)
            .await
    }

    /// `PERSIST key`: whether a timeout was removed.
    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<bool, RedisError> {
        self.typed(&[b"PERSIST", key.as_ref()], flag).await
    }
}

/// Strings.
impl RedisClient {
    /// `GET key`: `None` when the key does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, RedisError> {
        self.typed(&[b"GET", key.as_ref()], optional_bytes).await
    }

    /// `SET key value`.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), RedisError> {
        self.typed(&[b"SET", key.as_ref(), value.as_ref()], ok)
            .await
    }

    /// `SET key value EX seconds`.
    pub async fn setex(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        seconds: u64,
    ) -> Result<(), RedisError> {
        let seconds = seconds.to_string();
        self.typed(
            &[
                b"SET",
                key.as_ref(),
                value.as_ref(),
                b"EX",
                seconds.as_bytes(),
            ],
            ok,
        )
        .await
    }

    /// `SET key value NX [EX seconds]` (no expiry when `seconds` is 0, as in Higress's Go
    /// client): whether the key was set (false: it existed).
    pub async fn setnx(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        seconds: u64,
    ) -> Result<bool, RedisError> {
        let seconds = seconds.to_string();
        let mut words: Vec<&[u8]> = vec![b"SET", key.as_ref(), value.as_ref(), b"NX"];
        if seconds != "0" {
            words.extend([b"EX".as_slice(), seconds.as_bytes()]);
        }
        self.typed(&words, |reply| match reply {
            RedisValue::SimpleString(_) => Some(true),
            RedisValue::Nil => Some(false),
            _ => None,
        })
        .await
    }

    /// `MGET key...`: one value per key, `None` for missing ones.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>, RedisError> {
        self.typed(&with(&[b"MGET"], keys), optional_bytes_list)
            .await
    }

    /// `MSET key value...`.
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        pairs: &[(K, V)],
    ) -> Result<(), RedisError> {
        let mut words: Vec<&[u8]> = vec![b"MSET"];
        for (key, value) in pairs {
            words.extend([key.as_ref(), value.as_ref()]);
        }
        self.typed(&words, ok).await
    }

    /// `INCR key`: the new value.
    pub async fn incr(&self, key: impl AsRef<[u8]>) -> Result<i64, RedisError> {
        self.typed(&[b"INCR", key.as_ref()], integer).await
    }

    /// `DECR key`: the new value.
    pub async fn decr(&self, key: impl AsRef<[u8]>) -> Result<i64, RedisError> {
        self.typed(&[b"DECR", key.as_ref()], integer).await
    }

    /// `INCRBY key delta`: the new value.
    pub async fn incrby(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, RedisError> {
        let delta = delta.to_string();
        self.typed(&[b"INCRBY", key.as_ref(), delta.as_bytes()], integer)
            .await
    }

    /// `DECRBY key delta`: the new value.
    pub async fn decrby(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, RedisError> {
        let delta = delta.to_string();
        self.typed(&[b"DECRBY", key.as_ref(), delta.as_bytes()], integer)
            .await
    }
}

/// Lists.
impl RedisClient {
    /// `LLEN key`.
    pub async fn llen(&self, key: impl AsRef<[u8]>) -> Result<i64, RedisError> {
        self.typed(&[b"LLEN", key.as_ref()], integer).await
    }

    /// `LPUSH key value...`: the list's new length.
    pub async fn lpush<V: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        values: &[V],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"LPUSH", key.as_ref()], values), integer)
            .await
    }

    /// `RPUSH key value...`: the list's new length.
    pub async fn rpush<V: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        values: &[V],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"RPUSH", key.as_ref()], values), integer)
            .await
    }

    /// `LPOP key`: `None` when the list is empty.
    pub async fn lpop(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, RedisError> {
        self.typed(&[b"LPOP", key.as_ref()], optional_bytes).await
    }

    /// `RPOP key`: `None` when the list is empty.
    pub async fn rpop(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, RedisError> {
        self.typed(&[b"RPOP", key.as_ref()], optional_bytes).await
    }

    /// `LINDEX key index` (negative from the end).
    pub async fn lindex(
        &self,
        key: impl AsRef<[u8]>,
        index: i64,
    ) -> Result<Option<Bytes>, RedisError> {
        let index = index.to_string();
        self.typed(&[b"LINDEX", key.as_ref(), index.as_bytes()], optional_bytes)
            .await
    }

    /// `LRANGE key start stop` (inclusive; negative from the end).
    pub async fn lrange(
        &self,
        key: impl AsRef<[u8]>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Bytes>, RedisError> {
        let (start, stop) = (start.to_string(), stop.to_string());
        self.typed(
            &[b"LRANGE", key.as_ref(), start.as_bytes(), stop.as_bytes()],
            bytes_list,
        )
        .await
    }

    /// `LREM key count value`: how many were removed.
    pub async fn lrem(
        &self,
        key: impl AsRef<[u8]>,
        count: i64,
        value: impl AsRef<[u8]>,
    ) -> Result<i64, RedisError> {
        let count = count.to_string();
        self.typed(
            &[b"LREM", key.as_ref(), count.as_bytes(), value.as_ref()],
            integer,
        )
        .await
    }

    /// `LINSERT key BEFORE pivot value`: the new length, -1 when `pivot` is not in the list.
    pub async fn linsert_before(
        &self,
        key: impl AsRef<[u8]>,
        pivot: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<i64, RedisError> {
        let words = [
            b"LINSERT".as_slice(),
            key.as_ref(),
            b"BEFORE",
            pivot.as_ref(),
            value.as_ref(),
        ];
        self.typed(&words, integer).await
    }

    /// `LINSERT key AFTER pivot value`: the new length, -1 when `pivot` is not in the list.
    pub async fn linsert_after(
        &self,
        key: impl AsRef<[u8]>,
        pivot: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<i64, RedisError> {
        let words = [
            b"LINSERT".as_slice(),
            key.as_ref(),
            b"AFTER",
            pivot.as_ref(),
            value.as_ref(),
        ];
        self.typed(&words, integer).await
    }
}

/// Hashes.
impl RedisClient {
    /// `HEXISTS key field`.
    pub async fn hexists(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
    ) -> Result<bool, RedisError> {
        self.typed(&[b"HEXISTS", key.as_ref(), field.as_ref()], flag)
            .await
    }

    /// `HDEL key field...`: how many fields were removed.
    pub async fn hdel<F: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        fields: &[F],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"HDEL", key.as_ref()], fields), integer)
            .await
    }

    /// `HLEN key`.
    pub async fn hlen(&self, key: impl AsRef<[u8]>) -> Result<i64, RedisError> {
        self.typed(&[b"HLEN", key.as_ref()], integer).await
    }

    /// `HGET key field`: `None` when the field (or the hash) does not exist.
    pub async fn hget(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
    ) -> Result<Option<Bytes>, RedisError> {
        self.typed(&[b"HGET", key.as_ref(), field.as_ref()], optional_bytes)
            .await
    }

    /// `HSET key field value`: whether the field is new.
    pub async fn hset(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, RedisError> {
        self.typed(
            &[b"HSET", key.as_ref(), field.as_ref(), value.as_ref()],
            flag,
        )
        .await
    }

    /// `HMGET key field...`: one value per field, `None` for missing ones.
    pub async fn hmget<F: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        fields: &[F],
    ) -> Result<Vec<Option<Bytes>>, RedisError> {
        self.typed(
            &with(&[b"HMGET", key.as_ref()], fields),
            optional_bytes_list,
        )
        .await
    }

    /// `HSET key field value...` (Higress's `HMSet`).
    pub async fn hmset<F: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        pairs: &[(F, V)],
    ) -> Result<i64, RedisError> {
        let mut words: Vec<&[u8]> = vec![b"HSET", key.as_ref()];
        for (field, value) in pairs {
            words.extend([field.as_ref(), value.as_ref()]);
        }
        self.typed(&words, integer).await
    }

    /// `HKEYS key`.
    pub async fn hkeys(&self, key: impl AsRef<[u8]>) -> Result<Vec<Bytes>, RedisError> {
        self.typed(&[b"HKEYS", key.as_ref()], bytes_list).await
    }

    /// `HVALS key`.
    pub async fn hvals(&self, key: impl AsRef<[u8]>) -> Result<Vec<Bytes>, RedisError> {
        self.typed(&[b"HVALS", key.as_ref()], bytes_list).await
    }

    /// `HGETALL key`: `(field, value)` pairs, in Redis's order.
    pub async fn hgetall(&self, key: impl AsRef<[u8]>) -> Result<Vec<(Bytes, Bytes)>, RedisError> {
        self.typed(&[b"HGETALL", key.as_ref()], pairs).await
    }

    /// `HINCRBY key field delta`: the new value.
    pub async fn hincrby(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        delta: i64,
    ) -> Result<i64, RedisError> {
        let delta = delta.to_string();
        self.typed(
            &[b"HINCRBY", key.as_ref(), field.as_ref(), delta.as_bytes()],
            integer,
        )
        .await
    }

    /// `HINCRBYFLOAT key field delta`: the new value.
    pub async fn hincrbyfloat(
        &self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        delta: f64,
    ) -> Result<f64, RedisError> {
        let delta = score(delta);
        self.typed(
            &[
                b"HINCRBYFLOAT",
                key.as_ref(),
                field.as_ref(),
                delta.as_bytes(),
            ],
            float,
        )
        .await
    }
}

/// Sets.
impl RedisClient {
    /// `SCARD key`.
    pub async fn scard(&self, key: impl AsRef<[u8]>) -> Result<i64, RedisError> {
        self.typed(&[b"SCARD", key.as_ref()], integer).await
    }

    /// `SADD key member...`: how many were added.
    pub async fn sadd<M: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        members: &[M],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"SADD", key.as_ref()], members), integer)
            .await
    }

    /// `SREM key member...`: how many were removed.
    pub async fn srem<M: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        members: &[M],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"SREM", key.as_ref()], members), integer)
            .await
    }

    /// `SISMEMBER key member`.
    pub async fn sismember(
        &self,
        key: impl AsRef<[u8]>,
        member: impl AsRef<[u8]>,
    ) -> Result<bool, RedisError> {
        self.typed(&[b"SISMEMBER", key.as_ref(), member.as_ref()], flag)
            .await
    }

    /// `SMEMBERS key`, in no particular order.
    pub async fn smembers(&self, key: impl AsRef<[u8]>) -> Result<Vec<Bytes>, RedisError> {
        self.typed(&[b"SMEMBERS", key.as_ref()], bytes_list).await
    }

    /// `SDIFF key...`: the members of the first set in none of the others.
    pub async fn sdiff<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Bytes>, RedisError> {
        self.typed(&with(&[b"SDIFF"], keys), bytes_list).await
    }

    /// `SINTER key...`.
    pub async fn sinter<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Bytes>, RedisError> {
        self.typed(&with(&[b"SINTER"], keys), bytes_list).await
    }

    /// `SUNION key...`.
    pub async fn sunion<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Bytes>, RedisError> {
        self.typed(&with(&[b"SUNION"], keys), bytes_list).await
    }

    /// `SDIFFSTORE destination key...`: the size of the stored set.
    pub async fn sdiffstore<K: AsRef<[u8]>>(
        &self,
        destination: impl AsRef<[u8]>,
        keys: &[K],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"SDIFFSTORE", destination.as_ref()], keys), integer)
            .await
    }

    /// `SINTERSTORE destination key...`: the size of the stored set.
    pub async fn sinterstore<K: AsRef<[u8]>>(
        &self,
        destination: impl AsRef<[u8]>,
        keys: &[K],
    ) -> Result<i64, RedisError> {
        self.typed(
            &with(&[b"SINTERSTORE", destination.as_ref()], keys),
            integer,
        )
        .await
    }

    /// `SUNIONSTORE destination key...`: the size of the stored set.
    pub async fn sunionstore<K: AsRef<[u8]>>(
        &self,
        destination: impl AsRef<[u8]>,
        keys: &[K],
    ) -> Result<i64, RedisError> {
        self.typed(
            &with(&[b"SUNIONSTORE", destination.as_ref()], keys),
            integer,
        )
        .await
    }
}

/// Sorted sets.
impl RedisClient {
    /// `ZCARD key`.
    pub async fn zcard(&self, key: impl AsRef<[u8]>) -> Result<i64, RedisError> {
        self.typed(&[b"ZCARD", key.as_ref()], integer).await
    }

    /// `ZADD key score member...`: how many members were added (not updated).
    pub async fn zadd<M: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        members: &[(f64, M)],
    ) -> Result<i64, RedisError> {
        let scores: Vec<String> = members.iter().map(|(value, _)| score(*value)).collect();
        let mut words: Vec<&[u8]> = vec![b"ZADD", key.as_ref()];
        for (value, (_, member)) in scores.iter().zip(members) {
            words.extend([value.as_bytes(), member.as_ref()]);
        }
        self.typed(&words, integer).await
    }

    /// `ZCOUNT key min max` (inclusive; infinities allowed).
    pub async fn zcount(
        &self,
        key: impl AsRef<[u8]>,
        min: f64,
        max: f64,
    ) -> Result<i64, RedisError> {
        let (min, max) = (score(min), score(max));
        self.typed(
            &[b"ZCOUNT", key.as_ref(), min.as_bytes(), max.as_bytes()],
            integer,
        )
        .await
    }

    /// `ZINCRBY key delta member`: the member's new score.
    pub async fn zincrby(
        &self,
        key: impl AsRef<[u8]>,
        delta: f64,
        member: impl AsRef<[u8]>,
    ) -> Result<f64, RedisError> {
        let delta = score(delta);
        self.typed(
            &[b"ZINCRBY", key.as_ref(), delta.as_bytes(), member.as_ref()],
            float,
        )
        .await
    }

    /// `ZSCORE key member`: `None` when it is not a member.
    pub async fn zscore(
        &self,
        key: impl AsRef<[u8]>,
        member: impl AsRef<[u8]>,
    ) -> Result<Option<f64>, RedisError> {
        self.typed(&[b"ZSCORE", key.as_ref(), member.as_ref()], optional_float)
            .await
    }

    /// `ZRANK key member` (0 for the lowest score): `None` when it is not a member.
    pub async fn zrank(
        &self,
        key: impl AsRef<[u8]>,
        member: impl AsRef<[u8]>,
    ) -> Result<Option<i64>, RedisError> {
        self.typed(&[b"ZRANK", key.as_ref(), member.as_ref()], optional_integer)
            .await
    }

    /// `ZREVRANK key member` (0 for the highest score): `None` when it is not a member.
    pub async fn zrevrank(
        &self,
        key: impl AsRef<[u8]>,
        member: impl AsRef<[u8]>,
    ) -> Result<Option<i64>, RedisError> {
        self.typed(
            &[b"ZREVRANK", key.as_ref(), member.as_ref()],
            optional_integer,
        )
        .await
    }

    /// `ZREM key member...`: how many were removed.
    pub async fn zrem<M: AsRef<[u8]>>(
        &self,
        key: impl AsRef<[u8]>,
        members: &[M],
    ) -> Result<i64, RedisError> {
        self.typed(&with(&[b"ZREM", key.as_ref()], members), integer)
            .await
    }

    /// `ZRANGE key start stop`: members by rank, lowest score first (inclusive; negative from
    /// the end).
    pub async fn zrange(
        &self,
        key: impl AsRef<[u8]>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Bytes>, RedisError> {
        let (start, stop) = (start.to_string(), stop.to_string());
        self.typed(
            &[b"ZRANGE", key.as_ref(), start.as_bytes(), stop.as_bytes()],
            bytes_list,
        )
        .await
    }

    /// `ZREVRANGE key start stop`: members by rank, highest score first.
    pub async fn zrevrange(
        &self,
        key: impl AsRef<[u8]>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Bytes>, RedisError> {
        let (start, stop) = (start.to_string(), stop.to_string());
        self.typed(
            &[
                b"ZREVRANGE",
                key.as_ref(),
                start.as_bytes(),
                stop.as_bytes(),
            ],
            bytes_list,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_convert_only_from_their_types() {
        assert_eq!(flag(&RedisValue::Integer(2)), Some(true));
        assert_eq!(flag(&RedisValue::Nil), None);
        assert_eq!(optional_bytes(&RedisValue::Nil), Some(None));
        assert_eq!(optional_bytes(&RedisValue::Integer(1)), None);
        assert_eq!(
            pairs(&RedisValue::Array(vec![
                RedisValue::BulkString(b"f".to_vec()),
                RedisValue::BulkString(b"v".to_vec()),
            ])),
            Some(vec![(b"f".to_vec(), b"v".to_vec())])
        );
        assert_eq!(
            pairs(&RedisValue::Array(vec![RedisValue::BulkString(
                b"f".to_vec()
            )])),
            None
        );
        assert_eq!(
            float(&RedisValue::BulkString(b"-inf".to_vec())),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(optional_float(&RedisValue::BulkString(b"x".to_vec())), None);
        assert_eq!(score(f64::INFINITY), "+inf");
        assert_eq!(score(1.5), "1.5");
        assert_eq!(optional_integer(&RedisValue::Nil), Some(None));
    }
}
