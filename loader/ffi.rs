//! The plain C API of `libovsaruntime.so`, declared in `include/ovsa_runtime.h`.
//!
//! Every function: a panic boundary (`catch_unwind`) mapped to an error status, null and UTF-8
//! checks on every pointer argument, a thread-local last-error message. Status values
//! ([`OvsaStatus`]) mirror `ovms::CustomLoaderStatus`. This module holds all of the crate's
//! `unsafe` code.
//!
//! `include/ovsa_runtime.h` is generated from this module and [`status`] by cbindgen (config
//! `include/cbindgen.toml`): the doc comments below are the header's comments. `tests/c_header.rs`
//! fails when the checked-in header differs from the generated one; regenerate it with
//! `OVSA_REGENERATE_HEADER=1 cargo test -p ovsaruntime --test c_header`.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use zeroize::Zeroize;

use crate::loader::{BlacklistStatus, BufferError, Loader, ModelType, OutputBuffers};

pub mod memory;
pub mod status;

pub use status::{OvsaBuffer, OvsaStatus};

/// Opaque loader handle. One OvsaLoader per OVMS loader_name; all calls on one loader are
/// thread-safe except ovsa_loader_free, which must be the last call on it.
pub struct OvsaLoader {
    loader: Loader,
}

// Hosts call one handle from several threads at once: the loader must be Send + Sync.
const _: fn() = || {
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<OvsaLoader>();
};

/// Allocation callback (`OvsaAllocFn` in Rust): return `size` writable bytes owned by the caller
/// for buffer `which` (OVSA_BUFFER_MODEL or OVSA_BUFFER_WEIGHTS), valid and untouched by others
/// until ovsa_loader_load_model returns, or NULL on failure. Called at most once per buffer and
/// load. Must not throw or longjmp (or unwind). Before decrypting into a buffer the plugin marks
/// every page it overlaps MADV_DONTDUMP (left out of core dumps, also after the host frees it).
pub type OvsaAllocFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, which: i32, size: usize) -> *mut u8>;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_error(message: impl Into<String>) {
    let message = message.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

fn clear_error() {
    LAST_ERROR.with(|e| e.borrow_mut().clear());
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (panic): {detail}")
}

/// Runs `f` behind a panic boundary; `on_panic` is the status returned after a panic. Returns
/// the status as the C API's `int32_t`.
fn guarded(on_panic: OvsaStatus, f: impl FnOnce() -> OvsaStatus) -> i32 {
    clear_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status.code(),
        Err(payload) => {
            set_error(panic_message(payload.as_ref()));
            on_panic.code()
        }
    }
}

/// Reads a required C string argument.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays valid for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: non-null, and the caller guarantees a valid NUL-terminated string for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| format!("{what} is not valid UTF-8"))
}

/// Reads the loader handle.
///
/// # Safety
/// `p` is null or a pointer returned by `ovsa_loader_new` and not yet freed.
unsafe fn loader_arg<'a>(p: *const OvsaLoader) -> Result<&'a Loader, String> {
    if p.is_null() {
        return Err("loader is NULL".into());
    }
    // SAFETY: non-null, and the caller guarantees a live handle from ovsa_loader_new.
    Ok(unsafe { &(*p).loader })
}

/// Creates a loader. config_path: NULL or "" for defaults, else a loader config file (JSON, see
/// docs/RUNTIME.md). Returns OVSA_OK and stores the handle in *out; OVSA_INTERNAL_ERROR if the
/// config is unusable (*out is then NULL; see ovsa_last_error).
///
/// # Safety
/// `config_path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ovsa_loader_new(
    config_path: *const c_char,
    out: *mut *mut OvsaLoader,
) -> i32 {
    guarded(OvsaStatus::INTERNAL_ERROR, || {
        if out.is_null() {
            set_error("out is NULL");
            return OvsaStatus::INTERNAL_ERROR;
        }
        // SAFETY: `out` is non-null and the caller guarantees it is writable.
        unsafe { out.write(std::ptr::null_mut()) };
        let path = if config_path.is_null() {
            None
        } else {
            // SAFETY: non-null; the caller guarantees a NUL-terminated string.
            match unsafe { str_arg(config_path, "config_path") } {
                Ok(p) => Some(p),
                Err(e) => {
                    set_error(e);
                    return OvsaStatus::INTERNAL_ERROR;
                }
            }
        };
        match Loader::from_config_file(path) {
            Ok(loader) => {
                let handle = Box::into_raw(Box::new(OvsaLoader { loader }));
                // SAFETY: `out` is non-null and writable (checked above).
                unsafe { out.write(handle) };
                OvsaStatus::OK
            }
            Err(e) => {
                let e = e.to_string();
                eprintln!("[ovsa][error] {e}");
                set_error(e);
                OvsaStatus::INTERNAL_ERROR
            }
        }
    })
}

struct CallbackBuffers {
    alloc: unsafe extern "C" fn(*mut c_void, i32, usize) -> *mut u8,
    ctx: *mut c_void,
    model: (*mut u8, usize),
    weights: (*mut u8, usize),
}

impl CallbackBuffers {
    fn request(&mut self, which: OvsaBuffer, size: usize) -> Result<*mut u8, BufferError> {
        // SAFETY: the caller of ovsa_loader_load_model supplied `alloc` and `ctx` as a pair and
        // guarantees the callback is safe to call with them.
        let p = unsafe { (self.alloc)(self.ctx, which.code(), size) };
        if size == 0 {
            return Ok(std::ptr::NonNull::dangling().as_ptr());
        }
        if p.is_null() {
            let what = if which == OvsaBuffer::MODEL {
                "model"
            } else {
                "weights"
            };
            return Err(BufferError::NotAllocated { what, size });
        }
        // Before any plaintext is written: the host's pages holding it stay out of core dumps.
        memory::exclude_from_core_dumps(p, size).map_err(|e| {
            BufferError::NotExcludedFromDumps {
                what: if which == OvsaBuffer::MODEL {
                    "model"
                } else {
                    "weights"
                },
                size,
                detail: e.to_string(),
            }
        })?;
        Ok(p)
    }

    fn slices(&mut self) -> (&mut [u8], &mut [u8]) {
        // SAFETY: each pointer came from the host's allocation callback for exactly this many
        // bytes (or is dangling with length 0); the host guarantees the two buffers are
        // distinct, writable and untouched by anyone else until load_model returns, and `self`
        // does not outlive that call.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.model.0, self.model.1),
                std::slice::from_raw_parts_mut(self.weights.0, self.weights.1),
            )
        }
    }
}

impl OutputBuffers for CallbackBuffers {
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), BufferError> {
        // Before the first plaintext exists: no core dump of this process, no ptrace or
        // /proc/<pid>/mem by other processes of its user (docs/HARDENING.md).
        memory::forbid_core_dumps_and_ptrace().map_err(|e| BufferError::ProcessDumpable {
            detail: e.to_string(),
        })?;
        let dangling = std::ptr::NonNull::dangling().as_ptr();
        self.model = (self.request(OvsaBuffer::MODEL, model_size)?, model_size);
        self.weights = match weights_size {
            Some(size) => (self.request(OvsaBuffer::WEIGHTS, size)?, size),
            None => (dangling, 0),
        };
        Ok(self.slices())
    }

    fn wipe(&mut self) {
        let (m, w) = self.slices();
        m.zeroize();
        w.zeroize();
    }
}

/// Loads version `version` of `name` from base_path/<version> with the model's
/// custom_loader_options JSON (all values strings; "keystore" and "controlled_access_file"
/// required). Decrypts straight into the buffers obtained from alloc(alloc_ctx, which, size),
/// each of its exact size; on failure they are wiped. Before the first buffer is requested the
/// process is made non-dumpable (prctl PR_SET_DUMPABLE 0: no core dumps, no ptrace by other
/// processes of the same user; see docs/HARDENING.md). Returns OVSA_MODEL_TYPE_IR or
/// OVSA_MODEL_TYPE_ONNX (also stored in *model_type if non-NULL), else OVSA_MODEL_LOAD_ERROR
/// (see ovsa_last_error). Never OVSA_OK.
///
/// # Safety
/// `loader` is a live handle; string arguments are NUL-terminated; `alloc` honours the
/// contract of ovsa_alloc_fn with `alloc_ctx`; `model_type` is NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ovsa_loader_load_model(
    loader: *const OvsaLoader,
    name: *const c_char,
    base_path: *const c_char,
    version: i32,
    options_json: *const c_char,
    alloc: OvsaAllocFn,
    alloc_ctx: *mut c_void,
    model_type: *mut i32,
) -> i32 {
    guarded(OvsaStatus::MODEL_LOAD_ERROR, || {
        // SAFETY: the caller guarantees a live handle and NUL-terminated strings.
        let args = unsafe {
            (|| {
                Ok::<_, String>((
                    loader_arg(loader)?,
                    str_arg(name, "name")?,
                    str_arg(base_path, "base_path")?,
                    str_arg(options_json, "options_json")?,
                    alloc.ok_or("alloc callback is NULL")?,
                ))
            })()
        };
        let (loader, name, base_path, options_json, alloc) = match args {
            Ok(a) => a,
            Err(e) => {
                eprintln!("[ovsa][error] load: {e}");
                set_error(e);
                return OvsaStatus::MODEL_LOAD_ERROR;
            }
        };
        let dangling = std::ptr::NonNull::dangling().as_ptr();
        let mut out = CallbackBuffers {
            alloc,
            ctx: alloc_ctx,
            model: (dangling, 0),
            weights: (dangling, 0),
        };
        let status = match loader.load(name, base_path, version, options_json, &mut out) {
            Ok(ModelType::Ir) => OvsaStatus::MODEL_TYPE_IR,
            Ok(ModelType::Onnx) => OvsaStatus::MODEL_TYPE_ONNX,
            Err(e) => {
                set_error(e.to_string());
                OvsaStatus::MODEL_LOAD_ERROR
            }
        };
        if !model_type.is_null() {
            // SAFETY: non-null, and the caller guarantees it is writable.
            unsafe { model_type.write(status.code()) };
        }
        status
    })
}

/// OVSA_OK or OVSA_MODEL_BLACKLISTED for (name, version). Reads a flag only: no I/O, never
/// blocks on a load or a license check. Unknown versions are OVSA_OK.
///
/// # Safety
/// `loader` is a live handle; `name` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ovsa_loader_blacklist_status(
    loader: *const OvsaLoader,
    name: *const c_char,
    version: i32,
) -> i32 {
    guarded(OvsaStatus::INTERNAL_ERROR, || {
        // SAFETY: the caller guarantees a live handle and a NUL-terminated string.
        match unsafe { loader_arg(loader).and_then(|l| Ok((l, str_arg(name, "name")?))) } {
            Ok((l, name)) => match l.blacklist_status(name, version) {
                BlacklistStatus::Ok => OvsaStatus::OK,
                BlacklistStatus::Blacklisted => OvsaStatus::MODEL_BLACKLISTED,
            },
            Err(e) => {
                set_error(e);
                OvsaStatus::INTERNAL_ERROR
            }
        }
    })
}

/// Unloads (name, version) and stops its lease worker (returns without waiting for a check in
/// flight). Idempotent; unknown versions are fine. Returns OVSA_OK.
///
/// # Safety
/// `loader` is a live handle; `name` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ovsa_loader_unload(
    loader: *const OvsaLoader,
    name: *const c_char,
    version: i32,
) -> i32 {
    guarded(OvsaStatus::INTERNAL_ERROR, || {
        // SAFETY: the caller guarantees a live handle and a NUL-terminated string.
        match unsafe { loader_arg(loader).and_then(|l| Ok((l, str_arg(name, "name")?))) } {
            Ok((l, name)) => {
                l.unload(name, version);
                OvsaStatus::OK
            }
            Err(e) => {
                set_error(e);
                OvsaStatus::INTERNAL_ERROR
            }
        }
    })
}

/// Forgets every version of `name` (model removed from the configuration) and stops their
/// lease workers. Returns OVSA_OK.
///
/// # Safety
/// `loader` is a live handle; `name` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ovsa_loader_retire(loader: *const OvsaLoader, name: *const c_char) -> i32 {
    guarded(OvsaStatus::INTERNAL_ERROR, || {
        // SAFETY: the caller guarantees a live handle and a NUL-terminated string.
        match unsafe { loader_arg(loader).and_then(|l| Ok((l, str_arg(name, "name")?))) } {
            Ok((l, name)) => {
                l.retire(name);
                OvsaStatus::OK
            }
            Err(e) => {
                set_error(e);
                OvsaStatus::INTERNAL_ERROR
            }
        }
    })
}

/// Stops every lease worker and frees the loader. NULL is a no-op. No other call may use the
/// handle concurrently or afterwards.
///
/// # Safety
/// `loader` is NULL or a handle from `ovsa_loader_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ovsa_loader_free(loader: *mut OvsaLoader) {
    guarded(OvsaStatus::INTERNAL_ERROR, || {
        if !loader.is_null() {
            // SAFETY: the caller hands back ownership of a handle made by Box::into_raw in
            // ovsa_loader_new, exactly once.
            drop(unsafe { Box::from_raw(loader) });
        }
        OvsaStatus::OK
    });
}

/// Copies this thread's last error message (empty if the last call succeeded) into buf
/// (NUL-terminated, truncated to len - 1 bytes; buf may be NULL). Returns the message's full
/// length in bytes without the NUL (0: no error), so a caller can size buf.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ovsa_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|e| {
            let message = e.borrow();
            let bytes = message.as_bytes();
            if !buf.is_null() && len > 0 {
                let n = bytes.len().min(len - 1);
                // SAFETY: `buf` has `len` writable bytes (caller contract) and n + 1 <= len;
                // the source is a distinct Rust allocation.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
                    buf.add(n).write(0);
                }
            }
            bytes.len()
        })
    })
    .unwrap_or(0)
}

extern "C" {
    /// Defined in `ffi/ovsa_custom_loader.cpp`: a new `ovms::CustomLoaderInterface` object, or
    /// NULL if it could not be made. Never throws.
    fn ovsa_shim_create_loader() -> *mut c_void;
}

/// OVMS's factory: `extern "C" ovms::CustomLoaderInterface* createCustomLoader()`. Defined
/// here (not in the C++ archive) so that the cdylib exports it.
#[no_mangle]
pub extern "C" fn createCustomLoader() -> *mut c_void {
    // SAFETY: a plain C function without arguments or preconditions; it catches every C++
    // exception itself (declared noexcept).
    catch_unwind(|| unsafe { ovsa_shim_create_loader() }).unwrap_or(std::ptr::null_mut())
}
