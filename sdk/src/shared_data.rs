//! Data shared by every VM of the plugin in the proxy, with compare-and-swap.
//!
//! Envoy runs one VM per worker thread, so a plugin's in-memory state is per worker; shared
//! data is the proxy's key-value store that all of them see (in Envoy, every VM with the same
//! `vm_id`). Each value has a version, its [`Cas`]: a write that names the version it read
//! fails with [`SharedDataError::CasMismatch`] if another write came in between. The
//! [`update`](SharedData::update) helpers do the read-modify-write loop.
//!
//! ```
//! use std::rc::Rc;
//! use proxy_async::{Error, Flow, NoConfig, Plugin, Request, SharedData};
//!
//! struct CountRequests;
//!
//! impl Plugin for CountRequests {
//!     type Root = NoConfig;
//!     fn new(_: &Rc<NoConfig>) -> Self { CountRequests }
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         // Every worker counts into the same value.
//!         let seen: u64 =
//!             SharedData::update_json("requests", |n: Option<u64>| n.unwrap_or(0) + 1, 10)?;
//!         req.headers_mut().insert("x-request-number", seen.to_string());
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! use proxy_async::testing::PluginTest;
//!
//! let test = PluginTest::<CountRequests>::new("").unwrap();
//! test.set_shared_data("requests", "41");
//! let stream = test.stream();
//! stream.send_request_headers(&[(":path", "/")], true);
//! assert_eq!(stream.request_header("x-request-number").as_deref(), Some("42"));
//! assert_eq!(test.shared_data("requests").as_deref(), Some(&b"42"[..]));
//! ```
//!
//! A key that does not exist yet has no version to compare: Envoy ignores the CAS of a write
//! to a missing key, so two workers that both find it missing both write it and the last one
//! wins. Write the first value where only one writer runs (e.g. a value every writer would
//! agree on), or accept that the first update may be lost.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::host::{Host, HostError, HostStatus, backend};
use crate::runtime::Runtime;

/// The version of a shared value, as [`SharedData::get`] read it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cas(u32);

/// Why a shared-data operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedDataError {
    /// The value changed since it was read (another worker, or another stream, wrote it).
    CasMismatch {
        /// The key.
        key: String,
    },
    /// An update met a changed value on each of its attempts and gave up.
    Contended {
        /// The key.
        key: String,
        /// How many times it read, computed and tried to write.
        attempts: u32,
    },
    /// The stored value is not the JSON the plugin expected (or the plugin's value does not
    /// serialize).
    Json {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The proxy refused the operation (a host without shared data answers `UNIMPLEMENTED`,
    /// as does code outside a plugin callback).
    Host(HostError),
}

impl fmt::Display for SharedDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedDataError::CasMismatch { key } => {
                write!(f, "shared data {key:?} changed since it was read")
            }
            SharedDataError::Contended { key, attempts } => write!(
                f,
                "shared data {key:?} changed during each of {attempts} attempts to update it"
            ),
            SharedDataError::Json { key, reason } => {
                write!(f, "shared data {key:?} is not the expected JSON: {reason}")
            }
            SharedDataError::Host(error) => write!(f, "shared data: {error}"),
        }
    }
}

impl std::error::Error for SharedDataError {}

/// The proxy's shared key-value store (see the [module](crate::shared_data) docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedData;

impl SharedData {
    /// The value of `key` and its version; `None` when there is none.
    pub fn get(key: &str) -> Result<Option<(Vec<u8>, Cas)>, SharedDataError> {
        let runtime = Runtime::current().ok_or_else(|| no_host("proxy_get_shared_data"))?;
        let entry = get_shared_data(&runtime, key).map_err(SharedDataError::Host)?;
        Ok(entry.map(|(value, cas)| (value, Cas(cas))))
    }

    /// Stores `value` under `key`. With `cas`, only if the value is still the version read
    /// (else [`SharedDataError::CasMismatch`]); without, whatever is there.
    pub fn set(
        key: &str,
        value: impl AsRef<[u8]>,
        cas: Option<Cas>,
    ) -> Result<(), SharedDataError> {
        let runtime = Runtime::current().ok_or_else(|| no_host("proxy_set_shared_data"))?;
        let cas = cas.map_or(0, |Cas(cas)| cas);
        match set_shared_data(&runtime, key, value.as_ref(), cas) {
            Ok(()) => Ok(()),
            Err(HostError {
                status: HostStatus::CasMismatch,
                ..
            }) => Err(SharedDataError::CasMismatch {
                key: key.to_string(),
            }),
            Err(error) => Err(SharedDataError::Host(error)),
        }
    }

    /// Read-modify-write: reads `key`, computes the new value with `f` (from the current one,
    /// `None` if there is none) and writes it if the value did not change meanwhile; else
    /// starts over, at most `attempts` times in all (at least once). Returns the value written.
    ///
    /// ```
    /// # use proxy_async::{SharedData, SharedDataError};
    /// # fn hook() -> Result<(), SharedDataError> {
    /// // Appends this worker's name to a list, whatever the other workers do meanwhile.
    /// SharedData::update("workers", |old| [old.unwrap_or_default(), b"w1,"].concat(), 5)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn update<F, V>(key: &str, mut f: F, attempts: u32) -> Result<Vec<u8>, SharedDataError>
    where
        F: FnMut(Option<&[u8]>) -> V,
        V: Into<Vec<u8>>,
    {
        let attempts = attempts.max(1);
        for _ in 0..attempts {
            let current = SharedData::get(key)?;
            let (old, cas) = split(current);
            let new: Vec<u8> = f(old.as_deref()).into();
            match SharedData::set(key, &new, cas) {
                Ok(()) => return Ok(new),
                Err(SharedDataError::CasMismatch { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(SharedDataError::Contended {
            key: key.to_string(),
            attempts,
        })
    }

    /// [`update`](SharedData::update) with an `async` computation: the hook may await (call
    /// another service) between the read and the write. Another worker, or another stream of
    /// this one, may write meanwhile; the write then fails and the whole computation runs again
    /// on the new value.
    ///
    /// ```
    /// # use proxy_async::{HttpClient, SharedData, SharedDataError};
    /// # async fn hook() -> Result<(), SharedDataError> {
    /// let quota = HttpClient::new("quota");
    /// SharedData::update_async(
    ///     "tokens",
    ///     async |old| {
    ///         let refill = match quota.get("/refill").send().await {
    ///             Ok(response) => response.body().to_vec(),
    ///             Err(_) => Vec::new(),
    ///         };
    ///         [old.unwrap_or_default(), &refill].concat()
    ///     },
    ///     5,
    /// )
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_async<F, V>(
        key: &str,
        mut f: F,
        attempts: u32,
    ) -> Result<Vec<u8>, SharedDataError>
    where
        F: AsyncFnMut(Option<&[u8]>) -> V,
        V: Into<Vec<u8>>,
    {
        let attempts = attempts.max(1);
        for _ in 0..attempts {
            let current = SharedData::get(key)?;
            let (old, cas) = split(current);
            let new: Vec<u8> = f(old.as_deref()).await.into();
            match SharedData::set(key, &new, cas) {
                Ok(()) => return Ok(new),
                Err(SharedDataError::CasMismatch { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(SharedDataError::Contended {
            key: key.to_string(),
            attempts,
        })
    }

    /// The value of `key` as JSON of type `T`, and its version.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<(T, Cas)>, SharedDataError> {
        match SharedData::get(key)? {
            Some((bytes, cas)) => Ok(Some((from_json(key, &bytes)?, cas))),
            None => Ok(None),
        }
    }

    /// Stores `value` as JSON under `key`; `cas` as for [`set`](SharedData::set).
    pub fn set_json<T: Serialize>(
        key: &str,
        value: &T,
        cas: Option<Cas>,
    ) -> Result<(), SharedDataError> {
        SharedData::set(key, to_json(key, value)?, cas)
    }

    /// [`update`](SharedData::update) on JSON values: `f` gets the current value (`None` if
    /// there is none) and returns the new one. A stored value that is not a `T` is an error,
    /// not overwritten.
    pub fn update_json<T, F>(key: &str, mut f: F, attempts: u32) -> Result<T, SharedDataError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let attempts = attempts.max(1);
        for _ in 0..attempts {
            let current = SharedData::get(key)?;
            let (old, cas) = split(current);
            let old = old.map(|bytes| from_json(key, &bytes)).transpose()?;
            let new = f(old);
            match SharedData::set(key, to_json(key, &new)?, cas) {
                Ok(()) => return Ok(new),
                Err(SharedDataError::CasMismatch { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(SharedDataError::Contended {
            key: key.to_string(),
            attempts,
        })
    }
}

fn split(entry: Option<(Vec<u8>, Cas)>) -> (Option<Vec<u8>>, Option<Cas>) {
    match entry {
        Some((value, cas)) => (Some(value), Some(cas)),
        None => (None, None),
    }
}

fn from_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, SharedDataError> {
    serde_json::from_slice(bytes).map_err(|error| SharedDataError::Json {
        key: key.to_string(),
        reason: error.to_string(),
    })
}

fn to_json<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, SharedDataError> {
    serde_json::to_vec(value).map_err(|error| SharedDataError::Json {
        key: key.to_string(),
        reason: error.to_string(),
    })
}

fn no_host(call: &'static str) -> SharedDataError {
    SharedDataError::Host(HostError {
        call,
        status: HostStatus::Unimplemented,
    })
}

// The hostcalls, on the host this build has (see `host::backend`).

fn get_shared_data(runtime: &Runtime, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
    Host::get_shared_data(backend(&runtime.host), key)
}

fn set_shared_data(runtime: &Runtime, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    Host::set_shared_data(backend(&runtime.host), key, value, cas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_plugin_there_is_no_store() {
        assert_eq!(
            SharedData::get("k"),
            Err(SharedDataError::Host(HostError {
                call: "proxy_get_shared_data",
                status: HostStatus::Unimplemented,
            }))
        );
        let error = SharedData::update("k", |_| b"v".to_vec(), 3);
        assert!(matches!(error, Err(SharedDataError::Host(_))), "{error:?}");
    }

    #[test]
    fn errors_name_the_key() {
        let error = SharedDataError::Contended {
            key: "hits".into(),
            attempts: 3,
        };
        assert_eq!(
            error.to_string(),
            "shared data \"hits\" changed during each of 3 attempts to update it"
        );
    }
}
