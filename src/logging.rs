//! loupe's own log lines: one small `log` backend that writes `loupe LEVEL message` to stderr.
//!
//! In Lambda an extension's stderr goes to the function's log group (and to `extension` telemetry
//! records), so it is billed to the user: the level is `warn` unless `LOUPE_LOG_LEVEL` says
//! otherwise, and nothing here ever prints text that looks like EMF.

use std::io::Write;

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("loupe {} {}\n", record.level(), record.args());
            // One write per line so lines from tasks never interleave; a closed stderr is ignored.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls only change the level.
pub fn init(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
