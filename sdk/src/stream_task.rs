//! A stream's task: what the driver and the hooks share, and the future that runs the hooks,
//! in one allocation.
//!
//! The future borrows the shared part (a hook's [`Request`](crate::Request) holds a
//! `&StreamShared` across its awaits), so both live in one reference-counted cell that never
//! moves, and the future gets a plain reference to the shared part beside it: no reference
//! count, no cycle. The cell goes when the runtime forgets the stream (`proxy_on_delete`) and
//! no poll holds it.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::runtime::StreamShared;

/// A stream's task, whatever its plugin type.
pub(crate) trait StreamTask {
    /// What the driver and the hooks share.
    fn shared(&self) -> &StreamShared;

    /// Polls the future; `Ready` once it ended or was stopped. A poll of a task that is being
    /// polled (from a callback inside one of its hostcalls) does nothing and is `Pending`: the
    /// caller polls it again after the outer poll.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()>;

    /// Drops the future (and every call it awaits) now; if it is being polled, the poll drops
    /// it when it returns. Whether the future was dropped now.
    fn stop(&self) -> bool;

    /// Whether the future has neither ended nor been stopped.
    fn is_running(&self) -> bool;
}

struct StreamCell<F> {
    // `None` once ended or stopped. Never moved out of: set to `None` in place only, so that
    // the future stays where it was first polled (see `poll`). Declared before `shared`, so
    // that it is dropped first: it borrows `shared` (see `new`).
    future: RefCell<Option<F>>,
    shared: StreamShared,
    // Whether `future` is `Some`, kept beside it: reading the `Option` through a shared
    // reference would cover the pinned future's memory, whose own borrows of itself (a hook's
    // `&mut Request` across an await) such a reference invalidates (Miri's Stacked Borrows).
    running: Cell<bool>,
}

/// The task of a stream sharing `shared`, whose future `make` builds from a reference to that
/// shared part.
pub(crate) fn new<F, M>(shared: StreamShared, make: M) -> Rc<dyn StreamTask>
where
    M: FnOnce(&'static StreamShared) -> F,
    F: Future<Output = ()> + 'static,
{
    let cell = Rc::new(StreamCell {
        future: RefCell::new(None),
        shared,
        running: Cell::new(false),
    });
    let shared: *const StreamShared = &cell.shared;
    // SAFETY: the reference is used only by the future made here, which is stored in the same
    // `Rc` allocation as `shared`, so `shared` is alive for as long as the future can run:
    // - the allocation never moves, and `shared` is never mutated through `&mut` (the cell is
    //   private to this module and only handed out as `Rc<dyn StreamTask>`, which gives `&`);
    // - the future is dropped before `shared`: in place by `stop` or `poll`, or by the cell's
    //   drop, which drops `future` first (field order);
    // - it is polled only through `StreamTask::poll` on `&self`, which a caller reaches through
    //   an `Rc` of the cell that keeps it alive for the poll's length.
    let future = make(unsafe { &*shared });
    *cell.future.borrow_mut() = Some(future);
    cell.running.set(true);
    cell
}

impl<F: Future<Output = ()>> StreamTask for StreamCell<F> {
    fn shared(&self) -> &StreamShared {
        &self.shared
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Ok(mut slot) = self.future.try_borrow_mut() else {
            return Poll::Pending;
        };
        let Some(future) = slot.as_mut() else {
            return Poll::Ready(());
        };
        // SAFETY: the future lives inside an `Rc` allocation, which never moves, and is only
        // ever dropped in place (`*slot = None`, here and in `stop`), never moved out of the
        // cell (no `take`, no `Rc::try_unwrap`: the cell is private to this module and only
        // handed out as `Rc<dyn StreamTask>`). So it stays pinned from this first poll on.
        let future = unsafe { Pin::new_unchecked(future) };
        let poll = future.poll(cx);
        if poll.is_ready() {
            *slot = None;
            self.running.set(false);
        }
        poll
    }

    fn stop(&self) -> bool {
        match self.future.try_borrow_mut() {
            Ok(mut slot) => {
                // Dropped in place (assignment drops the old value where it is): a pinned
                // future must not move before its drop. Its drop may call back into the
                // runtime, which then finds this task busy (`poll` pending, `stop` false).
                *slot = None;
                self.running.set(false);
                true
            }
            Err(_) => false,
        }
    }

    fn is_running(&self) -> bool {
        self.running.get()
    }
}
