//! Build script of the runtime plugin `libovsaruntime.so`: compiles the C++ shim in `ffi/` that
//! implements `ovms::CustomLoaderInterface` (declared in `include/ovms_custom_loader_interface.hpp`)
//! on top of the C API (`include/ovsa_runtime.h`), with OVMS's ABI settings. The `cc` crate also
//! links libstdc++.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=ffi/ovsa_custom_loader.cpp");
    println!("cargo:rerun-if-changed=ffi/ovsa_shim_buffers.hpp");
    println!("cargo:rerun-if-changed=include/ovms_custom_loader_interface.hpp");
    println!("cargo:rerun-if-changed=include/ovsa_runtime.h");
    cc::Build::new()
        .cpp(true)
        .file("ffi/ovsa_custom_loader.cpp")
        .include("include")
        .include("ffi")
        .std("c++17")
        .pic(true)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(true)
        .extra_warnings(false)
        .flag_if_supported("-fvisibility=hidden")
        .compile("ovsa_custom_loader");
}
