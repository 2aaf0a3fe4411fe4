//! Higress's log format: `[plugin] [plugin id] [x-request-id] message`.

use std::rc::Rc;
use std::time::Duration;

use proxy_async::higress::{Higress, HigressPlugin, LogFormat};
use proxy_async::testing::PluginTest;
use proxy_async::{ConfigError, Error, Flow, NoConfig, Plugin, Request, Root, TickFunction};

/// Logs on every tick, outside any request.
struct Ticker;

impl Root for Ticker {
    type Config = NoConfig;

    fn configure(_: NoConfig) -> Result<Self, ConfigError> {
        Ok(Ticker)
    }

    fn tick_functions(self: &Rc<Self>) -> Vec<TickFunction> {
        vec![TickFunction::new(Duration::from_millis(100), || {
            log::warn!("tick");
        })]
    }
}

struct Audit;

impl HigressPlugin for Audit {
    const LOG_FORMAT: LogFormat = LogFormat::Higress {
        plugin_name: "audit",
    };
}

impl Plugin for Audit {
    type Root = Ticker;

    fn new(_: &Rc<Ticker>) -> Self {
        Audit
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        log::info!("checked {}", req.header_str(":path").unwrap_or_default());
        Ok(Flow::Continue)
    }
}

#[test]
fn lines_name_the_plugin_its_id_and_the_request() {
    let test = PluginTest::<Higress<Audit>>::new(r#"{"_plugin_id_": "p-7"}"#).unwrap();
    test.stream()
        .send_request_headers(&[(":path", "/a"), ("x-request-id", "r-1")], true);
    test.stream().send_request_headers(&[(":path", "/b")], true);
    assert_eq!(
        test.logs_at(log::Level::Info),
        [
            "[audit] [p-7] [r-1] checked /a",
            "[audit] [p-7] [nil] checked /b"
        ]
    );
}

#[test]
fn outside_a_request_and_without_an_id_the_fields_are_nil() {
    let test = PluginTest::<Higress<Audit>>::new("").unwrap();
    test.advance_time(Duration::from_millis(100));
    assert_eq!(test.logs_at(log::Level::Warn), ["[audit] [nil] [nil] tick"]);
}
