//! A stream's task: the plugin's per-stream value, the future of the hook that runs now, the
//! message that hook works on, and what the driver and the hooks share, in one allocation.
//!
//! A hook's future borrows the plugin value (`&mut self` across its awaits) and its message
//! (`&mut Request`, which holds a `&StreamShared`), so all of them live in one
//! reference-counted cell that never moves, and the future gets plain references to the
//! others beside it: no reference count, no cycle, and the future is the plugin's own. There is no long-lived task: each hook's
//! future is made in place when the gate starts it and dropped in place when it returns, and
//! its outcome goes straight to whoever polled it, so a hook that finishes inside its callback
//! costs one poll and nothing is stored for it. The cell goes when the runtime forgets the
//! stream (`proxy_on_delete`) and no poll holds it.

use std::cell::{Cell, UnsafeCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use proxy_async_abi::gate::HookRun;

use crate::error::Error;
use crate::host::Action;
use crate::message::Message;
use crate::plugin::Flow;
use crate::runtime::{Event, Runtime, StreamShared};

/// What a finished hook decided.
pub(crate) type HookOutcome = Result<Flow, Error>;

/// A stream's task, whatever its plugin type.
pub(crate) trait StreamTask {
    /// What the driver and the hooks share.
    fn shared(&self) -> &StreamShared;

    /// Makes the future of `event`'s hook, to be polled next. The gate starts one hook at a
    /// time, so no hook's future is there; if one were (a gate bug), it is kept and `event`
    /// is dropped, so that nothing pinned moves and no plugin borrow is taken twice.
    fn start(&self, event: Event);

    /// Polls the hook's future, first [starting](StreamTask::start) `start`'s hook if given:
    /// `Ready` with its outcome once it finished (the future is gone then). `Pending` while it
    /// awaits, when no hook runs or the task is stopped, and for a poll from inside a poll of
    /// it (a callback inside one of its hostcalls): the caller polls it again after the outer
    /// poll.
    fn poll(&self, start: Option<Event>, cx: &mut Context<'_>) -> Poll<HookOutcome>;

    /// Drops the hook's future (and every call it awaits) and the plugin value now; if the
    /// future is being polled, the caller stops the task again when that poll returns.
    /// Whether the task was stopped now.
    fn stop(&self) -> bool;

    /// Runs `run`, which starts inside the callback running now, with `runtime` (see
    /// [`Runtime::run_in_callback`]); the callback's answer.
    fn run_in_callback(&self, runtime: &Rc<Runtime>, run: HookRun) -> Action;
}

/// Makes the future of a hook from the plugin value and the message it works on.
pub(crate) trait MakeHook<P>: 'static {
    /// The hook's future.
    type Future: Future<Output = HookOutcome> + 'static;

    /// The future of the hook of `message`'s callback on `plugin`.
    fn make(&self, plugin: &'static mut P, message: &'static mut Message<'static>) -> Self::Future;
}

impl<P, F, M> MakeHook<P> for M
where
    P: 'static,
    M: Fn(&'static mut P, &'static mut Message<'static>) -> F + 'static,
    F: Future<Output = HookOutcome> + 'static,
{
    type Future = F;

    #[inline]
    fn make(&self, plugin: &'static mut P, message: &'static mut Message<'static>) -> F {
        self(plugin, message)
    }
}

struct StreamCell<P, M: MakeHook<P>> {
    // The running hook's future; `None` while no hook runs. Never moved out of: set to `None`
    // in place only, so that the future stays where it was first polled (see `poll`).
    // Declared first, so that it is dropped first: it borrows `message` and `plugin`, and
    // through the message `shared` (see `make_hook`).
    hook: UnsafeCell<Option<M::Future>>,
    // The running hook's message (`None` before the first hook), made beside the future and
    // replaced only when no future holds it. Reached only through the pointer `make_hook` hands
    // the future.
    message: UnsafeCell<Option<Message<'static>>>,
    // `None` once stopped. Reached only through the pointer `start` hands the hook's future,
    // or to drop it in place when no future holds it.
    plugin: UnsafeCell<Option<P>>,
    shared: StreamShared,
    make: M,
    // Whether `hook` is reached now (see `slot`): a `RefCell`'s borrow flag in one byte.
    busy: Cell<bool>,
}

/// `hook`, reached alone until dropped.
struct Slot<'a, F> {
    hook: &'a mut Option<F>,
    busy: &'a Cell<bool>,
}

impl<F> Drop for Slot<'_, F> {
    fn drop(&mut self) {
        self.busy.set(false);
    }
}

impl<P: 'static, M: MakeHook<P>> StreamCell<P, M> {
    /// The hook's slot, unless it is reached already (a poll of the hook that called back into
    /// the runtime from one of its hostcalls).
    fn slot(&self) -> Option<Slot<'_, M::Future>> {
        if self.busy.replace(true) {
            return None;
        }
        // SAFETY: `busy` was false and is true until the `Slot` made here drops: no other
        // reference to `hook` exists meanwhile (this is its only accessor, and the cell is
        // single-threaded: `Rc`, not `Send`).
        let hook = unsafe { &mut *self.hook.get() };
        Some(Slot {
            hook,
            busy: &self.busy,
        })
    }

    /// Makes the future of `event`'s hook in `hook`, the slot's (held by the caller), unless
    /// a future is there or the plugin value is gone.
    fn make_hook(&self, hook: &mut Option<M::Future>, event: Event) {
        if hook.is_some() {
            return;
        }
        // SAFETY: no future holds a borrow of the plugin value or the message: the only one
        // that could is the hook's, and the slot is empty. The references made here go to the
        // new future alone, which is stored in the same `Rc` allocation as `plugin`, `message`
        // and `shared` (which the message borrows), so all are alive for as long as it can run:
        // - the allocation never moves, and none is reached through `&mut` meanwhile (the cell
        //   is private to this module and only handed out as `Rc<dyn StreamTask>`, which gives
        //   `&`; `stop` drops the plugin and the next `make_hook` replaces the message only
        //   when the slot is empty);
        // - the future is dropped before them: in place by `stop` or `poll`, or by the cell's
        //   drop, which drops `hook` first (field order);
        // - it is polled only through `StreamTask::poll` on `&self`, which a caller reaches
        //   through an `Rc` of the cell that keeps it alive for the poll's length.
        let (plugin, message) = unsafe {
            let Some(plugin) = (*self.plugin.get()).as_mut() else {
                return;
            };
            let plugin: *mut P = plugin;
            let shared: *const StreamShared = &self.shared;
            let message: *mut Message<'static> =
                (*self.message.get()).insert(Message::new(&*shared, event));
            (&mut *plugin, &mut *message)
        };
        *hook = Some(self.make.make(plugin, message));
    }
}

/// The task of a stream sharing `shared`, whose hooks `make` makes on `plugin`.
pub(crate) fn new<P: 'static, M: MakeHook<P>>(
    plugin: P,
    shared: StreamShared,
    make: M,
) -> Rc<dyn StreamTask> {
    Rc::new(StreamCell {
        hook: UnsafeCell::new(None),
        message: UnsafeCell::new(None),
        plugin: UnsafeCell::new(Some(plugin)),
        shared,
        make,
        busy: Cell::new(false),
    })
}

impl<P: 'static, M: MakeHook<P>> StreamTask for StreamCell<P, M> {
    fn shared(&self) -> &StreamShared {
        &self.shared
    }

    fn start(&self, event: Event) {
        let Some(slot) = self.slot() else {
            return;
        };
        self.make_hook(slot.hook, event);
    }

    // Inlined into `run_in_callback`, the hot caller; the drain's polls go through the vtable.
    #[inline(always)]
    fn poll(&self, start: Option<Event>, cx: &mut Context<'_>) -> Poll<HookOutcome> {
        let Some(slot) = self.slot() else {
            return Poll::Pending;
        };
        if let Some(event) = start {
            self.make_hook(slot.hook, event);
        }
        let Some(future) = slot.hook.as_mut() else {
            return Poll::Pending;
        };
        // SAFETY: the future lives inside an `Rc` allocation, which never moves, and is only
        // ever dropped in place (`*slot.hook = None`, here and in `stop`), never moved out of the
        // cell (no `take`, no `Rc::try_unwrap`: the cell is private to this module and only
        // handed out as `Rc<dyn StreamTask>`). So it stays pinned from this first poll on.
        let future = unsafe { Pin::new_unchecked(future) };
        let poll = future.poll(cx);
        if poll.is_ready() {
            *slot.hook = None;
        }
        poll
    }

    fn stop(&self) -> bool {
        let Some(slot) = self.slot() else {
            return false;
        };
        // Dropped in place (assignment drops the old value where it is): a pinned future must
        // not move before its drop. Its drop may call back into the runtime, which then finds
        // this task busy (`poll` pending, `stop` false).
        *slot.hook = None;
        drop(slot);
        // SAFETY: the hook's future, the only holder of a borrow of the plugin value, was
        // dropped just above; no other reference to it exists (see `start`).
        let plugin = unsafe { (*self.plugin.get()).take() };
        // Dropped after the slot's borrow ended: its drop may call back into the runtime too.
        drop(plugin);
        true
    }

    fn run_in_callback(&self, runtime: &Rc<Runtime>, run: HookRun) -> Action {
        runtime.run_in_callback(self, run)
    }
}
