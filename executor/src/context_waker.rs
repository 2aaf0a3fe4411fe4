//! Wakers that name a context by its id and cost nothing to make: for futures their owner polls
//! itself rather than spawning them (a proxy-wasm stream's task, polled inside its callbacks). A
//! wake queues the id on this thread's list of woken contexts; the owner takes the ids after
//! each poll ([`take_woken`]) and polls what they name.
//!
//! ```
//! use std::task::{Context, Poll};
//! use proxy_async_executor::context_waker;
//!
//! let waker = context_waker::waker(42);
//! let mut woken = false;
//! let mut future = std::pin::pin!(std::future::poll_fn(|cx: &mut Context<'_>| {
//!     if woken {
//!         return Poll::Ready(());
//!     }
//!     woken = true;
//!     cx.waker().wake_by_ref();
//!     Poll::Pending
//! }));
//! assert!(future.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
//! assert_eq!(context_waker::take_woken(), Some(42));
//! assert_eq!(context_waker::take_woken(), None);
//! assert!(future.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
//! ```
//!
//! The list is per thread, and so is the meaning of an id: a waker woken on another thread
//! queues its id there, where no one polls it (a lost wake, never undefined behaviour). A
//! module runs on one thread.

#![allow(
    unsafe_code,
    reason = "a waker without an allocation is made from a raw waker (one block, below)"
)]

use std::cell::RefCell;
use std::task::{RawWaker, RawWakerVTable, Waker};

thread_local! {
    static WOKEN: RefCell<Woken> = const { RefCell::new(Woken::new()) };
}

/// The woken ids, oldest first: `ids[next..]`. Taking one only moves `next`; the list is
/// cleared when it has all been taken, so its memory is kept from one callback to the next and
/// a wake and a take each cost a few instructions (a wake scans the short list for its id).
struct Woken {
    ids: Vec<u32>,
    next: usize,
}

impl Woken {
    const fn new() -> Self {
        Woken {
            ids: Vec::new(),
            next: 0,
        }
    }

    fn queued(&self) -> &[u32] {
        self.ids.get(self.next..).unwrap_or_default()
    }

    fn push(&mut self, id: u32) {
        if !self.queued().contains(&id) {
            self.ids.push(id);
        }
    }

    fn pop(&mut self) -> Option<u32> {
        let id = *self.ids.get(self.next)?;
        self.next += 1;
        if self.next == self.ids.len() {
            self.ids.clear();
            self.next = 0;
        }
        Some(id)
    }
}

/// The waker of context `id`: waking it queues `id` (once until it is taken).
pub fn waker(id: u32) -> Waker {
    // SAFETY: every function of `VTABLE` is sound for any data pointer: none dereferences it,
    // they only read its address (the id), and `drop` has nothing to free. An address is
    // `Send + Sync`, as a `Waker` must be.
    unsafe { Waker::from_raw(raw(id)) }
}

/// The context `waker` names, if it is one of this module's context wakers (see [`waker`]).
pub fn context_of(waker: &Waker) -> Option<u32> {
    std::ptr::eq(waker.vtable(), &VTABLE).then(|| id_of(waker.data()))
}

/// Queues context `id` as woken, as its waker does.
pub fn wake(id: u32) {
    // After the thread's locals are gone (a waker dropped late in a thread's exit) there is no
    // one to poll anything: the wake is dropped. The list is never borrowed across a call out.
    let _ = WOKEN.try_with(|woken| {
        if let Ok(mut woken) = woken.try_borrow_mut() {
            woken.push(id);
        }
    });
}

/// Whether a context was woken and not yet taken.
#[inline]
pub fn any_woken() -> bool {
    WOKEN
        .try_with(|woken| woken.try_borrow().is_ok_and(|woken| !woken.ids.is_empty()))
        .unwrap_or(false)
}

/// The context woken longest ago, if any is, taken off the list.
pub fn take_woken() -> Option<u32> {
    WOKEN
        .try_with(|woken| woken.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake_raw, wake_raw, drop_raw);

fn raw(id: u32) -> RawWaker {
    // The id is the pointer's address; it is never dereferenced.
    RawWaker::new(std::ptr::without_provenance(id as usize), &VTABLE)
}

fn id_of(data: *const ()) -> u32 {
    // Only addresses made by `raw` from a u32 reach here.
    u32::try_from(data.addr()).unwrap_or(u32::MAX)
}

fn clone(data: *const ()) -> RawWaker {
    raw(id_of(data))
}

fn wake_raw(data: *const ()) {
    wake(id_of(data));
}

fn drop_raw(_: *const ()) {}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::Woken;

    #[derive(Debug, Clone)]
    enum Op {
        Wake(u32),
        Take,
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: if cfg!(miri) {
                None
            } else {
                ProptestConfig::default().failure_persistence
            },
            ..ProptestConfig::default()
        })]

        // Each id is queued once until taken, and taken oldest first.
        #[test]
        fn woken_ids_come_out_once_each_oldest_first(ops in proptest::collection::vec(
            prop_oneof![
                (0u32..6).prop_map(Op::Wake),
                Just(Op::Take),
            ],
            0..200,
        )) {
            let mut woken = Woken::new();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Wake(id) => {
                        woken.push(id);
                        if !model.contains(&id) {
                            model.push_back(id);
                        }
                    }
                    Op::Take => prop_assert_eq!(woken.pop(), model.pop_front()),
                }
                let expected: Vec<u32> = model.iter().copied().collect();
                prop_assert_eq!(woken.queued(), &expected[..]);
                prop_assert_eq!(woken.ids.is_empty(), model.is_empty());
            }
        }
    }
}
