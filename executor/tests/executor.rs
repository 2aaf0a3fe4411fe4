//! Behaviour of the executor and the token registry, asserted as exact event sequences.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use proxy_async_executor::{Completion, DuplicateToken, Executor, Owner, Registry};

/// Records what happened, in order, so that a test can assert the whole sequence.
#[derive(Clone, Default)]
struct Trace(Rc<RefCell<Vec<String>>>);

impl Trace {
    fn push(&self, event: impl Into<String>) {
        self.0.borrow_mut().push(event.into());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

/// Pushes `"<name> dropped"` to the trace when dropped; held by a future to observe its drop.
struct DropProbe(Trace, &'static str);

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.push(format!("{} dropped", self.1));
    }
}

/// Returns `Pending` once, so a task can be made to wait for exactly one wake.
fn pend_once() -> impl Future<Output = ()> {
    let mut pended = false;
    poll_fn(move |cx| {
        if pended {
            Poll::Ready(())
        } else {
            pended = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

#[test]
fn spawn_is_polled_by_the_next_run_and_freed_when_ready() {
    let executor = Executor::new();
    let trace = Trace::default();
    let t = trace.clone();
    let id = executor.spawn(Owner(1), async move { t.push("ran") });
    trace.push("spawned");
    assert_eq!(executor.run_until_stalled(), 1);
    assert_eq!(trace.take(), ["spawned", "ran"]);
    assert!(!executor.contains(id));
    assert!(executor.is_empty());
    // Nothing queued: a second run polls nothing.
    assert_eq!(executor.run_until_stalled(), 0);
}

#[test]
fn registry_reply_wakes_the_waiting_task() {
    let executor = Executor::new();
    let calls: Registry<u16> = Registry::new();
    let trace = Trace::default();
    let (t, reply) = (trace.clone(), calls.register(41).unwrap());
    executor.spawn(Owner(7), async move {
        t.push("dispatched call 41");
        let status = reply.await;
        t.push(format!("got {status}"));
    });

    assert_eq!(executor.run_until_stalled(), 1);
    trace.push("back in host");
    assert!(calls.is_waiting(41));
    assert_eq!(calls.complete(41, 200), Completion::Delivered);
    trace.push("host answered 41");
    assert_eq!(executor.run_until_stalled(), 1);

    assert_eq!(
        trace.take(),
        [
            "dispatched call 41",
            "back in host",
            "host answered 41",
            "got 200"
        ]
    );
    assert!(calls.is_empty());
    assert!(executor.is_empty());
}

#[test]
fn reply_that_arrives_before_the_first_poll_is_kept() {
    let executor = Executor::new();
    let calls: Registry<&str> = Registry::new();
    let reply = calls.register(3).unwrap();
    assert_eq!(calls.complete(3, "early"), Completion::Delivered);
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    executor.spawn(Owner(1), async move { *g.borrow_mut() = Some(reply.await) });
    executor.run_until_stalled();
    assert_eq!(*got.borrow(), Some("early"));
}

#[test]
fn many_wakes_between_polls_queue_the_task_once() {
    let executor = Executor::new();
    let polls = Rc::new(Cell::new(0));
    let waker_slot = Rc::new(RefCell::new(None));
    let (p, w) = (polls.clone(), waker_slot.clone());
    executor.spawn(
        Owner(1),
        poll_fn(move |cx| {
            p.set(p.get() + 1);
            *w.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        }),
    );
    assert_eq!(executor.run_until_stalled(), 1);
    let waker = waker_slot.borrow_mut().take().unwrap();
    waker.wake_by_ref();
    waker.wake_by_ref();
    waker.wake();
    assert_eq!(executor.run_until_stalled(), 1);
    assert_eq!(polls.get(), 2);
}

#[test]
fn cancel_drops_every_task_of_one_owner_and_forgets_their_tokens() {
    let executor = Executor::new();
    let calls: Registry<u16> = Registry::new();
    let trace = Trace::default();
    for (owner, token, name) in [(1, 10, "a"), (1, 11, "b"), (2, 20, "c")] {
        let reply = calls.register(token).unwrap();
        let probe = DropProbe(trace.clone(), name);
        executor.spawn(Owner(owner), async move {
            let _probe = probe;
            reply.await;
        });
    }
    executor.run_until_stalled();
    assert_eq!(executor.tasks_of(Owner(1)), 2);

    assert_eq!(executor.cancel(Owner(1)), 2);
    assert_eq!(trace.take(), ["a dropped", "b dropped"]);
    assert_eq!(executor.tasks_of(Owner(1)), 0);
    assert_eq!(executor.tasks_of(Owner(2)), 1);
    // The dropped futures forgot their tokens: late replies are ignored, not delivered.
    assert_eq!(calls.len(), 1);
    assert_eq!(calls.complete(10, 200), Completion::Ignored);
    assert_eq!(calls.complete(11, 200), Completion::Ignored);
    // The other owner's task is untouched and still completes.
    assert_eq!(calls.complete(20, 200), Completion::Delivered);
    assert_eq!(executor.run_until_stalled(), 1);
    assert_eq!(trace.take(), ["c dropped"]);
    assert!(executor.is_empty());
    assert_eq!(executor.cancel(Owner(1)), 0);
}

#[test]
fn a_task_that_cancels_its_own_owner_is_dropped_after_its_poll() {
    let executor = Rc::new(Executor::new());
    let trace = Trace::default();
    let (t, ex) = (trace.clone(), executor.clone());
    let probe = DropProbe(trace.clone(), "self");
    executor.spawn(Owner(5), async move {
        let _probe = probe;
        t.push("cancelling own owner");
        // The stream ended while its own task ran (a host callback during the poll).
        t.push(format!("cancelled {}", ex.cancel(Owner(5))));
        pend_once().await;
        t.push("never resumed");
    });
    assert_eq!(executor.run_until_stalled(), 1);
    assert_eq!(
        trace.take(),
        ["cancelling own owner", "cancelled 1", "self dropped"]
    );
    assert!(executor.is_empty());
}

#[test]
fn nested_run_returns_zero_and_the_outer_run_polls_what_it_woke() {
    let executor = Rc::new(Executor::new());
    let trace = Trace::default();
    let (t, ex) = (trace.clone(), executor.clone());
    executor.spawn(Owner(1), async move {
        let t2 = t.clone();
        ex.spawn(Owner(2), async move { t2.push("spawned task ran") });
        // A host callback arriving while this task runs drains the executor re-entrantly.
        t.push(format!("nested run polled {}", ex.run_until_stalled()));
    });
    assert_eq!(executor.run_until_stalled(), 2);
    assert_eq!(trace.take(), ["nested run polled 0", "spawned task ran"]);
}

#[test]
fn host_callback_completing_a_call_during_a_poll_does_not_double_borrow() {
    let executor = Rc::new(Executor::new());
    let calls: Registry<&str> = Registry::new();
    let trace = Trace::default();

    let waiting = calls.register(1).unwrap();
    let t = trace.clone();
    executor.spawn(Owner(1), async move {
        t.push(format!("waiter got {}", waiting.await));
    });
    executor.run_until_stalled();

    let (t, c, ex) = (trace.clone(), calls.clone(), executor.clone());
    let own = calls.register(2).unwrap();
    executor.spawn(Owner(2), async move {
        // While this task is polled, the host delivers token 1 and re-enters the drain, as a
        // re-entrant host (or a nested callback) would.
        t.push(format!("{:?}", c.complete(1, "one")));
        t.push(format!("nested run polled {}", ex.run_until_stalled()));
        t.push(format!("{:?}", c.complete(2, "two")));
        t.push(format!("own reply {}", own.await));
    });
    assert_eq!(executor.run_until_stalled(), 2);
    assert_eq!(
        trace.take(),
        [
            "Delivered",
            "nested run polled 0",
            "Delivered",
            "own reply two",
            "waiter got one",
        ]
    );
    assert!(calls.is_empty());
    assert!(executor.is_empty());
}

#[test]
fn duplicate_token_is_an_error_and_unknown_token_is_ignored() {
    let calls: Registry<()> = Registry::new();
    let first = calls.register(9).unwrap();
    assert_eq!(calls.register(9).unwrap_err(), DuplicateToken(9));
    assert_eq!(
        DuplicateToken(9).to_string(),
        "token 9 is already pending: the host returned the same token for two calls"
    );
    assert_eq!(calls.complete(1234, ()), Completion::Ignored);
    assert_eq!(calls.complete(9, ()), Completion::Delivered);
    assert_eq!(calls.complete(9, ()), Completion::Ignored);
    drop(first);
    // Once its future is gone, the token can be used again.
    assert!(calls.register(9).is_ok());
}

#[test]
fn dropping_a_pending_reply_forgets_its_token() {
    let calls: Registry<String> = Registry::new();
    let pending = calls.register(5).unwrap();
    assert_eq!(pending.token(), 5);
    assert!(calls.is_waiting(5));
    drop(pending);
    assert!(!calls.is_waiting(5));
    assert!(calls.is_empty());
    assert_eq!(calls.complete(5, "late".into()), Completion::Ignored);
}

#[test]
fn stale_task_ids_do_not_reach_a_task_that_reused_the_slot() {
    let executor = Executor::new();
    let old = executor.spawn(Owner(1), async {});
    executor.run_until_stalled();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let new = executor.spawn(
        Owner(1),
        poll_fn(move |_| {
            p.set(p.get() + 1);
            Poll::<()>::Pending
        }),
    );
    executor.run_until_stalled();
    assert_ne!(old, new);
    assert!(!executor.contains(old));
    executor.wake(old);
    assert_eq!(executor.run_until_stalled(), 0);
    executor.wake(new);
    assert_eq!(executor.run_until_stalled(), 1);
    assert_eq!(polls.get(), 2);
    assert_eq!(executor.owner_of(new), Some(Owner(1)));
    assert_eq!(executor.owner_of(old), None);
}

#[test]
fn enter_is_told_the_owner_before_each_poll() {
    let executor = Executor::new();
    let trace = Trace::default();
    for owner in [3, 4] {
        let t = trace.clone();
        executor.spawn(Owner(owner), async move {
            t.push(format!("poll {owner}"));
            pend_once().await;
        });
    }
    let t = trace.clone();
    let polls = executor.run_until_stalled_with(|owner| t.push(format!("enter {}", owner.0)));
    assert_eq!(polls, 4);
    assert_eq!(
        trace.take(),
        [
            "enter 3", "poll 3", "enter 4", "poll 4", "enter 3", "enter 4"
        ]
    );
}

#[test]
fn a_waker_moved_to_another_thread_still_queues_its_task() {
    let executor = Executor::new();
    let waker_slot = Rc::new(RefCell::new(None));
    let done = Rc::new(Cell::new(false));
    let (w, d) = (waker_slot.clone(), done.clone());
    let mut first = true;
    executor.spawn(
        Owner(1),
        poll_fn(move |cx| {
            if first {
                first = false;
                *w.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                d.set(true);
                Poll::Ready(())
            }
        }),
    );
    executor.run_until_stalled();
    let waker = waker_slot.borrow_mut().take().unwrap();
    std::thread::spawn(move || waker.wake()).join().unwrap();
    assert_eq!(executor.run_until_stalled(), 1);
    assert!(done.get());
}

#[test]
fn futures_join_runs_two_calls_at_once_in_one_task() {
    let executor = Executor::new();
    let calls: Registry<&str> = Registry::new();
    let (a, b) = (calls.register(1).unwrap(), calls.register(2).unwrap());
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    executor.spawn(Owner(1), async move {
        let (x, y) = futures::join!(a, b);
        g.borrow_mut().extend([x, y]);
    });
    executor.run_until_stalled();
    // Answered in the opposite order of dispatch.
    calls.complete(2, "second");
    assert_eq!(executor.run_until_stalled(), 1);
    assert!(got.borrow().is_empty());
    calls.complete(1, "first");
    assert_eq!(executor.run_until_stalled(), 1);
    assert_eq!(*got.borrow(), ["first", "second"]);
}

#[test]
fn a_delivered_reply_hands_back_the_waiter_for_its_owner_to_poll() {
    use std::pin::pin;
    use std::task::Context;

    use proxy_async_executor::context_waker;

    let calls: Registry<u16> = Registry::new();
    let mut reply = pin!(calls.register(5).unwrap());
    let waker = context_waker::waker(12);
    assert!(
        reply
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );

    // The waker comes back unwoken, naming the stream that awaits: nothing was queued.
    let waiter = calls.deliver(5, 204).expect("a future waits for token 5");
    assert_eq!(context_waker::context_of(&waiter), Some(12));
    assert_eq!(context_waker::take_woken(), None);
    assert_eq!(
        reply.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(204)
    );

    // A second reply, or one for a token nobody waits for, hands back nothing.
    assert!(calls.deliver(5, 500).is_none());
    assert!(calls.deliver(6, 500).is_none());
    // Only this module's context wakers name a context.
    assert_eq!(context_waker::context_of(std::task::Waker::noop()), None);
}
