//! What is specific to one plugin type: its configuration and the creation of its streams.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Error;
use crate::host::{BufferType, HostHandle};
use crate::logging;
use crate::message::Message;
use crate::plugin::{Plugin, run_hook};
use crate::root::{self, Root};
use crate::runtime::Runtime;
use crate::stream_task::HookOutcome;
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// One configured instance of plugin `P` (a root context, in proxy-wasm terms).
pub(crate) struct Driver<P: Plugin> {
    pub(crate) runtime: Rc<Runtime>,
    // The root of the configuration in force.
    root: RefCell<Option<Rc<P::Root>>>,
}

impl<P: Plugin> Driver<P> {
    pub(crate) fn new(host: HostHandle) -> Rc<Self> {
        Rc::new(Driver {
            runtime: Runtime::new(host, P::ERROR_STATUS),
            root: RefCell::new(None),
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
                .get_buffer(BufferType::PluginConfiguration, 0, size)
            {
                Ok(bytes) => bytes,
                Err(error) => {
                    log::error!("reading the plugin configuration: {error}");
                    return false;
                }
            }
        };
        match root::from_configuration::<P::Root>(&bytes) {
            Ok(root) => {
                let root = Rc::new(root);
                self.runtime.apply_settings(root.settings());
                self.runtime.set_tick_functions(root.tick_functions());
                let background = root.background_tasks();
                *self.root.borrow_mut() = Some(root);
                self.runtime.start_background(context_id, background);
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
        let root = self.root.borrow().clone();
        let _scope = self.runtime.scope(context_id);
        match root {
            Some(root) => {
                let plugin = P::new(&root);
                self.runtime
                    .create_stream(context_id, plugin, run_hook::<P>);
            }
            // Proxies do not create streams for a plugin whose configuration failed; if one
            // does, fail closed rather than let requests through unchecked.
            None => self
                .runtime
                .create_stream(context_id, (), unconfigured_hook),
        }
    }

    /// The root of the configuration in force.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn root(&self) -> Option<Rc<P::Root>> {
        self.root.borrow().clone()
    }
}

async fn unconfigured_hook(_: &mut (), _: &mut Message<'_>) -> HookOutcome {
    Err(Error::new("the plugin has no valid configuration"))
}
