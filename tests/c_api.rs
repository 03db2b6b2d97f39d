//! The C API as C sees it: `include/ovsa_runtime.h` declares exactly the `ovsa_*` functions the
//! library exports, a C program compiled against the header links and runs, sees the values of
//! the Rust enums (`OvsaStatus`, `OvsaBuffer`) under the header's names, and argument checks
//! (NULLs, bad UTF-8, unusable config) give error statuses with clear messages.

mod common_lib;

use std::collections::BTreeSet;
use std::process::Command;

use common_lib::{plugin_path, root};
use ovsaruntime::ffi::{OvsaBuffer, OvsaStatus};

fn header() -> String {
    std::fs::read_to_string(root().join("include/ovsa_runtime.h")).unwrap()
}

fn declared_functions(header: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in header.lines() {
        let line = line.trim_start();
        if line.starts_with('*') || line.starts_with("/*") || line.starts_with("typedef") {
            continue;
        }
        if let Some(start) = line.find("ovsa_") {
            let rest = &line[start..];
            if let Some(paren) = rest.find('(') {
                let name = &rest[..paren];
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

fn exported_symbols() -> BTreeSet<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(plugin_path())
        .output()
        .expect("nm");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == "T").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn header_declares_every_exported_function_and_nothing_else() {
    let declared = declared_functions(&header());
    let exported: BTreeSet<String> = exported_symbols();
    let exported_ovsa: BTreeSet<String> = exported
        .iter()
        .filter(|s| s.starts_with("ovsa_"))
        .cloned()
        .collect();
    assert_eq!(declared, exported_ovsa, "header vs exports");
    assert!(exported.contains("createCustomLoader"));
    // Nothing else leaks out of the cdylib (the C++ shim's symbols stay internal).
    let others: Vec<_> = exported
        .iter()
        .filter(|s| !s.starts_with("ovsa_") && *s != "createCustomLoader")
        .collect();
    assert!(others.is_empty(), "unexpected exports: {others:?}");
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include "ovsa_runtime.h"

static uint8_t *never(void *ctx, int32_t which, size_t size) { (void)ctx; (void)which; (void)size; return NULL; }

static void report(const char *what, int32_t status) {
    char buf[512];
    size_t n = ovsa_last_error(buf, sizeof buf);
    printf("%s status=%d len=%zu msg=%s\n", what, (int)status, n, n ? buf : "");
}

int main(int argc, char **argv) {
    OvsaLoader *l = NULL;
    /* The header's names for the values (OvsaStatus and OvsaBuffer are int32_t in C). */
    OvsaStatus ok = OVSA_OK;
    OvsaBuffer weights = OVSA_BUFFER_WEIGHTS;
    printf("constants %d %d %d %d %d %d %d %d %d sizes %d %d\n", (int)ok, OVSA_MODEL_TYPE_IR,
           OVSA_MODEL_TYPE_ONNX, OVSA_MODEL_TYPE_BLOB, OVSA_MODEL_LOAD_ERROR, OVSA_MODEL_BLACKLISTED,
           OVSA_INTERNAL_ERROR, OVSA_BUFFER_MODEL, (int)weights, (int)sizeof(OvsaStatus),
           (int)sizeof(OvsaBuffer));
    report("new-null-out", ovsa_loader_new(NULL, NULL));
    report("new-bad-config", ovsa_loader_new("/nonexistent/ovsa-loader.json", &l));
    printf("handle-after-failure=%s\n", l == NULL ? "null" : "set");
    report("new-config", ovsa_loader_new(argc > 1 ? argv[1] : NULL, &l));
    report("new-default", ovsa_loader_new(NULL, &l));
    int32_t type = -1;
    report("load-null-loader", ovsa_loader_load_model(NULL, "m", "/tmp", 1, "{}", never, NULL, &type));
    printf("type=%d\n", (int)type);
    report("load-null-name", ovsa_loader_load_model(l, NULL, "/tmp", 1, "{}", never, NULL, NULL));
    report("load-null-alloc", ovsa_loader_load_model(l, "m", "/tmp", 1, "{}", NULL, NULL, NULL));
    report("load-bad-utf8", ovsa_loader_load_model(l, "m\xff", "/tmp", 1, "{}", never, NULL, NULL));
    report("load-bad-json", ovsa_loader_load_model(l, "m", "/tmp", 1, "{", never, NULL, NULL));
    report("load-number", ovsa_loader_load_model(l, "m", "/tmp", 1, "{\"keystore\":1,\"controlled_access_file\":\"x\"}", never, NULL, NULL));
    report("load-missing", ovsa_loader_load_model(l, "m", "/tmp", 1, "{\"keystore\":\"k\",\"controlled_access_file\":\"x\"}", never, NULL, NULL));
    report("status-unknown", ovsa_loader_blacklist_status(l, "m", 1));
    report("status-null", ovsa_loader_blacklist_status(l, NULL, 1));
    report("unload-unknown", ovsa_loader_unload(l, "m", 7));
    report("unload-again", ovsa_loader_unload(l, "m", 7));
    report("retire-unknown", ovsa_loader_retire(l, "m"));
    report("unload-null", ovsa_loader_unload(NULL, "m", 1));
    /* Truncation: the full length is returned, the copy is NUL-terminated. */
    ovsa_loader_unload(NULL, "m", 1);
    char small[4];
    size_t n = ovsa_last_error(small, sizeof small);
    printf("truncated len=%zu copy=%s\n", n, small);
    printf("null-buf len=%zu\n", ovsa_last_error(NULL, 0));
    ovsa_loader_free(l);
    ovsa_loader_free(NULL);
    printf("done\n");
    return 0;
}
"#;

#[test]
fn c_program_compiled_against_the_header_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("main.c");
    std::fs::write(&src, C_PROGRAM).unwrap();
    let exe = dir.path().join("c_api_client");
    let plugin = plugin_path();
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(root().join("include"))
        .arg(&plugin)
        .arg(format!("-Wl,-rpath,{}", plugin.parent().unwrap().display()))
        .status()
        .expect("cc");
    assert!(
        status.success(),
        "the C program must compile against the header"
    );
    let config = dir.path().join("loader.json");
    std::fs::write(&config, r#"{"log_level":"off","grace_seconds":5}"#).unwrap();
    let out = Command::new(&exe).arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' in:\n{stdout}"))
            .to_string()
    };
    // The C names carry the Rust enums' values, in int32_t-sized types.
    let constants: Vec<String> = [
        OvsaStatus::OK,
        OvsaStatus::MODEL_TYPE_IR,
        OvsaStatus::MODEL_TYPE_ONNX,
        OvsaStatus::MODEL_TYPE_BLOB,
        OvsaStatus::MODEL_LOAD_ERROR,
        OvsaStatus::MODEL_BLACKLISTED,
        OvsaStatus::INTERNAL_ERROR,
    ]
    .iter()
    .map(|s| s.code())
    .chain([OvsaBuffer::MODEL.code(), OvsaBuffer::WEIGHTS.code()])
    .map(|c| c.to_string())
    .collect();
    assert_eq!(
        line("constants "),
        format!("constants {} sizes 4 4", constants.join(" "))
    );
    let expect = |prefix: &str, status: OvsaStatus, needle: &str| {
        let l = line(&format!("{prefix} "));
        assert!(
            l.contains(&format!("status={} ", status.code())) && l.contains(needle),
            "{l}"
        );
    };
    use OvsaStatus::{INTERNAL_ERROR, MODEL_LOAD_ERROR, OK};
    expect("new-null-out", INTERNAL_ERROR, "out is NULL");
    expect(
        "new-bad-config",
        INTERNAL_ERROR,
        "/nonexistent/ovsa-loader.json",
    );
    assert_eq!(line("handle-after-failure"), "handle-after-failure=null");
    expect("new-config", OK, "len=0");
    expect("new-default", OK, "len=0");
    expect("load-null-loader", MODEL_LOAD_ERROR, "loader is NULL");
    assert_eq!(line("type="), "type=-1");
    expect("load-null-name", MODEL_LOAD_ERROR, "name is NULL");
    expect(
        "load-null-alloc",
        MODEL_LOAD_ERROR,
        "alloc callback is NULL",
    );
    expect("load-bad-utf8", MODEL_LOAD_ERROR, "name is not valid UTF-8");
    expect("load-bad-json", MODEL_LOAD_ERROR, "not valid JSON");
    expect(
        "load-number",
        MODEL_LOAD_ERROR,
        "'keystore' must be a string, got a number",
    );
    // The C program names base path /tmp and version 1: no such version directory.
    expect(
        "load-missing",
        MODEL_LOAD_ERROR,
        "has no such version directory",
    );
    expect("status-unknown", OK, "len=0");
    expect("status-null", INTERNAL_ERROR, "name is NULL");
    expect("unload-unknown", OK, "len=0");
    expect("unload-again", OK, "len=0");
    expect("retire-unknown", OK, "len=0");
    expect("unload-null", INTERNAL_ERROR, "loader is NULL");
    assert_eq!(line("truncated"), "truncated len=14 copy=loa");
    assert_eq!(line("null-buf"), "null-buf len=14");
    assert_eq!(line("done"), "done");
}

/// The generated header is plain, warning-free C and C++ for the compilers hosts use: C99 and
/// C11 with `-pedantic`, and C++11/C++17 (where the enums get their `int32_t` underlying type).
#[test]
fn header_compiles_cleanly_as_c_and_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let unit = "#include \"ovsa_runtime.h\"\n\
                int ovsa_header_check(void);\n\
                int ovsa_header_check(void) { return (int)sizeof(OvsaStatus) + OVSA_BUFFER_WEIGHTS; }\n";
    for (compiler, std, file) in [
        ("cc", "-std=c99", "check.c"),
        ("cc", "-std=c11", "check.c"),
        ("c++", "-std=c++11", "check.cpp"),
        ("c++", "-std=c++17", "check.cpp"),
    ] {
        let src = dir.path().join(file);
        std::fs::write(&src, unit).unwrap();
        let out = Command::new(compiler)
            .args([
                std,
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(root().join("include"))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("{compiler}: {e}"));
        assert!(
            out.status.success(),
            "include/ovsa_runtime.h does not compile with {compiler} {std} -pedantic:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
