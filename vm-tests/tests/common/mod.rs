//! Helpers shared by the guest test binaries.

use std::path::Path;
use std::process::Command;

/// Runs the host's `ovsatool` (`tool`) with `args` in `dir` (no passphrase from the
/// environment) and returns its stdout; panics with its output when it fails.
pub fn run_tool(tool: &Path, dir: &Path, args: &[&str]) -> String {
    let o = Command::new(tool)
        .current_dir(dir)
        .args(args)
        .env_remove("OVSA_KEYSTORE_PASSPHRASE")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ovsatool {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
