//! Wakers: one per task, created at spawn; a wake pushes the task's id onto the ready queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Wake;

use crate::executor::TaskId;

// `Waker` must be `Send + Sync`, so the queue behind it is a `Mutex` and the flag an atomic.
// On wasm32 without threads both compile to plain memory operations; natively they make a waker
// sent to another thread sound (its wake is queued and seen by the next drain).
#[derive(Default)]
pub(crate) struct ReadyQueue {
    ids: Mutex<VecDeque<TaskId>>,
}

impl ReadyQueue {
    fn push(&self, id: TaskId) {
        // No code that can panic runs under this lock, so it is never poisoned; taking the
        // inner value anyway keeps this path free of panics.
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(id);
    }

    pub(crate) fn pop(&self) -> Option<TaskId> {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

pub(crate) struct TaskWaker {
    id: TaskId,
    ready: Arc<ReadyQueue>,
    // True from a wake until the drain loop takes the task for polling, so that many wakes
    // between two polls queue the task once.
    queued: AtomicBool,
}

impl TaskWaker {
    pub(crate) fn new(id: TaskId, ready: Arc<ReadyQueue>) -> Self {
        TaskWaker {
            id,
            ready,
            queued: AtomicBool::new(false),
        }
    }

    pub(crate) fn clear_queued(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}
