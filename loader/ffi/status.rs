//! The values of the C API: the status every call returns and the buffer selector passed to the
//! allocation callback. These two enums are the one source of those numbers: the constants of
//! `include/ovsa_runtime.h` are generated from them (cbindgen, checked by `tests/c_header.rs`),
//! the C++ shim `ffi/ovsa_custom_loader.cpp` and C hosts use the header's constants, Rust hosts
//! use these enums.
//!
//! The file is self-contained (no `crate::` paths, no dependencies), so a Rust host that
//! `dlopen`s the plugin instead of linking it can include it with
//! `#[path = ".../loader/ffi/status.rs"] mod status;` (examples/host-server does).
//!
//! The variants are spelled as in `ovms::CustomLoaderStatus` (and the C constants without their
//! `OVSA_` / `OVSA_BUFFER_` prefix), hence the upper-case names.
#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

/// Status values returned by the C API. They mirror `ovms::CustomLoaderStatus` value for value
/// (the C++ shim asserts this at compile time). Functions return them as `int32_t`.
///
/// cbindgen:rename-all=prefix:OVSA_
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OvsaStatus {
    /// `ovms::CustomLoaderStatus::OK`.
    OK = 0,
    /// `ovms::CustomLoaderStatus::MODEL_TYPE_IR`: an OpenVINO IR (XML + weights) was loaded.
    MODEL_TYPE_IR = 1,
    /// `ovms::CustomLoaderStatus::MODEL_TYPE_ONNX`: an ONNX model was loaded.
    MODEL_TYPE_ONNX = 2,
    /// `ovms::CustomLoaderStatus::MODEL_TYPE_BLOB` (never produced).
    MODEL_TYPE_BLOB = 3,
    /// `ovms::CustomLoaderStatus::MODEL_LOAD_ERROR`.
    MODEL_LOAD_ERROR = 4,
    /// `ovms::CustomLoaderStatus::MODEL_BLACKLISTED`.
    MODEL_BLACKLISTED = 5,
    /// `ovms::CustomLoaderStatus::INTERNAL_ERROR`.
    INTERNAL_ERROR = 6,
}

impl OvsaStatus {
    /// The `int32_t` the C API returns for this status.
    pub const fn code(self) -> i32 {
        self as i32
    }
}

/// Buffer selectors passed to the allocation callback (its `which` argument, an `int32_t`).
///
/// cbindgen:rename-all=prefix:OVSA_BUFFER_
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OvsaBuffer {
    /// IR XML or ONNX model.
    MODEL = 0,
    /// IR weights (never requested for ONNX).
    WEIGHTS = 1,
}

impl OvsaBuffer {
    /// The `int32_t` passed to the allocation callback for this buffer.
    pub const fn code(self) -> i32 {
        self as i32
    }
}
