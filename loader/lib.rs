//! `libovsaruntime.so`: the OpenVINO Model Server custom-loader plugin.
//!
//! On `loadModel` the plugin attests the VM's vTPM (plus the host evidence stored in its NVRAM),
//! obtains the license's key share from the license service over TLS, unwraps the model key with
//! [`ovsa_core::license::CustomerLicense::unwrap_model_key`], and decrypts the package straight
//! into OVMS's buffers with [`ovsa_core::package::Package::decrypt_file_into`]. The OVMS-facing
//! C++ shim lives in `ffi/`, the interface it implements in `include/`.
//!
//! This crate is the root package of the workspace; the plugin itself is built by the runtime
//! milestone. Until then it re-exports the core library that the plugin is built on.

pub use ovsa_core as core;
