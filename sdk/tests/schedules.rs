//! Random schedules of proxy callbacks against the SDK's stream driver, through the emulated
//! proxy (which panics on every protocol mistake Envoy punishes: a resume of a stream that is
//! not paused, a resume inside the callback that paused, a resume after a local reply, a second
//! local reply, a paused local reply).
//!
//! Each case opens up to eight streams whose plugin hooks follow a generated script (calls
//! awaited one at a time, two joined, two raced; a local reply or an error at the end), and
//! plays a random sequence of proxy events: request headers, body chunks and trailers (also
//! while a body hook is still awaiting), response headers, call responses in any order (success, a status
//! that makes the hook reply at once, failure), responses to unknown and already answered
//! tokens, ticks of the root context (ending sleeps and timeouts), and the end of a stream at any point (a client going away mid-call, with its calls
//! answered later). After each case:
//! - every stream that was not ended got exactly the outcome its hooks decided: the local reply
//!   of the first hook that replied or failed, otherwise nothing paused;
//! - no side was resumed more often than it was paused;
//! - once every stream ended and every call was answered, the plugin holds no task, no awaited
//!   call and no stream.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proxy_async::testing::{Action, PluginTest};
use proxy_async::{
    Error, Flow, HttpClient, LocalReply, NoConfig, Plugin, Request, Response, sleep, timeout,
};

/// How one step of a hook calls the `svc` cluster.
#[derive(Clone, Copy, Debug)]
enum CallShape {
    /// One call, awaited.
    One,
    /// Two calls awaited together.
    Both,
    /// Two calls raced; the loser is dropped (its response arrives later, to nobody).
    Either,
    /// A call raced against a 150 ms timeout (the root context's tick ends it).
    Timed,
    /// A 150 ms sleep.
    Sleep,
}

/// How a hook ends once its calls are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Continue,
    Reply,
    Fail,
}

/// What the plugin does on one stream.
#[derive(Clone, Debug)]
struct Script {
    request_calls: Vec<CallShape>,
    request_ending: Ending,
    has_body: bool,
    calls_per_chunk: u8,
    response_calls: Vec<CallShape>,
    response_ending: Ending,
}

impl Script {
    fn headers(&self, id: usize) -> Vec<(String, String)> {
        let shapes = |calls: &[CallShape]| -> String {
            calls
                .iter()
                .map(|shape| match shape {
                    CallShape::One => 'o',
                    CallShape::Both => 'b',
                    CallShape::Either => 'e',
                    CallShape::Timed => 't',
                    CallShape::Sleep => 's',
                })
                .collect()
        };
        let ending = |ending: Ending| match ending {
            Ending::Continue => "c",
            Ending::Reply => "r",
            Ending::Fail => "f",
        };
        vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/".into()),
            (":authority".into(), "example.com".into()),
            ("x-id".into(), id.to_string()),
            ("x-req-calls".into(), shapes(&self.request_calls)),
            ("x-req-end".into(), ending(self.request_ending).into()),
            ("x-chunk-calls".into(), self.calls_per_chunk.to_string()),
            ("x-resp-calls".into(), shapes(&self.response_calls)),
            ("x-resp-end".into(), ending(self.response_ending).into()),
        ]
    }
}

/// A status the plugin answers with when a call returns this status (a reply racing the
/// stream's other calls).
const RACING_REPLY: u16 = 418;
/// The plugin's local reply for `Ending::Reply`.
const SCRIPTED_REPLY: u16 = 403;
/// The SDK's reply for a hook that failed (`Plugin::ERROR_STATUS`'s default).
const ERROR_REPLY: u16 = 500;

/// What a hook decided, recorded by the plugin for the test to compare with the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Continue,
    Reply(u16),
}

thread_local! {
    /// Per stream id: the decisions of its hooks, in order.
    static DECISIONS: RefCell<Vec<Vec<Decision>>> = const { RefCell::new(Vec::new()) };
}

fn record(id: usize, decision: Decision) {
    DECISIONS.with(|decisions| {
        let mut decisions = decisions.borrow_mut();
        if decisions.len() <= id {
            decisions.resize(id + 1, Vec::new());
        }
        decisions[id].push(decision);
    });
}

struct Scripted {
    svc: HttpClient,
    id: usize,
    chunk_calls: u8,
    response_calls: String,
    response_ending: String,
}

impl Scripted {
    /// Runs the calls of a hook; `Some(status)` when the hook must reply at once.
    async fn run_calls(&self, shapes: &str) -> Result<Option<u16>, Error> {
        for shape in shapes.chars() {
            let statuses = match shape {
                'b' => {
                    let (first, second) =
                        futures::join!(self.svc.get("/").send(), self.svc.get("/").send());
                    vec![first?.status(), second?.status()]
                }
                'e' => {
                    let first = std::pin::pin!(self.svc.get("/").send());
                    let second = std::pin::pin!(self.svc.get("/").send());
                    let winner = futures::future::select(first, second)
                        .await
                        .factor_first()
                        .0;
                    vec![winner?.status()]
                }
                't' => match timeout(Duration::from_millis(150), self.svc.get("/").send()).await {
                    Ok(answer) => vec![answer?.status()],
                    Err(_) => Vec::new(),
                },
                's' => {
                    sleep(Duration::from_millis(150)).await;
                    Vec::new()
                }
                _ => vec![self.svc.get("/").send().await?.status()],
            };
            if statuses.iter().any(|status| *status == RACING_REPLY) {
                return Ok(Some(RACING_REPLY));
            }
        }
        Ok(None)
    }

    async fn hook(&self, shapes: &str, ending: &str) -> Result<Flow, Error> {
        let (decision, outcome) = match self.run_calls(shapes).await {
            Ok(Some(status)) => (Decision::Reply(status), Ok(LocalReply::new(status).into())),
            Ok(None) => match ending {
                "r" => (
                    Decision::Reply(SCRIPTED_REPLY),
                    Ok(LocalReply::new(SCRIPTED_REPLY).into()),
                ),
                "f" => (
                    Decision::Reply(ERROR_REPLY),
                    Err(Error::new("scripted failure")),
                ),
                _ => (Decision::Continue, Ok(Flow::Continue)),
            },
            Err(error) => (Decision::Reply(ERROR_REPLY), Err(error)),
        };
        record(self.id, decision);
        outcome
    }
}

impl Plugin for Scripted {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        Scripted {
            svc: HttpClient::new("svc"),
            id: 0,
            chunk_calls: 0,
            response_calls: String::new(),
            response_ending: String::new(),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let header = |name: &str| req.header_str(name).unwrap_or_default();
        self.id = header("x-id").parse().unwrap_or(usize::MAX);
        self.chunk_calls = header("x-chunk-calls").parse().unwrap_or(0);
        self.response_calls = header("x-resp-calls");
        self.response_ending = header("x-resp-end");
        let calls = header("x-req-calls");
        let ending = header("x-req-end");
        self.hook(&calls, &ending).await
    }

    async fn on_request_body(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
        let calls = "o".repeat(usize::from(self.chunk_calls));
        self.hook(&calls, "c").await
    }

    async fn on_request_trailers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
        let calls = "o".repeat(usize::from(self.chunk_calls));
        self.hook(&calls, "c").await
    }

    async fn on_response_headers(&mut self, _resp: &mut Response<'_>) -> Result<Flow, Error> {
        let calls = self.response_calls.clone();
        let ending = self.response_ending.clone();
        self.hook(&calls, &ending).await
    }
}

/// One proxy event; indices pick among the streams or calls that exist at that point.
#[derive(Clone, Debug)]
enum Event {
    Open(u8),
    RequestHeaders(u8),
    RequestChunk(u8, bool),
    /// Request trailers: they end the request, also while a chunk's hook awaits.
    RequestTrailers(u8),
    ResponseHeaders(u8),
    Answer(u16, u8),
    AnswerUnknown(u32),
    AnswerAgain(u16),
    End(u8),
    /// 100 ms pass: one tick of the root context.
    Tick,
}

fn shapes() -> impl Strategy<Value = Vec<CallShape>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(CallShape::One),
            1 => Just(CallShape::Both),
            1 => Just(CallShape::Either),
            1 => Just(CallShape::Timed),
            1 => Just(CallShape::Sleep),
        ],
        0..3,
    )
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        6 => Just(Ending::Continue),
        1 => Just(Ending::Reply),
        1 => Just(Ending::Fail),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    (
        shapes(),
        ending(),
        any::<bool>(),
        0u8..2,
        shapes(),
        ending(),
    )
        .prop_map(
            |(
                request_calls,
                request_ending,
                has_body,
                calls_per_chunk,
                response_calls,
                response_ending,
            )| Script {
                request_calls,
                request_ending,
                has_body,
                calls_per_chunk,
                response_calls,
                response_ending,
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => any::<u8>().prop_map(Event::Open),
        3 => any::<u8>().prop_map(Event::RequestHeaders),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(s, end)| Event::RequestChunk(s, end)),
        1 => any::<u8>().prop_map(Event::RequestTrailers),
        2 => any::<u8>().prop_map(Event::ResponseHeaders),
        8 => (any::<u16>(), any::<u8>()).prop_map(|(c, how)| Event::Answer(c, how)),
        1 => (100_000u32..).prop_map(Event::AnswerUnknown),
        1 => any::<u16>().prop_map(Event::AnswerAgain),
        1 => any::<u8>().prop_map(Event::End),
        2 => Just(Event::Tick),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    scripts: Vec<Script>,
    events: Vec<Event>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(script(), 1..8),
        prop::collection::vec(event(), 0..80),
    )
        .prop_map(|(scripts, events)| Case { scripts, events })
}

/// The test's view of one stream.
struct Tracked<'t> {
    stream: proxy_async::testing::TestStream<'t, Scripted>,
    script: Script,
    headers_sent: bool,
    request_done: bool,
    response_sent: bool,
    ended: bool,
    request_pauses: u32,
    response_pauses: u32,
}

impl Tracked<'_> {
    fn replied(&self) -> bool {
        self.stream.local_reply().is_some()
    }

    /// Whether the proxy would deliver more request data now (headers continued or resumed,
    /// no reply, not ended).
    fn request_flows(&self) -> bool {
        self.headers_sent
            && !self.request_done
            && !self.ended
            && !self.replied()
            && !self.stream.are_request_headers_held()
    }
}

/// Plays one case. Returns an error naming the broken invariant.
fn run_case(case: &Case) -> Result<(), TestCaseError> {
    DECISIONS.with(|decisions| decisions.borrow_mut().clear());
    let test = PluginTest::<Scripted>::new("").map_err(|error| {
        TestCaseError::fail(format!(
            "the plugin refused an empty configuration: {error}"
        ))
    })?;
    let mut streams: Vec<Tracked<'_>> = Vec::new();
    let mut answered: Vec<u32> = Vec::new();

    let pick = |streams: &[Tracked<'_>], index: u8| -> Option<usize> {
        if streams.is_empty() {
            None
        } else {
            Some(usize::from(index) % streams.len())
        }
    };
    for event in &case.events {
        match *event {
            Event::Open(script) => {
                if streams.len() < 8 {
                    let script = case.scripts[usize::from(script) % case.scripts.len()].clone();
                    streams.push(Tracked {
                        stream: test.stream(),
                        script,
                        headers_sent: false,
                        request_done: false,
                        response_sent: false,
                        ended: false,
                        request_pauses: 0,
                        response_pauses: 0,
                    });
                }
            }
            Event::RequestHeaders(index) => {
                let Some(index) = pick(&streams, index) else {
                    continue;
                };
                let tracked = &mut streams[index];
                if tracked.headers_sent || tracked.ended {
                    continue;
                }
                let headers = tracked.script.headers(index);
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                let end_of_stream = !tracked.script.has_body;
                tracked.headers_sent = true;
                tracked.request_done = end_of_stream;
                if tracked.stream.send_request_headers(&headers, end_of_stream) == Action::Pause {
                    tracked.request_pauses += 1;
                }
            }
            Event::RequestChunk(index, end_of_stream) => {
                let Some(index) = pick(&streams, index) else {
                    continue;
                };
                let tracked = &mut streams[index];
                if !tracked.request_flows() {
                    continue;
                }
                tracked.request_done = end_of_stream;
                if tracked.stream.send_request_body(b"chunk", end_of_stream) == Action::Pause {
                    tracked.request_pauses += 1;
                }
            }
            Event::RequestTrailers(index) => {
                let Some(index) = pick(&streams, index) else {
                    continue;
                };
                let tracked = &mut streams[index];
                if !tracked.request_flows() {
                    continue;
                }
                tracked.request_done = true;
                if tracked.stream.send_request_trailers(&[("x-trailer", "1")]) == Action::Pause {
                    tracked.request_pauses += 1;
                }
            }
            Event::ResponseHeaders(index) => {
                let Some(index) = pick(&streams, index) else {
                    continue;
                };
                let tracked = &mut streams[index];
                // The upstream answers once the whole request went through.
                if !tracked.request_done
                    || tracked.response_sent
                    || tracked.ended
                    || tracked.replied()
                    || tracked.stream.is_request_paused()
                {
                    continue;
                }
                tracked.response_sent = true;
                if tracked
                    .stream
                    .send_response_headers(&[(":status", "200")], true)
                    == Action::Pause
                {
                    tracked.response_pauses += 1;
                }
            }
            Event::Answer(call, how) => {
                let calls = test.calls();
                if calls.is_empty() {
                    continue;
                }
                let call = &calls[usize::from(call) % calls.len()];
                answered.push(call.token());
                match how % 8 {
                    0 => test.fail(call),
                    1 => test.respond(call, RACING_REPLY, &[], ""),
                    2 => test.respond(call, 503, &[], "unavailable"),
                    _ => test.respond(call, 200, &[], "ok"),
                }
            }
            Event::AnswerUnknown(token) => test.respond_to_token(token, 200),
            Event::AnswerAgain(index) => {
                if !answered.is_empty() {
                    let token = answered[usize::from(index) % answered.len()];
                    test.respond_to_token(token, 200);
                }
            }
            Event::Tick => {
                test.advance_time(Duration::from_millis(100));
            }
            Event::End(index) => {
                let Some(index) = pick(&streams, index) else {
                    continue;
                };
                let tracked = &mut streams[index];
                if !tracked.ended {
                    tracked.ended = true;
                    tracked.stream.end();
                }
            }
        }
        for tracked in &streams {
            prop_assert!(
                tracked.stream.resumed_requests() <= tracked.request_pauses,
                "the request was resumed {} times after {} pauses",
                tracked.stream.resumed_requests(),
                tracked.request_pauses
            );
            prop_assert!(
                tracked.stream.resumed_responses() <= tracked.response_pauses,
                "the response was resumed {} times after {} pauses",
                tracked.stream.resumed_responses(),
                tracked.response_pauses
            );
        }
    }

    // Quiesce: answer every call with 200 and let time pass, so every hook still awaiting
    // finishes.
    loop {
        if let Some(call) = test.calls().first() {
            answered.push(call.token());
            test.respond(call, 200, &[], "ok");
        } else if test.live_timers() > 0 {
            test.advance_time(Duration::from_millis(100));
        } else {
            break;
        }
    }
    let decisions = DECISIONS.with(|decisions| decisions.borrow().clone());
    for (id, tracked) in streams.iter().enumerate() {
        if tracked.ended || !tracked.headers_sent {
            continue;
        }
        let decided = decisions.get(id).cloned().unwrap_or_default();
        let expected = decided.iter().find_map(|decision| match decision {
            Decision::Reply(status) => Some(*status),
            Decision::Continue => None,
        });
        let got = tracked.stream.local_reply().map(|reply| reply.status);
        prop_assert_eq!(
            got,
            expected,
            "stream {} decided {:?} but the proxy saw the reply {:?}",
            id,
            decided,
            got
        );
        if expected.is_none() {
            prop_assert!(
                !tracked.stream.is_request_paused(),
                "stream {id}: every hook continued ({decided:?}) but the request is held"
            );
            prop_assert!(
                !tracked.stream.is_response_paused(),
                "stream {id}: every hook continued ({decided:?}) but the response is held"
            );
        }
    }

    // End everything; late answers are ignored; nothing may be left.
    for tracked in &mut streams {
        if !tracked.ended {
            tracked.ended = true;
            tracked.stream.end();
        }
    }
    for token in answered.iter().take(4) {
        test.respond_to_token(*token, 200);
    }
    prop_assert_eq!(test.live_tasks(), 0, "tasks left after every stream ended");
    prop_assert_eq!(test.awaited_calls(), 0, "calls still awaited");
    prop_assert_eq!(test.live_timers(), 0, "timers still set");
    prop_assert_eq!(test.live_streams(), 0, "streams still held");
    Ok(())
}

fn config() -> Config {
    Config {
        // Miri runs this file too (the driver under the borrow checker of the interpreter);
        // a few cases there, the schedules natively: 10,000 in all, in two tests of 5,000
        // so that the test threads share them.
        cases: if cfg!(miri) { 3 } else { 5_000 },
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_callback_schedules_keep_the_protocol(case in case()) {
        run_case(&case)?;
    }

    #[test]
    fn more_random_callback_schedules_keep_the_protocol(case in case()) {
        run_case(&case)?;
    }
}
