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
use std::collections::VecDeque;
use std::task::{RawWaker, RawWakerVTable, Waker};

thread_local! {
    static WOKEN: RefCell<VecDeque<u32>> = const { RefCell::new(VecDeque::new()) };
}

/// The waker of context `id`: waking it queues `id` (once until it is taken).
pub fn waker(id: u32) -> Waker {
    // SAFETY: every function of `VTABLE` is sound for any data pointer: none dereferences it,
    // they only read its address (the id), and `drop` has nothing to free. An address is
    // `Send + Sync`, as a `Waker` must be.
    unsafe { Waker::from_raw(raw(id)) }
}

/// Queues context `id` as woken, as its waker does.
pub fn wake(id: u32) {
    // After the thread's locals are gone (a waker dropped late in a thread's exit) there is no
    // one to poll anything: the wake is dropped. The list is never borrowed across a call out.
    let _ = WOKEN.try_with(|woken| {
        if let Ok(mut woken) = woken.try_borrow_mut()
            && !woken.contains(&id)
        {
            woken.push_back(id);
        }
    });
}

/// Whether a context was woken and not yet taken.
#[inline]
pub fn any_woken() -> bool {
    WOKEN
        .try_with(|woken| woken.try_borrow().is_ok_and(|woken| !woken.is_empty()))
        .unwrap_or(false)
}

/// The context woken longest ago, if any is, taken off the list.
pub fn take_woken() -> Option<u32> {
    WOKEN
        .try_with(|woken| woken.try_borrow_mut().ok()?.pop_front())
        .ok()
        .flatten()
}

/// Takes context `id` off the list (it is gone: a later wake of it would find nothing).
pub fn forget(id: u32) {
    let _ = WOKEN.try_with(|woken| {
        if let Ok(mut woken) = woken.try_borrow_mut()
            && !woken.is_empty()
        {
            woken.retain(|&queued| queued != id);
        }
    });
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
