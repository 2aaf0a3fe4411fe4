//! The key set of one configuration: fetched, cached and shared by the background task and the
//! request hooks, with at most one fetch in flight.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use proxy_async::HttpClient;

use crate::jwks::KeySet;

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    /// The proxy's name for the cluster serving the JWKS document.
    pub cluster: String,
    /// The `:authority` of the fetch.
    pub authority: String,
    /// The path of the document.
    pub path: String,
    /// The timeout of one fetch.
    pub timeout: Duration,
}

/// The cached key set, and the one fetch that may be in flight.
///
/// Fetches are single-flight: whoever wants fresh keys while a fetch is in flight (the
/// background task, or requests that arrived before any key set was loaded) waits for that
/// fetch instead of starting another, so a burst of requests at start-up costs the key server
/// one call per worker, not one per request.
#[derive(Default)]
pub struct KeyStore {
    keys: RefCell<Option<Rc<KeySet>>>,
    in_flight: Cell<bool>,
    // Bumped when a fetch ends (success or not); waiters wait for it to change.
    fetches_ended: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
    last_started: Cell<Option<SystemTime>>,
    last_failed: Cell<bool>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("kids", &self.keys().as_deref().map(KeySet::kids))
            .field("in_flight", &self.in_flight.get())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// The last key set fetched successfully, if any.
    pub fn keys(&self) -> Option<Rc<KeySet>> {
        self.keys.borrow().clone()
    }

    /// Fetches the key set now, or waits for the fetch in flight. Returns whether keys
    /// were loaded by that fetch (false: it failed, and the previous keys, if any, remain).
    pub async fn refresh(&self, source: &JwksSource) -> bool {
        if self.in_flight.get() {
            self.fetch_ended().await;
        } else {
            self.fetch(source).await;
        }
        !self.last_failed.get()
    }

    /// Like [`refresh`](KeyStore::refresh), but starts no fetch if one started less than
    /// `min_gap` ago: the rate limit of fetches made on behalf of requests (a key set that is
    /// missing, a `kid` that is unknown), which any client can cause.
    pub async fn refresh_unless_recent(&self, source: &JwksSource, min_gap: Duration) {
        if self.in_flight.get() {
            self.fetch_ended().await;
            return;
        }
        let recent = self.last_started.get().is_some_and(|started| {
            proxy_async::now()
                .duration_since(started)
                .is_ok_and(|since| since < min_gap)
        });
        if !recent {
            self.fetch(source).await;
        }
    }

    async fn fetch(&self, source: &JwksSource) {
        self.in_flight.set(true);
        self.last_started.set(Some(proxy_async::now()));
        // Should this future be dropped mid-call (the request that started it went away, or
        // the configuration was replaced), the guard still ends the fetch for the waiters.
        let guard = FetchGuard(self);
        let outcome = fetch_key_set(source).await;
        match outcome {
            Ok(keys) => {
                let kids = keys.kids().join(", ");
                let previous = self.keys.replace(Some(Rc::new(keys)));
                match previous {
                    Some(old) if old.kids().join(", ") == kids => {
                        log::debug!(
                            "JWKS from cluster `{}` refreshed, unchanged",
                            source.cluster
                        );
                    }
                    _ => log::info!(
                        "JWKS from cluster `{}` loaded, key ids: {kids}",
                        source.cluster
                    ),
                }
                self.last_failed.set(false);
            }
            Err(reason) => {
                self.last_failed.set(true);
                match self.keys() {
                    Some(keys) => log::warn!(
                        "JWKS refresh from cluster `{}` failed, keeping the {} keys loaded before: {reason}",
                        source.cluster,
                        keys.keys.len()
                    ),
                    None => log::warn!(
                        "JWKS fetch from cluster `{}` failed, no keys yet (requests get 503): {reason}",
                        source.cluster
                    ),
                }
            }
        }
        drop(guard);
    }

    /// Waits until the fetch in flight now ends.
    fn fetch_ended(&self) -> FetchEnded<'_> {
        FetchEnded {
            store: self,
            seen: self.fetches_ended.get(),
        }
    }

    fn end_fetch(&self) {
        self.in_flight.set(false);
        self.fetches_ended
            .set(self.fetches_ended.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        // Woken after the borrow ends: waking may run a waiter's task right away.
        for waker in waiters {
            waker.wake();
        }
    }
}

struct FetchGuard<'a>(&'a KeyStore);

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.get() && !std::thread::panicking() {
            self.0.end_fetch();
        }
    }
}

struct FetchEnded<'a> {
    store: &'a KeyStore,
    seen: u64,
}

impl Future for FetchEnded<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.store.fetches_ended.get() != self.seen || !self.store.in_flight.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.store.waiters.borrow_mut();
        if !waiters.iter().any(|waker| waker.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// One `GET` of the JWKS document, parsed.
async fn fetch_key_set(source: &JwksSource) -> Result<KeySet, String> {
    let reply = HttpClient::new(source.cluster.as_str())
        .with_authority(source.authority.as_str())
        .with_timeout(source.timeout)
        .get(&source.path)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if reply.status() != 200 {
        return Err(format!("{} answered {}", source.path, reply.status()));
    }
    KeySet::parse(reply.body())
}
