//! `libovsaruntime.so`: the OpenVINO Model Server custom-loader plugin.
//!
//! On `loadModel` the plugin attests the VM's vTPM (plus the host evidence stored in its NVRAM),
//! obtains the license's key share from the license service over TLS, unwraps the model key with
//! [`ovsa_core::license::CustomerLicense::unwrap_model_key`], and decrypts the package straight
//! into OVMS's buffers with [`ovsa_core::package::Package::decrypt_file_into`]. A lease worker
//! per loaded version renews the license and blacklists the version when the license is refused
//! or the service stays unreachable past the grace period.
//!
//! Layers: [`loader::Loader`] (safe Rust, one object per OVMS `loader_name`, no global state;
//! inside it: `fetch` runs the load's steps, `lease` is the renewal policy as a pure state
//! machine, `worker` drives it on a thread, `check` is the license check with its deadline,
//! `state` what the loader and its workers share),
//! the C API in [`ffi`] (declared in `include/ovsa_runtime.h`; the only `unsafe` code), and the
//! C++ shim `ffi/ovsa_custom_loader.cpp` implementing `ovms::CustomLoaderInterface` on top of the
//! C API. See docs/RUNTIME.md.
#![deny(unsafe_code)]

pub use ovsa_core as core;

mod check;
pub mod config;
mod fetch;
pub mod ffi;
mod lease;
pub mod loader;
pub mod log;
pub mod options;
mod state;
mod types;
mod worker;

pub use config::{ConfigError, LoaderConfig};
pub use ffi::memory::{PlaintextBuf, SecureBuffers};
pub use loader::{
    BlacklistStatus, BufferError, LoadError, Loader, ModelType, OutputBuffers, VecBuffers,
};
pub use options::OptionsError;
