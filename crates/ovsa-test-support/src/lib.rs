//! Test support shared by the workspace's tests (never a dependency of shipped code).
//!
//! - [`shop`]: the ISV's side of a sale made with the real API (keystores, a protected model
//!   and its master license, a license configuration, a TCB reference, the sale). Needs only
//!   ovsa-core, so ovsa-core's own tests and the fuzz seed maker use it too.
//! - `world` (feature `world`): a running license service (real TLS on loopback, SQLite or
//!   PostgreSQL) whose vTPM EK CA is the swtpm test CA, with an ISV, a customer and a protected
//!   model; `runtime_fixture` adds what the runtime plugin's tests need on top (a vTPM, OVMS
//!   model repositories, service stop/restart).
//!
//! A test binary uses it as a dev-dependency:
//! `ovsa-test-support = { path = "…/crates/ovsa-test-support", features = ["world"] }` and
//! `use ovsa_test_support::world;` where it used to say `mod world;`.
#![forbid(unsafe_code)]

#[cfg(feature = "world")]
pub mod runtime_fixture;
pub mod shop;
#[cfg(feature = "world")]
pub mod world;

/// `libovsaruntime.so` as built by this `cargo test` (next to the test binary's deps dir).
/// `OVSA_RUNTIME_PLUGIN` overrides it (e.g. to run the tests against a release build).
pub fn plugin_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("OVSA_RUNTIME_PLUGIN") {
        return std::path::PathBuf::from(p);
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
    panic!(
        "libovsaruntime.so not found next to {}: run the whole workspace \
         (`cargo test --workspace`) or `cargo build -p ovsaruntime` first",
        deps.display()
    );
}
