//! Routes the `log` crate's macros to the host's log (`proxy_log`), at the host's level.

use crate::runtime::Runtime;

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
        let Some(runtime) = Runtime::current() else {
            return;
        };
        match runtime.log_prefix() {
            Some(prefix) => {
                let line = format!("{prefix} [{}] {}", runtime.request_id(), record.args());
                runtime.host.log(record.level(), &line);
            }
            None => match record.args().as_str() {
                Some(message) => runtime.host.log(record.level(), message),
                None => runtime.host.log(record.level(), &record.args().to_string()),
            },
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once per module; later calls keep it) and applies the host's level, so
/// that messages the host would drop are not even formatted.
pub(crate) fn install(level: log::LevelFilter) {
    // Fails only when a logger is already set: ours, from an earlier plugin instance.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
