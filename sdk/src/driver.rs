//! What is specific to one plugin type: its configuration and the creation of its streams.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};

use crate::error::Error;
use crate::higress::Rules;
use crate::higress::rules::{self, RuleSet};
use crate::higress::{LogFormat, request};
use crate::host::{Action, BufferType, Host};
use crate::logging;
use crate::plugin::{Plugin, stream_task};
use crate::root::Root;
use crate::runtime::{Phase, Runtime};
use crate::stream_task::StreamTask;

/// One configured instance of plugin `P` (a root context, in proxy-wasm terms).
pub(crate) struct Driver<P: Plugin> {
    pub(crate) runtime: Rc<Runtime>,
    config: RefCell<Option<Rc<RuleSet<P::Root>>>>,
    // Streams whose configuration Higress rules choose from their request headers, which
    // their first callback brings: no plugin value (and no runtime stream) until then.
    unmatched: RefCell<BTreeMap<u32, Rc<RuleSet<P::Root>>>>,
    // Streams no rule matched, with no global configuration: the plugin leaves them alone.
    skipped: RefCell<BTreeSet<u32>>,
}

impl<P: Plugin> Driver<P> {
    pub(crate) fn new(host: Rc<dyn Host>) -> Rc<Self> {
        Rc::new(Driver {
            runtime: Runtime::new(host, P::ERROR_STATUS),
            config: RefCell::new(None),
            unmatched: RefCell::new(BTreeMap::new()),
            skipped: RefCell::new(BTreeSet::new()),
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
        if let LogFormat::Higress { plugin_name } = P::LOG_FORMAT {
            let id = plugin_id(&bytes).unwrap_or_else(|| "nil".to_string());
            self.runtime
                .set_log_prefix(Some(format!("[{plugin_name}] [{id}]")));
        }
        // A constant per plugin type: a plugin without rules compiles none of their parsing
        // or matching in.
        let parsed = if P::HIGRESS_RULES == Rules::Off {
            rules::parse_without_rules::<P::Root>(&bytes)
        } else {
            rules::parse::<P::Root>(&bytes, P::HIGRESS_RULES)
        };
        match parsed {
            Ok(parsed) => {
                if let Some(root) = parsed.configs().next() {
                    self.runtime.apply_settings(root.settings());
                }
                // Higress registers tick functions from every configuration it parses, the
                // rules' included.
                let ticks = parsed.configs().flat_map(Root::tick_functions).collect();
                self.runtime.set_tick_functions(ticks);
                let background = parsed.configs().flat_map(Root::background_tasks).collect();
                *self.config.borrow_mut() = Some(Rc::new(parsed));
                self.runtime.start_background(context_id, background);
                true
            }
            Err(error) => {
                log::error!("{error}");
                false
            }
        }
    }

    /// Creates the stream `context_id` with a new per-stream plugin value (with Higress rules,
    /// at its first callback: see [`on_hook`](Driver::on_hook)).
    pub(crate) fn create_stream(&self, context_id: u32) {
        let config = self.config.borrow().clone();
        match config {
            Some(set) => match set.only_global() {
                Some(config) => self.start_stream(context_id, config),
                None if P::HIGRESS_RULES == Rules::Off => {}
                None => {
                    self.unmatched
                        .borrow_mut()
                        .insert(context_id, Rc::clone(&set));
                }
            },
            // Proxies do not create streams for a plugin whose configuration failed; if one
            // does, fail closed rather than let requests through unchecked.
            None => {
                let _scope = self.runtime.scope(context_id);
                self.runtime.create_stream(context_id, unconfigured_task);
            }
        }
    }

    fn start_stream(&self, context_id: u32, root: &Rc<P::Root>) {
        let _scope = self.runtime.scope(context_id);
        let plugin = P::new(root);
        self.runtime
            .create_stream(context_id, move |shared| stream_task(plugin, shared));
    }

    /// A stream callback. The first one of a stream whose configuration Higress rules choose
    /// matches the request and starts the stream; a stream nothing matched continues untouched,
    /// as if the plugin were not there (no hook, no body buffering).
    pub(crate) fn on_hook(
        &self,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        if P::HIGRESS_RULES == Rules::Off {
            return self.runtime.on_hook(context_id, phase, size, end_of_stream);
        }
        let unmatched = self.unmatched.borrow_mut().remove(&context_id);
        if let Some(set) = unmatched {
            let selected = {
                let _scope = self.runtime.scope(context_id);
                request::select(&*self.runtime.host, &set)
            };
            match selected {
                Some(config) => self.start_stream(context_id, &config),
                None => {
                    self.skipped.borrow_mut().insert(context_id);
                }
            }
        }
        if self.skipped.borrow().contains(&context_id) {
            return Action::Continue;
        }
        self.runtime.on_hook(context_id, phase, size, end_of_stream)
    }

    /// Whether `context_id` is a stream of this instance (one Higress rules have yet to match,
    /// or matched none, included).
    #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
    pub(crate) fn has_stream(&self, context_id: u32) -> bool {
        self.runtime.has_stream(context_id)
            || self.unmatched.borrow().contains_key(&context_id)
            || self.skipped.borrow().contains(&context_id)
    }

    /// The root of the configuration in force: the global one's, or the first rule's.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn root(&self) -> Option<Rc<P::Root>> {
        self.config.borrow().as_ref()?.configs().next().cloned()
    }

    /// `proxy_on_delete`: forgets the stream.
    pub(crate) fn on_delete(&self, context_id: u32) {
        if P::HIGRESS_RULES != Rules::Off {
            self.unmatched.borrow_mut().remove(&context_id);
            self.skipped.borrow_mut().remove(&context_id);
        }
        self.runtime.on_delete(context_id);
    }
}

/// The configuration's `_plugin_id_`, which Higress injects to name the plugin instance.
pub(crate) fn plugin_id(configuration: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(configuration).ok()?;
    value.get("_plugin_id_")?.as_str().map(str::to_string)
}

async fn unconfigured_task(task: Weak<dyn StreamTask>) {
    let Some(task) = task.upgrade() else {
        return;
    };
    let shared = task.shared();
    loop {
        shared.next_event().await;
        shared.finish(Err(Error::new("the plugin has no valid configuration")));
    }
}
