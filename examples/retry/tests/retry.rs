//! Behaviour of the `retry` plugin as a proxy user sees it. Every test also runs against the
//! compiled module and component, in lockstep (waits and deadlines on the emulated proxy's
//! clock and tick).

use std::time::Duration;

use proxy_async::testing::{Action, PluginTest, TestStream};
use retry::{ATTEMPTS_HEADER, Retry};

const CONFIG: &str = r#"{"check": {"cluster": "check"}, "report_ms": 1000}"#;

const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/orders"),
    (":authority", "shop.example"),
];

fn plugin() -> PluginTest<Retry> {
    PluginTest::<Retry>::new(CONFIG).expect("the configuration is valid")
}

fn answer(test: &PluginTest<Retry>, status: u16) {
    let calls = test.calls();
    assert_eq!(calls.len(), 1, "one check call in flight");
    assert_eq!(calls[0].cluster(), "check");
    assert_eq!(calls[0].path(), "/check");
    assert_eq!(calls[0].header("x-original-path"), Some("/orders"));
    test.respond(&calls[0], status, &[], "");
}

fn assert_reply(stream: &TestStream<'_, Retry>, status: u16, details: &str) {
    let reply = stream.local_reply().expect("a local reply");
    assert_eq!((reply.status, reply.details.as_str()), (status, details));
    assert_eq!(stream.resumed_requests(), 0, "the request must not go on");
}

#[test]
fn admitted_at_once_goes_on_with_one_attempt() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    answer(&test, 200);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_header(ATTEMPTS_HEADER).as_deref(), Some("1"));
    assert_eq!(test.live_timers(), 0, "the deadline's timer is freed");
}

#[test]
fn a_503_is_retried_after_the_backoff() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    answer(&test, 503);
    // The first wait is 100 ms: no call before it ends.
    assert!(test.calls().is_empty());
    test.advance_time(Duration::from_millis(100));
    answer(&test, 503);
    // The second wait is 200 ms.
    test.advance_time(Duration::from_millis(100));
    assert!(test.calls().is_empty(), "the backoff doubled");
    test.advance_time(Duration::from_millis(100));
    answer(&test, 200);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_header(ATTEMPTS_HEADER).as_deref(), Some("3"));
}

#[test]
fn a_timed_out_call_is_retried() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    test.fail(&test.calls()[0]);
    test.advance_time(Duration::from_millis(100));
    answer(&test, 200);
    assert_eq!(stream.request_header(ATTEMPTS_HEADER).as_deref(), Some("2"));
}

#[test]
fn a_denial_is_final() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    answer(&test, 403);
    assert_reply(&stream, 403, "check_denied");
    test.advance_time(Duration::from_secs(1));
    assert!(test.calls().is_empty(), "no retry after a denial");
}

#[test]
fn giving_up_after_every_attempt_fails_closed() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    answer(&test, 503);
    test.advance_time(Duration::from_millis(100));
    answer(&test, 504);
    test.advance_time(Duration::from_millis(200));
    answer(&test, 503);
    assert_reply(&stream, 503, "check_unavailable");
    assert!(
        test.logs_at(log::Level::Error)
            .iter()
            .any(|line| line.contains("check: unavailable (status 503)")),
        "{:?}",
        test.logs()
    );
}

#[test]
fn calls_that_time_out_are_retried_until_the_attempts_run_out() {
    // Nobody answers: Envoy ends each call at its 300 ms timeout, and the plugin tries again
    // after the backoff, three times in all, well inside the deadline.
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    test.advance_time(Duration::from_millis(1_200));
    assert_eq!(test.all_calls().len(), 3, "three attempts");
    assert_reply(&stream, 503, "check_unavailable");
}

#[test]
fn an_unexpected_status_is_not_retried() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    answer(&test, 500);
    assert_reply(&stream, 503, "check_unavailable");
}

#[test]
fn the_deadline_drops_the_call_in_flight_and_replies_504() {
    // A call timeout longer than the deadline, and a service that never answers: the 1.5 s
    // deadline ends the exchange before Envoy would end the call.
    let config = r#"{"check": {"cluster": "check", "timeout_ms": 2000}, "report_ms": 1000}"#;
    let test = PluginTest::<Retry>::new(config).expect("the configuration is valid");
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    test.advance_time(Duration::from_millis(1_400));
    assert_eq!(stream.local_reply(), None);
    test.advance_time(Duration::from_millis(100));
    assert_reply(&stream, 504, "check_deadline");
    assert_eq!(test.awaited_calls(), 0, "the call future was dropped");
    // Its late answer changes nothing.
    test.respond(&test.calls()[0], 200, &[], "");
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(test.live_timers(), 0);
}

#[test]
fn a_client_that_leaves_during_a_backoff_leaves_nothing_behind() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    answer(&test, 503);
    assert!(test.live_timers() > 0);
    stream.end();
    assert_eq!(test.live_timers(), 0);
    assert_eq!(test.live_tasks(), 0);
    test.advance_time(Duration::from_secs(2));
    assert!(test.calls().is_empty(), "no retry for a stream that ended");
}

#[test]
fn the_tick_function_reports_the_retries() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    answer(&test, 503);
    test.advance_time(Duration::from_millis(100));
    answer(&test, 200);
    assert!(test.logs_at(log::Level::Info).is_empty());
    // `report_ms` is 1000: the report comes on the tick at 1 s.
    test.advance_time(Duration::from_millis(900));
    assert_eq!(
        test.logs_at(log::Level::Info),
        ["1 retries of the check service since the last report"]
    );
    // Nothing new: no second line.
    test.advance_time(Duration::from_secs(1));
    assert_eq!(test.logs_at(log::Level::Info).len(), 1);
}

#[test]
fn bad_configurations_are_rejected_naming_the_field() {
    for (config, field) in [
        (r#"{}"#, "check.cluster"),
        (
            r#"{"check": {"cluster": "c", "path": "check"}}"#,
            "check.path",
        ),
        (r#"{"check": {"cluster": "c"}, "attempts": 0}"#, "attempts"),
        (
            r#"{"check": {"cluster": "c"}, "deadline_ms": 0}"#,
            "deadline_ms",
        ),
        (r#"{"check": {"cluster": "c"}, "attemps": 2}"#, "attemps"),
    ] {
        let errors = match PluginTest::<Retry>::new(config) {
            Ok(_) => panic!("accepted: {config}"),
            Err(rejected) => rejected.errors.join("\n"),
        };
        assert!(errors.contains(field), "{config}: {errors}");
    }
}
