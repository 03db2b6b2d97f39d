//! The harness's error type: one human-readable message saying what failed and what to do.

use std::fmt;

/// A harness failure (fetching the guest parts, building the initramfs, booting, or the guest
/// not finishing in time). `Display` and `Debug` both print the message, so `unwrap()` in a
/// test shows it as written.
pub struct VmError(pub String);

impl VmError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        VmError(msg.into())
    }

    pub(crate) fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        VmError(format!("{what} {}: {e}", path.display()))
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VmError {}

/// Result alias of the harness.
pub type Result<T> = std::result::Result<T, VmError>;
