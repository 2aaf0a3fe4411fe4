//! What is specific to one plugin type: its configuration and the creation of its streams.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config;
use crate::error::Error;
use crate::host::{BufferKind, Host};
use crate::logging;
use crate::plugin::{Plugin, stream_task};
use crate::runtime::{Runtime, Settings, StreamShared};

/// One configured instance of plugin `P` (a root context, in proxy-wasm terms).
pub(crate) struct Driver<P: Plugin> {
    pub(crate) runtime: Rc<Runtime>,
    config: RefCell<Option<Rc<P::Config>>>,
}

impl<P: Plugin> Driver<P> {
    pub(crate) fn new(host: Rc<dyn Host>) -> Rc<Self> {
        let settings = Settings {
            error_status: P::ERROR_STATUS,
            buffer_request_body: P::BUFFER_REQUEST_BODY,
            buffer_response_body: P::BUFFER_RESPONSE_BODY,
            body_buffer_limit: P::BODY_BUFFER_LIMIT,
        };
        Rc::new(Driver {
            runtime: Runtime::new(host, settings),
            config: RefCell::new(None),
        })
    }

    /// `proxy_on_configure`: parses the configuration; false (with an error log naming the
    /// field) when the plugin cannot run with it. A rejected reconfiguration keeps the old one.
    pub(crate) fn configure(&self, context_id: u32, size: usize) -> bool {
        let _scope = self.runtime.scope(context_id);
        logging::install(self.runtime.host.log_level());
        let bytes = if size == 0 {
            Vec::new()
        } else {
            match self
                .runtime
                .host
                .get_buffer(BufferKind::PluginConfiguration, 0, size)
            {
                Ok(bytes) => bytes,
                Err(error) => {
                    log::error!("reading the plugin configuration: {error}");
                    return false;
                }
            }
        };
        match config::parse::<P::Config>(&bytes) {
            Ok(parsed) => {
                *self.config.borrow_mut() = Some(Rc::new(parsed));
                true
            }
            Err(error) => {
                log::error!("{error}");
                false
            }
        }
    }

    /// Creates the stream `context_id` with a new per-stream plugin value.
    pub(crate) fn create_stream(&self, context_id: u32) {
        let config = self.config.borrow().clone();
        let _scope = self.runtime.scope(context_id);
        match config {
            Some(config) => {
                let plugin = P::new(&config);
                self.runtime
                    .create_stream(context_id, move |shared| stream_task(plugin, shared));
            }
            // Proxies do not create streams for a plugin whose configuration failed; if one
            // does, fail closed rather than let requests through unchecked.
            None => self.runtime.create_stream(context_id, unconfigured_task),
        }
    }
}

async fn unconfigured_task(shared: Rc<StreamShared>) {
    loop {
        shared.next_event().await;
        shared.finish(Err(Error::new("the plugin has no valid configuration")));
    }
}
