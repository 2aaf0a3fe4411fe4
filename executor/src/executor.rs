//! The task slab and the drain loop.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::waker::{ReadyQueue, TaskWaker};

/// The group a task belongs to; the SDK uses the proxy-wasm context id of the stream (or of the
/// plugin, for background work) so that everything a stream started can be dropped together.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(pub u32);

/// Names one spawned task. Ids are never reused while the executor lives: a slot that is freed
/// and taken again gets a new generation, so an old id (or an old waker) cannot reach the new task.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub(crate) index: usize,
    pub(crate) generation: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}.{}", self.index, self.generation)
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    generation: u32,
    owner: Owner,
    // `None` while the drain loop polls the task: the future is moved out of the slab so that no
    // borrow of the slab is held while user code runs (user code may spawn, wake or cancel).
    future: Option<LocalFuture>,
    // Created once at spawn and handed out by reference on every poll: waking never allocates.
    waker: Waker,
    notify: Arc<TaskWaker>,
}

/// A single-threaded executor driven by its host.
///
/// Nothing here blocks: the host calls into the module, the module completes whatever the call
/// answered (see [`Registry::complete`](crate::Registry::complete)), and then calls
/// [`run_until_stalled`](Executor::run_until_stalled) before returning to the host.
///
/// The executor is `!Send`: a wasm module has one thread, and the tasks it runs are `!Send`.
pub struct Executor {
    tasks: RefCell<Slab<Task>>,
    // Kept beside the slab so that `cancel(owner)` costs O(log n + k) instead of a scan of every
    // task: with thousands of paused streams, a scan on every stream end would be quadratic.
    by_owner: RefCell<BTreeSet<(Owner, usize)>>,
    ready: Arc<ReadyQueue>,
    next_generation: Cell<u32>,
    running: Cell<bool>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("tasks", &self.len())
            .field("running", &self.running.get())
            .finish()
    }
}

impl Executor {
    /// Creates an executor with no tasks.
    pub fn new() -> Self {
        Executor {
            tasks: RefCell::new(Slab::new()),
            by_owner: RefCell::new(BTreeSet::new()),
            ready: Arc::new(ReadyQueue::default()),
            next_generation: Cell::new(0),
            running: Cell::new(false),
        }
    }

    /// Adds a task owned by `owner` and queues it; it is first polled by the next
    /// [`run_until_stalled`](Executor::run_until_stalled) (or by the one running now, if `spawn`
    /// is called from inside a task).
    pub fn spawn(&self, owner: Owner, future: impl Future<Output = ()> + 'static) -> TaskId {
        let generation = self.next_generation.get().wrapping_add(1);
        self.next_generation.set(generation);
        let future: LocalFuture = Box::pin(future);
        let id = {
            let mut tasks = self.tasks.borrow_mut();
            let entry = tasks.vacant_entry();
            let id = TaskId {
                index: entry.key(),
                generation,
            };
            let notify = Arc::new(TaskWaker::new(id, Arc::clone(&self.ready)));
            entry.insert(Task {
                generation,
                owner,
                future: Some(future),
                waker: Waker::from(Arc::clone(&notify)),
                notify,
            });
            id
        };
        self.by_owner.borrow_mut().insert((owner, id.index));
        self.wake(id);
        id
    }

    /// Queues the task for polling, as its waker would. Waking a finished or cancelled task does
    /// nothing.
    pub fn wake(&self, id: TaskId) {
        let waker = {
            let tasks = self.tasks.borrow();
            match tasks.get(id.index) {
                Some(task) if task.generation == id.generation => task.waker.clone(),
                _ => return,
            }
        };
        waker.wake();
    }

    /// Polls queued tasks until none is left; returns how many polls it made.
    ///
    /// Return rules:
    /// - It returns when the ready queue is empty: every task that was woken, including those woken
    ///   by the polls it made, has been polled and is now waiting on something outside the
    ///   executor (a host callback), or has finished and been freed.
    /// - Called while another `run_until_stalled` is polling (a host callback that arrived while a
    ///   task was running), it returns 0 at once without polling anything. The running call keeps
    ///   draining, so whatever the nested call would have polled is polled before the outer call
    ///   returns.
    /// - A return of 0 from the outermost call means nothing was queued.
    ///
    /// A task that wakes itself on every poll keeps this loop going; tasks must wait on the host.
    pub fn run_until_stalled(&self) -> usize {
        self.run_until_stalled_with(|_| {})
    }

    /// Like [`run_until_stalled`](Executor::run_until_stalled), calling `enter(owner)` before
    /// each poll; the SDK uses it to make the task's stream the host's effective context.
    pub fn run_until_stalled_with(&self, mut enter: impl FnMut(Owner)) -> usize {
        if self.running.replace(true) {
            return 0;
        }
        let _running = ClearOnDrop(&self.running);
        let mut polls = 0;
        while let Some(id) = self.ready.pop() {
            // A queued id may be stale: its task finished or was cancelled after the wake.
            let Some((owner, mut future, waker)) = self.take_for_poll(id) else {
                continue;
            };
            enter(owner);
            let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
            polls += 1;
            match poll {
                // Finished: free the slot, then drop the future outside any borrow, since its
                // destructors are user code.
                Poll::Ready(()) => {
                    self.remove(id);
                    drop(future);
                }
                // Waiting: put the future back, unless the task was cancelled while it ran
                // (its stream ended inside the poll); then the future is dropped here.
                Poll::Pending => {
                    if let Some(cancelled) = self.put_back(id, future) {
                        drop(cancelled);
                    }
                }
            }
        }
        polls
    }

    /// Drops every task of `owner` and returns how many there were. A task being polled right
    /// now is dropped as soon as its poll returns. Replies the dropped futures were waiting for
    /// are forgotten (see [`Pending`](crate::Pending)).
    pub fn cancel(&self, owner: Owner) -> usize {
        // One task per owner is the common case: no allocation unless there is a task, and
        // none at all for an owner without tasks (the second cancel of a stream).
        let mut removed: Vec<Task> = Vec::new();
        loop {
            let next = self
                .by_owner
                .borrow()
                .range((owner, 0)..=(owner, usize::MAX))
                .next()
                .copied();
            let Some(key) = next else {
                break;
            };
            self.by_owner.borrow_mut().remove(&key);
            if let Some(task) = self.tasks.borrow_mut().try_remove(key.1) {
                removed.push(task);
            }
        }
        let count = removed.len();
        // Futures are dropped after the borrows end: their destructors may call back in here.
        drop(removed);
        count
    }

    /// Whether the task exists (it has neither finished nor been cancelled).
    pub fn contains(&self, id: TaskId) -> bool {
        matches!(self.tasks.borrow().get(id.index), Some(task) if task.generation == id.generation)
    }

    /// The owner of a live task.
    pub fn owner_of(&self, id: TaskId) -> Option<Owner> {
        match self.tasks.borrow().get(id.index) {
            Some(task) if task.generation == id.generation => Some(task.owner),
            _ => None,
        }
    }

    /// How many tasks `owner` has.
    pub fn tasks_of(&self, owner: Owner) -> usize {
        self.by_owner
            .borrow()
            .range((owner, 0)..=(owner, usize::MAX))
            .count()
    }

    /// How many tasks exist.
    #[inline]
    pub fn len(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Whether no task exists.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_for_poll(&self, id: TaskId) -> Option<(Owner, LocalFuture, Waker)> {
        let mut tasks = self.tasks.borrow_mut();
        let task = tasks.get_mut(id.index)?;
        if task.generation != id.generation {
            return None;
        }
        let future = task.future.take()?;
        // Cleared before the poll, so a wake during the poll queues the task again.
        task.notify.clear_queued();
        Some((task.owner, future, task.waker.clone()))
    }

    fn put_back(&self, id: TaskId, future: LocalFuture) -> Option<LocalFuture> {
        let mut tasks = self.tasks.borrow_mut();
        match tasks.get_mut(id.index) {
            Some(task) if task.generation == id.generation => {
                task.future = Some(future);
                None
            }
            _ => Some(future),
        }
    }

    fn remove(&self, id: TaskId) {
        let removed = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get(id.index) {
                Some(task) if task.generation == id.generation => Some(tasks.remove(id.index)),
                _ => None,
            }
        };
        if let Some(task) = removed {
            self.by_owner.borrow_mut().remove(&(task.owner, id.index));
        }
    }
}

struct ClearOnDrop<'a>(&'a Cell<bool>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
