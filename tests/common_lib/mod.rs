//! Helpers shared by the runtime's integration tests: where the built plugin is.
#![allow(dead_code)]

use std::path::PathBuf;

/// `libovsaruntime.so` as built by this `cargo test` (`OVSA_RUNTIME_PLUGIN` overrides it).
#[allow(unused_imports)] // c_header does not load the plugin
pub use ovsa_test_support::plugin_path;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
