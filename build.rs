//! Build script of the runtime plugin `libovsaruntime.so`.
//!
//! The C++ shim in `ffi/` that implements `ovms::CustomLoaderInterface` (declared in
//! `include/ovms_custom_loader_interface.hpp`) is compiled here with the `cc` crate once the
//! runtime lands (see docs/ARCHITECTURE.md); until then there is nothing to build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=ffi");
    println!("cargo:rerun-if-changed=include");
}
