//! The stream driver: turns host callbacks into hook futures, and hook results into exactly one
//! of continue, resume or local reply.
//!
//! Life of a stream (`ctx` is its proxy-wasm context id):
//! 1. `create_stream`: the plugin's per-stream value moves into one task owned by `ctx`; the
//!    task loops "wait for the next event, run that hook, record its outcome".
//! 2. A hook callback (`on_hook`) puts the event in the stream's mailbox, wakes the task and
//!    drains the executor. If the hook finished during that drain, its outcome is applied inline:
//!    `Continue` is returned to the host and no resume is ever issued. Otherwise the stream is
//!    marked paused in that phase and `Pause` is returned.
//! 3. A later callback (a call response) wakes the task; when the paused hook finishes, the task
//!    queues the stream on `finished`, and after the drain `apply_finished` issues exactly one
//!    resume of the paused direction, or one local reply. Never inside the callback that paused.
//! 4. After a local reply nothing is resumed, and the response callbacks Envoy runs for the
//!    reply itself skip the plugin's hooks.
//! 5. `on_done` drops the task (and with it every call future of the stream: late replies are
//!    then ignored); `on_delete` forgets the stream.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use proxy_async_executor::{Executor, Owner, Registry, TaskId};

use crate::error::Error;
use crate::host::{Action, BufferType, Direction, Host, MapType, Pairs};
use crate::plugin::{Flow, LocalReply};
use crate::redis::{RedisReply, RedisState};
use crate::timer::{TickFunction, Timers};

pub(crate) use proxy_async_abi::Phase;

/// `phase`'s bit in [`Runtime`]'s set of hooks the plugin left at their default.
fn phase_bit(phase: Phase) -> u8 {
    match phase {
        Phase::RequestHeaders => 1,
        Phase::RequestBody => 2,
        Phase::ResponseHeaders => 4,
        Phase::ResponseBody => 8,
        Phase::Log => 16,
        Phase::RequestTrailers => 32,
        Phase::ResponseTrailers => 64,
    }
}

/// One host callback for a stream, as delivered to its task.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Event {
    pub(crate) phase: Phase,
    /// Body bytes available (body phases), or header count (header phases).
    pub(crate) size: usize,
    pub(crate) end_of_stream: bool,
}

/// A call's reply, copied out of the host inside `on_http_call_response` (the only time the
/// host lets it be read). `None`: the call failed without a response (timeout, reset).
pub(crate) type CallReply = Option<ReplyParts>;

pub(crate) struct ReplyParts {
    pub(crate) headers: Pairs,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Pairs,
}

/// What a stream's task and the driver share. Only `Cell`s and short `RefCell` borrows: the
/// driver and the task never hold a borrow across a poll or a hostcall.
pub(crate) struct StreamShared {
    pub(crate) context_id: u32,
    pub(crate) host: Rc<dyn Host>,
    event: Cell<Option<Event>>,
    // Set by the task when a hook finishes; taken by the driver.
    outcome: RefCell<Option<Result<Flow, Error>>>,
    // The phase whose hook is running after its callback returned Pause.
    paused: Cell<Option<Phase>>,
    // A hook is running (from event delivery until its outcome is recorded).
    busy: Cell<bool>,
    // Callbacks that arrived while a hook was running; each answered Pause and runs in turn.
    waiting: RefCell<VecDeque<Event>>,
    // The size of a buffered body the proxy holds whose hook has not run, per direction
    // (request, response): trailers end such a body, and its hook runs before theirs.
    held_body: [Cell<Option<usize>>; 2],
    // Where each direction's chunk hooks find their chunk in the proxy's body buffer.
    windows: [Cell<BodyWindow>; 2],
    replied: Cell<bool>,
    ended: Cell<bool>,
    finished: Rc<RefCell<Vec<u32>>>,
}

impl StreamShared {
    /// A stream without a task or driver mailbox: the component driver runs each hook itself
    /// and only needs what [`Message`](crate::Message) reads.
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_env = "p2")),
        allow(
            dead_code,
            reason = "only the component driver makes standalone streams"
        )
    )]
    pub(crate) fn standalone(context_id: u32, host: Rc<dyn Host>) -> StreamShared {
        StreamShared::new(context_id, host, Rc::new(RefCell::new(Vec::new())))
    }

    /// A stream that reports its finished hooks on `finished`.
    fn new(context_id: u32, host: Rc<dyn Host>, finished: Rc<RefCell<Vec<u32>>>) -> StreamShared {
        StreamShared {
            context_id,
            host,
            event: Cell::new(None),
            outcome: RefCell::new(None),
            paused: Cell::new(None),
            busy: Cell::new(false),
            waiting: RefCell::new(VecDeque::new()),
            held_body: [Cell::new(None), Cell::new(None)],
            windows: [
                Cell::new(BodyWindow::default()),
                Cell::new(BodyWindow::default()),
            ],
            replied: Cell::new(false),
            ended: Cell::new(false),
            finished,
        }
    }

    /// Waits for the next event delivered to this stream.
    pub(crate) fn next_event(&self) -> impl Future<Output = Event> + '_ {
        std::future::poll_fn(move |_| match self.event.take() {
            Some(event) => std::task::Poll::Ready(event),
            // The driver wakes the task by id after delivering an event; no waker to keep.
            None => std::task::Poll::Pending,
        })
    }

    /// Records the outcome of the hook that just finished.
    pub(crate) fn finish(&self, outcome: Result<Flow, Error>) {
        *self.outcome.borrow_mut() = Some(outcome);
        self.busy.set(false);
        if self.paused.get().is_some() {
            self.finished.borrow_mut().push(self.context_id);
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.get()
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
}

/// One direction's body as chunk hooks see it. While a chunk's hook awaits, the proxy holds
/// that chunk and buffers the chunks after it: the body buffer then holds the chunks already
/// handled (`handled` bytes), the chunk whose hook runs (`len` bytes at `offset`), then the
/// chunks waiting for their hook. Each hook sees only its own chunk. Once the direction goes
/// on, the proxy forwards the buffer and it starts empty again.
#[derive(Copy, Clone, Default, Debug)]
pub(crate) struct BodyWindow {
    // Bytes of the buffer the SDK has accounted for (handled, running and waiting chunks).
    known: usize,
    // Bytes of the chunks whose hooks finished while the direction stayed held.
    handled: usize,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl StreamShared {
    fn window_cell(&self, direction: Direction) -> &Cell<BodyWindow> {
        &self.windows[direction as usize]
    }

    /// A body callback reported `total` buffered bytes: the new chunk is what the SDK did not
    /// know of yet. Returns its length.
    fn arrive_chunk(&self, direction: Direction, total: usize) -> usize {
        let cell = self.window_cell(direction);
        let mut window = cell.get();
        let chunk = total.saturating_sub(window.known);
        window.known = total;
        cell.set(window);
        chunk
    }

    /// A chunk's hook starts: its chunk follows the handled ones.
    fn start_chunk(&self, direction: Direction, len: usize) {
        let cell = self.window_cell(direction);
        let mut window = cell.get();
        window.offset = window.handled;
        window.len = len;
        cell.set(window);
    }

    /// A chunk's hook finished but the direction stays held (a later chunk's hook is next).
    fn hold_chunk(&self, direction: Direction) {
        let cell = self.window_cell(direction);
        let mut window = cell.get();
        window.handled = window.offset + window.len;
        window.len = 0;
        cell.set(window);
    }

    /// The direction went on: the proxy forwarded its buffer.
    fn forward_body(&self, direction: Direction) {
        self.window_cell(direction).set(BodyWindow::default());
    }

    /// Where the running chunk of `phase`'s direction is.
    pub(crate) fn window(&self, phase: Phase) -> BodyWindow {
        self.window_cell(phase.direction()).get()
    }

    /// The running chunk now has `len` bytes (a hook changed it).
    pub(crate) fn resize_chunk(&self, phase: Phase, len: usize) {
        let cell = self.window_cell(phase.direction());
        let mut window = cell.get();
        window.known = (window.known + len).saturating_sub(window.len);
        window.len = len;
        cell.set(window);
    }
}

struct StreamSlot {
    task: TaskId,
    shared: Rc<StreamShared>,
}

/// Plugin-wide settings the driver needs.
#[derive(Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) error_status: u16,
    pub(crate) buffer_request_body: bool,
    pub(crate) buffer_response_body: bool,
    pub(crate) body_buffer_limit: usize,
    pub(crate) tick_period: Duration,
}

/// One plugin instance's executor, pending calls and streams.
pub(crate) struct Runtime {
    pub(crate) host: Rc<dyn Host>,
    executor: Executor,
    pub(crate) calls: Registry<CallReply>,
    // Redis commands in flight (Higress), and the Redis clients the proxy initialized.
    pub(crate) redis: RedisState,
    // gRPC calls and streams in flight.
    pub(crate) grpc: crate::grpc::GrpcState,
    // Shared queues some task waits on.
    pub(crate) queues: crate::queue::QueueWaiters,
    streams: RefCell<BTreeMap<u32, StreamSlot>>,
    finished: Rc<RefCell<Vec<u32>>>,
    // The context the host applies hostcalls to; 0 when unknown.
    effective: Cell<u32>,
    settings: Settings,
    // Phases whose hook the plugin type left at the trait's default (learnt when a default
    // ran): they are answered `Continue` without waking the stream's task.
    default_hooks: Cell<u8>,
    timers: Timers,
    // `[<plugin name>] [<plugin id>]`, with Higress's log format.
    log_prefix: RefCell<Option<String>>,
    has_background: Cell<bool>,
    // The plugin used what only proxy-wasm hosts offer (gRPC, shared queues).
    host_only: Cell<bool>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// Makes a runtime the current one for the length of a host callback, so that code inside hooks
/// (the HTTP client, the logger) reaches the host. Restores the previous one on drop.
pub(crate) struct CallbackScope {
    previous: Option<Rc<Runtime>>,
}

impl CallbackScope {
    fn enter(runtime: &Rc<Runtime>, context_id: u32) -> Self {
        runtime.effective.set(context_id);
        let previous = CURRENT.with(|current| current.replace(Some(Rc::clone(runtime))));
        CallbackScope { previous }
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

impl Runtime {
    pub(crate) fn new(host: Rc<dyn Host>, settings: Settings) -> Rc<Self> {
        Rc::new(Runtime {
            host,
            executor: Executor::new(),
            calls: Registry::new(),
            redis: RedisState::default(),
            grpc: Default::default(),
            queues: Default::default(),
            streams: RefCell::new(BTreeMap::new()),
            finished: Rc::new(RefCell::new(Vec::new())),
            effective: Cell::new(0),
            settings,
            default_hooks: Cell::new(0),
            timers: Timers::default(),
            log_prefix: RefCell::new(None),
            has_background: Cell::new(false),
            host_only: Cell::new(false),
        })
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
        if !self.streams.borrow().contains_key(&stream) {
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
        if let Err(error) = self.host.set_tick_period(self.settings.tick_period) {
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
        self.has_background.set(true);
        let _scope = self.scope(root_id);
        for task in tasks {
            self.executor.spawn(Owner(root_id), task.future);
        }
        self.drain();
    }

    /// Notes that the plugin used what only proxy-wasm hosts offer (gRPC, shared queues): the
    /// component world has no such imports.
    #[cfg_attr(
        all(target_arch = "wasm32", not(target_env = "p2")),
        allow(dead_code, reason = "a compiled module has no component twin to stop")
    )]
    pub(crate) fn note_host_only_feature(&self) {
        self.host_only.set(true);
    }

    /// Whether the plugin used gRPC or shared queues.
    #[cfg_attr(
        target_arch = "wasm32",
        allow(dead_code, reason = "only the testing API's twins read it")
    )]
    pub(crate) fn used_host_only_feature(&self) -> bool {
        self.host_only.get()
    }

    /// Whether the plugin ever started background tasks.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn has_background(&self) -> bool {
        self.has_background.get()
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
        self.settings.error_status
    }

    /// Records that the plugin's hook for `phase` is the trait's default (it does nothing and
    /// continues), so later callbacks of that phase need not run it.
    pub(crate) fn note_default_hook(&self, phase: Phase) {
        self.default_hooks
            .set(self.default_hooks.get() | phase_bit(phase));
    }

    fn is_default_hook(&self, phase: Phase) -> bool {
        self.default_hooks.get() & phase_bit(phase) != 0
    }

    /// The runtime of the callback running now.
    pub(crate) fn current() -> Option<Rc<Runtime>> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// Starts a host callback on `context_id`.
    pub(crate) fn scope(self: &Rc<Self>, context_id: u32) -> CallbackScope {
        CallbackScope::enter(self, context_id)
    }

    /// Creates the stream `context_id`; `task` builds its task from the shared mailbox.
    pub(crate) fn create_stream<F, Fut>(self: &Rc<Self>, context_id: u32, task: F)
    where
        F: FnOnce(Rc<StreamShared>) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let shared = Rc::new(StreamShared::new(
            context_id,
            Rc::clone(&self.host),
            Rc::clone(&self.finished),
        ));
        let id = self
            .executor
            .spawn(Owner(context_id), task(Rc::clone(&shared)));
        let replaced = self
            .streams
            .borrow_mut()
            .insert(context_id, StreamSlot { task: id, shared });
        if let Some(old) = replaced {
            log::warn!("context {context_id} was created twice; dropping the first");
            self.executor.cancel(Owner(context_id));
            drop(old);
        }
    }

    fn stream(&self, context_id: u32) -> Option<(TaskId, Rc<StreamShared>)> {
        self.streams
            .borrow()
            .get(&context_id)
            .map(|slot| (slot.task, Rc::clone(&slot.shared)))
    }

    /// A stream callback: runs the phase's hook and answers the host.
    pub(crate) fn on_hook(
        self: &Rc<Self>,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        let _scope = self.scope(context_id);
        let Some((task, shared)) = self.stream(context_id) else {
            log::debug!("{} for unknown context {context_id}", phase.callback_name());
            return Action::Continue;
        };
        // After our own local reply, Envoy runs the response callbacks for the reply itself;
        // the plugin does not see its own reply.
        if shared.replied.get() || shared.ended.get() {
            return Action::Continue;
        }
        let buffered = match phase {
            Phase::RequestBody => self.settings.buffer_request_body,
            Phase::ResponseBody => self.settings.buffer_response_body,
            _ => false,
        };
        if buffered && size > self.settings.body_buffer_limit {
            self.enter(context_id);
            return self.refuse_oversized_body(&shared, phase, size);
        }
        // Pause on a body chunk makes the proxy buffer it; the hook sees the whole body once.
        if buffered && !end_of_stream {
            shared.held_body[phase.direction() as usize].set(Some(size));
            return Action::Pause;
        }
        if buffered {
            shared.held_body[phase.direction() as usize].set(None);
        }
        // Trailers end a body the plugin buffers: its hook runs first, on the whole body, and
        // the trailers' hook after it.
        if let Some(body_phase) = phase.body_before_trailers()
            && let Some(held) = shared.held_body[phase.direction() as usize].take()
        {
            let action = self.on_hook(context_id, body_phase, held, true);
            if action == Action::Pause {
                if shared.busy.get() {
                    shared.waiting.borrow_mut().push_back(Event {
                        phase,
                        size,
                        end_of_stream,
                    });
                }
                return Action::Pause;
            }
            return self.on_hook(context_id, phase, size, end_of_stream);
        }
        let direction = phase.direction();
        // A body callback reports every byte the proxy buffers for the direction; the hook
        // gets the new chunk only.
        let size = if phase.is_body() {
            shared.arrive_chunk(direction, size)
        } else {
            size
        };
        // The plugin does not implement this hook: the default would continue at once.
        if !shared.busy.get() && self.is_default_hook(phase) {
            shared.forward_body(direction);
            return Action::Continue;
        }
        // Another hook of this stream is still awaiting (the response arrived while the
        // request body hook waits, or a streamed chunk while the previous chunk's hook waits):
        // hold this callback too, and run its hook when the running one is done.
        if shared.busy.get() {
            shared.waiting.borrow_mut().push_back(Event {
                phase,
                size,
                end_of_stream,
            });
            return Action::Pause;
        }
        if !end_of_stream && self.buffers_body_after(phase) {
            // The body may change size: a stale content-length would make the upstream (or
            // client) read a truncated body, so the proxy must frame the body itself.
            let map = shared.map(phase);
            if let Err(error) = self.host.remove_map_value(map, "content-length") {
                log::warn!("removing content-length before buffering the body: {error}");
            }
        }
        shared.busy.set(true);
        if phase.is_body() {
            shared.start_chunk(direction, size);
        }
        shared.event.set(Some(Event {
            phase,
            size,
            end_of_stream,
        }));
        self.executor.wake(task);
        self.drain();
        let outcome = shared.outcome.borrow_mut().take();
        match outcome {
            Some(outcome) => {
                self.enter(context_id);
                let action = self.apply(&shared, phase, outcome, false);
                if action == Action::Continue {
                    shared.forward_body(direction);
                }
                action
            }
            None => {
                shared.paused.set(Some(phase));
                Action::Pause
            }
        }
    }

    /// Answers a buffered body that grew past the limit, as Envoy does at its own buffer
    /// limit: 413 for a request, 500 for a response.
    fn refuse_oversized_body(&self, shared: &StreamShared, phase: Phase, size: usize) -> Action {
        let (status, body, details) = match phase.direction() {
            Direction::Request => (413, "Payload Too Large", "request_payload_too_large"),
            Direction::Response => (500, "Internal Server Error", "response_payload_too_large"),
        };
        log::warn!(
            "{}: the buffered body has {size} bytes, over the limit of {} bytes; replying {status}",
            phase.callback_name(),
            self.settings.body_buffer_limit
        );
        let reply = LocalReply::new(status)
            .header("content-type", "text/plain")
            .body(body)
            .details(details);
        self.apply(shared, phase, Ok(Flow::Reply(reply)), false)
    }

    /// Whether the headers of `phase` are followed by a body the plugin buffers.
    pub(crate) fn buffers_body_after(&self, phase: Phase) -> bool {
        match phase {
            Phase::RequestHeaders => self.settings.buffer_request_body,
            Phase::ResponseHeaders => self.settings.buffer_response_body,
            _ => false,
        }
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
        self.calls.complete(token, reply);
        self.drain();
    }

    fn read_call_reply(&self, token: u32, body_size: usize, num_trailers: usize) -> ReplyParts {
        let headers = self
            .host
            .get_map(MapType::HttpCallResponseHeaders)
            .unwrap_or_else(|error| {
                log::warn!("reading the headers of call {token}: {error}");
                Vec::new()
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
            Vec::new()
        } else {
            self.host
                .get_map(MapType::HttpCallResponseTrailers)
                .unwrap_or_default()
        };
        ReplyParts {
            headers,
            body,
            trailers,
        }
    }

    /// `proxy_on_redis_call_response` (Higress): the reply to a Redis command, readable only
    /// now; `status != 0` means there is none.
    pub(crate) fn on_redis_response(
        self: &Rc<Self>,
        context_id: u32,
        token: u32,
        status: u32,
        size: usize,
    ) {
        let _scope = self.scope(context_id);
        if !self.redis.pending.is_waiting(token) {
            log::debug!(
                "reply to Redis call {token} ignored: nothing waits for it (its stream ended, or the token is unknown)"
            );
            return;
        }
        let reply: RedisReply = if status != 0 {
            Err(status)
        } else {
            // An unreadable reply is decoded as an empty one: the command fails as invalid.
            Ok(self
                .host
                .get_buffer(BufferType::RedisCallResponse, 0, size)
                .unwrap_or_else(|error| {
                    log::warn!("reading the reply of Redis call {token}: {error}");
                    Vec::new()
                }))
        };
        self.redis.pending.complete(token, reply);
        self.drain();
    }

    /// `proxy_on_grpc_receive`: a message on a gRPC call (its reply) or stream, readable now.
    pub(crate) fn on_grpc_receive(self: &Rc<Self>, context_id: u32, token: u32, size: usize) {
        let _scope = self.scope(context_id);
        if !self.grpc.is_open(token) {
            log::debug!("gRPC message on {token} ignored: nothing waits for it");
            return;
        }
        let message = self
            .host
            .get_buffer(BufferType::GrpcCallMessage, 0, size)
            .unwrap_or_else(|error| {
                log::warn!("reading the gRPC message of {token}: {error}");
                Vec::new()
            });
        self.grpc.receive(token, message);
        self.drain();
    }

    /// `proxy_on_grpc_close`: a gRPC call or stream ended with `code`.
    pub(crate) fn on_grpc_close(self: &Rc<Self>, context_id: u32, token: u32, code: u32) {
        let _scope = self.scope(context_id);
        if !self.grpc.is_open(token) {
            log::debug!("gRPC close of {token} ignored: nothing waits for it");
            return;
        }
        let message = match crate::host::optional(self).grpc_status() {
            Ok((_, message)) => String::from_utf8_lossy(&message).into_owned(),
            Err(error) => {
                log::debug!("reading the status of gRPC {token}: {error}");
                String::new()
            }
        };
        self.grpc.close(token, code, message);
        self.drain();
    }

    /// `proxy_on_queue_ready`: shared queue `queue` has messages.
    pub(crate) fn on_queue_ready(self: &Rc<Self>, root_id: u32, queue: u32) {
        let _scope = self.scope(root_id);
        self.queues.ready(queue);
        self.drain();
    }

    /// `proxy_on_log`: runs the plugin's `on_log` hook if the stream is idle.
    pub(crate) fn on_log(self: &Rc<Self>, context_id: u32) {
        let _scope = self.scope(context_id);
        let Some((task, shared)) = self.stream(context_id) else {
            return;
        };
        if shared.busy.get() {
            // A hook is still awaiting (the client went away mid-call): its future is dropped
            // at on_done, and the per-stream value with it, so there is no one to log.
            return;
        }
        if self.is_default_hook(Phase::Log) {
            return;
        }
        shared.busy.set(true);
        shared.event.set(Some(Event {
            phase: Phase::Log,
            size: 0,
            end_of_stream: true,
        }));
        self.executor.wake(task);
        self.drain();
    }

    /// `proxy_on_done`: the stream is over; drop everything it was waiting for.
    pub(crate) fn on_done(self: &Rc<Self>, context_id: u32) -> bool {
        let _scope = self.scope(context_id);
        if let Some((_, shared)) = self.stream(context_id) {
            shared.ended.set(true);
            shared.paused.set(None);
        }
        self.executor.cancel(Owner(context_id));
        true
    }

    /// `proxy_on_delete`: forgets the stream.
    pub(crate) fn on_delete(self: &Rc<Self>, context_id: u32) {
        let _scope = self.scope(context_id);
        self.executor.cancel(Owner(context_id));
        let removed = self.streams.borrow_mut().remove(&context_id);
        drop(removed);
    }

    /// Polls every woken task, then resumes (or replies to) the streams whose paused hook
    /// finished. Safe to call re-entrantly: a nested call does nothing and the outer one
    /// finishes the work.
    fn drain(self: &Rc<Self>) {
        loop {
            self.executor
                .run_until_stalled_with(|Owner(context_id)| self.enter(context_id));
            // Applying may start held hooks; poll them before returning to the host.
            if !self.apply_finished() {
                break;
            }
        }
    }

    /// Applies every finished paused hook; returns whether a held hook was started.
    fn apply_finished(self: &Rc<Self>) -> bool {
        let mut started = false;
        loop {
            // In the order the hooks finished; applying only makes hostcalls, so nothing new
            // is queued while a batch is applied, but a loop costs nothing and stays correct.
            let batch = std::mem::take(&mut *self.finished.borrow_mut());
            if batch.is_empty() {
                break;
            }
            for context_id in batch {
                started |= self.apply_one_finished(context_id);
            }
        }
        started
    }

    fn apply_one_finished(&self, context_id: u32) -> bool {
        let Some((task, shared)) = self.stream(context_id) else {
            return false;
        };
        let Some(phase) = shared.paused.take() else {
            return false;
        };
        let Some(outcome) = shared.outcome.borrow_mut().take() else {
            return false;
        };
        // The stream ended, or the SDK replied on it (an oversized body) while this hook ran:
        // its outcome has nothing left to act on.
        if shared.ended.get() || shared.replied.get() {
            return false;
        }
        self.enter(context_id);
        // A later chunk of the same direction arrived while this hook ran, and its callback
        // answered Pause too: the proxy holds both. Resuming now would send that chunk on
        // before its hook ran; the direction is resumed once, when the last held hook is done.
        let hold = matches!(outcome, Ok(Flow::Continue))
            && shared
                .waiting
                .borrow()
                .front()
                .is_some_and(|next| next.phase.direction() == phase.direction());
        if hold {
            shared.hold_chunk(phase.direction());
        } else {
            self.apply(&shared, phase, outcome, true);
            shared.forward_body(phase.direction());
        }
        if shared.replied.get() {
            // The reply ends the exchange; held callbacks have nothing left to do.
            shared.waiting.borrow_mut().clear();
            return false;
        }
        let Some(next) = shared.waiting.borrow_mut().pop_front() else {
            return false;
        };
        // Its callback already answered Pause, so its direction is resumed when it finishes.
        shared.paused.set(Some(next.phase));
        shared.busy.set(true);
        if next.phase.is_body() {
            shared.start_chunk(next.phase.direction(), next.size);
        }
        shared.event.set(Some(next));
        self.executor.wake(task);
        true
    }

    /// Applies a hook's outcome; `resume` says whether the stream is paused and so needs a
    /// resume to continue (false: the hook finished inside its own callback).
    fn apply(
        &self,
        shared: &StreamShared,
        phase: Phase,
        outcome: Result<Flow, Error>,
        resume: bool,
    ) -> Action {
        let reply = match outcome {
            Ok(Flow::Continue) => {
                if resume
                    && phase != Phase::Log
                    && let Err(error) = self.host.continue_stream(phase.direction())
                {
                    log::warn!("resuming after {}: {error}", phase.callback_name());
                }
                return Action::Continue;
            }
            Ok(Flow::Reply(reply)) => reply,
            Err(error) => {
                let status = error.status().unwrap_or(self.settings.error_status);
                log::error!(
                    "{} failed: {error}; replying {status}",
                    phase.callback_name()
                );
                LocalReply::error(status)
            }
        };
        if phase == Phase::Log {
            log::warn!("on_log cannot reply: the response was already sent");
            return Action::Continue;
        }
        if shared.replied.replace(true) {
            log::warn!(
                "a second local reply from {} was dropped",
                phase.callback_name()
            );
            return Action::Pause;
        }
        let headers: Vec<(&str, &[u8])> = reply
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect();
        if let Err(error) =
            self.host
                .send_local_response(reply.status, &reply.details, &reply.body, &headers)
        {
            log::warn!(
                "local reply {} from {}: {error}",
                reply.status,
                phase.callback_name()
            );
        }
        Action::Pause
    }

    /// Makes `context_id` the host's effective context, if it is not already.
    fn enter(&self, context_id: u32) {
        if self.effective.get() == context_id {
            return;
        }
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

    /// Tasks alive (one per live stream, plus detached ones).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn task_count(&self) -> usize {
        self.executor.len()
    }

    /// Calls (HTTP and Redis) waiting for a reply.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn pending_call_count(&self) -> usize {
        self.calls.len() + self.redis.pending.len() + self.grpc.len()
    }

    /// Streams the runtime knows.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.borrow().len()
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
    use crate::host::{HostError, LogLevel};
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
            _: &[(&str, &[u8])],
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
        type Config = NoConfig;
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
