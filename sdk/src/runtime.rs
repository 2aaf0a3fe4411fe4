//! The stream driver: turns host callbacks into hook futures, and hook results into exactly one
//! of continue, resume or local reply.
//!
//! Which hook runs when, and what the host is owed, is the ABI's [`StreamGate`]: this module
//! only carries its decisions out. Life of a stream (`ctx` is its proxy-wasm context id):
//! 1. `create_stream`: the plugin's per-stream value moves into the stream's cell (see
//!    [`stream_task`](crate::stream_task)); no task, no future yet.
//! 2. A hook callback (`on_hook`) asks the gate; a hook to run has its future made in place in
//!    the cell and polled at once. If it finished in that poll, its outcome comes straight back
//!    and the gate's answer is returned to the host (`Continue`, and no resume is ever issued);
//!    otherwise the hook awaits and the callback answers `Pause`.
//! 3. A later callback (a call response) wakes the hook (its waker names the stream's context:
//!    `context_waker`); the drain polls it, and when the paused hook finishes, `apply_paused`
//!    carries out the gate's decision at once: one resume of the paused direction, or one local
//!    reply, never inside the callback that paused.
//! 4. `on_done` ends the gate and drops a running hook's future (and with it every call future
//!    of the stream: late replies are then ignored); `on_delete` forgets the stream, and its
//!    cell drops the plugin value.

use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use proxy_async_abi::gate::{
    Arrival, BodyWindow, Exchange, Finish, GateSettings, HookRun, HookState, Outcome, PhaseSet,
    Refusal, ReplyFate, StreamGate,
};
use proxy_async_executor::{Executor, IdMap, Owner, Registry, context_waker};

use crate::error::Error;
use crate::headers::Headers;
use crate::host::{Action, BufferType, Direction, HostHandle, MapType};
use crate::plugin::{Flow, LocalReply};
use crate::stream_task::{self, HookOutcome, MakeHook, StreamTask};
use crate::timer::{TickFunction, Timers};

pub(crate) use proxy_async_abi::Phase;
pub(crate) use proxy_async_abi::gate::Event;
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// A call's reply, copied out of the host inside `on_http_call_response` (the only time the
/// host lets it be read). `None`: the call failed without a response (timeout, reset).
pub(crate) type CallReply = Option<ReplyParts>;

pub(crate) struct ReplyParts {
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    // `None` for none (see `Headers::boxed_unless_empty`).
    pub(crate) trailers: Option<Box<Headers>>,
}

/// What a stream's task and the driver share. Only `Cell`s and short `RefCell` borrows: the
/// driver and the task never hold a borrow across a poll or a hostcall.
pub(crate) struct StreamShared {
    pub(crate) context_id: u32,
    pub(crate) host: HostHandle,
    // Reached only by `with_gate`, whose steps are the gate's own methods: they make no
    // hostcall and run no plugin code, so no step starts inside another, and no borrow flag is
    // needed in every stream.
    gate: UnsafeCell<StreamGate>,
}

impl StreamShared {
    /// A stream without a cell: the component driver runs each hook itself
    /// and only needs what [`Message`](crate::Message) reads.
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_env = "p2")),
        allow(
            dead_code,
            reason = "only the component driver makes standalone streams"
        )
    )]
    pub(crate) fn standalone(context_id: u32, host: HostHandle) -> StreamShared {
        StreamShared::new(context_id, host)
    }

    /// A stream with nothing run yet.
    fn new(context_id: u32, host: HostHandle) -> StreamShared {
        StreamShared {
            context_id,
            host,
            gate: UnsafeCell::new(StreamGate::new()),
        }
    }

    /// Runs one step of the stream's gate: `step` only calls the gate's methods (no hostcall,
    /// no plugin code, no other step).
    #[inline]
    pub(crate) fn with_gate<R>(&self, step: impl FnOnce(&mut StreamGate) -> R) -> R {
        // SAFETY: `gate` is reached only here, and every caller's `step` only calls methods of
        // `StreamGate`, which are pure state changes (no hostcall, no callback into the
        // runtime, no plugin code): no other reference to the gate exists while this one does.
        // The stream is single-threaded (`Rc`, not `Send`).
        step(unsafe { &mut *self.gate.get() })
    }

    /// The plugin leaves the stream alone from now on (see `StreamGate::pass`).
    pub(crate) fn pass(&self) {
        self.with_gate(|gate| gate.pass());
    }

    /// Whether the plugin left the stream alone ([`pass`](StreamShared::pass)).
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_env = "p2")),
        allow(
            dead_code,
            reason = "the gate answers a passed stream's callbacks itself"
        )
    )]
    pub(crate) fn is_passed(&self) -> bool {
        self.with_gate(|gate| gate.exchange()) == Exchange::Passed
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.with_gate(|gate| gate.exchange()) == Exchange::Ended
    }

    pub(crate) fn map(&self, phase: Phase) -> MapType {
        phase.direction().headers()
    }

    pub(crate) fn trailer_map(&self, phase: Phase) -> MapType {
        phase.direction().trailers()
    }

    pub(crate) fn buffer(&self, phase: Phase) -> BufferType {
        phase.direction().body()
    }

    /// Where the running chunk of `phase`'s direction is in the proxy's body buffer.
    pub(crate) fn window(&self, phase: Phase) -> BodyWindow {
        self.with_gate(|gate| gate.window(phase.direction()))
    }

    /// The running chunk now has `len` bytes (a hook changed it).
    pub(crate) fn resize_chunk(&self, phase: Phase, len: usize) {
        self.with_gate(|gate| gate.resize_chunk(phase.direction(), len));
    }
}

/// The state a feature outside the core keeps per plugin instance (see
/// [`Runtime::extension`]).
pub(crate) trait Extension: Any {
    /// Runs once per plugin instance, when the plugin first uses the feature: where the
    /// feature installs the callbacks the proxy answers it with, so that a module whose plugin
    /// never uses it links none of its code.
    fn installed()
    where
        Self: Sized,
    {
    }

    /// Its calls in flight, which count as the instance's pending calls (for tests).
    #[cfg(not(target_arch = "wasm32"))]
    fn pending(&self) -> usize {
        0
    }
}

/// One plugin instance's executor, pending calls and streams.
pub(crate) struct Runtime {
    pub(crate) host: HostHandle,
    executor: Executor,
    pub(crate) calls: Registry<CallReply>,
    // The state of the features outside the core (Redis, gRPC, shared queues), one value per
    // feature type, made when the plugin first uses it.
    extensions: RefCell<Vec<Rc<dyn Extension>>>,
    streams: RefCell<IdMap<Rc<dyn StreamTask>>>,
    // Whether a task (a stream's or the executor's) is being polled: a callback that arrives
    // meanwhile (from inside a hostcall) queues its stream, the outer drain polls it.
    polling: Cell<bool>,
    // Outcomes of hooks that started inside the callback running now and finished in a drain
    // of it (another task woke them), for that callback (`run_in_callback`).
    finished_in_callback: RefCell<Vec<(u32, HookOutcome)>>,
    // The context the host applies hostcalls to; 0 when unknown.
    effective: Cell<u32>,
    // The status of the local reply for a hook's `Err` without one (the plugin type's).
    error_status: u16,
    // The root's tick period (its `Settings`).
    tick_period: Cell<Duration>,
    // What every stream's gate is told of the plugin: the root's body settings, and the hooks
    // the plugin type left at the trait's default (learnt when a default ran), which are
    // answered `Continue` without waking the stream's task.
    gate_settings: Cell<GateSettings>,
    // Phases never skipped for a default hook (see `always_run`).
    always_run: Cell<PhaseSet>,
    timers: Timers,
    // `[<plugin name>] [<plugin id>]`, with Higress's log format.
    log_prefix: RefCell<Option<String>>,
}

thread_local! {
    // The runtime of the callback running now: a plain pointer, so that entering and leaving
    // a callback costs no reference counting. It is set only by a `CallbackScope`, which
    // borrows an `Rc` of that runtime for as long as it is set (see `Runtime::current`).
    // Null outside callbacks: one word, where an `Option` would add a tag to write and read.
    static CURRENT: Cell<*const Runtime> = const { Cell::new(std::ptr::null()) };
}

/// Makes a runtime the current one for the length of a host callback, so that code inside hooks
/// (the HTTP client, the logger) reaches the host. Restores the previous one on drop.
pub(crate) struct CallbackScope<'a> {
    previous: *const Runtime,
    // Keeps the runtime's `Rc` borrowed (so alive) while the scope stands.
    _runtime: std::marker::PhantomData<&'a Rc<Runtime>>,
}

impl<'a> CallbackScope<'a> {
    #[inline]
    fn enter(runtime: &'a Rc<Runtime>, context_id: u32) -> Self {
        runtime.effective.set(context_id);
        let previous = CURRENT.with(|current| current.replace(Rc::as_ptr(runtime)));
        CallbackScope {
            previous,
            _runtime: std::marker::PhantomData,
        }
    }
}

impl Drop for CallbackScope<'_> {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
    }
}

impl Runtime {
    /// A runtime with the default [`Settings`](crate::Settings) until a root is configured
    /// (see [`apply_settings`](Runtime::apply_settings)).
    pub(crate) fn new(host: HostHandle, error_status: u16) -> Rc<Self> {
        Rc::new(Runtime {
            host,
            executor: Executor::new(),
            calls: Registry::new(),
            extensions: RefCell::new(Vec::new()),
            streams: RefCell::new(IdMap::new()),
            polling: Cell::new(false),
            finished_in_callback: RefCell::new(Vec::new()),
            effective: Cell::new(0),
            error_status,
            tick_period: Cell::new(crate::root::Settings::default().tick_period),
            gate_settings: Cell::new(GateSettings::default()),
            always_run: Cell::new(PhaseSet::EMPTY),
            timers: Timers::default(),
            log_prefix: RefCell::new(None),
        })
    }

    /// This instance's state of feature `T`, made on first use.
    pub(crate) fn extension<T: Extension + Default>(&self) -> Rc<T> {
        let known = self
            .extensions
            .borrow()
            .iter()
            .find(|extension| (&***extension as &dyn Any).is::<T>())
            .and_then(|extension| (Rc::clone(extension) as Rc<dyn Any>).downcast::<T>().ok());
        known.unwrap_or_else(|| {
            T::installed();
            let made = Rc::new(T::default());
            self.extensions
                .borrow_mut()
                .push(Rc::clone(&made) as Rc<dyn Extension>);
            made
        })
    }

    /// Runs `deliver` in the scope of `context_id`, then the tasks it woke: a callback of a
    /// feature outside the core (a Redis reply, a gRPC message, a ready queue).
    pub(crate) fn deliver(self: &Rc<Self>, context_id: u32, deliver: impl FnOnce(&Rc<Self>)) {
        let _scope = self.scope(context_id);
        deliver(self);
        self.drain();
    }

    /// Runs the streams created from now on with a root's `settings` (a configuration was
    /// accepted); a running tick takes the new period.
    pub(crate) fn apply_settings(&self, settings: crate::root::Settings) {
        let mut gate = self.gate_settings.get();
        gate.buffer_request_body = settings.buffer_request_body;
        gate.buffer_response_body = settings.buffer_response_body;
        gate.body_buffer_limit = settings.body_buffer_limit;
        self.gate_settings.set(gate);
        if self.tick_period.replace(settings.tick_period) != settings.tick_period
            && self.timers.is_ticking()
            && let Err(error) = self.host.set_tick_period(settings.tick_period)
        {
            log::warn!("changing the tick period: {error}");
        }
    }

    /// Sets the prefix of every log line (Higress's log format), or none.
    pub(crate) fn set_log_prefix(&self, prefix: Option<String>) {
        *self.log_prefix.borrow_mut() = prefix;
    }

    /// The prefix of every log line, if the plugin logs in Higress's format.
    pub(crate) fn log_prefix(&self) -> Option<std::cell::Ref<'_, String>> {
        std::cell::Ref::filter_map(self.log_prefix.borrow(), Option::as_ref).ok()
    }

    /// The `x-request-id` of the stream running now, `nil` outside one (as Higress logs it).
    pub(crate) fn request_id(&self) -> String {
        let stream = self.effective.get();
        if !self.streams.borrow().contains_key(stream) {
            return "nil".to_string();
        }
        match self
            .host
            .get_map_value(MapType::HttpRequestHeaders, "x-request-id")
        {
            Ok(Some(id)) if !id.is_empty() => String::from_utf8_lossy(&id).into_owned(),
            _ => "nil".to_string(),
        }
    }

    /// The plugin's timers (sleeps and tick functions).
    pub(crate) fn timers(&self) -> &Timers {
        &self.timers
    }

    /// The proxy's clock.
    pub(crate) fn now_nanos(&self) -> u64 {
        self.host.now_nanos()
    }

    /// Starts the root context's tick, if it is not running: the first timer needs it.
    pub(crate) fn ensure_ticking(&self) {
        if !self.timers.start_ticking() {
            return;
        }
        // The proxy applies a tick period to the root context of whichever context is
        // current, so this works from a stream's hook too.
        if let Err(error) = self.host.set_tick_period(self.tick_period.get()) {
            log::warn!("starting the tick for timers: {error}; sleeps will not end");
        }
    }

    /// Installs the plugin's tick functions (at configuration) and starts the tick for them.
    pub(crate) fn set_tick_functions(&self, functions: Vec<TickFunction>) {
        self.timers.set_functions(functions, self.host.now_nanos());
        if self.timers.has_functions() {
            self.ensure_ticking();
        }
    }

    /// Replaces the root context's background tasks with `tasks` (a new configuration): the
    /// old ones are dropped mid-await, and their calls' late replies ignored.
    pub(crate) fn start_background(
        self: &Rc<Self>,
        root_id: u32,
        tasks: Vec<crate::background::BackgroundTask>,
    ) {
        let stopped = self.executor.cancel(Owner(root_id));
        if stopped > 0 {
            log::debug!("stopped {stopped} background tasks of the previous configuration");
        }
        if tasks.is_empty() {
            return;
        }
        let _scope = self.scope(root_id);
        for task in tasks {
            self.executor.spawn(Owner(root_id), task.future);
        }
        self.drain();
    }

    /// `proxy_on_tick`: ends the sleeps that are due, runs the tick functions that are due,
    /// and polls what woke.
    pub(crate) fn on_tick(self: &Rc<Self>, root_id: u32) {
        let _scope = self.scope(root_id);
        let now = self.host.now_nanos();
        self.timers.fire_due(now);
        self.timers.run_functions(now);
        self.drain();
    }

    /// The status of the local reply for a hook's `Err` without a status of its own.
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_env = "p2")),
        allow(dead_code, reason = "only the component driver reads it from here")
    )]
    pub(crate) fn error_status(&self) -> u16 {
        self.error_status
    }

    /// Records that the plugin's hook for `phase` is the trait's default (it does nothing and
    /// continues), so later callbacks of that phase need not run it.
    pub(crate) fn note_default_hook(&self, phase: Phase) {
        if self.always_run.get().contains(phase) {
            return;
        }
        let mut settings = self.gate_settings.get();
        settings.skipped = settings.skipped.with(phase);
        self.gate_settings.set(settings);
    }

    /// Keeps `phase`'s hook running on every stream even if the plugin's is the default: a
    /// wrapper plugin needs it (Higress rules choose a stream's root in its request headers).
    pub(crate) fn always_run(&self, phase: Phase) {
        self.always_run.set(self.always_run.get().with(phase));
    }

    /// Runs `f` on the runtime of the callback running now, if one runs, without taking a
    /// reference to it.
    pub(crate) fn with_current<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
        let runtime = CURRENT.with(Cell::get);
        if runtime.is_null() {
            return None;
        }
        // SAFETY: as in `current`: the scope that set the pointer borrows an `Rc` of the
        // runtime, and stands (it is on the stack below this call) for as long as `f` runs.
        Some(f(unsafe { &*runtime }))
    }

    /// The runtime of the callback running now.
    pub(crate) fn current() -> Option<Rc<Runtime>> {
        let runtime = CURRENT.with(Cell::get);
        if runtime.is_null() {
            return None;
        }
        // SAFETY: `CURRENT` holds a non-null pointer only while the `CallbackScope` that set
        // it stands (scopes are guards on the stack, dropped in reverse order, each restoring
        // the pointer before it; none is leaked), and that scope borrows an `Rc` of the runtime
        // for its whole life, so the runtime is alive and its strong count at least 1: making
        // one more strong reference from the pointer is sound.
        unsafe {
            Rc::increment_strong_count(runtime);
            Some(Rc::from_raw(runtime))
        }
    }

    /// Starts a host callback on `context_id`.
    #[inline]
    pub(crate) fn scope(self: &Rc<Self>, context_id: u32) -> CallbackScope<'_> {
        CallbackScope::enter(self, context_id)
    }

    /// Creates the stream `context_id` with the plugin value `plugin`, whose hooks `make`
    /// makes (see [`stream_task`](crate::stream_task)).
    pub(crate) fn create_stream<P: 'static>(
        self: &Rc<Self>,
        context_id: u32,
        plugin: P,
        make: impl MakeHook<P>,
    ) {
        let shared = StreamShared::new(context_id, self.host.clone());
        let task = stream_task::new(plugin, shared, make);
        let replaced = self.streams.borrow_mut().insert(context_id, task);
        if let Some(old) = replaced {
            log::warn!("context {context_id} was created twice; dropping the first");
            old.stop();
        }
    }

    fn stream(&self, context_id: u32) -> Option<Rc<dyn StreamTask>> {
        self.streams.borrow().get(context_id).cloned()
    }

    /// Polls the hook of stream `context_id`, woken by something it awaited.
    /// A finished hook's outcome goes to whoever answers for it, by the gate's state: a paused
    /// hook's is carried out now (its callback answered `Pause` long ago).
    fn poll_stream(&self, context_id: u32) {
        let Some(task) = self.stream(context_id) else {
            return;
        };
        let Poll::Ready(outcome) = self.poll_task(&*task, None) else {
            return;
        };
        match task.shared().with_gate(|gate| gate.hook()) {
            HookState::Paused(phase) => self.apply_paused(&*task, phase, outcome),
            // It started inside the callback running now, which takes its outcome.
            HookState::Running(_) => {
                self.finished_in_callback
                    .borrow_mut()
                    .push((context_id, outcome));
            }
            // The stream ended while it ran: its outcome has nothing left to act on.
            HookState::Idle => {}
        }
    }

    /// Polls the hook of `task`, first starting `start`'s if given. `Pending` also when it was
    /// not polled: inside another poll it only queues the stream, for the drain around that
    /// poll (which hands a hook started inside a callback to it: `finished_in_callback`).
    #[inline(always)]
    fn poll_task<T: StreamTask + ?Sized>(
        &self,
        task: &T,
        start: Option<Event>,
    ) -> Poll<HookOutcome> {
        let context_id = task.shared().context_id;
        if self.polling.get() {
            if let Some(event) = start {
                task.start(event);
            }
            context_waker::wake(context_id);
            return Poll::Pending;
        }
        self.enter(context_id);
        let poll = {
            let _polling = Polling::enter(&self.polling);
            // Never dropped: a context waker's drop does nothing, and skipping it spares an
            // indirect call per poll.
            let waker = std::mem::ManuallyDrop::new(context_waker::waker(context_id));
            task.poll(start, &mut Context::from_waker(&waker))
        };
        // Its stream ended while it ran: the future goes now (outside every borrow, as its
        // drop may call back into the runtime).
        if poll.is_pending() && task.shared().is_ended() {
            task.stop();
        }
        poll
    }

    /// A stream callback: runs the phase's hook and answers the host. Inlined into the
    /// module's callback: its answer then stays out of memory.
    #[inline(always)]
    pub(crate) fn on_hook(
        self: &Rc<Self>,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        // The gate first, on a borrow of the stream: most callbacks of most plugins are
        // answered there (a phase the plugin leaves at its default), with no scope and no
        // reference taken. The gate makes no hostcall, so nothing re-enters meanwhile.
        let (arrival, task) = {
            let streams = self.streams.borrow();
            let Some(task) = streams.get(context_id) else {
                drop(streams);
                let _scope = self.scope(context_id);
                log::debug!("{} for unknown context {context_id}", phase.callback_name());
                return Action::Continue;
            };
            let settings = self.gate_settings.get();
            let arrival = task.shared().with_gate(|gate| {
                if gate.continue_at_once(&settings, phase, end_of_stream) {
                    return Arrival::Answer(Action::Continue);
                }
                match gate.start_headers(&settings, phase, size, end_of_stream) {
                    Some(run) => Arrival::Run(run),
                    None => gate.callback(&settings, Event::new(phase, size, end_of_stream)),
                }
            });
            if let Arrival::Answer(action) = arrival {
                return action;
            }
            (arrival, Rc::clone(task))
        };
        let _scope = self.scope(context_id);
        match arrival {
            Arrival::Answer(action) => action,
            Arrival::Refuse { direction, size } => {
                let limit = task
                    .shared()
                    .with_gate(|gate| gate.body_buffer_limit(&self.gate_settings.get(), direction));
                self.refuse_oversized_body(phase, direction, size, limit);
                Action::Pause
            }
            Arrival::Run(run) => task.run_in_callback(self, run),
        }
    }

    /// Runs `run`, which starts inside the callback running now, and what the gate starts
    /// after it in the same callback; returns the callback's answer.
    ///
    /// Generic over the task, which calls it (`StreamTask::run_in_callback`): the hook's poll
    /// is then inlined here, with no call through the task's vtable per step. Only the usual
    /// ends of a hook that finished in its callback are here; the rest is in
    /// `finish_in_callback`, so that this path keeps few values live.
    #[inline(always)]
    pub(crate) fn run_in_callback<T: StreamTask>(
        self: &Rc<Self>,
        task: &T,
        run: HookRun,
    ) -> Action {
        let shared = task.shared();
        let event = Event::new(run.phase, run.size, run.end_of_stream);
        let polled = self.poll_task(task, Some(event));
        self.drain();
        // What `returned` does in these cases, without the rest of it (and before the
        // outcome moves).
        match &polled {
            Poll::Ready(Ok(Flow::Continue))
                if shared.with_gate(|gate| gate.continued_in_callback()) =>
            {
                return Action::Continue;
            }
            Poll::Ready(Ok(Flow::Reply(reply))) if shared.with_gate(|gate| gate.replied()) => {
                self.enter(shared.context_id);
                self.send_reply(run.phase, reply);
                return Action::Pause;
            }
            // The hook awaits, unless another task's drain finished it: its direction is
            // resumed when it finishes.
            Poll::Pending => match self.take_finished_in_callback(shared.context_id) {
                Some(outcome) => return self.finish_in_callback(task, run, Poll::Ready(outcome)),
                None => {
                    return shared
                        .with_gate(|gate| gate.awaiting())
                        .unwrap_or(Action::Pause);
                }
            },
            _ => {}
        }
        self.finish_in_callback(task, run, polled)
    }

    /// The rest of [`run_in_callback`](Runtime::run_in_callback): a hook that awaits, failed
    /// or left work behind (queued callbacks, a body to strip), and the trailers' hook that
    /// runs after the body hook they ended, in the same callback.
    #[inline(never)]
    fn finish_in_callback<T: StreamTask>(
        self: &Rc<Self>,
        task: &T,
        run: HookRun,
        polled: Poll<HookOutcome>,
    ) -> Action {
        let shared = task.shared();
        let mut run = run;
        let mut polled = polled;
        loop {
            let outcome = match polled {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => match self.take_finished_in_callback(shared.context_id) {
                    Some(outcome) => outcome,
                    // The hook awaits: its direction is resumed when it finishes.
                    None => {
                        return shared
                            .with_gate(|gate| gate.awaiting())
                            .unwrap_or(Action::Pause);
                    }
                },
            };
            let finish = shared
                .with_gate(|gate| gate.returned(&self.gate_settings.get(), outcome_kind(&outcome)));
            self.enter(shared.context_id);
            let answer = self.carry_out(shared, run.phase, outcome, finish);
            match (finish.next, answer) {
                // The trailers' hook after the body hook they ended, in this callback.
                (Some(next), None) => {
                    run = next;
                    let event = Event::new(run.phase, run.size, run.end_of_stream);
                    polled = self.poll_task(task, Some(event));
                    self.drain();
                }
                (next, answer) => {
                    if let Some(next) = next {
                        // Its callback answered Pause already: it resumes its stream when it
                        // finishes, in this drain or a later one.
                        self.start_queued(task, next);
                        self.drain();
                    }
                    return answer.unwrap_or(Action::Pause);
                }
            }
        }
    }

    /// The outcome of stream `context_id`'s hook that started inside the callback running now
    /// and finished in its drain.
    #[cold]
    fn take_finished_in_callback(&self, context_id: u32) -> Option<HookOutcome> {
        let mut finished = self.finished_in_callback.borrow_mut();
        let index = finished.iter().position(|(id, _)| *id == context_id)?;
        Some(finished.remove(index).1)
    }

    /// Starts `run`, a hook whose callback answered `Pause` already, and queues its stream for
    /// the drain to poll.
    fn start_queued(&self, task: &dyn StreamTask, run: HookRun) {
        task.start(Event::new(run.phase, run.size, run.end_of_stream));
        context_waker::wake(task.shared().context_id);
    }

    /// Answers a buffered body that grew past the limit, as Envoy does at its own buffer
    /// limit: 413 for a request, 500 for a response.
    fn refuse_oversized_body(&self, phase: Phase, direction: Direction, size: usize, limit: usize) {
        let refusal = Refusal::of(direction);
        log::warn!(
            "{}: the buffered body has {size} bytes, over the limit of {limit} bytes; replying {}",
            phase.callback_name(),
            refusal.status
        );
        let reply = LocalReply::new(refusal.status)
            .header("content-type", "text/plain")
            .body(refusal.body)
            .details(refusal.details);
        self.send_reply(phase, &reply);
    }

    /// `proxy_on_http_call_response`, on whichever context the host routed it to.
    pub(crate) fn on_call_response(
        self: &Rc<Self>,
        context_id: u32,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let _scope = self.scope(context_id);
        if !self.calls.is_waiting(token) {
            log::debug!(
                "response to call {token} ignored: nothing waits for it (its stream ended, or the token is unknown)"
            );
            return;
        }
        let reply = if num_headers == 0 {
            None
        } else {
            Some(self.read_call_reply(token, body_size, num_trailers))
        };
        if let Some(waiter) = self.calls.deliver(token, reply) {
            // The waiter is (nearly always) the stream that made the call: with nothing else
            // woken and no poll running, it is polled now, as the drain would poll it first.
            match context_waker::context_of(&waiter) {
                Some(context_id) if !self.polling.get() && !context_waker::any_woken() => {
                    self.poll_stream(context_id);
                }
                _ => waiter.wake(),
            }
        }
        self.drain();
    }

    fn read_call_reply(&self, token: u32, body_size: usize, num_trailers: usize) -> ReplyParts {
        let headers = self
            .host
            .get_headers(MapType::HttpCallResponseHeaders)
            .unwrap_or_else(|error| {
                log::warn!("reading the headers of call {token}: {error}");
                Headers::default()
            });
        let body = if body_size == 0 {
            Vec::new()
        } else {
            self.host
                .get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .unwrap_or_else(|error| {
                    log::warn!("reading the body of call {token}: {error}");
                    Vec::new()
                })
        };
        let trailers = if num_trailers == 0 {
            None
        } else {
            self.host
                .get_headers(MapType::HttpCallResponseTrailers)
                .unwrap_or_default()
                .boxed_unless_empty()
        };
        ReplyParts {
            headers,
            body,
            trailers,
        }
    }

    /// `proxy_on_log`: runs the plugin's `on_log` hook if the stream is idle.
    pub(crate) fn on_log(self: &Rc<Self>, context_id: u32) {
        // A plugin without an `on_log` (learnt when its default first ran) costs nothing here.
        if self.gate_settings.get().skipped.contains(Phase::Log) {
            return;
        }
        let _scope = self.scope(context_id);
        let Some(task) = self.stream(context_id) else {
            return;
        };
        let shared = task.shared();
        let run = shared.with_gate(|gate| gate.log(&self.gate_settings.get()));
        if let Some(run) = run {
            task.run_in_callback(self, run);
        }
    }

    /// `proxy_on_done`: the stream is over; drop everything it was waiting for.
    /// On a root context: its background tasks stop.
    pub(crate) fn on_done(self: &Rc<Self>, context_id: u32) -> bool {
        // No hook's future to drop (and so no call to cancel): the stream's cell drops the
        // plugin value at `proxy_on_delete`.
        if let Some(task) = self.streams.borrow().get(context_id)
            && task.shared().with_gate(|gate| {
                let idle = gate.hook() == HookState::Idle;
                if idle {
                    gate.end();
                }
                idle
            })
        {
            return true;
        }
        let _scope = self.scope(context_id);
        match self.stream(context_id) {
            Some(task) => end_stream(&*task),
            None if !self.executor.is_empty() => {
                self.executor.cancel(Owner(context_id));
            }
            None => {}
        }
        true
    }

    /// `proxy_on_delete`: forgets the stream; false if `context_id` was no stream of this
    /// runtime (a root context, or one the runtime never saw).
    pub(crate) fn on_delete(self: &Rc<Self>, context_id: u32) -> bool {
        let _scope = self.scope(context_id);
        let removed = self.streams.borrow_mut().remove(context_id);
        match removed {
            // Without a `proxy_on_done` first (a host may skip it), the stream ends here. A
            // wake of it still queued (from its future's drop) finds no stream in the drain and
            // is dropped there: cheaper than a search of the woken list per stream.
            Some(task) if !task.shared().is_ended() => end_stream(&*task),
            Some(_) => {}
            None => {
                if !self.executor.is_empty() {
                    self.executor.cancel(Owner(context_id));
                }
                return false;
            }
        }
        true
    }

    /// Polls every woken task, then resumes (or replies to) the streams whose paused hook
    /// finished. Safe to call re-entrantly: a nested call does nothing and the outer one
    /// finishes the work.
    #[inline]
    fn drain(self: &Rc<Self>) {
        if self.polling.get() || (self.executor.is_empty() && !context_waker::any_woken()) {
            return;
        }
        self.drain_woken();
    }

    fn drain_woken(self: &Rc<Self>) {
        loop {
            // What a stream's poll wakes is a stream (taken by this loop) or an executor task
            // (run next): once the loop ends, only the executor can have work.
            while let Some(context_id) = context_waker::take_woken() {
                self.poll_stream(context_id);
            }
            if self.executor.is_empty() {
                break;
            }
            {
                let _polling = Polling::enter(&self.polling);
                self.executor
                    .run_until_stalled_with(|Owner(context_id)| self.enter(context_id));
            }
            // It ran until its tasks stalled: what they woke beside them is streams.
            if !context_waker::any_woken() {
                break;
            }
        }
    }

    /// Carries out the outcome of `task`'s hook of `phase`, which paused and has finished, and
    /// starts the held hook the gate runs next, queued for this drain to poll.
    fn apply_paused(&self, task: &dyn StreamTask, phase: Phase, outcome: HookOutcome) {
        let shared = task.shared();
        // The usual end of a paused hook that replied, without the rest of `returned`.
        if let Ok(Flow::Reply(reply)) = &outcome
            && shared.with_gate(|gate| gate.replied())
        {
            self.enter(shared.context_id);
            self.send_reply(phase, reply);
            return;
        }
        let finish = shared
            .with_gate(|gate| gate.returned(&self.gate_settings.get(), outcome_kind(&outcome)));
        self.enter(shared.context_id);
        self.carry_out(shared, phase, outcome, finish);
        // Its callback already answered Pause, so its direction is resumed when it finishes.
        if let Some(next) = finish.next {
            self.start_queued(task, next);
        }
    }

    /// Carries out what the gate decided for a finished hook of `phase`: its local reply, the
    /// resume. Returns the answer for the hook's callback, if it finished inside it. The gate
    /// has moved on already, so a host that calls back from inside these hostcalls finds the
    /// stream in its new state.
    fn carry_out(
        &self,
        shared: &StreamShared,
        phase: Phase,
        outcome: Result<Flow, Error>,
        finish: Finish,
    ) -> Option<Action> {
        match finish.reply {
            ReplyFate::None => {}
            ReplyFate::Send => match outcome {
                Ok(Flow::Reply(reply)) => self.send_reply(phase, &reply),
                Err(error) => {
                    let status = error.status().unwrap_or(self.error_status);
                    log::error!(
                        "{} failed: {error}; replying {status}",
                        phase.callback_name()
                    );
                    self.send_reply(phase, &LocalReply::error(status));
                }
                // The gate sends only what a hook replied.
                Ok(Flow::Continue) => {}
            },
            ReplyFate::AfterLog => {
                log::warn!("on_log cannot reply: the response was already sent");
            }
            ReplyFate::Gone => {
                log::debug!(
                    "the outcome of {} of context {} was dropped: the stream was answered or ended meanwhile",
                    phase.callback_name(),
                    shared.context_id
                );
            }
        }
        if let Some(direction) = finish.strip_content_length {
            // The body may change size: a stale content-length would make the upstream (or
            // client) read a truncated body, so the proxy must frame the body itself.
            if let Err(error) = self
                .host
                .remove_map_value(direction.headers(), "content-length")
            {
                log::warn!("removing content-length before buffering the body: {error}");
            }
        }
        if let Some(direction) = finish.resume
            && let Err(error) = self.host.continue_stream(direction)
        {
            log::warn!("resuming after {}: {error}", phase.callback_name());
        }
        finish.answer
    }

    /// Sends the stream's local reply.
    fn send_reply(&self, phase: Phase, reply: &LocalReply) {
        if let Err(error) = self.host.send_local_response(
            reply.status,
            &reply.details,
            reply.body.as_bytes(),
            &reply.headers,
        ) {
            log::warn!(
                "local reply {} from {}: {error}",
                reply.status,
                phase.callback_name()
            );
        }
    }

    /// Makes `context_id` the host's effective context, if it is not already.
    #[inline]
    fn enter(&self, context_id: u32) {
        if self.effective.get() != context_id {
            self.switch_context(context_id);
        }
    }

    #[cold]
    fn switch_context(&self, context_id: u32) {
        match self.host.set_effective_context(context_id) {
            Ok(()) => self.effective.set(context_id),
            Err(error) => {
                // The context is gone (a detached task outliving its stream); hostcalls of
                // the task will fail and report it.
                log::debug!("entering context {context_id}: {error}");
                self.effective.set(0);
            }
        }
    }

    /// Tasks alive (one per live stream, plus background ones).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn task_count(&self) -> usize {
        let streams = self
            .streams
            .borrow()
            .values()
            .filter(|task| !task.shared().is_ended())
            .count();
        streams + self.executor.len()
    }

    /// Calls (HTTP and Redis) waiting for a reply.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn pending_call_count(&self) -> usize {
        self.calls.len()
            + self
                .extensions
                .borrow()
                .iter()
                .map(|extension| extension.pending())
                .sum::<usize>()
    }

    /// Whether `context_id` is a stream of this runtime.
    #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
    pub(crate) fn has_stream(&self, context_id: u32) -> bool {
        self.streams.borrow().contains_key(context_id)
    }

    /// Streams the runtime knows.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.borrow().len()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Stop the futures of the streams still here (a root context deleted before its
        // streams ended) while the runtime is whole: their drops may log or cancel calls.
        for (_, task) in self.streams.get_mut().drain() {
            task.stop();
        }
    }
}

/// Ends the stream of `task`: no hook runs again, and its future goes now (or, if it is being
/// polled, from inside one of its hostcalls, when that poll returns: see `poll_task`).
fn end_stream(task: &dyn StreamTask) {
    task.shared().with_gate(|gate| gate.end());
    task.stop();
}

/// Marks a poll in progress until dropped (a panic included).
struct Polling<'a>(&'a Cell<bool>);

impl<'a> Polling<'a> {
    fn enter(flag: &'a Cell<bool>) -> Polling<'a> {
        flag.set(true);
        Polling(flag)
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// What the gate needs to know of a hook's outcome.
fn outcome_kind(outcome: &Result<Flow, Error>) -> Outcome {
    match outcome {
        Ok(Flow::Continue) => Outcome::Continue,
        Ok(Flow::Reply(_)) | Err(_) => Outcome::Reply,
    }
}

#[cfg(test)]
mod tests {
    //! A host that calls back into the plugin from inside a hostcall, as some proxies do
    //! (proxy-wasm-rust-sdk #43: callbacks from within `resume_http_request`). Envoy defers
    //! instead; the driver must survive both.

    use std::rc::Weak;

    use super::*;
    use crate::driver::Driver;
    use crate::host::{Host, HostError, LogLevel, Pairs};
    use crate::message::Request;
    use crate::{HttpClient, NoConfig, Plugin};

    #[derive(Default)]
    struct ReentrantHost {
        runtime: RefCell<Weak<Runtime>>,
        trace: RefCell<Vec<String>>,
        headers: RefCell<Pairs>,
    }

    impl Host for ReentrantHost {
        fn log(&self, _: LogLevel, message: &str) {
            self.trace.borrow_mut().push(format!("log {message}"));
        }
        fn log_level(&self) -> LogLevel {
            LogLevel::Trace
        }
        fn set_effective_context(&self, _: u32) -> Result<(), HostError> {
            Ok(())
        }
        fn get_map(&self, _: MapType) -> Result<Pairs, HostError> {
            Ok(vec![(":status".into(), b"200".to_vec())])
        }
        fn get_map_value(&self, _: MapType, _: &str) -> Result<Option<Vec<u8>>, HostError> {
            Ok(None)
        }
        fn set_map(&self, _: MapType, _: &[(&str, &[u8])]) -> Result<(), HostError> {
            Ok(())
        }
        fn add_map_value(&self, _: MapType, _: &str, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn replace_map_value(&self, _: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
            self.headers
                .borrow_mut()
                .push((name.to_string(), value.to_vec()));
            Ok(())
        }
        fn remove_map_value(&self, _: MapType, _: &str) -> Result<(), HostError> {
            Ok(())
        }
        fn get_buffer(&self, _: BufferType, _: usize, _: usize) -> Result<Vec<u8>, HostError> {
            Ok(Vec::new())
        }
        fn set_buffer(&self, _: BufferType, _: usize, _: usize, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn http_call(
            &self,
            cluster: &str,
            _: &[(&str, &str)],
            _: &[u8],
            _: Duration,
        ) -> Result<u32, HostError> {
            self.trace.borrow_mut().push(format!("call {cluster}"));
            Ok(7)
        }
        fn continue_stream(&self, _: Direction) -> Result<(), HostError> {
            self.trace.borrow_mut().push("continue".into());
            // Re-enter: the body callback arrives from inside the resume.
            if let Some(runtime) = self.runtime.borrow().upgrade() {
                let action = runtime.on_hook(2, Phase::RequestBody, 0, true);
                self.trace.borrow_mut().push(format!("body {action:?}"));
            }
            Ok(())
        }
        fn send_local_response(
            &self,
            status: u16,
            _: &str,
            _: &[u8],
            _: &Headers,
        ) -> Result<(), HostError> {
            self.trace.borrow_mut().push(format!("reply {status}"));
            Ok(())
        }
        fn now_nanos(&self) -> u64 {
            0
        }
        fn set_tick_period(&self, _: Duration) -> Result<(), HostError> {
            Ok(())
        }
    }

    struct TwoPhases;

    impl Plugin for TwoPhases {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            TwoPhases
        }
        async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            HttpClient::new("auth").get("/").send().await?;
            req.headers_mut().insert("x-after-call", "1");
            Ok(Flow::Continue)
        }
        async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            req.headers_mut().insert("x-body-hook", "1");
            Ok(Flow::Continue)
        }
    }

    #[test]
    fn callbacks_re_entered_from_a_resume_run_without_double_borrows() {
        let host = Rc::new(ReentrantHost::default());
        let driver = Driver::<TwoPhases>::new(Rc::clone(&host) as Rc<dyn Host>);
        *host.runtime.borrow_mut() = Rc::downgrade(&driver.runtime);
        assert!(driver.configure(1, 0));
        driver.create_stream(2);
        let runtime = &driver.runtime;

        assert_eq!(
            runtime.on_hook(2, Phase::RequestHeaders, 1, false),
            Action::Pause
        );
        runtime.on_call_response(1, 7, 1, 0, 0);

        assert_eq!(
            *host.trace.borrow(),
            ["call auth", "continue", "body Continue"]
        );
        let names: Vec<String> = host
            .headers
            .borrow()
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(names, ["x-after-call", "x-body-hook"]);
        assert!(runtime.on_done(2));
        runtime.on_delete(2);
        assert_eq!(runtime.task_count(), 0);
    }
}
