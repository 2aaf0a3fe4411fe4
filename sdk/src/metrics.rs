//! Counters, gauges and histograms the proxy exports (Envoy: `/stats`, and Prometheus at
//! `/stats/prometheus`).
//!
//! A metric is a handle: a name and a kind, cheap to keep in a `static` and to use from any
//! hook, tick function or background work. The proxy defines the metric the first time the
//! plugin instance uses it (`proxy_define_metric`), and the SDK keeps its id, so every later
//! use is one hostcall. Metrics are the proxy's: every worker's VM updates the same counter.
//!
//! ```
//! use std::rc::Rc;
//! use proxy_async::{Counter, Error, Flow, Histogram, MetricName, NoConfig, Plugin, Request};
//!
//! static REQUESTS: Counter = Counter::new("hello_requests_total");
//! static BODY_BYTES: Histogram = Histogram::new("hello_request_body_bytes");
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     type Root = NoConfig;
//!     fn new(_: &Rc<NoConfig>) -> Self { Hello }
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         REQUESTS.increment(1);
//!         // A tag whose value is known per request: Envoy reports it as a label.
//!         if let Some(method) = req.method() {
//!             MetricName::new("hello_requests_by_method_total")
//!                 .tag("method", method.as_str())
//!                 .counter()
//!                 .increment(1);
//!         }
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! use proxy_async::testing::PluginTest;
//!
//! let test = PluginTest::<Hello>::new("").unwrap();
//! test.stream().send_request_headers(&[(":method", "GET"), (":path", "/")], true);
//! assert_eq!(test.metric("hello_requests_total"), Some(1));
//! assert_eq!(test.metric("method=.=GET;.;hello_requests_by_method_total"), Some(1));
//! ```
//!
//! # Errors
//! Updates (`increment`, `set`, `add`, `record`) never fail the hook and never panic: a metric
//! is not worth a failed request. When the proxy refuses one (it cannot define the metric, or
//! does not offer metrics at all), the update is dropped and the first refusal of each metric
//! is logged as a warning. Reads (`get`) return the refusal.
//!
//! Outside a plugin callback (natively, in test code around the plugin) there is no proxy:
//! updates do nothing and reads fail with `UNIMPLEMENTED`.
//!
//! # Tags
//! Envoy's metrics of plugins have no labels of their own: Envoy stores each metric under
//! `wasmcustom.<name>` (`defineMetric` in `source/extensions/common/wasm/context.cc`, with the
//! namespace of `stats_handler.h`) and takes tags out of stat names only with the regular
//! expressions of the bootstrap's `stats_config.stats_tags` (each match's first group is cut
//! out of the name, its second group is the tag's value). [`MetricName`] writes tags the way
//! Istio's stats plugin does, `<tag>=.=<value>;.;` before the name, which the regex
//! `(<tag>=\.=(.*?);\.;)` takes out: Istio's bootstrap has that regex for each of its own
//! tags and for each of `meshConfig.defaultConfig.extraStatTags`. For Envoy, add them to the
//! bootstrap:
//!
//! ```yaml
//! stats_config:
//!   stats_tags:
//!   - tag_name: method
//!     regex: "(method=\\.=(.*?);\\.;)"
//! ```
//!
//! Then `MetricName::new("requests_total").tag("method", "GET")` is the Prometheus series
//! `requests_total{method="GET"}` (Envoy drops the `wasmcustom` namespace from its output).
//! Without the regex the tag stays in the name. Every tag value makes a metric of its own in
//! the proxy: keep values few (a status class, a route), never per request (an id, a path).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::{Rc, Weak};

use crate::host::{Host, HostError, HostStatus, MetricType, backend};
use crate::runtime::Runtime;

/// How log lines name a metric of `kind`.
fn kind_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram | MetricType::Unknown(_) => "histogram",
    }
}

/// Where [`Entry::slots`] keeps a metric of `kind`.
fn slot_index(kind: MetricType) -> usize {
    usize::try_from(kind.code()).unwrap_or(usize::MAX)
}

/// A counter: a count that only goes up (requests, errors).
///
/// ```
/// use proxy_async::Counter;
///
/// static DENIED: Counter = Counter::new("auth_denied_total");
/// // In a hook:
/// DENIED.increment(1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    name: Cow<'static, str>,
}

impl Counter {
    /// The counter `name` (for one with tags, see [`MetricName`]).
    pub const fn new(name: &'static str) -> Counter {
        Counter {
            name: Cow::Borrowed(name),
        }
    }

    /// The counter `name`, a name made at run time.
    pub fn named(name: impl Into<String>) -> Counter {
        Counter {
            name: Cow::Owned(name.into()),
        }
    }

    /// Its name, as the proxy gets it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `by`. Adding 0 does nothing (Envoy refuses it).
    pub fn increment(&self, by: u64) {
        if by == 0 {
            return;
        }
        let delta = i64::try_from(by).unwrap_or(i64::MAX);
        update(
            MetricType::Counter,
            &self.name,
            "incrementing",
            |runtime, id| increment_metric(runtime, id, delta),
        );
    }

    /// Its value now (every worker's increments).
    pub fn get(&self) -> Result<u64, HostError> {
        read(MetricType::Counter, &self.name)
    }
}

/// A gauge: a value that goes up and down (connections open, entries cached). Envoy keeps it
/// unsigned: it must not go below zero.
///
/// ```
/// use proxy_async::Gauge;
///
/// static IN_FLIGHT: Gauge = Gauge::new("calls_in_flight");
/// IN_FLIGHT.add(1);
/// // ... the call ...
/// IN_FLIGHT.add(-1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gauge {
    name: Cow<'static, str>,
}

impl Gauge {
    /// The gauge `name` (for one with tags, see [`MetricName`]).
    pub const fn new(name: &'static str) -> Gauge {
        Gauge {
            name: Cow::Borrowed(name),
        }
    }

    /// The gauge `name`, a name made at run time.
    pub fn named(name: impl Into<String>) -> Gauge {
        Gauge {
            name: Cow::Owned(name.into()),
        }
    }

    /// Its name, as the proxy gets it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets it to `value` (at most `i64::MAX`, which every backend stores).
    pub fn set(&self, value: u64) {
        let value = clamp(value);
        update(MetricType::Gauge, &self.name, "setting", |runtime, id| {
            record_metric(runtime, id, value)
        });
    }

    /// Adds `delta` (negative: subtracts).
    pub fn add(&self, delta: i64) {
        update(MetricType::Gauge, &self.name, "changing", |runtime, id| {
            increment_metric(runtime, id, delta)
        });
    }

    /// Its value now.
    pub fn get(&self) -> Result<u64, HostError> {
        read(MetricType::Gauge, &self.name)
    }
}

/// A histogram: a distribution of values (latencies, sizes); the proxy exports its quantiles
/// and buckets. The proxy cannot read one back.
///
/// ```
/// use proxy_async::Histogram;
///
/// static AUTH_LATENCY_MS: Histogram = Histogram::new("auth_latency_ms");
/// AUTH_LATENCY_MS.record(12);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    name: Cow<'static, str>,
}

impl Histogram {
    /// The histogram `name` (for one with tags, see [`MetricName`]).
    pub const fn new(name: &'static str) -> Histogram {
        Histogram {
            name: Cow::Borrowed(name),
        }
    }

    /// The histogram `name`, a name made at run time.
    pub fn named(name: impl Into<String>) -> Histogram {
        Histogram {
            name: Cow::Owned(name.into()),
        }
    }

    /// Its name, as the proxy gets it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one value (at most `i64::MAX`, which every backend stores).
    pub fn record(&self, value: u64) {
        let value = clamp(value);
        update(
            MetricType::Histogram,
            &self.name,
            "recording in",
            |runtime, id| record_metric(runtime, id, value),
        );
    }
}

/// The name of a metric with tags, in the format Envoy's tag extraction and Istio expect:
/// `<tag>=.=<value>;.;` for each tag, in order, then the name (see the [module](self) docs
/// for the proxy's side).
///
/// Tag names keep ASCII letters, digits and `_` (what a Prometheus label may hold; anything
/// else becomes `_`). In values and in the name, a `.` right after `=` or `;` becomes `_`:
/// that keeps the separators `=.=` and `;.;` out of them, so that a tag's regex can neither
/// end a value early nor match inside one.
///
/// ```
/// use proxy_async::MetricName;
///
/// let name = MetricName::new("requests_total")
///     .tag("route", "default/foo")
///     .tag("code", 503);
/// assert_eq!(name.to_string(), "route=.=default/foo;.;code=.=503;.;requests_total");
/// name.counter().increment(1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MetricName {
    tags: String,
    name: String,
}

impl MetricName {
    /// A name without tags yet.
    pub fn new(name: &str) -> MetricName {
        MetricName {
            tags: String::new(),
            name: escape(name),
        }
    }

    /// Adds the tag `name` with `value`.
    pub fn tag(mut self, name: &str, value: impl fmt::Display) -> MetricName {
        if name.is_empty() {
            self.tags.push('_');
        }
        self.tags.extend(name.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        }));
        self.tags.push_str("=.=");
        self.tags.push_str(&escape(&value.to_string()));
        self.tags.push_str(";.;");
        self
    }

    /// The counter of this name.
    pub fn counter(&self) -> Counter {
        Counter::named(self.to_string())
    }

    /// The gauge of this name.
    pub fn gauge(&self) -> Gauge {
        Gauge::named(self.to_string())
    }

    /// The histogram of this name.
    pub fn histogram(&self) -> Histogram {
        Histogram::named(self.to_string())
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tags)?;
        f.write_str(&self.name)
    }
}

/// `text` with each `.` that follows `=` or `;` replaced by `_`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous = None;
    for c in text.chars() {
        if c == '.' && matches!(previous, Some('=' | ';')) {
            out.push('_');
        } else {
            out.push(c);
        }
        previous = Some(c);
    }
    out
}

fn clamp(value: u64) -> u64 {
    // Envoy takes a u64, our hosts an i64: values past i64::MAX would read back differently.
    value.min(i64::MAX.unsigned_abs())
}

/// A metric the plugin instance asked the proxy for: its id, or the proxy's refusal.
#[derive(Clone, Copy)]
enum Slot {
    Defined(u32),
    Refused(HostStatus),
}

#[derive(Default)]
struct Entry {
    // By kind (`slot_index`).
    slots: [Option<Slot>; 3],
    // A refusal of this name was logged.
    warned: bool,
}

/// The metric ids of one plugin instance. Ids are the VM's in Envoy; the SDK keeps them per
/// plugin instance (a root context's runtime), which in tests is also per emulated proxy.
struct InstanceMetrics {
    // The instance. A `Weak` keeps its allocation, so no later runtime has its address while
    // this entry lives.
    runtime: Weak<Runtime>,
    by_name: HashMap<String, Entry>,
}

thread_local! {
    static METRICS: RefCell<Vec<InstanceMetrics>> = const { RefCell::new(Vec::new()) };
}

fn is_instance(entry: &InstanceMetrics, runtime: &Rc<Runtime>) -> bool {
    std::ptr::eq(entry.runtime.as_ptr(), Rc::as_ptr(runtime))
}

fn cached(runtime: &Rc<Runtime>, kind: MetricType, name: &str) -> Option<Slot> {
    METRICS.with(|metrics| {
        metrics
            .borrow()
            .iter()
            .find(|entry| is_instance(entry, runtime))
            .and_then(|entry| entry.by_name.get(name))
            .and_then(|entry| entry.slots.get(slot_index(kind)).copied().flatten())
    })
}

fn with_entry<R>(runtime: &Rc<Runtime>, name: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
    METRICS.with(|metrics| {
        let mut metrics = metrics.borrow_mut();
        let index = match metrics.iter().position(|entry| is_instance(entry, runtime)) {
            Some(index) => index,
            None => {
                // A new instance: forget the ones that are gone.
                metrics.retain(|entry| entry.runtime.strong_count() > 0);
                metrics.push(InstanceMetrics {
                    runtime: Rc::downgrade(runtime),
                    by_name: HashMap::new(),
                });
                metrics.len() - 1
            }
        };
        let by_name = &mut metrics[index].by_name;
        // Looked up first so that a hit allocates no key.
        if let Some(entry) = by_name.get_mut(name) {
            return f(entry);
        }
        f(by_name.entry(name.to_string()).or_default())
    })
}

/// The id of metric `name` of `kind`, defining it on first use. A refusal is kept: Envoy
/// adds an entry to its own table for each `proxy_define_metric`, so asking again per request
/// would grow it.
fn resolve(runtime: &Rc<Runtime>, kind: MetricType, name: &str) -> Result<u32, HostError> {
    let slot = match cached(runtime, kind, name) {
        Some(slot) => slot,
        None => {
            // No borrow of the cache is held across the hostcall.
            let slot = match define_metric(runtime, kind, name) {
                Ok(id) => Slot::Defined(id),
                Err(error) => Slot::Refused(error.status),
            };
            with_entry(runtime, name, |entry| {
                if let Some(cached) = entry.slots.get_mut(slot_index(kind)) {
                    *cached = Some(slot);
                }
            });
            slot
        }
    };
    match slot {
        Slot::Defined(id) => Ok(id),
        Slot::Refused(status) => Err(HostError {
            call: "proxy_define_metric",
            status,
        }),
    }
}

fn no_host(call: &'static str) -> HostError {
    HostError {
        call,
        status: HostStatus::Unimplemented,
    }
}

/// Runs an update of metric `name`; logs its first refusal.
fn update(
    kind: MetricType,
    name: &str,
    what: &str,
    op: impl FnOnce(&Runtime, u32) -> Result<(), HostError>,
) {
    let Some(runtime) = Runtime::current() else {
        return;
    };
    let result = resolve(&runtime, kind, name).and_then(|id| op(&runtime, id));
    if let Err(error) = result {
        let first = with_entry(&runtime, name, |entry| {
            !std::mem::replace(&mut entry.warned, true)
        });
        if first {
            log::warn!(
                "{what} the {} {name}: {error}; dropped (later refusals of it are not logged)",
                kind_name(kind)
            );
        }
    }
}

fn read(kind: MetricType, name: &str) -> Result<u64, HostError> {
    let runtime = Runtime::current().ok_or_else(|| no_host("proxy_get_metric"))?;
    let id = resolve(&runtime, kind, name)?;
    get_metric(&runtime, id)
}

// The hostcalls, on the host this build has (see `host::backend`).

fn define_metric(runtime: &Runtime, kind: MetricType, name: &str) -> Result<u32, HostError> {
    Host::define_metric(backend(&runtime.host), kind, name)
}

fn increment_metric(runtime: &Runtime, id: u32, delta: i64) -> Result<(), HostError> {
    Host::increment_metric(backend(&runtime.host), id, delta)
}

fn record_metric(runtime: &Runtime, id: u32, value: u64) -> Result<(), HostError> {
    Host::record_metric(backend(&runtime.host), id, value)
}

fn get_metric(runtime: &Runtime, id: u32) -> Result<u64, HostError> {
    Host::get_metric(backend(&runtime.host), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_before_the_name_as_envoys_tag_regexes_expect() {
        assert_eq!(
            MetricName::new("requests_total").to_string(),
            "requests_total"
        );
        assert_eq!(
            MetricName::new("requests_total")
                .tag("route", "default/foo")
                .tag("code", 200)
                .to_string(),
            "route=.=default/foo;.;code=.=200;.;requests_total"
        );
        // Dots elsewhere (addresses, domains) stay.
        assert_eq!(
            MetricName::new("calls.total")
                .tag("upstream", "10.0.0.1:80")
                .to_string(),
            "upstream=.=10.0.0.1:80;.;calls.total"
        );
    }

    #[test]
    fn separators_cannot_appear_inside_tags_or_the_name() {
        let name = MetricName::new("x;.;y")
            .tag("a b=.=", "v;.;w=.=z")
            .tag("", "ends;.")
            .to_string();
        assert_eq!(name, "a_b___=.=v;_;w=_=z;.;_=.=ends;_;.;x;_;y");
        // What Envoy's regex for `a_b___` takes: the value up to the first `;.;` is the whole
        // value, and no other separator is left in the name.
        let (tag, rest) = name.split_once(";.;").unwrap_or_default();
        assert_eq!(tag, "a_b___=.=v;_;w=_=z");
        let (tag, rest) = rest.split_once(";.;").unwrap_or_default();
        assert_eq!(tag, "_=.=ends;_");
        assert_eq!(rest, "x;_;y");
    }

    #[test]
    fn a_metric_name_makes_handles_of_each_kind() {
        let name = MetricName::new("n").tag("t", "v");
        assert_eq!(name.counter().name(), "t=.=v;.;n");
        assert_eq!(name.gauge().name(), "t=.=v;.;n");
        assert_eq!(name.histogram().name(), "t=.=v;.;n");
        assert_eq!(Counter::new("c"), Counter::named("c".to_string()));
    }

    #[test]
    fn outside_a_plugin_updates_do_nothing_and_reads_fail() {
        Counter::new("c").increment(1);
        Gauge::new("g").add(-1);
        Histogram::new("h").record(1);
        assert_eq!(
            Counter::new("c").get().map_err(|error| error.status),
            Err(HostStatus::Unimplemented)
        );
    }

    /// A host whose metric calls are scripted and counted.
    #[derive(Default)]
    struct MetricsHost {
        refuse_define: bool,
        refuse_updates: bool,
        defines: std::cell::Cell<u32>,
        updates: std::cell::Cell<u32>,
        warnings: RefCell<Vec<String>>,
    }

    impl crate::host::Host for MetricsHost {
        fn log(&self, level: LogLevel, message: &str) {
            if level == LogLevel::Warn {
                self.warnings.borrow_mut().push(message.to_string());
            }
        }
        fn log_level(&self) -> LogLevel {
            LogLevel::Trace
        }
        fn set_effective_context(&self, _: u32) -> Result<(), HostError> {
            Ok(())
        }
        fn get_map(&self, _: MapType) -> Result<Pairs, HostError> {
            Ok(Vec::new())
        }
        fn get_map_value(&self, _: MapType, _: &str) -> Result<Option<Vec<u8>>, HostError> {
            Ok(None)
        }
        fn set_map(&self, _: MapType, _: &[(&str, &[u8])]) -> Result<(), HostError> {
            Ok(())
        }
        fn add_map_value(&self, _: MapType, _: &str, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn replace_map_value(&self, _: MapType, _: &str, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn remove_map_value(&self, _: MapType, _: &str) -> Result<(), HostError> {
            Ok(())
        }
        fn get_buffer(&self, _: BufferType, _: usize, _: usize) -> Result<Vec<u8>, HostError> {
            Ok(Vec::new())
        }
        fn set_buffer(&self, _: BufferType, _: usize, _: usize, _: &[u8]) -> Result<(), HostError> {
            Ok(())
        }
        fn http_call(
            &self,
            _: &str,
            _: &[(&str, &str)],
            _: &[u8],
            _: Duration,
        ) -> Result<u32, HostError> {
            Ok(1)
        }
        fn continue_stream(&self, _: Direction) -> Result<(), HostError> {
            Ok(())
        }
        fn now_nanos(&self) -> u64 {
            0
        }
        fn set_tick_period(&self, _: Duration) -> Result<(), HostError> {
            Ok(())
        }
        fn send_local_response(
            &self,
            _: u16,
            _: &str,
            _: &[u8],
            _: &crate::Headers,
        ) -> Result<(), HostError> {
            Ok(())
        }
        fn define_metric(&self, kind: MetricType, _: &str) -> Result<u32, HostError> {
            self.defines.set(self.defines.get() + 1);
            if self.refuse_define {
                return Err(no_host("proxy_define_metric"));
            }
            Ok(10 + kind.code())
        }
        fn increment_metric(&self, id: u32, _: i64) -> Result<(), HostError> {
            self.update(id)
        }
        fn record_metric(&self, id: u32, _: u64) -> Result<(), HostError> {
            self.update(id)
        }
        fn get_metric(&self, id: u32) -> Result<u64, HostError> {
            Ok(u64::from(id))
        }
    }

    impl MetricsHost {
        fn update(&self, id: u32) -> Result<(), HostError> {
            assert!((10..13).contains(&id), "an id the host handed out: {id}");
            self.updates.set(self.updates.get() + 1);
            if self.refuse_updates {
                return Err(HostError {
                    call: "proxy_increment_metric",
                    status: HostStatus::BadArgument,
                });
            }
            Ok(())
        }
    }

    /// Runs `f` as a callback of a plugin instance on `host`.
    fn in_plugin(host: &Rc<MetricsHost>, f: impl FnOnce()) {
        let driver = Driver::<Nothing>::new(Rc::clone(host) as Rc<dyn crate::host::Host>);
        crate::logging::install(LogLevel::Trace);
        let _scope = driver.runtime.scope(0);
        f();
    }

    struct Nothing;

    impl crate::Plugin for Nothing {
        type Root = crate::NoConfig;
        fn new(_: &Rc<crate::NoConfig>) -> Self {
            Nothing
        }
    }

    use std::time::Duration;

    use crate::driver::Driver;
    use crate::host::{BufferType, Direction, LogLevel, MapType, Pairs};

    #[test]
    fn a_metric_is_defined_once_per_plugin_instance_then_used_by_id() {
        let host = Rc::new(MetricsHost::default());
        in_plugin(&host, || {
            let counter = Counter::new("requests");
            for _ in 0..3 {
                counter.increment(2);
            }
            Counter::new("requests").increment(0);
            Gauge::new("requests").set(1);
            assert_eq!(counter.get(), Ok(10));
            assert_eq!(Gauge::new("requests").get(), Ok(11));
            Histogram::new("requests").record(5);
        });
        // One definition per kind; adding 0 made no hostcall.
        assert_eq!(host.defines.get(), 3);
        assert_eq!(host.updates.get(), 5);
        // Another plugin instance (a root context, a test's proxy) defines its own.
        in_plugin(&host, || Counter::new("requests").increment(1));
        assert_eq!(host.defines.get(), 4);
    }

    #[test]
    fn a_refused_metric_is_asked_for_once_and_logged_once() {
        let host = Rc::new(MetricsHost {
            refuse_define: true,
            ..MetricsHost::default()
        });
        in_plugin(&host, || {
            for _ in 0..3 {
                Counter::new("refused").increment(1);
            }
            assert_eq!(
                Counter::new("refused").get().map_err(|error| error.status),
                Err(HostStatus::Unimplemented)
            );
        });
        assert_eq!(host.defines.get(), 1);
        assert_eq!(host.updates.get(), 0);
        assert_eq!(
            *host.warnings.borrow(),
            [
                "incrementing the counter refused: proxy_define_metric returned UNIMPLEMENTED; \
                 dropped (later refusals of it are not logged)"
            ]
        );
    }

    #[test]
    fn refused_updates_are_dropped_and_logged_once_per_metric() {
        let host = Rc::new(MetricsHost {
            refuse_updates: true,
            ..MetricsHost::default()
        });
        in_plugin(&host, || {
            for _ in 0..3 {
                Gauge::new("g").add(-1);
                Histogram::new("h").record(1);
            }
        });
        assert_eq!(host.updates.get(), 6);
        assert_eq!(
            host.warnings.borrow().len(),
            2,
            "{:?}",
            host.warnings.borrow()
        );
    }

    #[test]
    fn values_past_i64_max_are_clamped() {
        assert_eq!(clamp(u64::MAX), 9_223_372_036_854_775_807);
        assert_eq!(clamp(5), 5);
    }
}
