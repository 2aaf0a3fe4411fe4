//! The stream gate alone, against a model of what Envoy allows: random streams (headers,
//! chunked or buffered bodies, trailers, early resets, local replies), random plugins (each
//! hook finishes inside its callback or awaits, continues or replies, or is absent), delivered
//! by a proxy that keeps Envoy's rules. Every case checks:
//!
//! - a direction is resumed only when its callback answered `Pause`, once, never inside the
//!   callback that paused it, and never after the stream's local reply or end;
//! - at most one local reply, and none from `on_log`;
//! - hooks run one at a time, in the order of their callbacks, each callback's hook at most
//!   once; none after the reply (but `on_log`) or the end;
//! - each body hook sees exactly its own bytes: a chunk hook the new chunk, a buffered hook the
//!   whole body (and that before the trailers' hook);
//! - nothing is left hanging: whenever no hook runs, no direction waits for a resume except a
//!   buffered body the proxy is still receiving.

use proxy_async_abi::gate::{
    Arrival, Event, Exchange, Finish, GateSettings, HookRun, HookState, Outcome, PhaseSet,
    ReplyFate, StreamGate,
};
use proxy_async_abi::{Action, Direction, Phase};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// One hook run of the plugin, in the order hooks start.
#[derive(Debug, Clone, Copy)]
struct HookScript {
    awaits: bool,
    replies: bool,
    /// A headers' hook that skips its direction's body (`StreamGate::skip_body`).
    skips_body: bool,
    /// A headers' hook that buffers its direction's body (`StreamGate::buffer_body`).
    buffers_body: bool,
}

/// One direction's parts as the client (or upstream) sends them.
#[derive(Debug, Clone)]
struct Message {
    chunks: Vec<usize>,
    trailers: bool,
}

#[derive(Debug, Clone)]
struct Case {
    settings: GateSettings,
    request: Message,
    response: Message,
    hooks: Vec<HookScript>,
    /// Step after which the client goes away (`on_done` without the rest).
    reset_at: Option<usize>,
    /// Whether the proxy completes an awaiting hook before delivering the next callback, per
    /// step (else the callback comes first, when the proxy may send it).
    complete_first: Vec<bool>,
}

fn message() -> impl Strategy<Value = Message> {
    (prop::collection::vec(1usize..50, 0..4), any::<bool>())
        .prop_map(|(chunks, trailers)| Message { chunks, trailers })
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), any::<bool>(), 20usize..200, any::<u8>()),
        message(),
        message(),
        prop::collection::vec(
            (
                any::<bool>(),
                prop::bool::weighted(0.15),
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.2),
            )
                .prop_map(|(awaits, replies, skips_body, buffers_body)| HookScript {
                    awaits,
                    replies,
                    skips_body,
                    buffers_body,
                }),
            12,
        ),
        prop::option::weighted(0.2, 0usize..16),
        prop::collection::vec(any::<bool>(), 32),
    )
        .prop_map(
            |(
                (buffer_request, buffer_response, limit, skipped),
                request,
                response,
                hooks,
                reset_at,
                complete_first,
            )| {
                let mut set = PhaseSet::EMPTY;
                for (bit, phase) in Phase::ALL.iter().enumerate() {
                    if skipped & (1 << bit) != 0 {
                        set = set.with(*phase);
                    }
                }
                Case {
                    settings: GateSettings {
                        buffer_request_body: buffer_request,
                        buffer_response_body: buffer_response,
                        body_buffer_limit: limit,
                        skipped: set,
                    },
                    request,
                    response,
                    hooks,
                    reset_at,
                    complete_first,
                }
            },
        )
}

/// A callback the proxy has for a direction, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Headers { end: bool },
    Chunk { len: usize, end: bool },
    Trailers,
}

fn parts(message: &Message) -> Vec<Part> {
    let mut parts = vec![Part::Headers {
        end: message.chunks.is_empty() && !message.trailers,
    }];
    for (index, len) in message.chunks.iter().enumerate() {
        parts.push(Part::Chunk {
            len: *len,
            end: index + 1 == message.chunks.len() && !message.trailers,
        });
    }
    if message.trailers {
        parts.push(Part::Trailers);
    }
    parts
}

/// What the proxy knows of one direction.
#[derive(Debug, Default)]
struct Side {
    parts: Vec<Part>,
    next: usize,
    /// Stopped by a callback answered `Pause`: which callback (its serial) and what it was.
    stopped: Option<(usize, Part)>,
    /// Bytes the proxy buffers for the direction since it last forwarded them.
    buffered: usize,
    /// Chunk lengths delivered and not yet seen by a hook, in order (chunked mode).
    unseen: Vec<usize>,
    /// Bytes of the whole body, for a buffered hook.
    total: usize,
    body_hook_ran: bool,
    trailers_hook_ran: bool,
    /// The plugin skips this direction's body.
    skipping: bool,
    /// The plugin buffers this direction's body on this stream.
    buffering: bool,
}

struct Proxy<'a> {
    case: &'a Case,
    gate: StreamGate,
    sides: [Side; 2],
    serial: usize,
    replies: usize,
    hooks_started: usize,
    /// The hook running or awaiting, with its script.
    running: Option<(HookRun, HookScript)>,
    /// Phases whose hooks ran, in order.
    ran: Vec<Phase>,
    ended: bool,
}

fn side(direction: Direction) -> usize {
    match direction {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

fn fail(message: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(message))
}

impl Proxy<'_> {
    /// Whether the stream buffers `direction`'s body, as the plugin set it up.
    fn buffers(&self, direction: Direction) -> bool {
        let s = &self.sides[side(direction)];
        (self.case.settings.buffers(direction) || s.buffering) && !s.skipping
    }

    fn script(&mut self) -> HookScript {
        let script = self.case.hooks[self.hooks_started % self.case.hooks.len()];
        self.hooks_started += 1;
        script
    }

    fn outcome(script: HookScript) -> Outcome {
        if script.replies {
            Outcome::Reply
        } else {
            Outcome::Continue
        }
    }

    /// A hook starts: check what it sees, then run it until it finishes or awaits. Returns the
    /// action for the callback running now, if the gate gives one.
    fn start(
        &mut self,
        run: HookRun,
        in_callback: Option<usize>,
    ) -> Result<Option<Action>, TestCaseError> {
        if self.ended {
            return Err(TestCaseError::fail(format!(
                "{:?} started after the end",
                run.phase
            )));
        }
        if self.gate.exchange() == Exchange::Replied && run.phase != Phase::Log {
            return Err(TestCaseError::fail(format!(
                "{:?} started after the reply",
                run.phase
            )));
        }
        if self.running.is_some() {
            return Err(TestCaseError::fail(format!(
                "{:?} started beside another hook",
                run.phase
            )));
        }
        self.ran.push(run.phase);
        let direction = run.phase.direction();
        if run.phase.is_body() && self.gate.skips_body(direction) {
            // A skipped body's callback that came while another hook ran: the driver runs no
            // hook for it, which continues at once.
            let s = &mut self.sides[side(direction)];
            prop_assert!(s.skipping, "a body skipped that the plugin did not skip");
            s.unseen.clear();
            let skipped = HookScript {
                awaits: false,
                replies: false,
                skips_body: false,
                buffers_body: false,
            };
            self.running = Some((run, skipped));
            return self.finish(Outcome::Continue, in_callback);
        }
        if run.phase.is_body() {
            let s = &mut self.sides[side(direction)];
            let buffers = self.case.settings.buffers(direction) || s.buffering;
            if s.body_hook_ran && buffers {
                return Err(TestCaseError::fail("a buffered body hook ran twice"));
            }
            if s.trailers_hook_ran {
                return Err(TestCaseError::fail(
                    "a body hook ran after the trailers' hook",
                ));
            }
            s.body_hook_ran = true;
            if buffers {
                prop_assert_eq!(run.size, s.total, "a buffered hook sees the whole body");
                prop_assert_eq!(self.gate.window(direction).offset, 0);
            } else {
                let expected = s.unseen.first().copied();
                prop_assert_eq!(Some(run.size), expected, "a chunk hook sees its chunk");
                s.unseen.remove(0);
                let window = self.gate.window(direction);
                prop_assert_eq!(window.len, run.size);
                prop_assert!(
                    window.offset + window.len <= s.buffered,
                    "the chunk is in the buffer"
                );
            }
        }
        if matches!(run.phase, Phase::RequestTrailers | Phase::ResponseTrailers) {
            self.sides[side(direction)].trailers_hook_ran = true;
        }
        let script = self.script();
        if script.buffers_body && run.phase.is_headers() {
            self.gate.buffer_body(direction);
            self.sides[side(direction)].buffering = true;
        }
        if script.skips_body && run.phase.is_headers() {
            self.gate.skip_body(direction);
            self.sides[side(direction)].skipping = true;
        }
        self.running = Some((run, script));
        if !script.awaits {
            return self.finish(Self::outcome(script), in_callback);
        }
        let answer = self.gate.awaiting();
        if answer.is_some() != in_callback.is_some() {
            return Err(TestCaseError::fail(format!(
                "awaiting answered {answer:?} with the callback {in_callback:?}"
            )));
        }
        Ok(answer)
    }

    /// If `shortcut` applies to the running hook's `outcome`, it leaves the gate as `returned`
    /// does, which then sends `reply` (or not), answers `answer`, and does nothing else.
    fn check_shortcut(
        &self,
        outcome: Outcome,
        shortcut: fn(&mut StreamGate) -> bool,
        reply: ReplyFate,
        answer: Option<Action>,
    ) -> Result<(), TestCaseError> {
        let mut short = self.gate.clone();
        if !shortcut(&mut short) {
            return Ok(());
        }
        let mut full = self.gate.clone();
        let finish = full.returned(&self.case.settings, outcome);
        prop_assert_eq!(
            finish,
            Finish {
                reply,
                resume: None,
                answer,
                next: None,
                strip_content_length: None,
            }
        );
        prop_assert_eq!(format!("{full:?}"), format!("{short:?}"));
        Ok(())
    }

    /// The running hook finishes; applies the gate's outputs.
    fn finish(
        &mut self,
        outcome: Outcome,
        in_callback: Option<usize>,
    ) -> Result<Option<Action>, TestCaseError> {
        let (run, _) = self.running.take().expect("a hook runs");
        // The shortcuts the SDK takes first, for a hook that continued in its callback and for
        // one that replied (in its callback or after it paused), do exactly what `returned`
        // does.
        let in_its_callback = matches!(self.gate.hook(), HookState::Running(_));
        match outcome {
            Outcome::Continue => self.check_shortcut(
                outcome,
                StreamGate::continued_in_callback,
                ReplyFate::None,
                Some(Action::Continue),
            )?,
            Outcome::Reply => self.check_shortcut(
                outcome,
                StreamGate::replied,
                ReplyFate::Send,
                in_its_callback.then_some(Action::Pause),
            )?,
        }
        let finish = self.gate.returned(&self.case.settings, outcome);
        match finish.reply {
            ReplyFate::Send => {
                self.replies += 1;
                prop_assert!(self.replies <= 1, "a second local reply was sent");
                prop_assert!(run.phase != Phase::Log, "on_log replied");
            }
            ReplyFate::None => prop_assert_eq!(outcome, Outcome::Continue),
            ReplyFate::AfterLog | ReplyFate::Gone => {
                prop_assert_eq!(outcome, Outcome::Reply)
            }
        }
        if let Some(direction) = finish.strip_content_length {
            prop_assert!(
                run.phase.is_headers()
                    && run.phase.direction() == direction
                    && !run.end_of_stream
                    && self.buffers(direction)
                    && outcome == Outcome::Continue,
                "content-length stripped after {:?}",
                run
            );
        }
        if let Some(direction) = finish.resume {
            self.resume(direction, in_callback)?;
        }
        let mut answer = finish.answer;
        if let Some(next) = finish.next {
            let inner = self.start(next, if answer.is_none() { in_callback } else { None })?;
            answer = answer.or(inner);
        }
        Ok(answer)
    }

    fn resume(
        &mut self,
        direction: Direction,
        in_callback: Option<usize>,
    ) -> Result<(), TestCaseError> {
        if self.replies > 0 || self.ended {
            return fail(format!("resumed {direction:?} after the reply or the end"));
        }
        let s = &mut self.sides[side(direction)];
        let Some((by, _)) = s.stopped.take() else {
            return fail(format!("resumed {direction:?}, which is not stopped"));
        };
        if Some(by) == in_callback {
            return fail(format!(
                "resumed {direction:?} inside the callback that paused it"
            ));
        }
        s.buffered = 0;
        Ok(())
    }

    /// Whether the proxy would send `direction`'s next part now.
    fn can_send(&self, direction: Direction) -> bool {
        let s = &self.sides[side(direction)];
        if s.next >= s.parts.len() {
            return false;
        }
        if direction == Direction::Response && self.replies == 0 {
            // The upstream answers once it has the request headers (possibly before the
            // request body is through), or the proxy sends the local reply.
            let request = &self.sides[0];
            let headers_through =
                request.next >= 1 && !matches!(request.stopped, Some((_, Part::Headers { .. })));
            if !headers_through {
                return false;
            }
        }
        match s.stopped {
            None => true,
            // Paused on a body chunk, the proxy buffers what follows and calls again.
            Some((_, Part::Chunk { .. })) => !matches!(s.parts[s.next], Part::Headers { .. }),
            Some(_) => false,
        }
    }

    fn deliver(&mut self, direction: Direction) -> Result<(), TestCaseError> {
        let index = side(direction);
        let part = self.sides[index].parts[self.sides[index].next];
        self.sides[index].next += 1;
        self.serial += 1;
        let serial = self.serial;
        let event = match part {
            Part::Headers { end } => Event::new(Phase::headers(direction), 2, end),
            Part::Chunk { len, end } => {
                let s = &mut self.sides[index];
                s.buffered += len;
                s.total += len;
                s.unseen.push(len);
                Event::new(Phase::body(direction), s.buffered, end)
            }
            Part::Trailers => Event::new(Phase::trailers(direction), 1, true),
        };
        let replied_before = self.replies > 0;
        // The shortcut the SDK takes first does exactly what the whole callback does.
        let mut shortcut = self.gate.clone();
        if shortcut.continue_at_once(&self.case.settings, event.phase, event.end_of_stream) {
            let mut full = self.gate.clone();
            prop_assert_eq!(
                full.callback(&self.case.settings, event),
                Arrival::Answer(Action::Continue)
            );
            prop_assert_eq!(format!("{full:?}"), format!("{shortcut:?}"));
        }
        let mut shortcut = self.gate.clone();
        if let Some(run) = shortcut.start_headers(
            &self.case.settings,
            event.phase,
            event.size,
            event.end_of_stream,
        ) {
            let mut full = self.gate.clone();
            prop_assert_eq!(full.callback(&self.case.settings, event), Arrival::Run(run));
            prop_assert_eq!(format!("{full:?}"), format!("{shortcut:?}"));
        }
        let action = match self.gate.callback(&self.case.settings, event) {
            Arrival::Answer(action) => action,
            Arrival::Refuse {
                direction: refused,
                size,
            } => {
                prop_assert_eq!(refused, direction);
                prop_assert!(size > self.case.settings.body_buffer_limit);
                self.replies += 1;
                prop_assert!(self.replies <= 1, "a second local reply (refused body)");
                Action::Pause
            }
            Arrival::Run(run) => match self.start(run, Some(serial))? {
                Some(action) => action,
                None => return fail(format!("no answer for {event:?}")),
            },
        };
        if replied_before {
            prop_assert_eq!(action, Action::Continue, "the reply's own callbacks pass");
            return Ok(());
        }
        let s = &mut self.sides[index];
        if action == Action::Pause {
            if self.replies == 0 {
                s.stopped = Some((serial, part));
            }
        } else {
            // Continue after a held chunk lets the buffer go on (Envoy: iteration continues
            // with the buffered data), which is wrong only while a hook of this direction
            // still awaits.
            let awaiting = self
                .running
                .is_some_and(|(run, _)| run.phase.direction() == direction);
            if let Some((_, stopped)) = s.stopped
                && awaiting
            {
                return fail(format!(
                    "{event:?} answered Continue while {stopped:?} waits"
                ));
            }
            s.stopped = None;
            s.buffered = 0;
            // Unseen chunks of a streamed body are forwarded only after their hooks ran.
            let streamed = !(self.case.settings.buffers(direction) || s.buffering) || s.skipping;
            if streamed && event.phase.is_body() {
                let skipped = self.case.settings.skipped.contains(event.phase) || s.skipping;
                if !skipped && !s.unseen.is_empty() {
                    return fail(format!("{event:?} continued with chunks unseen"));
                }
                s.unseen.clear();
            }
        }
        Ok(())
    }

    /// Whenever no hook runs, no direction may wait for a resume but a buffered body still
    /// arriving.
    fn check_nothing_hangs(&self) -> Result<(), TestCaseError> {
        if self.gate.hook() != HookState::Idle || self.replies > 0 || self.ended {
            return Ok(());
        }
        for (index, s) in self.sides.iter().enumerate() {
            if let Some((_, part)) = s.stopped {
                let direction = if index == 0 {
                    Direction::Request
                } else {
                    Direction::Response
                };
                let holding = matches!(part, Part::Chunk { end: false, .. })
                    && (self.case.settings.buffers(direction) || s.buffering)
                    && !s.skipping
                    && s.next < s.parts.len();
                if !holding {
                    return fail(format!(
                        "{direction:?} stopped at {part:?} with no hook running"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut proxy = Proxy {
        case,
        gate: StreamGate::new(),
        sides: [
            Side {
                parts: parts(&case.request),
                ..Side::default()
            },
            Side {
                parts: parts(&case.response),
                ..Side::default()
            },
        ],
        serial: 0,
        replies: 0,
        hooks_started: 0,
        running: None,
        ran: Vec::new(),
        ended: false,
    };
    let mut step = 0;
    let mut went_away = false;
    loop {
        if case.reset_at == Some(step) {
            went_away = true;
            break;
        }
        let complete_first = case.complete_first[step % case.complete_first.len()];
        step += 1;
        let awaiting = proxy.running.is_some();
        let sendable = [Direction::Request, Direction::Response]
            .into_iter()
            .find(|direction| proxy.can_send(*direction));
        match (awaiting, sendable) {
            (true, Some(direction)) if !complete_first => proxy.deliver(direction)?,
            (true, _) => {
                let (_, script) = proxy.running.expect("a hook awaits");
                // A call response: another callback, not the one that paused.
                proxy.serial += 1;
                proxy.finish(Proxy::outcome(script), None)?;
            }
            (false, Some(direction)) => proxy.deliver(direction)?,
            (false, None) => break,
        }
        proxy.check_nothing_hangs()?;
        if step > 200 {
            return fail("the stream never ends".into());
        }
    }
    if !went_away && proxy.replies == 0 {
        // Everything was delivered and every hook finished.
        for s in &proxy.sides {
            prop_assert!(s.next == s.parts.len(), "every part was delivered");
            prop_assert!(s.stopped.is_none(), "every direction went through");
        }
    }
    // Envoy logs every stream, a reset one too.
    let awaiting = proxy.running.is_some();
    match proxy.gate.log(&case.settings) {
        Some(run) => {
            prop_assert!(!awaiting && !case.settings.skipped.contains(Phase::Log));
            proxy.serial += 1;
            let serial = proxy.serial;
            proxy.start(run, Some(serial))?;
        }
        None => prop_assert!(
            awaiting || case.settings.skipped.contains(Phase::Log),
            "on_log did not run"
        ),
    }
    let was_running = proxy.running.take().map(|(run, _)| run.phase);
    prop_assert_eq!(
        proxy.gate.end(),
        was_running,
        "the end drops the running hook"
    );
    proxy.ended = true;
    prop_assert_eq!(
        proxy.gate.log(&case.settings),
        None,
        "nothing runs after the end"
    );
    prop_assert_eq!(
        proxy
            .gate
            .callback(&case.settings, Event::new(Phase::ResponseBody, 5, true)),
        Arrival::Answer(Action::Continue)
    );
    // Hooks ran in the proxy's order: headers, body, trailers within a direction, and
    // on_log last.
    let order = |phase: &Phase| Phase::ALL.iter().position(|p| p == phase);
    for direction in [Direction::Request, Direction::Response] {
        let phases: Vec<Phase> = proxy
            .ran
            .iter()
            .copied()
            .filter(|phase| *phase != Phase::Log && phase.direction() == direction)
            .collect();
        prop_assert!(
            phases
                .windows(2)
                .all(|pair| order(&pair[0]) <= order(&pair[1])),
            "hooks out of order: {:?}",
            proxy.ran
        );
    }
    if let Some(log) = proxy.ran.iter().position(|phase| *phase == Phase::Log) {
        prop_assert_eq!(log, proxy.ran.len() - 1, "on_log runs last");
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: if cfg!(miri) { 20 } else { 10_000 },
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_streams_keep_envoys_rules(case in case()) {
        run_case(&case)?;
    }
}

/// The case the gate exists for: trailers end a buffered body whose hook awaits; the body
/// hook runs first, the trailers' after it, and the request is resumed once, after both.
#[test]
fn trailers_wait_for_the_buffered_body_hook_they_end() {
    let settings = GateSettings {
        buffer_request_body: true,
        ..GateSettings::default()
    };
    let mut gate = StreamGate::new();
    let headers = gate.callback(&settings, Event::new(Phase::RequestHeaders, 2, false));
    let Arrival::Run(run) = headers else {
        panic!("headers run: {headers:?}")
    };
    assert_eq!(run.phase, Phase::RequestHeaders);
    let finish = gate.returned(&settings, Outcome::Continue);
    assert_eq!(finish.strip_content_length, Some(Direction::Request));
    assert_eq!(finish.answer, Some(Action::Continue));
    assert_eq!(
        gate.callback(&settings, Event::new(Phase::RequestBody, 10, false)),
        Arrival::Answer(Action::Pause)
    );
    let trailers = gate.callback(&settings, Event::new(Phase::RequestTrailers, 1, true));
    let Arrival::Run(body) = trailers else {
        panic!("the body hook runs first: {trailers:?}")
    };
    assert_eq!((body.phase, body.size), (Phase::RequestBody, 10));
    assert_eq!(gate.awaiting(), Some(Action::Pause));
    let finish = gate.returned(&settings, Outcome::Continue);
    assert_eq!(finish.resume, None, "held for the trailers' hook");
    let next = finish.next.expect("the trailers' hook is next");
    assert_eq!(next.phase, Phase::RequestTrailers);
    assert_eq!(gate.awaiting(), None, "its callback answered already");
    let finish = gate.returned(&settings, Outcome::Continue);
    assert_eq!(finish.resume, Some(Direction::Request));
    assert_eq!(gate.hook(), HookState::Idle);
}

/// A stream the plugin passes on from its request headers' hook (no Higress rule matched it):
/// its body is not held although the plugin buffers bodies, and no hook runs again.
#[test]
fn a_passed_stream_continues_unheld_and_runs_no_hook() {
    let settings = GateSettings {
        buffer_request_body: true,
        buffer_response_body: true,
        ..GateSettings::default()
    };
    let mut gate = StreamGate::new();
    let headers = gate.callback(&settings, Event::new(Phase::RequestHeaders, 2, false));
    assert!(matches!(headers, Arrival::Run(_)), "{headers:?}");
    gate.pass();
    let finish = gate.returned(&settings, Outcome::Continue);
    assert_eq!(finish.answer, Some(Action::Continue));
    assert_eq!(
        finish.strip_content_length, None,
        "a passed stream keeps its headers"
    );
    for event in [
        Event::new(Phase::RequestBody, 10, false),
        Event::new(Phase::RequestBody, 10, true),
        Event::new(Phase::ResponseHeaders, 1, false),
        Event::new(Phase::ResponseBody, 5, true),
    ] {
        assert_eq!(
            gate.callback(&settings, event),
            Arrival::Answer(Action::Continue),
            "{event:?}"
        );
    }
    assert_eq!(gate.log(&settings), None, "not even on_log runs");
    assert_eq!(gate.exchange(), Exchange::Passed);
}
