//! `libovsaruntime.so` loaded with `libloading` and driven through its C API, as a Rust host
//! (other than OVMS) would.
#![allow(dead_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::OnceLock;

use ovsaruntime::ffi::{OvsaBuffer, OvsaStatus};

type NewFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> i32;
type AllocFn = unsafe extern "C" fn(*mut c_void, i32, usize) -> *mut u8;
type LoadFn = unsafe extern "C" fn(
    *const c_void,
    *const c_char,
    *const c_char,
    i32,
    *const c_char,
    Option<AllocFn>,
    *mut c_void,
    *mut i32,
) -> i32;
type StatusFn = unsafe extern "C" fn(*const c_void, *const c_char, i32) -> i32;
type RetireFn = unsafe extern "C" fn(*const c_void, *const c_char) -> i32;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type LastErrorFn = unsafe extern "C" fn(*mut c_char, usize) -> usize;

// The statuses as the C API returns them (int32_t), from the plugin's one source.
pub const OK: i32 = OvsaStatus::OK.code();
pub const MODEL_TYPE_IR: i32 = OvsaStatus::MODEL_TYPE_IR.code();
pub const MODEL_TYPE_ONNX: i32 = OvsaStatus::MODEL_TYPE_ONNX.code();
pub const MODEL_LOAD_ERROR: i32 = OvsaStatus::MODEL_LOAD_ERROR.code();
pub const MODEL_BLACKLISTED: i32 = OvsaStatus::MODEL_BLACKLISTED.code();
pub const INTERNAL_ERROR: i32 = OvsaStatus::INTERNAL_ERROR.code();

struct Api {
    new: NewFn,
    load: LoadFn,
    status: StatusFn,
    unload: StatusFn,
    retire: RetireFn,
    free: FreeFn,
    last_error: LastErrorFn,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: the library is ours; it is leaked (never dlclosed, as OVMS does), so
        // the function pointers stay valid for the whole process.
        unsafe {
            let lib: &'static libloading::Library = Box::leak(Box::new(
                libloading::Library::new(crate::common_lib::plugin_path()).unwrap(),
            ));
            Api {
                new: *lib.get::<NewFn>(b"ovsa_loader_new\0").unwrap(),
                load: *lib.get::<LoadFn>(b"ovsa_loader_load_model\0").unwrap(),
                status: *lib
                    .get::<StatusFn>(b"ovsa_loader_blacklist_status\0")
                    .unwrap(),
                unload: *lib.get::<StatusFn>(b"ovsa_loader_unload\0").unwrap(),
                retire: *lib.get::<RetireFn>(b"ovsa_loader_retire\0").unwrap(),
                free: *lib.get::<FreeFn>(b"ovsa_loader_free\0").unwrap(),
                last_error: *lib.get::<LastErrorFn>(b"ovsa_last_error\0").unwrap(),
            }
        }
    })
}

fn last_error() -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf has buf.len() writable bytes.
    unsafe { (api().last_error)(buf.as_mut_ptr().cast(), buf.len()) };
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// One loader object of the plugin.
pub struct Plugin {
    handle: *mut c_void,
}

// SAFETY: the C API is thread-safe for every call but free (done in Drop, exclusively).
unsafe impl Send for Plugin {}
// SAFETY: as above: shared references only make the thread-safe calls.
unsafe impl Sync for Plugin {}

/// The outcome of a load.
pub struct Loaded {
    pub status: i32,
    pub model_type: i32,
    pub model: Vec<u8>,
    pub weights: Vec<u8>,
    pub error: String,
    /// Sizes the plugin asked for, in order.
    pub requests: Vec<(i32, usize)>,
}

struct Outputs {
    model: Vec<u8>,
    weights: Vec<u8>,
    requests: Vec<(i32, usize)>,
}

unsafe extern "C" fn alloc(ctx: *mut c_void, which: i32, size: usize) -> *mut u8 {
    // SAFETY: ctx is the &mut Outputs passed to load below.
    let out = unsafe { &mut *ctx.cast::<Outputs>() };
    out.requests.push((which, size));
    let v = if which == OvsaBuffer::MODEL.code() {
        &mut out.model
    } else {
        &mut out.weights
    };
    // Fill with a marker so the test can see that failures wipe the buffers.
    // (vec! of a byte is a memset even in debug builds; resize would loop byte by byte.)
    *v = vec![0xAA; size];
    v.as_mut_ptr()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

impl Plugin {
    /// `ovsa_loader_new(config)`: the handle, or the status and message.
    pub fn new(config: Option<&str>) -> Result<Plugin, (i32, String)> {
        let config = config.map(c);
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid C string or NULL; handle is writable.
        let s = unsafe {
            (api().new)(
                config.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                &mut handle,
            )
        };
        if s == OK {
            Ok(Plugin { handle })
        } else {
            Err((s, last_error()))
        }
    }

    pub fn load(&self, name: &str, base: &str, version: i32, options: &str) -> Loaded {
        let mut out = Outputs {
            model: Vec::new(),
            weights: Vec::new(),
            requests: Vec::new(),
        };
        let mut model_type = -1;
        let (n, b, o) = (c(name), c(base), c(options));
        // SAFETY: live handle, C strings, the callback matches its contract with `out`.
        let status = unsafe {
            (api().load)(
                self.handle,
                n.as_ptr(),
                b.as_ptr(),
                version,
                o.as_ptr(),
                Some(alloc),
                (&mut out as *mut Outputs).cast(),
                &mut model_type,
            )
        };
        Loaded {
            status,
            model_type,
            error: last_error(),
            model: out.model,
            weights: out.weights,
            requests: out.requests,
        }
    }

    pub fn status(&self, name: &str, version: i32) -> i32 {
        let n = c(name);
        // SAFETY: live handle and C string.
        unsafe { (api().status)(self.handle, n.as_ptr(), version) }
    }

    pub fn unload(&self, name: &str, version: i32) -> i32 {
        let n = c(name);
        // SAFETY: live handle and C string.
        unsafe { (api().unload)(self.handle, n.as_ptr(), version) }
    }

    pub fn retire(&self, name: &str) -> i32 {
        let n = c(name);
        // SAFETY: live handle and C string.
        unsafe { (api().retire)(self.handle, n.as_ptr()) }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // SAFETY: the handle came from ovsa_loader_new and is freed once.
        unsafe { (api().free)(self.handle) };
    }
}
