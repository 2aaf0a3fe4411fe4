//! `hello`: the first example of the Higress Go guide, with `async` hooks.
//!
//! Every request gets the request header `hello: world` before it goes upstream. With
//! `mockEnable` set, the plugin answers the request itself instead: status 200, body
//! `hello world`, and the upstream never sees the request.
//!
//! # Configuration
//!
//! ```json
//! {"mockEnable": true}
//! ```
//!
//! | field        | type | default | meaning                                           |
//! |--------------|------|---------|---------------------------------------------------|
//! | `mockEnable` | bool | `false` | answer every request with `200 hello world`       |
//!
//! An empty configuration is the default (`mockEnable: false`). Unknown keys are ignored, so
//! the keys Istio or Higress add do no harm; a `mockEnable` that is not a boolean rejects the
//! configuration with an error naming the field.

use std::rc::Rc;

use proxy_async::{Error, Flow, LocalReply, Plugin, PluginConfig, Request};

/// The plugin configuration, parsed from `{"mockEnable": bool}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HelloConfig {
    /// Answer every request locally with `200 hello world` instead of forwarding it.
    pub mock_enable: bool,
}

impl PluginConfig for HelloConfig {}

/// The per-stream plugin value: it only needs the configuration.
#[derive(Debug)]
pub struct Hello {
    config: Rc<HelloConfig>,
}

impl Plugin for Hello {
    type Root = HelloConfig;

    fn new(config: &Rc<HelloConfig>) -> Self {
        Hello {
            config: Rc::clone(config),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().insert("hello", "world");
        if self.config.mock_enable {
            return Ok(LocalReply::new(200).body("hello world").into());
        }
        Ok(Flow::Continue)
    }
}

proxy_async::main!(Hello);
