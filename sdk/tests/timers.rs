//! `sleep`, `timeout` and tick functions, on the emulated proxy's clock and tick.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use proxy_async::testing::{Action, PluginTest};
use proxy_async::{
    ConfigError, Error, Flow, HttpClient, LocalReply, NoConfig, Plugin, Request, Root,
    TickFunction, sleep, timeout,
};

/// Waits `x-delay-ms` before letting the request go on.
struct Delay;

impl Plugin for Delay {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        Delay
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let millis: u64 = req
            .header_str("x-delay-ms")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        sleep(Duration::from_millis(millis)).await;
        req.headers_mut().insert("x-slept", "1");
        Ok(Flow::Continue)
    }
}

#[test]
fn a_sleep_ends_on_the_first_tick_after_its_deadline() {
    let test = PluginTest::<Delay>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[("x-delay-ms", "250")], true),
        Action::Pause
    );
    assert_eq!(test.live_timers(), 1);
    // Ticks every 100 ms: at 100 and 200 the deadline (250) has not passed.
    assert_eq!(test.advance_time(Duration::from_millis(200)), 2);
    assert_eq!(stream.resumed_requests(), 0);
    // The tick at 300 is the first at or after 250.
    assert_eq!(test.advance_time(Duration::from_millis(100)), 1);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_header("x-slept").as_deref(), Some("1"));
    assert_eq!(test.live_timers(), 0);
}

#[test]
fn a_zero_sleep_does_not_pause() {
    let test = PluginTest::<Delay>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[("x-delay-ms", "0")], true),
        Action::Continue
    );
    assert_eq!(stream.request_header("x-slept").as_deref(), Some("1"));
}

#[test]
fn sleeps_of_many_streams_end_in_deadline_order() {
    let test = PluginTest::<Delay>::new("").unwrap();
    let late = test.stream();
    let early = test.stream();
    late.send_request_headers(&[("x-delay-ms", "500")], true);
    early.send_request_headers(&[("x-delay-ms", "150")], true);
    test.advance_time(Duration::from_millis(200));
    assert_eq!((early.resumed_requests(), late.resumed_requests()), (1, 0));
    test.advance_time(Duration::from_millis(300));
    assert_eq!((early.resumed_requests(), late.resumed_requests()), (1, 1));
}

#[test]
fn a_stream_that_ends_while_sleeping_leaves_no_timer() {
    let test = PluginTest::<Delay>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[("x-delay-ms", "1000")], true);
    assert_eq!(test.live_timers(), 1);
    stream.end();
    assert_eq!(test.live_timers(), 0);
    assert_eq!(test.live_tasks(), 0);
    // Later ticks find nothing to wake.
    test.advance_time(Duration::from_secs(2));
    assert_eq!(test.live_tasks(), 0);
}

/// Gives the `slow` cluster 300 ms, less than the call's own timeout.
struct Impatient;

impl Plugin for Impatient {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        Impatient
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let call = HttpClient::new("slow")
            .with_timeout(Duration::from_secs(5))
            .get("/")
            .send();
        match timeout(Duration::from_millis(300), call).await {
            Ok(answer) => {
                req.headers_mut()
                    .insert("x-answer", answer?.status().as_str());
                Ok(Flow::Continue)
            }
            Err(elapsed) => Ok(LocalReply::new(504).body(elapsed.to_string()).into()),
        }
    }
}

#[test]
fn a_timeout_that_runs_out_drops_the_call_and_replies() {
    let test = PluginTest::<Impatient>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    assert_eq!(test.awaited_calls(), 1);
    test.advance_time(Duration::from_millis(300));
    let reply = stream.local_reply().expect("a 504");
    assert_eq!(reply.status, 504);
    assert_eq!(reply.body_str(), "timed out after 300 ms");
    // The call future was dropped: its late answer is ignored.
    assert_eq!(test.awaited_calls(), 0);
    test.respond(&test.calls()[0], 200, &[], "");
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn a_future_that_finishes_in_time_wins_and_its_timer_is_freed() {
    let test = PluginTest::<Impatient>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    test.advance_time(Duration::from_millis(100));
    test.respond(&test.calls()[0], 201, &[], "");
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_header("x-answer").as_deref(), Some("201"));
    assert_eq!(test.live_timers(), 0);
}

/// Counts the runs of its tick function, which has a 250 ms period.
struct Runs(Cell<u32>);

impl Root for Runs {
    type Config = NoConfig;

    fn configure(_: NoConfig) -> Result<Self, ConfigError> {
        Ok(Runs(Cell::new(0)))
    }

    fn tick_functions(self: &Rc<Self>) -> Vec<TickFunction> {
        let runs = Rc::clone(self);
        vec![TickFunction::new(Duration::from_millis(250), move || {
            runs.0.set(runs.0.get() + 1);
        })]
    }
}

struct Ticking;

impl Plugin for Ticking {
    type Root = Runs;

    fn new(_: &Rc<Runs>) -> Self {
        Ticking
    }
}

#[test]
fn a_tick_function_runs_once_per_period_on_the_tick() {
    let test = PluginTest::<Ticking>::new("").unwrap();
    let runs = test.root().expect("configured");
    // Ticks at 100, 200, 300: the period (250) has elapsed at 300.
    test.advance_time(Duration::from_millis(300));
    assert_eq!(runs.0.get(), 1);
    // Next due 250 after 300: the tick at 600 (not 500).
    test.advance_time(Duration::from_millis(200));
    assert_eq!(runs.0.get(), 1);
    test.advance_time(Duration::from_millis(100));
    assert_eq!(runs.0.get(), 2);
    // Three more seconds: every 300 ms (the first tick at or after each 250 ms period).
    test.advance_time(Duration::from_millis(3_000));
    assert_eq!(runs.0.get(), 12);
}
