//! Routes the `log` crate's macros to the host's log (`proxy_log`), at the host's level.

use crate::host::LogLevel;
use crate::runtime::Runtime;
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// The `log` crate's levels and the proxy's: the one mapping between them. The proxy's
/// `critical` (and any level the ABI does not define) has no `log` level and reads as `error`.
const LEVELS: [(log::Level, LogLevel); 5] = [
    (log::Level::Trace, LogLevel::Trace),
    (log::Level::Debug, LogLevel::Debug),
    (log::Level::Info, LogLevel::Info),
    (log::Level::Warn, LogLevel::Warn),
    (log::Level::Error, LogLevel::Error),
];

/// The proxy's level for a `log` level.
pub(crate) fn proxy_level(level: log::Level) -> LogLevel {
    LEVELS
        .iter()
        .find(|(known, _)| *known == level)
        .map_or(LogLevel::Error, |(_, proxy)| *proxy)
}

/// The `log` level for a proxy level.
pub(crate) fn log_level(level: LogLevel) -> log::Level {
    LEVELS
        .iter()
        .find(|(_, proxy)| *proxy == level)
        .map_or(log::Level::Error, |(known, _)| *known)
}

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Outside a host callback there is no host to log to; that only happens natively,
        // in test code around the plugin.
        Runtime::with_current(|runtime| {
            let level = proxy_level(record.level());
            match runtime.log_prefix() {
                Some(prefix) => {
                    let line = format!("{prefix} [{}] {}", runtime.request_id(), record.args());
                    runtime.host.log(level, &line);
                }
                None => match record.args().as_str() {
                    Some(message) => runtime.host.log(level, message),
                    None => runtime.host.log(level, &record.args().to_string()),
                },
            }
        });
    }

    fn flush(&self) {}
}

/// Installs the logger (once per module; later calls keep it) and applies the host's level, so
/// that messages the host would drop are not even formatted.
pub(crate) fn install(level: LogLevel) {
    // Fails only when a logger is already set: ours, from an earlier plugin instance.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log_level(level).to_level_filter());
}
