//! `hello-no-config`: the "plugin with no configuration" example of the Higress Go guide, with
//! `async` hooks.
//!
//! Every request is answered by the plugin itself with status 200 and the body `hello world`;
//! the upstream never sees it.
//!
//! # Configuration
//!
//! None. The configuration type is [`proxy_async::NoConfig`]: an empty configuration, `{}`, and
//! any JSON object (Istio and Higress may add keys of their own) are all accepted.

use std::rc::Rc;

use proxy_async::{Error, Flow, LocalReply, NoConfig, Plugin, Request};

/// The plugin. It holds nothing per stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct HelloNoConfig;

impl Plugin for HelloNoConfig {
    type Root = NoConfig;

    fn new(_config: &Rc<NoConfig>) -> Self {
        HelloNoConfig
    }

    async fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
        Ok(LocalReply::new(200).body("hello world").into())
    }
}

proxy_async::main!(HelloNoConfig);
