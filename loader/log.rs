//! Logging: one line per event on stderr, in OpenVINO Model Server's style, never with secrets.

use serde::Deserialize;

/// How much the loader logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Failures only.
    Error,
    /// Failures and degraded states (grace periods).
    Warning,
    /// Also successful loads, unloads and lease changes (the default).
    #[default]
    Info,
    /// Also every lease renewal.
    Debug,
}

impl LogLevel {
    fn label(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// The line [`Logger::log`] writes: `[ovsa][<level>] <message>\n`, with the message escaped by
/// [`ovsa_core::text::escape_controls`].
fn format_line(level: LogLevel, message: std::fmt::Arguments<'_>) -> String {
    let message = message.to_string();
    format!(
        "[ovsa][{}] {}\n",
        level.label(),
        ovsa_core::text::escape_controls(&message)
    )
}

/// A per-loader logger (the level comes from the loader's own config file).
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    level: LogLevel,
}

impl Logger {
    /// A logger that prints up to `level`.
    pub fn new(level: LogLevel) -> Self {
        Logger { level }
    }

    /// Prints `[ovsa][<level>] <message>` to stderr if `level` is enabled. Control characters
    /// and bidirectional overrides in the message (model names, service URLs and errors come from
    /// the customer's files and the service) are escaped, so one event is always one line.
    pub fn log(&self, level: LogLevel, message: std::fmt::Arguments<'_>) {
        if level != LogLevel::Off && level <= self.level {
            // One write per line so that concurrent lines do not interleave.
            let line = format_line(level, message);
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        }
    }

    /// Logs at error level.
    pub fn error(&self, message: std::fmt::Arguments<'_>) {
        self.log(LogLevel::Error, message)
    }

    /// Logs at warning level.
    pub fn warning(&self, message: std::fmt::Arguments<'_>) {
        self.log(LogLevel::Warning, message)
    }

    /// Logs at info level.
    pub fn info(&self, message: std::fmt::Arguments<'_>) {
        self.log(LogLevel::Info, message)
    }

    /// Logs at debug level.
    pub fn debug(&self, message: std::fmt::Arguments<'_>) {
        self.log(LogLevel::Debug, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_message_is_one_line_without_raw_controls() {
        let name = "m\n[ovsa][info] model x version 1: loaded\x1b[31m\u{202e}";
        let line = format_line(LogLevel::Error, format_args!("model {name}: refused"));
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n'));
        assert!(
            !line
                .trim_end_matches('\n')
                .chars()
                .any(ovsa_core::text::is_unsafe),
            "{line:?}"
        );
        assert!(line.contains("m\\n[ovsa][info]"), "{line:?}");
    }
}
