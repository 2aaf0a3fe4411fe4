//! The proxy-wasm module's callbacks. [`main!`](crate::main) defines the `proxy_on_*` exports
//! for one plugin type and hands each call to a [`Module`] of that type, which routes it to the
//! plugin instance (root context) it belongs to: no boxed context per stream, no dispatcher
//! tables beside the runtime's own, and nothing that panics on what the host passes.
//!
//! Arguments the ABI declares as `bool` arrive as `u32` and are read as "not zero": a host that
//! passes any other value than 0 or 1 must not make the module undefined behaviour.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use crate::driver::Driver;
use crate::host::{Action, LogLevel};
use crate::plugin::Plugin;
use crate::runtime::{Phase, Runtime};

/// The plugin instances of one plugin type in this module: one per root context.
pub struct Module<P: Plugin> {
    roots: RefCell<Vec<Root<P>>>,
}

struct Root<P: Plugin> {
    context_id: u32,
    driver: Rc<Driver<P>>,
}

impl<P: Plugin> Default for Module<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Plugin> Module<P> {
    /// No plugin instance yet.
    pub const fn new() -> Self {
        Module {
            roots: RefCell::new(Vec::new()),
        }
    }

    /// Runs `callback` on the instance of `context_id`, a root context or a stream of one. A
    /// module has one root context per plugin configuration; with one, every context is its
    /// own. The roots stay borrowed meanwhile (no reference counted per callback): a root
    /// created or deleted from inside the callback is refused (see `on_context_create`).
    fn with_driver<R>(
        &self,
        context_id: u32,
        callback: impl FnOnce(&Rc<Driver<P>>) -> R,
    ) -> Option<R> {
        let Ok(roots) = self.roots.try_borrow() else {
            return None;
        };
        let driver = match roots.as_slice() {
            [only] => &only.driver,
            roots => {
                &roots
                    .iter()
                    .find(|root| root.context_id == context_id)
                    .or_else(|| {
                        roots
                            .iter()
                            .find(|root| root.driver.runtime.has_stream(context_id))
                    })?
                    .driver
            }
        };
        Some(callback(driver))
    }

    fn root(&self, context_id: u32) -> Option<Rc<Driver<P>>> {
        self.roots
            .try_borrow()
            .ok()?
            .iter()
            .find(|root| root.context_id == context_id)
            .map(|root| Rc::clone(&root.driver))
    }

    /// Takes root context `context_id` out of the module (the caller drops it outside the
    /// borrow: what its tasks hold may log or call out).
    fn take_root(&self, context_id: u32) -> Option<Root<P>> {
        let mut roots = self.roots.try_borrow_mut().ok()?;
        let index = roots
            .iter()
            .position(|root| root.context_id == context_id)?;
        Some(roots.remove(index))
    }

    /// `proxy_on_context_create`: a root context (`parent_id` 0) is a new plugin instance; any
    /// other context is a stream of root `parent_id`.
    pub fn on_context_create(&self, context_id: u32, parent_id: u32) {
        if parent_id == 0 {
            let driver = Driver::<P>::new(crate::abi::AbiHost);
            let replaced = self.take_root(context_id);
            let Ok(mut roots) = self.roots.try_borrow_mut() else {
                log::error!(
                    "root context {context_id} created from inside a callback of this module; ignored"
                );
                return;
            };
            register_runtime(context_id, &driver.runtime);
            roots.push(Root { context_id, driver });
            drop(roots);
            if replaced.is_some() {
                log::warn!("root context {context_id} was created twice; dropping the first");
            }
            return;
        }
        match self.root(parent_id) {
            Some(driver) => driver.create_stream(context_id),
            None => log::warn!("context {context_id} has an unknown root context {parent_id}"),
        }
    }

    /// `proxy_on_configure`: 1 if the configuration is accepted.
    pub fn on_configure(&self, context_id: u32, size: usize) -> u32 {
        match self.root(context_id) {
            Some(driver) => u32::from(driver.configure(context_id, size)),
            None => {
                log::error!("configuration for unknown root context {context_id}");
                0
            }
        }
    }

    /// `proxy_on_tick`.
    pub fn on_tick(&self, context_id: u32) {
        if let Some(driver) = self.root(context_id) {
            driver.runtime.on_tick(context_id);
        }
    }

    /// `proxy_on_queue_ready`.
    pub fn on_queue_ready(&self, context_id: u32, queue: u32) {
        let Some(ready) = FEATURES.with(|features| features.queue_ready.get()) else {
            log::debug!("queue {queue} ready, but the plugin reads no shared queue");
            return;
        };
        if let Some(driver) = self.root(context_id) {
            ready(&driver.runtime, context_id, queue);
        }
    }

    /// A stream's header, body or trailer callback; the `proxy_action_t` it answers.
    pub fn on_hook(&self, context_id: u32, phase: Phase, size: usize, end_of_stream: u32) -> u32 {
        self.with_driver(context_id, |driver| {
            driver
                .runtime
                .on_hook(context_id, phase, size, end_of_stream != 0)
        })
        .unwrap_or(Action::Continue)
        .code()
    }

    /// `proxy_on_log`.
    pub fn on_log(&self, context_id: u32) {
        self.with_driver(context_id, |driver| driver.runtime.on_log(context_id));
    }

    /// `proxy_on_done`: 1, the context is done at once.
    pub fn on_done(&self, context_id: u32) -> u32 {
        self.with_driver(context_id, |driver| driver.runtime.on_done(context_id));
        1
    }

    /// `proxy_on_delete`: forgets a stream, or a root context and its plugin instance.
    pub fn on_delete(&self, context_id: u32) {
        // Streams first, with no search for a root: one is deleted per request, a root once
        // per configuration. The runtime a root id routes to has no stream of that id (context
        // ids are unique): it finds none, cancels the tasks the id owns (as the root's drop
        // would), and the root goes below.
        if self.with_driver(context_id, |driver| driver.runtime.on_delete(context_id)) == Some(true)
        {
            return;
        }
        if let Some(root) = self.take_root(context_id) {
            unregister_runtime(context_id);
            drop(root);
        }
    }

    /// `proxy_on_http_call_response`, on the context that made the call.
    pub fn on_http_call_response(
        &self,
        context_id: u32,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let answered = self.with_driver(context_id, |driver| {
            driver.runtime.on_call_response(
                context_id,
                token,
                num_headers,
                body_size,
                num_trailers,
            );
        });
        if answered.is_none() {
            log::debug!("response to call {token} for unknown context {context_id}");
        }
    }

    /// `proxy_on_grpc_receive`: a unary call's reply, or a message on a stream.
    pub fn on_grpc_receive(&self, context_id: u32, token: u32, size: usize) {
        let Some(grpc) = FEATURES.with(|features| features.grpc.get()) else {
            log::debug!("gRPC message on {token} ignored: the plugin made no gRPC call");
            return;
        };
        self.with_driver(context_id, |driver| {
            (grpc.receive)(&driver.runtime, context_id, token, size);
        });
    }

    /// `proxy_on_grpc_close`: a gRPC call or stream ended with `status`.
    pub fn on_grpc_close(&self, context_id: u32, token: u32, status: u32) {
        let Some(grpc) = FEATURES.with(|features| features.grpc.get()) else {
            log::debug!("gRPC close of {token} ignored: the plugin made no gRPC call");
            return;
        };
        self.with_driver(context_id, |driver| {
            (grpc.close)(&driver.runtime, context_id, token, status);
        });
    }
}

/// `proxy_on_queue_ready` as the shared queues handle it.
pub(crate) type QueueReady = fn(&Rc<Runtime>, u32, u32);

/// `proxy_on_redis_call_response` as the Redis client handles it (routed by token).
pub(crate) type RedisResponse = fn(u32, u32, u32, usize);

/// The gRPC client's callbacks.
#[derive(Clone, Copy)]
pub(crate) struct GrpcCallbacks {
    /// `proxy_on_grpc_receive`.
    pub(crate) receive: fn(&Rc<Runtime>, u32, u32, usize),
    /// `proxy_on_grpc_close`.
    pub(crate) close: fn(&Rc<Runtime>, u32, u32, u32),
}

/// The callbacks of the features outside the core (gRPC, shared queues, Redis), installed by
/// each feature when the plugin first uses it (`Extension::installed`): a module whose plugin
/// never uses one links none of its code, only an export that finds nothing to call.
pub(crate) struct FeatureCallbacks {
    pub(crate) grpc: Cell<Option<GrpcCallbacks>>,
    /// `proxy_on_queue_ready`.
    pub(crate) queue_ready: Cell<Option<QueueReady>>,
    /// `proxy_on_redis_call_response`, routed by token (Higress).
    pub(crate) redis_response: Cell<Option<RedisResponse>>,
}

thread_local! {
    pub(crate) static FEATURES: FeatureCallbacks = const {
        FeatureCallbacks {
            grpc: Cell::new(None),
            queue_ready: Cell::new(None),
            redis_response: Cell::new(None),
        }
    };
}

/// `_initialize`: runs the module's constructors, then makes a panic (which aborts the VM)
/// say why where the operator looks.
pub fn initialize() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: `_initialize` is the reactor's entry point, which the host calls once before
    // anything else; the constructors run there, as the WASI reactor ABI has them run.
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| {
        crate::abi::log_message(LogLevel::Critical, &info.to_string());
    }));
}

/// `proxy_on_memory_allocate`: memory the host writes a hostcall's returned bytes into; the
/// SDK takes it back as a `Vec<u8>` of capacity `size` (see `abi::take_host_bytes`). Null if
/// there is no memory for it.
pub fn memory_allocate(size: usize) -> *mut u8 {
    let Ok(layout) = std::alloc::Layout::array::<u8>(size) else {
        return std::ptr::null_mut();
    };
    if size == 0 {
        // A `Vec` of capacity 0 owns no allocation: its pointer is only ever dangling.
        return std::ptr::NonNull::<u8>::dangling().as_ptr();
    }
    // SAFETY: `layout` has a non-zero size.
    unsafe { std::alloc::alloc(layout) }
}

thread_local! {
    // The runtime of each root context, for the callbacks routed by token rather than by
    // context (Higress's `proxy_on_redis_call_response`, which no plugin type's exports own).
    static ROOTS: RefCell<Vec<(u32, Weak<Runtime>)>> = const { RefCell::new(Vec::new()) };
}

fn register_runtime(context_id: u32, runtime: &Rc<Runtime>) {
    ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        roots.retain(|(id, _)| *id != context_id);
        roots.push((context_id, Rc::downgrade(runtime)));
    });
}

fn unregister_runtime(context_id: u32) {
    ROOTS.with(|roots| roots.borrow_mut().retain(|(id, _)| *id != context_id));
}

/// The runtime of root context `context_id`; if there is none, the first whose `claims`
/// (e.g. "waits for this token") holds.
pub(crate) fn runtime_for(
    context_id: u32,
    claims: impl Fn(&Runtime) -> bool,
) -> Option<Rc<Runtime>> {
    let runtimes: Vec<(u32, Rc<Runtime>)> = ROOTS.with(|roots| {
        roots
            .borrow()
            .iter()
            .filter_map(|(id, runtime)| Some((*id, runtime.upgrade()?)))
            .collect()
    });
    let position = runtimes
        .iter()
        .position(|(id, _)| *id == context_id)
        .or_else(|| runtimes.iter().position(|(_, runtime)| claims(runtime)))?;
    runtimes
        .into_iter()
        .nth(position)
        .map(|(_, runtime)| runtime)
}
