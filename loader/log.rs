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

    /// Prints `[ovsa][<level>] <message>` to stderr if `level` is enabled.
    pub fn log(&self, level: LogLevel, message: std::fmt::Arguments<'_>) {
        if level != LogLevel::Off && level <= self.level {
            // One write per line so that concurrent lines do not interleave.
            let line = format!("[ovsa][{}] {}\n", level.label(), message);
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
