//! Host tokens turned into futures.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::id_map::IdMap;

// Host tokens are small distinct integers handed out in increasing order: the case `IdMap` is
// made for (and unlike std's `HashMap` it needs no random seed, so no WASI import).
//
// A slot holds no reply: a token waits for most of its life, and a reply (an HTTP call's
// headers and body) is many times a waker's size, so replies wait beside the slots, for the
// few polls between a delivery and its future's next poll.
struct Entries<R> {
    // Per registered token, the waker of its future's last poll (a no-op one before the
    // first): one waker, with no state beside it, so that a slot is three words.
    slots: IdMap<Waker>,
    // Replies delivered and not yet taken, by token: a token is answered when it is here.
    answered: Vec<(u32, R)>,
}

impl<R> Entries<R> {
    fn is_answered(&self, token: u32) -> bool {
        self.answered.iter().any(|(id, _)| *id == token)
    }

    fn take_answer(&mut self, token: u32) -> Option<R> {
        let index = self.answered.iter().position(|(id, _)| *id == token)?;
        // Nearly always the only one: popped, rather than swapped with itself (a reply is
        // large to copy).
        if index + 1 == self.answered.len() {
            return self.answered.pop().map(|(_, reply)| reply);
        }
        Some(self.answered.swap_remove(index).1)
    }
}

/// Pending host calls, keyed by the token the host returned when the call was dispatched.
///
/// `R` is the reply the host callback delivers (for an HTTP call: status, headers and body,
/// copied out of the host during the callback, since they are readable only then).
pub struct Registry<R> {
    entries: Rc<RefCell<Entries<R>>>,
}

impl<R> Clone for Registry<R> {
    fn clone(&self) -> Self {
        Registry {
            entries: Rc::clone(&self.entries),
        }
    }
}

impl<R> Default for Registry<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> fmt::Debug for Registry<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("pending", &self.len())
            .finish()
    }
}

/// What [`Registry::complete`] did with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// A future was waiting for the token; it has the reply and was woken.
    Delivered,
    /// No future waits for the token: it is unknown, already answered, or its future was
    /// dropped (the stream that made the call ended). The reply was dropped.
    Ignored,
}

/// [`Registry::register`] was given a token that is already pending. Hosts hand out distinct
/// tokens, so this means the host (or a test driving it) reused one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateToken(pub u32);

impl fmt::Display for DuplicateToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token {} is already pending: the host returned the same token for two calls",
            self.0
        )
    }
}

impl std::error::Error for DuplicateToken {}

impl<R> Registry<R> {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Registry {
            entries: Rc::new(RefCell::new(Entries {
                slots: IdMap::new(),
                answered: Vec::new(),
            })),
        }
    }

    /// Starts waiting for the reply to `token`. The returned future resolves when
    /// [`complete`](Registry::complete) delivers it; dropping the future forgets the token.
    pub fn register(&self, token: u32) -> Result<Pending<R>, DuplicateToken> {
        let mut entries = self.entries.borrow_mut();
        if entries.slots.contains_key(token) {
            return Err(DuplicateToken(token));
        }
        entries.slots.insert(token, Waker::noop().clone());
        Ok(Pending {
            token,
            entries: Some(Rc::clone(&self.entries)),
        })
    }

    /// Delivers the reply for `token` and wakes the task waiting for it. A token nobody waits
    /// for is ignored and logged at debug level: late replies are normal, since a stream can
    /// end while its call is in flight and the host still answers the call.
    pub fn complete(&self, token: u32, reply: R) -> Completion {
        match self.deliver(token, reply) {
            Some(waker) => {
                // Woken after the borrow ends; a wake only queues the task, but a foreign
                // waker could run anything.
                waker.wake();
                Completion::Delivered
            }
            None => Completion::Ignored,
        }
    }

    /// Delivers the reply for `token`, as [`complete`](Registry::complete) does, but hands
    /// back the waker of the future waiting for it instead of waking it: an owner that can
    /// poll that future at once (see [`context_waker::context_of`](crate::context_waker::context_of))
    /// need not queue it first. `None` when the reply was ignored.
    pub fn deliver(&self, token: u32, reply: R) -> Option<Waker> {
        let mut entries = self.entries.borrow_mut();
        let answered = entries.is_answered(token);
        match entries.slots.get_mut(token) {
            Some(waker) if !answered => {
                let waker = std::mem::replace(waker, Waker::noop().clone());
                entries.answered.push((token, reply));
                Some(waker)
            }
            Some(_) => {
                log::debug!("second reply for token {token} ignored");
                None
            }
            None => {
                log::debug!(
                    "reply for token {token} ignored: nothing waits for it (its stream ended, or the token is unknown)"
                );
                None
            }
        }
    }

    /// Whether a future waits for `token` (registered, not yet answered).
    pub fn is_waiting(&self, token: u32) -> bool {
        let entries = self.entries.borrow();
        entries.slots.contains_key(token) && !entries.is_answered(token)
    }

    /// How many tokens are registered and not yet consumed by their future.
    pub fn len(&self) -> usize {
        self.entries.borrow().slots.len()
    }

    /// Whether no token is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The future of one host reply, returned by [`Registry::register`].
///
/// Dropping it before the reply arrives removes the token from the registry, so a reply that
/// arrives later is ignored. After it has returned `Ready` once, it stays `Pending`.
#[must_use = "a pending reply does nothing unless awaited"]
pub struct Pending<R> {
    token: u32,
    // `None` once the reply was taken: a paused request keeps one of these per call, so
    // "finished" costs no flag of its own.
    entries: Option<Rc<RefCell<Entries<R>>>>,
}

impl<R> Pending<R> {
    /// The host token this future waits for.
    pub fn token(&self) -> u32 {
        self.token
    }
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("token", &self.token)
            .field("finished", &self.entries.is_none())
            .finish()
    }
}

impl<R> Future for Pending<R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.get_mut();
        let Some(shared) = &this.entries else {
            return Poll::Pending;
        };
        let mut entries = shared.borrow_mut();
        if let Some(reply) = entries.take_answer(this.token) {
            let waker = entries.slots.remove(this.token);
            drop(entries);
            this.entries = None;
            drop(waker);
            return Poll::Ready(reply);
        }
        match entries.slots.get_mut(this.token) {
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                Poll::Pending
            }
            // Only this future removes its entry, so the entry exists until it finishes.
            None => Poll::Pending,
        }
    }
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        if let Some(shared) = &self.entries {
            let mut entries = shared.borrow_mut();
            let waker = entries.slots.remove(self.token);
            let removed = entries.take_answer(self.token);
            drop(entries);
            // The reply (user data) and the waker are dropped after the borrow ends.
            drop(removed);
            drop(waker);
        }
    }
}
