//! `include/ovsa_runtime.h` is generated from the Rust declarations of the C API
//! (`loader/ffi.rs`, `loader/ffi/status.rs`) by cbindgen with `include/cbindgen.toml`. This test
//! generates it in memory and fails, with a diff and the command to regenerate, when the
//! checked-in header differs. `OVSA_REGENERATE_HEADER=1` writes the generated header instead.

mod common_lib;

use std::path::Path;

use common_lib::root;

const REGENERATE: &str = "OVSA_REGENERATE_HEADER=1 cargo test -p ovsaruntime --test c_header";

/// The header cbindgen generates from the crate's FFI module.
fn generated_header(root: &Path) -> String {
    let config = cbindgen::Config::from_file(root.join("include/cbindgen.toml"))
        .unwrap_or_else(|e| panic!("include/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("loader/ffi.rs"))
        .with_src(root.join("loader/ffi/status.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not parse loader/ffi.rs: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

/// `None` when equal, else a readable report: the first differing lines with context (a
/// line-by-line comparison; cbindgen output changes are local) and how to regenerate.
fn difference(checked_in: &str, generated: &str) -> Option<String> {
    if checked_in == generated {
        return None;
    }
    let old: Vec<&str> = checked_in.lines().collect();
    let new: Vec<&str> = generated.lines().collect();
    let first = old
        .iter()
        .zip(&new)
        .position(|(a, b)| a != b)
        .unwrap_or(old.len().min(new.len()));
    // Align the ends too, so an insertion or removal shows as one hunk.
    let common_tail = old[first..]
        .iter()
        .rev()
        .zip(new[first..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let from = first.saturating_sub(3);
    let mut report = format!(
        "include/ovsa_runtime.h is not what cbindgen generates from loader/ffi.rs \
         (include/cbindgen.toml).\n--- include/ovsa_runtime.h (checked in)\n+++ generated\n\
         @@ line {} @@\n",
        from + 1
    );
    for l in &old[from..first] {
        report.push_str(&format!(" {l}\n"));
    }
    for l in &old[first..old.len() - common_tail] {
        report.push_str(&format!("-{l}\n"));
    }
    for l in &new[first..new.len() - common_tail] {
        report.push_str(&format!("+{l}\n"));
    }
    for l in new[new.len() - common_tail..].iter().take(3) {
        report.push_str(&format!(" {l}\n"));
    }
    if checked_in.ends_with('\n') != generated.ends_with('\n') {
        report.push_str("(the final newline differs)\n");
    }
    report.push_str(&format!(
        "The header is generated from the Rust declarations: do not edit it by hand. \
         Regenerate it with\n    {REGENERATE}\nand commit include/ovsa_runtime.h."
    ));
    Some(report)
}

#[test]
fn checked_in_header_is_the_generated_one() {
    let root = root();
    let path = root.join("include/ovsa_runtime.h");
    let generated = generated_header(&root);
    if std::env::var_os("OVSA_REGENERATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("regenerated {}", path.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; regenerate: {REGENERATE}", path.display()));
    if let Some(report) = difference(&checked_in, &generated) {
        panic!("{report}");
    }
}

/// A hand edit of the header (here: a status value changed) is reported with the changed line,
/// and the report says how to regenerate.
#[test]
fn a_hand_edited_header_is_reported_with_a_diff_and_the_command() {
    let generated = generated_header(&root());
    assert!(
        generated.contains("OVSA_MODEL_LOAD_ERROR = 4,"),
        "{generated}"
    );
    let edited = generated.replace("OVSA_MODEL_LOAD_ERROR = 4,", "OVSA_MODEL_LOAD_ERROR = 7,");
    let report = difference(&edited, &generated).expect("the edit must be detected");
    assert!(
        report.contains("-    OVSA_MODEL_LOAD_ERROR = 7,"),
        "{report}"
    );
    assert!(
        report.contains("+    OVSA_MODEL_LOAD_ERROR = 4,"),
        "{report}"
    );
    assert!(report.contains(REGENERATE), "{report}");
    assert!(difference(&generated, &generated).is_none());
}

/// Every value of the Rust enums is in the generated header under its C name, and the
/// functions keep their `int32_t` statuses (the ABI OVMS's shim and existing hosts rely on).
#[test]
fn generated_header_carries_every_value_and_the_int32_signatures() {
    use ovsaruntime::ffi::{OvsaBuffer, OvsaStatus};
    let generated = generated_header(&root());
    for (name, value) in [
        ("OVSA_OK", OvsaStatus::OK.code()),
        ("OVSA_MODEL_TYPE_IR", OvsaStatus::MODEL_TYPE_IR.code()),
        ("OVSA_MODEL_TYPE_ONNX", OvsaStatus::MODEL_TYPE_ONNX.code()),
        ("OVSA_MODEL_TYPE_BLOB", OvsaStatus::MODEL_TYPE_BLOB.code()),
        ("OVSA_MODEL_LOAD_ERROR", OvsaStatus::MODEL_LOAD_ERROR.code()),
        (
            "OVSA_MODEL_BLACKLISTED",
            OvsaStatus::MODEL_BLACKLISTED.code(),
        ),
        ("OVSA_INTERNAL_ERROR", OvsaStatus::INTERNAL_ERROR.code()),
        ("OVSA_BUFFER_MODEL", OvsaBuffer::MODEL.code()),
        ("OVSA_BUFFER_WEIGHTS", OvsaBuffer::WEIGHTS.code()),
    ] {
        assert!(
            generated.contains(&format!("    {name} = {value},")),
            "{name} = {value} missing:\n{generated}"
        );
    }
    for decl in [
        "int32_t ovsa_loader_new(",
        "int32_t ovsa_loader_load_model(",
        "int32_t ovsa_loader_blacklist_status(",
        "int32_t ovsa_loader_unload(",
        "int32_t ovsa_loader_retire(",
        "void ovsa_loader_free(",
        "size_t ovsa_last_error(",
        "typedef struct OvsaLoader OvsaLoader;",
    ] {
        assert!(generated.contains(decl), "{decl} missing:\n{generated}");
    }
    assert!(!generated.contains("createCustomLoader"), "{generated}");
}
