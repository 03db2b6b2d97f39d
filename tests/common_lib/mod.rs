//! Helpers shared by the runtime's integration tests: where the built plugin is.
#![allow(dead_code)]

use std::path::PathBuf;

/// `libovsaruntime.so` as built by this `cargo test` (next to the test binary's deps dir).
/// `OVSA_RUNTIME_PLUGIN` overrides it (e.g. to run the tests against a release build).
pub fn plugin_path() -> PathBuf {
    if let Some(p) = std::env::var_os("OVSA_RUNTIME_PLUGIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    // `cargo test` leaves the freshly built cdylib in deps/ (only `cargo build` copies it up).
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libovsaruntime.so");
        if p.is_file() {
            return p;
        }
    }
    panic!("libovsaruntime.so not found next to {}", deps.display());
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
