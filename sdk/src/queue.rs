//! Shared queues: messages between plugin instances (workers, VMs) of one proxy, read as an
//! async stream that the proxy's `on_queue_ready` feeds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::host::{Host as _, HostError, HostStatus, host_of};
use crate::runtime::{Extension, Runtime};

/// The tasks waiting for messages, per queue.
#[derive(Default)]
pub(crate) struct QueueWaiters {
    waiting: RefCell<HashMap<u32, Vec<Waker>>>,
}

impl Extension for QueueWaiters {
    fn installed() {
        #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
        crate::exports::FEATURES.with(|features| features.queue_ready.set(Some(on_ready)));
    }
}

/// `proxy_on_queue_ready`: shared queue `queue` has messages.
pub(crate) fn on_ready(runtime: &Rc<Runtime>, root_id: u32, queue: u32) {
    runtime.deliver(root_id, |runtime| {
        runtime.extension::<QueueWaiters>().ready(queue);
    });
}

impl QueueWaiters {
    fn wait(&self, queue: u32, waker: &Waker) {
        let mut waiting = self.waiting.borrow_mut();
        let wakers = waiting.entry(queue).or_default();
        if !wakers.iter().any(|known| known.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// The proxy says `queue` has messages: wake whoever reads it.
    pub(crate) fn ready(&self, queue: u32) {
        let wakers = self.waiting.borrow_mut().remove(&queue).unwrap_or_default();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// A shared queue of the proxy (`proxy_*_shared_queue`).
///
/// The VM that [`register`](SharedQueue::register)s a queue receives its messages (the proxy
/// tells that VM's root context when some arrive); any VM may
/// [`resolve`](SharedQueue::resolve) it and [`enqueue`](SharedQueue::enqueue). The usual use:
/// request hooks enqueue events; a [background task](crate::BackgroundTask) reads them with
/// [`messages`](SharedQueue::messages) and batches them out.
///
/// ```
/// use proxy_async::SharedQueue;
/// use futures::StreamExt;
///
/// async fn forward_events() {
///     let Ok(queue) = SharedQueue::register("events") else { return };
///     let mut messages = queue.messages();
///     while let Some(event) = messages.next().await {
///         // ... send `event` somewhere
///         # let _ = event;
///     }
/// }
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SharedQueue {
    id: u32,
}

fn host() -> Result<Rc<Runtime>, HostError> {
    Runtime::current().ok_or(HostError {
        call: "shared queue",
        status: HostStatus::InternalFailure,
    })
}

impl SharedQueue {
    /// Creates this VM's queue `name` (or finds it, when already registered).
    pub fn register(name: &str) -> Result<SharedQueue, HostError> {
        let id = host_of(&*host()?).register_queue(name)?;
        Ok(SharedQueue { id })
    }

    /// The queue `name` registered by the VM `vm_id` (empty: this plugin's VM); `NotFound`
    /// while nobody registered it.
    pub fn resolve(vm_id: &str, name: &str) -> Result<SharedQueue, HostError> {
        let id = host_of(&*host()?).resolve_queue(vm_id, name)?;
        Ok(SharedQueue { id })
    }

    /// The proxy's id of the queue.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Adds a message at the end.
    pub fn enqueue(&self, message: impl AsRef<[u8]>) -> Result<(), HostError> {
        host_of(&*host()?).enqueue(self.id, message.as_ref())
    }

    /// Takes the oldest message, if any, without waiting.
    pub fn dequeue(&self) -> Result<Option<Vec<u8>>, HostError> {
        host_of(&*host()?).dequeue(self.id)
    }

    /// The messages as they arrive: an async [`Stream`](futures::Stream) that takes what is
    /// queued, then waits for the proxy's `on_queue_ready`. It ends only if the queue goes
    /// away (an error reading it, logged).
    pub fn messages(&self) -> QueueMessages {
        QueueMessages {
            queue: *self,
            ended: false,
        }
    }
}

/// The stream of a queue's messages; see [`SharedQueue::messages`].
pub struct QueueMessages {
    queue: SharedQueue,
    ended: bool,
}

impl fmt::Debug for QueueMessages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMessages")
            .field("queue", &self.queue.id)
            .finish()
    }
}

impl futures::Stream for QueueMessages {
    type Item = Vec<u8>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let Some(runtime) = Runtime::current() else {
            this.ended = true;
            return Poll::Ready(None);
        };
        match host_of(&runtime).dequeue(this.queue.id) {
            Ok(Some(message)) => Poll::Ready(Some(message)),
            Ok(None) => {
                runtime
                    .extension::<QueueWaiters>()
                    .wait(this.queue.id, cx.waker());
                Poll::Pending
            }
            Err(error) => {
                log::warn!("reading shared queue {}: {error}", this.queue.id);
                this.ended = true;
                Poll::Ready(None)
            }
        }
    }
}
