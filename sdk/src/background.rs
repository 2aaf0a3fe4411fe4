//! Work that outlives any request: tasks on the root context.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A task that runs on the plugin's root context, outside any request, for as long as the
/// configuration that made it is in force: [`Root::background_tasks`](crate::Root::background_tasks)
/// returns them, the SDK starts them right after the configuration is accepted, and drops
/// them (mid-await) when the plugin is reconfigured or stops.
///
/// A background task awaits what a hook awaits: HTTP calls, [`sleep`](crate::sleep),
/// [`timeout`](crate::timeout). Its calls are made from the root context, so they do not
/// depend on any stream. It shares data with the per-stream plugin values through the root
/// (`Rc<Self>`), e.g. a cache in a `RefCell` field the task fills.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use std::time::Duration;
/// use proxy_async::{BackgroundTask, ConfigError, HttpClient, NoConfig, Plugin, Root};
///
/// #[derive(Default)]
/// struct Lists {
///     allow_list: RefCell<Vec<u8>>,
/// }
///
/// impl Root for Lists {
///     type Config = NoConfig;
///     fn configure(_: NoConfig) -> Result<Self, ConfigError> {
///         Ok(Lists::default())
///     }
///     fn background_tasks(self: &Rc<Self>) -> Vec<BackgroundTask> {
///         let lists = Rc::clone(self);
///         vec![BackgroundTask::new(async move {
///             let client = HttpClient::new("lists");
///             loop {
///                 if let Ok(list) = client.get("/allow").send().await {
///                     *lists.allow_list.borrow_mut() = list.body().to_vec();
///                 }
///                 proxy_async::sleep(Duration::from_secs(60)).await;
///             }
///         })]
///     }
/// }
///
/// struct Filter;
///
/// impl Plugin for Filter {
///     type Root = Lists;
///     fn new(_: &Rc<Lists>) -> Self { Filter }
/// }
/// ```
pub struct BackgroundTask {
    pub(crate) future: Pin<Box<dyn Future<Output = ()>>>,
}

impl BackgroundTask {
    /// A task running `future` to its end (or until the configuration is replaced).
    pub fn new(future: impl Future<Output = ()> + 'static) -> Self {
        BackgroundTask {
            future: Box::pin(future),
        }
    }
}

impl fmt::Debug for BackgroundTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackgroundTask")
    }
}
