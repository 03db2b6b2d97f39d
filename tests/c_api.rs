//! The C API as C sees it: `include/ovsa_runtime.h` declares exactly the `ovsa_*` functions the
//! library exports, a C program compiled against the header links and runs, and argument
//! checks (NULLs, bad UTF-8, unusable config) give error statuses with clear messages.

mod common_lib;

use std::collections::BTreeSet;
use std::process::Command;

use common_lib::{plugin_path, root};

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
    let expect = |prefix: &str, status: i32, needle: &str| {
        let l = line(&format!("{prefix} "));
        assert!(
            l.contains(&format!("status={status} ")) && l.contains(needle),
            "{l}"
        );
    };
    expect("new-null-out", 6, "out is NULL");
    expect("new-bad-config", 6, "/nonexistent/ovsa-loader.json");
    assert_eq!(line("handle-after-failure"), "handle-after-failure=null");
    expect("new-config", 0, "len=0");
    expect("new-default", 0, "len=0");
    expect("load-null-loader", 4, "loader is NULL");
    assert_eq!(line("type="), "type=-1");
    expect("load-null-name", 4, "name is NULL");
    expect("load-null-alloc", 4, "alloc callback is NULL");
    expect("load-bad-utf8", 4, "name is not valid UTF-8");
    expect("load-bad-json", 4, "not valid JSON");
    expect(
        "load-number",
        4,
        "'keystore' must be a string, got a number",
    );
    // The C program names base path /tmp and version 1: no such version directory.
    expect("load-missing", 4, "has no such version directory");
    expect("status-unknown", 0, "len=0");
    expect("status-null", 6, "name is NULL");
    expect("unload-unknown", 0, "len=0");
    expect("unload-again", 0, "len=0");
    expect("retire-unknown", 0, "len=0");
    expect("unload-null", 6, "loader is NULL");
    assert_eq!(line("truncated"), "truncated len=14 copy=loa");
    assert_eq!(line("null-buf"), "null-buf len=14");
    assert_eq!(line("done"), "done");
}
