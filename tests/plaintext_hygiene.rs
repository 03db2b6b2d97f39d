//! Plaintext hygiene of the plugin, observed from the outside (its own test binary: a load
//! through the C API makes the whole process non-dumpable).
//!
//! - A load through the C API marks every page of the host's output buffers `MADV_DONTDUMP`
//!   (`dd` in the mapping's `VmFlags` in `/proc/self/smaps`) and makes the process
//!   non-dumpable (`PR_GET_DUMPABLE` 0) before any plaintext exists.
//! - Plugin-owned plaintext ([`ovsaruntime::SecureBuffers`] / [`ovsaruntime::PlaintextBuf`]):
//!   page-aligned, `dd`, wiped by `wipe` (and on drop, before unmapping).

mod common_lib;
mod plugin;
use ovsa_test_support::runtime_fixture;

use ovsaruntime::ffi::memory::{is_dumpable, page_size};
use ovsaruntime::{Loader, ModelType, PlaintextBuf, SecureBuffers};
use plugin::{Plugin, MODEL_TYPE_IR};
use runtime_fixture::{Fixture, OPTIONS};

/// The `VmFlags` of the mapping of this process that contains `addr`.
fn vm_flags(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_string).collect();
            }
        }
    }
    panic!("no mapping of /proc/self/smaps contains {addr:#x}");
}

/// Every page of `buf` lies in a mapping marked "dd" (do not dump).
fn assert_not_dumped(buf: &[u8], what: &str) {
    let page = page_size();
    let start = buf.as_ptr() as usize & !(page - 1);
    let end = buf.as_ptr() as usize + buf.len();
    let mut p = start;
    while p < end {
        let flags = vm_flags(p);
        assert!(
            flags.iter().any(|f| f == "dd"),
            "{what}: page {p:#x} is not excluded from core dumps (VmFlags: {flags:?})"
        );
        p += page;
    }
}

#[test]
fn c_api_load_excludes_host_buffers_from_dumps_and_makes_the_process_undumpable() {
    let f = Fixture::new();
    let (base, _) = f.good_model("models/m", 1);
    let (xml, bin) = f.plaintext();
    let plugin = Plugin::new(Some(&f.config("loader.json", ""))).unwrap();
    // Creating the loader changes nothing yet (no plaintext exists).
    assert!(is_dumpable(), "the test process starts dumpable");

    let l = plugin.load("m", &base, 1, OPTIONS);
    assert_eq!(l.status, MODEL_TYPE_IR, "{}", l.error);
    assert!(l.model == xml && l.weights == bin, "plaintext differs");
    // The harness's buffers are plain malloc'd Vecs (the host's memory, like OVMS's vectors).
    assert_not_dumped(&l.model, "model buffer");
    assert_not_dumped(&l.weights, "weights buffer");
    // (The smaps reads above were made after the load: the process still reads its own /proc.)
    assert!(!is_dumpable(), "the process is still dumpable after a load");
}

#[test]
fn plugin_owned_plaintext_is_page_aligned_not_dumped_and_wiped() {
    let page = page_size();
    let mut b = PlaintextBuf::zeroed(3 * page + 17).unwrap();
    assert_eq!(b.len(), 3 * page + 17);
    assert_eq!(b.as_ptr() as usize % page, 0, "not page-aligned");
    assert!(b.iter().all(|&x| x == 0));
    b.fill(0xAB);
    assert_not_dumped(&b, "PlaintextBuf");
    b.wipe();
    assert!(b.iter().all(|&x| x == 0), "wipe left bytes");
    assert_eq!(
        format!("{b:?}"),
        format!("PlaintextBuf({} bytes)", 3 * page + 17)
    );
    drop(b);
    let e = PlaintextBuf::zeroed(0).unwrap();
    assert!(e.is_empty());
}

#[test]
fn secure_buffers_receive_the_plaintext_in_undumped_pages() {
    let f = Fixture::new();
    let (base, _) = f.good_model("models/m", 1);
    let (xml, bin) = f.plaintext();
    let loader = Loader::from_config_file(Some(&f.config("loader.json", ""))).unwrap();
    let mut out = SecureBuffers::default();
    let t = loader.load("m", &base, 1, OPTIONS, &mut out).unwrap();
    assert_eq!(t, ModelType::Ir);
    assert!(out.model == xml && out.weights == bin, "plaintext differs");
    assert_not_dumped(&out.model, "SecureBuffers model");
    assert_not_dumped(&out.weights, "SecureBuffers weights");
    loader.unload("m", 1);
}
