//! Benchmark baseline: `examples/hello` written by hand with raw callbacks on the plain
//! `proxy-wasm` crate, as it would be written without `proxy-async`. It exists only to measure
//! the SDK against (size, fuel per callback); it is not an example.
//!
//! Behaviour (identical to `examples/hello`, checked by `benches/identical`): every request
//! gets `hello: world`; with `{"mockEnable": true}` the plugin answers `200 hello world`
//! itself. An empty configuration means `mockEnable: false`, unknown keys are ignored, and a
//! bad configuration is rejected in `on_configure` with an error log naming the field.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// Named as in the SDK example: serde puts the name in some errors (`expected struct ...`).
#[derive(Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct HelloConfig {
    mock_enable: bool,
}

/// Parses the configuration as the SDK does: empty is the default, errors name the field.
fn parse_config(bytes: &[u8]) -> Result<HelloConfig, String> {
    let json = bytes.trim_ascii();
    if json.is_empty() {
        return Ok(HelloConfig::default());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let config = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            format!(
                "invalid plugin configuration: not valid JSON: {inner} (deliver the configuration as JSON, e.g. in a google.protobuf.StringValue)"
            )
        } else if path == "." {
            format!("invalid plugin configuration: {inner}")
        } else {
            format!("invalid plugin configuration: field `{path}`: {inner}")
        }
    })?;
    deserializer.end().map_err(|error| {
        format!("invalid plugin configuration: {error} (text after the JSON value)")
    })?;
    Ok(config)
}

#[derive(Default)]
struct Root {
    config: Rc<HelloConfig>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        proxy_wasm::set_log_level(hostcalls::get_log_level().unwrap_or(LogLevel::Info));
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match parse_config(&bytes) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(message) => {
                log::error!("{message}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Hello {
            config: Rc::clone(&self.config),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Hello {
    config: Rc<HelloConfig>,
}

impl Context for Hello {}

impl HttpContext for Hello {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_request_header("hello", Some("world"));
        if self.config.mock_enable {
            self.send_http_response(200, Vec::new(), Some(b"hello world"));
            return Action::Pause;
        }
        Action::Continue
    }
}

// Inside an anonymous const: the exported `_initialize` stays out of the public items.
const _: () = {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
    }}
};
