//! Time on the root context's tick: `sleep`, `timeout` and tick functions.
//!
//! proxy-wasm has no timer per task, only one periodic `proxy_on_tick` per root context. The
//! first timer a plugin asks for starts the tick (at [`Settings::tick_period`]); on each tick
//! the SDK wakes every sleep whose deadline has passed and runs every tick function whose
//! period has elapsed, reading the proxy's clock. A timer fires on the first tick at or after
//! its deadline, so it is late by less than one tick period, never early.
//!
//! [`Settings::tick_period`]: crate::Settings::tick_period

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::host::AwaitedSleep;
use crate::runtime::Runtime;
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// A function the plugin runs periodically on its root context, outside any request (Higress's
/// `RegisterTickFunc`): refresh a cache, flush counters. Returned from
/// [`Root::tick_functions`](crate::Root::tick_functions).
pub struct TickFunction {
    period: Duration,
    run: Box<dyn FnMut()>,
}

impl TickFunction {
    /// Runs `run` about every `period`: on the first tick at or after `period` since its last
    /// run (the first run is one `period` after the plugin was configured).
    pub fn new(period: Duration, run: impl FnMut() + 'static) -> Self {
        TickFunction {
            period,
            run: Box::new(run),
        }
    }
}

impl fmt::Debug for TickFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TickFunction")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

struct Scheduled {
    period_nanos: u64,
    last_nanos: u64,
    run: Box<dyn FnMut()>,
}

/// A plugin instance's timers: pending sleeps by deadline, and its tick functions.
#[derive(Default)]
pub(crate) struct Timers {
    // Keyed by (deadline, serial): deadlines may repeat; the serial keeps entries apart.
    sleeps: RefCell<BTreeMap<(u64, u64), Option<Waker>>>,
    next_serial: Cell<u64>,
    functions: RefCell<Vec<Scheduled>>,
    ticking: Cell<bool>,
}

impl Timers {
    /// Sleeps waiting now (for tests: a dropped sleep leaves none).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn pending(&self) -> usize {
        self.sleeps.borrow().len()
    }

    fn insert(&self, deadline: u64) -> (u64, u64) {
        let serial = self.next_serial.get();
        self.next_serial.set(serial.wrapping_add(1));
        let key = (deadline, serial);
        self.sleeps.borrow_mut().insert(key, None);
        key
    }

    fn remove(&self, key: (u64, u64)) {
        let removed = self.sleeps.borrow_mut().remove(&key);
        drop(removed);
    }

    /// Whether the entry is still waiting; stores the waker of this poll if so.
    fn wait(&self, key: (u64, u64), waker: &Waker) -> bool {
        match self.sleeps.borrow_mut().get_mut(&key) {
            Some(slot) => {
                match slot {
                    Some(known) if known.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn set_functions(&self, functions: Vec<TickFunction>, now_nanos: u64) {
        *self.functions.borrow_mut() = functions
            .into_iter()
            .map(|function| Scheduled {
                period_nanos: nanos(function.period),
                last_nanos: now_nanos,
                run: function.run,
            })
            .collect();
    }

    pub(crate) fn has_functions(&self) -> bool {
        !self.functions.borrow().is_empty()
    }

    /// Whether the tick runs.
    pub(crate) fn is_ticking(&self) -> bool {
        self.ticking.get()
    }

    /// Marks the tick as started; false if it already was.
    pub(crate) fn start_ticking(&self) -> bool {
        !self.ticking.replace(true)
    }

    /// Wakes the sleeps due at `now`; returns how many.
    pub(crate) fn fire_due(&self, now_nanos: u64) -> usize {
        let due: Vec<Option<Waker>> = {
            let mut sleeps = self.sleeps.borrow_mut();
            let later = sleeps.split_off(&(now_nanos.saturating_add(1), 0));
            let due = std::mem::replace(&mut *sleeps, later);
            due.into_values().collect()
        };
        let count = due.len();
        // Woken after the borrow ends: a wake may run anything.
        for waker in due.into_iter().flatten() {
            waker.wake();
        }
        count
    }

    /// Runs the tick functions whose period has elapsed at `now`.
    pub(crate) fn run_functions(&self, now_nanos: u64) {
        // Taken out while they run, so that a function may read the timers (or sleep-spawn)
        // without a double borrow.
        let mut functions = std::mem::take(&mut *self.functions.borrow_mut());
        for function in &mut functions {
            if now_nanos.saturating_sub(function.last_nanos) >= function.period_nanos {
                function.last_nanos = now_nanos;
                (function.run)();
            }
        }
        let mut slot = self.functions.borrow_mut();
        // Functions set while these ran (a reconfiguration) win.
        if slot.is_empty() {
            *slot = functions;
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The proxy's clock (`proxy_get_current_time_nanoseconds`): the time Envoy, and the testing
/// API's controllable clock, agree on. Outside a plugin, the system's clock.
pub fn now() -> std::time::SystemTime {
    match Runtime::current() {
        Some(runtime) => std::time::UNIX_EPOCH + Duration::from_nanos(runtime.now_nanos()),
        None => std::time::SystemTime::now(),
    }
}

/// Waits for `duration` on the proxy's clock. See [`Settings::tick_period`] for its accuracy:
/// it ends on the first tick at or after the deadline.
///
/// Outside a plugin (no host to ask for the time) it ends at once.
///
/// ```
/// # use std::time::Duration;
/// # async fn retry() -> Result<(), proxy_async::Error> {
/// proxy_async::sleep(Duration::from_millis(200)).await;
/// # Ok(())
/// # }
/// ```
///
/// [`Settings::tick_period`]: crate::Settings::tick_period
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        state: SleepState::Unstarted,
    }
}

/// The future of [`sleep`].
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    duration: Duration,
    state: SleepState,
}

enum SleepState {
    Unstarted,
    Waiting {
        runtime: Rc<Runtime>,
        key: (u64, u64),
    },
    // On a host that keeps time itself (a component host).
    Awaited(AwaitedSleep),
    Done,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("duration", &self.duration)
            .field(
                "waiting",
                &matches!(
                    self.state,
                    SleepState::Waiting { .. } | SleepState::Awaited(_)
                ),
            )
            .finish()
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let SleepState::Unstarted = this.state {
            // The deadline is taken at the first poll, on the proxy's clock.
            let Some(runtime) = Runtime::current() else {
                log::debug!("sleep outside a plugin callback ends at once");
                this.state = SleepState::Done;
                return Poll::Ready(());
            };
            if this.duration.is_zero() {
                this.state = SleepState::Done;
                return Poll::Ready(());
            }
            if let Some(sleep) = runtime.host.sleep_awaited(this.duration) {
                this.state = SleepState::Awaited(sleep);
                return Pin::new(this).poll(cx);
            }
            let deadline = runtime.now_nanos().saturating_add(nanos(this.duration));
            let key = runtime.timers().insert(deadline);
            runtime.ensure_ticking();
            this.state = SleepState::Waiting { runtime, key };
        }
        match &this.state {
            SleepState::Waiting { runtime, key } => {
                if runtime.timers().wait(*key, cx.waker()) {
                    Poll::Pending
                } else {
                    this.state = SleepState::Done;
                    Poll::Ready(())
                }
            }
            SleepState::Awaited(_) => {
                let SleepState::Awaited(sleep) = &mut this.state else {
                    return Poll::Ready(());
                };
                let poll = sleep.as_mut().poll(cx);
                if poll.is_ready() {
                    this.state = SleepState::Done;
                }
                poll
            }
            SleepState::Done | SleepState::Unstarted => Poll::Ready(()),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let SleepState::Waiting { runtime, key } = &self.state {
            runtime.timers().remove(*key);
        }
    }
}

/// [`timeout`] ran out before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(pub Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {} ms", self.0.as_millis())
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` for at most `duration` (on the tick, as [`sleep`]); when time runs out the
/// future is dropped (its calls are forgotten) and the result is [`Elapsed`].
///
/// ```
/// # use std::time::Duration;
/// # use proxy_async::{Error, HttpClient};
/// # async fn lookup() -> Result<(), Error> {
/// let answer = proxy_async::timeout(
///     Duration::from_secs(2),
///     HttpClient::new("slow").get("/").send(),
/// )
/// .await??;
/// # Ok(())
/// # }
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
        duration,
    }
}

/// The future of [`timeout`].
#[pin_project::pin_project]
#[must_use = "a timeout does nothing unless awaited"]
#[derive(Debug)]
pub struct Timeout<F> {
    #[pin]
    future: F,
    sleep: Sleep,
    duration: Duration,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(*this.duration))),
            Poll::Pending => Poll::Pending,
        }
    }
}
