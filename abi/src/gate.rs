//! The stream gate: the sequencing of one HTTP stream's hooks, as a state machine with no I/O.
//!
//! A plugin with `async` hooks answers each stream callback before its hook may have finished.
//! What it then owes the proxy follows from a few rules (Envoy's, through proxy-wasm-cpp-host):
//!
//! - a callback is answered `Continue` only when its hook finished inside it; otherwise
//!   `Pause`, and the direction is later resumed **exactly once**, never inside the callback
//!   that paused it;
//! - hooks of a stream run one at a time, in the order their callbacks came; a callback that
//!   comes while a hook runs is answered `Pause` and its hook runs after;
//! - a later chunk of a direction whose earlier chunk's hook still runs is held with it: the
//!   direction is resumed once, after the last held hook, so that no chunk passes unseen;
//! - at most one local reply per stream; after it, and after the stream ended, no hook runs
//!   (but `on_log`, after a reply), and the callbacks the proxy makes for the reply itself
//!   are answered `Continue`;
//! - a buffered body is held (`Pause` on every chunk) until its last chunk, or until trailers
//!   end it: its hook then runs once on all of it, before the trailers' hook; a buffered body
//!   past the limit is refused with a local reply.
//!
//! [`StreamGate`] applies them: its inputs are the callbacks ([`StreamGate::callback`],
//! [`StreamGate::log`], [`StreamGate::end`]) and what a started hook did
//! ([`StreamGate::returned`], [`StreamGate::awaiting`]); its outputs say what to answer, which
//! hook to run, which direction to resume and whether to send a hook's reply. Running hooks
//! and making hostcalls is the caller's part, so the same gate drives a plugin inside a wasm
//! module and a component from its host.
//!
//! ```
//! use proxy_async_abi::gate::{Arrival, Event, GateSettings, Outcome, StreamGate};
//! use proxy_async_abi::{Action, Direction, Phase};
//!
//! let settings = GateSettings::default();
//! let mut gate = StreamGate::new();
//! // The request headers' hook starts inside its callback ...
//! let Arrival::Run(run) = gate.callback(&settings, Event::new(Phase::RequestHeaders, 3, false))
//! else { unreachable!() };
//! assert_eq!(run.phase, Phase::RequestHeaders);
//! // ... and awaits a call: the callback answers Pause.
//! assert_eq!(gate.awaiting(), Some(Action::Pause));
//! // The call's response arrives later and the hook continues: one resume, of the request.
//! let finish = gate.returned(&settings, Outcome::Continue);
//! assert_eq!(finish.resume, Some(Direction::Request));
//! assert_eq!(finish.answer, None);
//! ```

use std::collections::VecDeque;
use std::fmt;

use crate::codes::Action;
use crate::phase::{Direction, Phase};

/// A stream callback as the gate sees it.
// `repr(C)`, in this order: rustc's own layout (the size first) makes the hook futures that
// hold an event write it byte by byte (40 instructions more per hook start in `hello`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Event {
    /// Which callback.
    pub phase: Phase,
    /// Header callbacks: the number of headers. Body callbacks: the bytes the proxy buffers
    /// for the direction (all of them, not only the new chunk).
    pub size: usize,
    /// Whether this callback ends its direction.
    pub end_of_stream: bool,
}

impl Event {
    /// A callback for `phase`.
    pub const fn new(phase: Phase, size: usize, end_of_stream: bool) -> Event {
        Event {
            phase,
            size,
            end_of_stream,
        }
    }
}

/// A set of phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseSet(u8);

impl PhaseSet {
    /// No phase.
    pub const EMPTY: PhaseSet = PhaseSet(0);

    const fn bit(phase: Phase) -> u8 {
        match phase {
            Phase::RequestHeaders => 1,
            Phase::RequestBody => 2,
            Phase::RequestTrailers => 4,
            Phase::ResponseHeaders => 8,
            Phase::ResponseBody => 16,
            Phase::ResponseTrailers => 32,
            Phase::Log => 64,
        }
    }

    /// This set with `phase`.
    #[must_use]
    pub const fn with(self, phase: Phase) -> PhaseSet {
        PhaseSet(self.0 | PhaseSet::bit(phase))
    }

    /// Whether `phase` is in the set.
    pub const fn contains(self, phase: Phase) -> bool {
        self.0 & PhaseSet::bit(phase) != 0
    }
}

/// What the gate needs to know of the plugin: the same for all its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateSettings {
    /// Whether the request body's hook runs once, on the whole body.
    pub buffer_request_body: bool,
    /// Whether the response body's hook runs once, on the whole body.
    pub buffer_response_body: bool,
    /// The most bytes a buffered body may have; past it, [`Arrival::Refuse`].
    pub body_buffer_limit: usize,
    /// The phases whose hook the plugin does not have: their callbacks continue at once.
    pub skipped: PhaseSet,
}

impl Default for GateSettings {
    /// Nothing buffered (a limit of 1 MiB, Envoy's default buffer limit), every hook run.
    fn default() -> Self {
        GateSettings {
            buffer_request_body: false,
            buffer_response_body: false,
            body_buffer_limit: 1024 * 1024,
            skipped: PhaseSet::EMPTY,
        }
    }
}

impl GateSettings {
    /// Whether `direction`'s body hook runs on the whole body.
    pub const fn buffers(&self, direction: Direction) -> bool {
        match direction {
            Direction::Request => self.buffer_request_body,
            Direction::Response => self.buffer_response_body,
        }
    }
}

/// The answer to a stream callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Answer the callback with this; no hook runs for it now (it has none, the stream is
    /// answered already, or its hook waits behind another one).
    Answer(Action),
    /// A buffered body grew past the limit: send its [`Refusal`] and answer `Pause`. The gate counts the
    /// reply as the stream's one local reply.
    Refuse {
        /// Whose body.
        direction: Direction,
        /// The bytes buffered.
        size: usize,
    },
    /// Start this hook now, inside the callback; then tell the gate whether it
    /// [`returned`](StreamGate::returned) or is [`awaiting`](StreamGate::awaiting).
    Run(HookRun),
}

/// The local reply that carries out an [`Arrival::Refuse`]: what Envoy sends when a body
/// outgrows its own buffer limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 413 for a request, 500 for a response (the client is not at fault for the upstream's).
    pub status: u16,
    /// The reply's `text/plain` body.
    pub body: &'static str,
    /// The response-code details the access log shows.
    pub details: &'static str,
}

impl Refusal {
    /// The refusal of `direction`'s body.
    pub const fn of(direction: Direction) -> Refusal {
        match direction {
            Direction::Request => Refusal {
                status: 413,
                body: "Payload Too Large",
                details: "request_payload_too_large",
            },
            Direction::Response => Refusal {
                status: 500,
                body: "Internal Server Error",
                details: "response_payload_too_large",
            },
        }
    }
}

/// A hook to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookRun {
    /// Which hook.
    pub phase: Phase,
    /// Header hooks: the number of headers. Body hooks: the length of the hook's chunk (see
    /// [`StreamGate::window`]).
    pub size: usize,
    /// Whether the hook's callback ended its direction.
    pub end_of_stream: bool,
}

/// What a finished hook decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let the stream go on.
    Continue,
    /// Answer the client with a local reply (a hook's `Err` is one too).
    Reply,
}

/// What to do with a finished hook's local reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFate {
    /// The hook continued: there is no reply.
    None,
    /// Send it now: it is the stream's local reply. (No hook runs after that reply but
    /// `on_log`, so there is never a second one to drop.)
    Send,
    /// Drop it: `on_log` comes after the response was sent.
    AfterLog,
    /// Drop it: the stream ended (or was refused) while the hook ran; the outcome has
    /// nothing left to act on.
    Gone,
}

/// What to do after a hook finished, in this order: send its reply, resume, answer, start the
/// next hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// The hook's local reply.
    pub reply: ReplyFate,
    /// Resume this direction: the hook's callback answered `Pause` and the direction may go
    /// on now.
    pub resume: Option<Direction>,
    /// The answer of the callback the hook ran inside of, when it finished there; `None` when
    /// its callback had answered `Pause` already.
    pub answer: Option<Action>,
    /// A hook to start now: one whose callback waited behind this one (it answered `Pause`
    /// already), or the trailers' hook after the body hook they ended, in the same callback.
    pub next: Option<HookRun>,
    /// Remove `content-length` from this direction's headers, before resuming or answering:
    /// the headers' hook continued, a body the plugin buffers follows, and its hook may change
    /// its size, so the proxy must frame it itself. Not for a stream the plugin passed on.
    pub strip_content_length: Option<Direction>,
}

/// Where a direction's body chunks are in the proxy's body buffer.
///
/// While a chunk's hook awaits, the proxy holds that chunk and buffers the chunks after it:
/// the buffer then holds the chunks already handled (`offset` bytes), the chunk whose hook
/// runs (`len` bytes at `offset`), then the chunks waiting for their hook. Once the direction
/// goes on, the proxy forwards the buffer and it starts empty again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyWindow {
    /// Where the running hook's chunk starts.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    // Bytes of the buffer accounted for: handled, running and waiting chunks.
    known: usize,
    // Bytes of the chunks whose hooks finished while the direction stayed held.
    handled: usize,
}

/// What the stream's hooks are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookState {
    /// No hook runs.
    Idle,
    /// A hook started inside the callback running now, which is not answered yet.
    Running(Phase),
    /// A hook awaits; its callback answered `Pause`, so its direction is resumed when it
    /// finishes.
    Paused(Phase),
}

/// Where the stream's exchange with the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The proxy carries the stream on.
    Open,
    /// A local reply answered the client: no hook but `on_log` runs again.
    Replied,
    /// The plugin left the stream alone ([`StreamGate::pass`]): every later callback
    /// continues at once, and no hook runs again, `on_log` included.
    Passed,
    /// The stream is over (`on_done`): nothing runs again.
    Ended,
}

/// A callback whose hook waits for the running one.
#[derive(Debug, Clone, Copy)]
struct Queued {
    event: Event,
    /// Its callback answered `Pause`. Not yet for trailers behind the buffered body they end,
    /// while the body's hook runs inside the trailers' callback.
    answered: bool,
}

/// One HTTP stream's hook sequencing. See the [module](self) for the rules it keeps.
#[derive(Clone)]
pub struct StreamGate {
    hook: HookState,
    exchange: Exchange,
    // Whether the running hook is a headers' hook with a body behind it, and whether that body
    // is buffered (the headers' `content-length` then goes when the hook continues).
    content_length: ContentLength,
    // Made when first needed: most streams of most plugins never queue a callback or run a body
    // hook, and every paused stream then keeps one word for it, not fourteen.
    held: Option<Box<Held>>,
}

/// What a stream holds beyond its hook's state.
#[derive(Debug, Clone)]
struct Held {
    // Callbacks that came while a hook ran, each run in turn.
    queued: VecDeque<Queued>,
    // Per direction, the bytes of a buffered body the proxy holds whose hook has not run.
    held_body: [HeldBody; 2],
    windows: [BodyWindow; 2],
    // Per direction, whether the plugin skips the body (`skip_body`).
    skipped_body: [bool; 2],
    // Per direction, the stream's own buffer limit (`set_body_buffer_limit`), if any.
    body_buffer_limit: [Option<usize>; 2],
    // Per direction, whether this stream buffers the body the plugin streams (`buffer_body`).
    buffered_body: [bool; 2],
}

impl Held {
    const NOTHING: Held = Held {
        queued: VecDeque::new(),
        held_body: [HeldBody::NONE; 2],
        skipped_body: [false; 2],
        body_buffer_limit: [None; 2],
        buffered_body: [false; 2],
        windows: [BodyWindow {
            offset: 0,
            len: 0,
            known: 0,
            handled: 0,
        }; 2],
    };
}

// What a gate that made no `Held` holds.
static NOTHING_HELD: Held = Held::NOTHING;

impl fmt::Debug for StreamGate {
    // The same for a gate whose `Held` was never made as for one whose `Held` holds nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.held();
        f.debug_struct("StreamGate")
            .field("hook", &self.hook)
            .field("exchange", &self.exchange)
            .field("queued", &held.queued)
            .field("held_body", &held.held_body)
            .field("windows", &held.windows)
            .field("skipped_body", &held.skipped_body)
            .field("body_buffer_limit", &held.body_buffer_limit)
            .field("buffered_body", &held.buffered_body)
            // What the running hook leaves for its body: nothing when no hook runs.
            .field(
                "content_length",
                &match self.hook {
                    HookState::Idle => ContentLength::NoBody,
                    _ => self.content_length,
                },
            )
            .finish()
    }
}

impl Default for StreamGate {
    fn default() -> Self {
        StreamGate::new()
    }
}

/// The bytes of a buffered body the proxy holds whose hook has not run, if any: one word, not
/// an `Option`'s two, which keeps every stream's cell in the allocator's small bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeldBody(usize);

impl HeldBody {
    const NONE: HeldBody = HeldBody(usize::MAX);

    /// `size` bytes held (a body cannot fill a whole address space: the largest is kept as
    /// one byte less).
    const fn of(size: usize) -> HeldBody {
        HeldBody(if size == usize::MAX { size - 1 } else { size })
    }

    fn take(&mut self) -> Option<usize> {
        let held = std::mem::replace(self, HeldBody::NONE);
        (held != HeldBody::NONE).then_some(held.0)
    }
}

/// What the running hook leaves for the body behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ContentLength {
    /// No headers' hook with a body behind it runs.
    #[default]
    NoBody,
    /// Headers with a streamed (or skipped) body behind them: `content-length` stays true.
    Keep,
    /// Headers with a buffered body behind them: the body's hook may change its size, so
    /// `content-length` goes when the headers' hook continues.
    Strip,
}

const fn side(direction: Direction) -> usize {
    match direction {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl StreamGate {
    /// A stream that has seen no callback.
    pub const fn new() -> StreamGate {
        StreamGate {
            hook: HookState::Idle,
            exchange: Exchange::Open,
            content_length: ContentLength::NoBody,
            held: None,
        }
    }

    fn held(&self) -> &Held {
        self.held.as_deref().unwrap_or(&NOTHING_HELD)
    }

    fn held_mut(&mut self) -> &mut Held {
        self.held.get_or_insert_with(|| Box::new(Held::NOTHING))
    }

    // Writing what a gate without `Held` reads needs no `Held`.
    fn reset_window(&mut self, side: usize) {
        if let Some(held) = self.held.as_mut() {
            held.windows[side] = BodyWindow::default();
        }
    }

    fn clear_queue(&mut self) {
        if let Some(held) = self.held.as_mut() {
            held.queued.clear();
        }
    }

    fn release_bodies(&mut self) {
        if let Some(held) = self.held.as_mut() {
            held.held_body = [HeldBody::NONE; 2];
        }
    }

    /// The plugin skips `direction`'s body on this stream (the running hook decided so, e.g.
    /// Higress skips gRPC and compressed bodies): its later body callbacks continue without a
    /// hook and nothing of it is buffered, so a buffering plugin does not hold it or refuse it
    /// for its size. A callback that comes while a hook runs is still held behind it (answering
    /// it `Continue` would let the stopped headers go on), and its hook is then the caller's
    /// to skip ([`skips_body`](StreamGate::skips_body)). Meant for the headers' hook; a
    /// `content-length` the headers' hook would drop for a buffered body is kept.
    pub fn skip_body(&mut self, direction: Direction) {
        if self.runs_headers_of(direction) && self.content_length == ContentLength::Strip {
            self.content_length = ContentLength::Keep;
        }
        self.held_mut().skipped_body[side(direction)] = true;
    }

    /// Whether the hook running (or paused) is `direction`'s headers' hook, whose
    /// `content_length` a body decision changes.
    fn runs_headers_of(&self, direction: Direction) -> bool {
        matches!(self.hook, HookState::Running(phase) | HookState::Paused(phase)
            if phase.is_headers() && phase.direction() == direction)
    }

    /// Whether the plugin skips `direction`'s body ([`skip_body`](StreamGate::skip_body)).
    pub fn skips_body(&self, direction: Direction) -> bool {
        self.held().skipped_body[side(direction)]
    }

    /// This stream's `direction` body is buffered although the plugin streams bodies (Higress's
    /// `BufferRequestBody`): its hook runs once, on the whole body, within the limit. Meant for
    /// the headers' hook, before any of the body came; the body's `content-length` is dropped
    /// when that hook continues, as for any buffered body (the body hook may change its size).
    pub fn buffer_body(&mut self, direction: Direction) {
        if self.runs_headers_of(direction)
            && !self.skips_body(direction)
            && self.content_length == ContentLength::Keep
        {
            self.content_length = ContentLength::Strip;
        }
        self.held_mut().buffered_body[side(direction)] = true;
    }

    /// Whether this stream's `direction` body is buffered: the plugin's setting, or
    /// [`buffer_body`](StreamGate::buffer_body), unless the plugin skips it.
    pub fn buffers(&self, settings: &GateSettings, direction: Direction) -> bool {
        let held = self.held();
        (settings.buffers(direction) || held.buffered_body[side(direction)])
            && !held.skipped_body[side(direction)]
    }

    /// The most bytes `direction`'s buffered body may have on this stream, instead of the
    /// plugin's [`GateSettings::body_buffer_limit`] (e.g. a larger upload on one route).
    pub fn set_body_buffer_limit(&mut self, direction: Direction, bytes: usize) {
        self.held_mut().body_buffer_limit[side(direction)] = Some(bytes);
    }

    /// The most bytes `direction`'s buffered body may have on this stream.
    pub fn body_buffer_limit(&self, settings: &GateSettings, direction: Direction) -> usize {
        self.held().body_buffer_limit[side(direction)].unwrap_or(settings.body_buffer_limit)
    }

    /// What the stream's hooks are doing.
    pub const fn hook(&self) -> HookState {
        self.hook
    }

    /// Where the stream's exchange is.
    pub const fn exchange(&self) -> Exchange {
        self.exchange
    }

    /// Callbacks waiting for their hook.
    pub fn queued(&self) -> usize {
        self.held().queued.len()
    }

    /// Where `direction`'s running chunk is.
    pub fn window(&self, direction: Direction) -> BodyWindow {
        self.held().windows[side(direction)]
    }

    /// The running chunk of `direction` now has `len` bytes: its hook replaced it.
    pub fn resize_chunk(&mut self, direction: Direction, len: usize) {
        let window = &mut self.held_mut().windows[side(direction)];
        window.known = (window.known + len).saturating_sub(window.len);
        window.len = len;
    }

    /// A stream callback (not `on_log`: see [`log`](StreamGate::log)).
    pub fn callback(&mut self, settings: &GateSettings, event: Event) -> Arrival {
        // After the stream's local reply, the proxy runs the response callbacks for the reply
        // itself: the plugin does not see its own reply.
        if self.exchange != Exchange::Open || event.phase == Phase::Log {
            return Arrival::Answer(Action::Continue);
        }
        let direction = event.phase.direction();
        let skipped_body = event.phase.is_body() && self.skips_body(direction);
        let buffered = event.phase.is_body() && self.buffers(settings, direction);
        if buffered && event.size > self.body_buffer_limit(settings, direction) {
            self.exchange = Exchange::Replied;
            self.clear_queue();
            return Arrival::Refuse {
                direction,
                size: event.size,
            };
        }
        if buffered {
            if !event.end_of_stream {
                // Pause on a chunk makes the proxy buffer it with the next ones.
                self.held_mut().held_body[side(direction)] = HeldBody::of(event.size);
                return Arrival::Answer(Action::Pause);
            }
            if let Some(held) = self.held.as_mut() {
                held.held_body[side(direction)] = HeldBody::NONE;
            }
        }
        // Trailers end a body the plugin buffers: its hook runs first, on all of it, and the
        // trailers' after it (in this callback, if the body's hook finishes inside it).
        if let Some(body) = event.phase.body_before_trailers()
            && let Some(held) = self
                .held
                .as_mut()
                .and_then(|held| held.held_body[side(direction)].take())
        {
            let arrival = self.callback(settings, Event::new(body, held, true));
            return match arrival {
                Arrival::Answer(Action::Continue) => self.callback(settings, event),
                Arrival::Run(_) => {
                    self.held_mut().queued.push_back(Queued {
                        event,
                        answered: false,
                    });
                    arrival
                }
                Arrival::Answer(_) => {
                    self.held_mut().queued.push_back(Queued {
                        event,
                        answered: true,
                    });
                    arrival
                }
                Arrival::Refuse { .. } => arrival,
            };
        }
        // The callback reports every byte buffered; the hook gets the new chunk only.
        let (event, known) = if event.phase.is_body() {
            let chunk = event
                .size
                .saturating_sub(self.held().windows[side(direction)].known);
            (
                Event::new(event.phase, chunk, event.end_of_stream),
                Some(event.size),
            )
        } else {
            (event, None)
        };
        if self.hook != HookState::Idle {
            // Another hook of this stream awaits (the response came while a request hook
            // waits, or a chunk while the previous chunk's hook waits): hold this one too.
            let held = self.held_mut();
            if let Some(known) = known {
                held.windows[side(direction)].known = known;
            }
            held.queued.push_back(Queued {
                event,
                answered: true,
            });
            return Arrival::Answer(Action::Pause);
        }
        if skipped_body {
            // Chunks held before the plugin skipped the body go on with this one.
            self.held_mut().held_body[side(direction)] = HeldBody::NONE;
            self.reset_window(side(direction));
            return Arrival::Answer(Action::Continue);
        }
        // Headers before a buffered body still run (the default hook) to drop their
        // `content-length`: the body's hook may change the body's size.
        if settings.skipped.contains(event.phase)
            && self.content_length_of(settings, event.phase, event.end_of_stream)
                != ContentLength::Strip
        {
            self.reset_window(side(direction));
            return Arrival::Answer(Action::Continue);
        }
        if let Some(known) = known {
            self.held_mut().windows[side(direction)].known = known;
        }
        Arrival::Run(self.start(settings, event, HookState::Running(event.phase)))
    }

    /// The callbacks the gate answers `Continue` without running anything, as
    /// [`callback`](StreamGate::callback) does: every callback after the stream was answered,
    /// passed on or ended, and headers whose hook the plugin leaves at its default when no hook
    /// of the stream runs and no buffered body follows. Done here without the rest of
    /// `callback`, since most callbacks of most plugins are these. False, with nothing done,
    /// for any other callback.
    #[inline]
    pub fn continue_at_once(
        &mut self,
        settings: &GateSettings,
        phase: Phase,
        end_of_stream: bool,
    ) -> bool {
        if self.exchange != Exchange::Open {
            return true;
        }
        if !phase.is_headers()
            || !settings.skipped.contains(phase)
            || self.hook != HookState::Idle
            || (!end_of_stream && self.buffers(settings, phase.direction()))
        {
            return false;
        }
        self.reset_window(side(phase.direction()));
        true
    }

    /// The callback of headers whose hook the plugin has, when the stream is open and no hook
    /// of it runs: what [`callback`](StreamGate::callback) does with it (the hook starts
    /// inside the callback), done here without the rest of `callback`. `None`, with nothing
    /// done, for any other callback.
    #[inline]
    pub fn start_headers(
        &mut self,
        settings: &GateSettings,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Option<HookRun> {
        if !phase.is_headers()
            || settings.skipped.contains(phase)
            || self.hook != HookState::Idle
            || self.exchange != Exchange::Open
        {
            return None;
        }
        self.hook = HookState::Running(phase);
        self.content_length = self.content_length_of(settings, phase, end_of_stream);
        Some(HookRun {
            phase,
            size,
            end_of_stream,
        })
    }

    /// The running hook continued inside its callback, with nothing queued behind it and
    /// nothing to strip: what [`returned`](StreamGate::returned) does with it (the callback
    /// answers `Continue`; no reply, no resume, no next hook), done here without the rest of
    /// `returned`. False, with nothing done, in any other case.
    #[inline]
    pub fn continued_in_callback(&mut self) -> bool {
        let HookState::Running(phase) = self.hook else {
            return false;
        };
        if self.content_length == ContentLength::Strip
            || self.exchange != Exchange::Open
            || !self.held().queued.is_empty()
        {
            return false;
        }
        // `content_length` may stay `Keep`: with no hook running it means nothing.
        self.hook = HookState::Idle;
        self.reset_window(side(phase.direction()));
        true
    }

    /// The hook replied, on an open stream, inside its callback or after it paused: what
    /// [`returned`](StreamGate::returned) does with it (the reply is to be sent; nothing is
    /// resumed and nothing queued runs; a callback the hook runs inside of answers `Pause`),
    /// done here without the rest of `returned`. False, with nothing done, in any other case
    /// (`on_log`'s reply among them).
    #[inline]
    pub fn replied(&mut self) -> bool {
        let (HookState::Running(phase) | HookState::Paused(phase)) = self.hook else {
            return false;
        };
        if phase == Phase::Log || self.exchange != Exchange::Open {
            return false;
        }
        self.hook = HookState::Idle;
        self.content_length = ContentLength::NoBody;
        self.exchange = Exchange::Replied;
        self.clear_queue();
        self.reset_window(side(phase.direction()));
        true
    }

    /// `on_log`: the hook to run, if any. It does not run while another hook awaits (the
    /// client went away mid-call; that hook is dropped at the stream's end, and the plugin's
    /// per-stream value with it), after the stream ended, or when the plugin has none.
    pub fn log(&mut self, settings: &GateSettings) -> Option<HookRun> {
        if self.hook != HookState::Idle
            || matches!(self.exchange, Exchange::Ended | Exchange::Passed)
            || settings.skipped.contains(Phase::Log)
        {
            return None;
        }
        self.hook = HookState::Running(Phase::Log);
        Some(HookRun {
            phase: Phase::Log,
            size: 0,
            end_of_stream: true,
        })
    }

    /// The plugin leaves the stream alone from now on (the running hook decided so, e.g. no
    /// Higress rule matched the request): later callbacks continue at once, bodies are not
    /// held, and no hook runs again, `on_log` included. The running hook still returns as
    /// usual (a paused one is resumed). Meant for the hook of a stream's first callback, before
    /// it awaits: callbacks already queued behind a running hook still run theirs. No effect
    /// after a local reply or the stream's end.
    pub fn pass(&mut self) {
        if self.exchange == Exchange::Open {
            self.exchange = Exchange::Passed;
            self.release_bodies();
        }
    }

    /// The stream ended (`on_done`): nothing runs again. Returns the phase whose hook was
    /// still running, whose future the caller drops.
    pub fn end(&mut self) -> Option<Phase> {
        let running = match self.hook {
            HookState::Idle => None,
            HookState::Running(phase) | HookState::Paused(phase) => Some(phase),
        };
        self.hook = HookState::Idle;
        self.exchange = Exchange::Ended;
        self.clear_queue();
        self.release_bodies();
        self.content_length = ContentLength::NoBody;
        running
    }

    /// The hook started last did not finish inside its callback: `Some(Pause)` to answer that
    /// callback with, or `None` when its callback answered already (a hook started from the
    /// queue) or no hook runs.
    pub fn awaiting(&mut self) -> Option<Action> {
        match self.hook {
            HookState::Running(phase) => {
                self.hook = HookState::Paused(phase);
                // Trailers behind the body hook that runs inside their callback: that
                // callback answers `Pause` now.
                if let Some(held) = self.held.as_mut() {
                    for queued in &mut held.queued {
                        queued.answered = true;
                    }
                }
                Some(Action::Pause)
            }
            HookState::Idle | HookState::Paused(_) => None,
        }
    }

    /// The running hook finished with `outcome`.
    pub fn returned(&mut self, settings: &GateSettings, outcome: Outcome) -> Finish {
        let (phase, paused) = match self.hook {
            HookState::Running(phase) => (phase, false),
            HookState::Paused(phase) => (phase, true),
            HookState::Idle => {
                return Finish {
                    reply: match outcome {
                        Outcome::Continue => ReplyFate::None,
                        Outcome::Reply => ReplyFate::Gone,
                    },
                    resume: None,
                    answer: None,
                    next: None,
                    strip_content_length: None,
                };
            }
        };
        self.hook = HookState::Idle;
        let answer = (!paused).then_some(match outcome {
            Outcome::Continue => Action::Continue,
            Outcome::Reply => Action::Pause,
        });
        let strips = std::mem::take(&mut self.content_length) == ContentLength::Strip;
        let mut finish = Finish {
            reply: ReplyFate::None,
            resume: None,
            answer,
            next: None,
            strip_content_length: (strips
                && outcome == Outcome::Continue
                && self.exchange == Exchange::Open)
                .then(|| phase.direction()),
        };
        if matches!(self.exchange, Exchange::Replied | Exchange::Ended) {
            // Ended, or refused by the SDK (an oversized body) while this hook ran. `on_log`
            // runs after a reply, and may continue.
            if outcome == Outcome::Reply {
                finish.reply = if phase == Phase::Log {
                    ReplyFate::AfterLog
                } else {
                    ReplyFate::Gone
                };
            }
            return finish;
        }
        let direction = phase.direction();
        match outcome {
            Outcome::Reply if phase == Phase::Log => {
                finish.reply = ReplyFate::AfterLog;
                return finish;
            }
            Outcome::Reply => {
                finish.reply = ReplyFate::Send;
                self.exchange = Exchange::Replied;
                self.clear_queue();
                self.reset_window(side(direction));
                return finish;
            }
            Outcome::Continue => {}
        }
        let next_holds = self
            .held()
            .queued
            .front()
            .is_some_and(|next| next.event.phase.direction() == direction);
        if next_holds {
            // A later event of this direction waits too: resuming now would pass its data on
            // before its hook ran. The direction is resumed once, after the last held hook.
            let window = &mut self.held_mut().windows[side(direction)];
            window.handled = window.offset + window.len;
            window.len = 0;
        } else {
            self.reset_window(side(direction));
            if paused && phase != Phase::Log {
                finish.resume = Some(direction);
            }
        }
        if let Some(next) = self.held.as_mut().and_then(|held| held.queued.pop_front()) {
            let state = if next.answered {
                HookState::Paused(next.event.phase)
            } else {
                // Trailers behind this body hook, in the callback running now: theirs is
                // that callback's answer.
                finish.answer = None;
                HookState::Running(next.event.phase)
            };
            finish.next = Some(self.start(settings, next.event, state));
        }
        finish
    }

    /// What the hook of `phase`'s callback leaves for the body behind it: headers with a body
    /// this stream buffers lose their `content-length`.
    #[inline(always)]
    fn content_length_of(
        &self,
        settings: &GateSettings,
        phase: Phase,
        end_of_stream: bool,
    ) -> ContentLength {
        if !phase.is_headers() || end_of_stream {
            ContentLength::NoBody
        } else if self.buffers(settings, phase.direction()) {
            ContentLength::Strip
        } else {
            ContentLength::Keep
        }
    }

    /// Starts `event`'s hook in `state`.
    fn start(&mut self, settings: &GateSettings, event: Event, state: HookState) -> HookRun {
        self.hook = state;
        if event.phase.is_body() {
            let window = &mut self.held_mut().windows[side(event.phase.direction())];
            window.offset = window.handled;
            window.len = event.size;
        }
        self.content_length = self.content_length_of(settings, event.phase, event.end_of_stream);
        HookRun {
            phase: event.phase,
            size: event.size,
            end_of_stream: event.end_of_stream,
        }
    }
}
