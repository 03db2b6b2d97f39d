//! End to end with OpenVINO: a real license service (loopback TLS, SQLite), a swtpm vTPM, the
//! plugin `libovsaruntime.so` and the `ovsa-host-server` example reading an OVMS config.json.
//! A model generated with OpenVINO's own serializer (`examples/models/make_model.py`, run with
//! the venv of `scripts/setup.sh --openvino`) is protected, licensed and loaded through the
//! plugin; OpenVINO runs it from the decrypted buffers, and the outputs must be bit-identical
//! (INFERENCE_PRECISION_HINT=f32) to the plaintext model's.
//!
//! Needs the OpenVINO wheel in `.venv/` (`bash scripts/setup.sh --openvino`, which
//! `scripts/test.sh` runs): without it the test fails with that instruction, it never skips.

#[path = "../../../tests/runtime_fixture/mod.rs"]
mod runtime_fixture;
#[path = "../../../crates/ovsa-license-server/tests/world/mod.rs"]
mod world;

use std::path::{Path, PathBuf};
use std::process::Command;

use runtime_fixture::{Fixture, OPTIONS};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The plugin built by this `cargo test --workspace` (or OVSA_RUNTIME_PLUGIN).
fn plugin_path() -> PathBuf {
    if let Some(p) = std::env::var_os("OVSA_RUNTIME_PLUGIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libovsaruntime.so");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "libovsaruntime.so not found next to {}: run the whole workspace \
         (`cargo test --workspace`) or `cargo build -p ovsaruntime` first",
        deps.display()
    );
}

/// The venv's python with openvino (scripts/setup.sh --openvino).
fn venv_python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import openvino, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with the openvino wheel is missing: run `bash scripts/setup.sh --openvino`",
        py.display()
    );
    py
}

fn make_model(dir: &Path, weights_mib: &str) -> (PathBuf, PathBuf) {
    let out = Command::new(venv_python())
        .arg(repo().join("examples/models/make_model.py"))
        .arg(dir)
        .args(["--weights-mib", weights_mib])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_model.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("model.xml"), dir.join("model.bin"))
}

fn host_server(config: &Path, plaintext: &[(&str, &Path)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovsa-host-server"));
    cmd.arg("--config").arg(config);
    for (name, path) in plaintext {
        cmd.arg("--plaintext")
            .arg(format!("{name}={}", path.display()));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- host-server stdout\n{stdout}--- stderr\n{stderr}");
    (out.status.success(), stdout, stderr)
}

#[test]
fn decrypted_ir_model_infers_exactly_like_the_plaintext() {
    let f = Fixture::new();
    let src = f.path("src-cnn");
    let (xml, bin) = make_model(&src, "2");
    let cnn = f.other_model_from(&[xml.clone(), bin.clone()], "cnn");
    let lic = f.sell_for(&cnn.master);
    // Two versions of the same package: "all" policy loads both.
    let base = f.version_dir(
        "models/cnn",
        1,
        Some(&cnn.package),
        Some(&lic),
        Some(&f.w.customer),
    );
    f.version_dir(
        "models/cnn",
        2,
        Some(&cnn.package),
        Some(&lic),
        Some(&f.w.customer),
    );
    let loader_config = f.config("loader.json", "");
    let config = f.path("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{
  "custom_loader_config_list": [
    {{"config": {{"loader_name": "ovsa", "library_path": "{}", "loader_config_file": "{loader_config}"}}}}
  ],
  "model_config_list": [
    {{"config": {{"name": "cnn", "base_path": "{base}", "model_version_policy": {{"all": {{}}}},
                "custom_loader_options": {OPTIONS}}}}}
  ]
}}"#,
            plugin_path().display()
        ),
    )
    .unwrap();

    let (ok, stdout, stderr) = host_server(&config, &[("cnn", &xml)]);
    assert!(ok, "host-server failed:\n{stdout}\n{stderr}");
    for v in [1, 2] {
        let tag = format!("model cnn version {v}: ");
        assert!(
            stdout.contains(&format!("{tag}plugin load ")),
            "version {v} not loaded:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("{tag}output scores [1, 10]: argmax ")),
            "{stdout}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&tag) && l.ends_with("outputs identical: yes")),
            "version {v}: outputs differ from the plaintext model:\n{stdout}"
        );
    }
    // The plugin's own breakdown line for each load.
    assert!(
        stderr.contains("model cnn version 1: loaded (Ir)"),
        "{stderr}"
    );
    // Exact weight size went through the allocation callback into the OpenVINO tensor.
    let weights = std::fs::metadata(&bin).unwrap().len();
    assert!(stdout.contains(&format!("weights {weights} B")), "{stdout}");

    // A version whose package is missing: the load fails with the plugin's reason, OpenVINO
    // never sees it, and the host exits non-zero.
    let bad_base = f.version_dir("models/bad", 1, None, Some(&lic), Some(&f.w.customer));
    let bad = f.path("bad.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&base, &bad_base);
    std::fs::write(&bad, text).unwrap();
    let (ok, stdout, _) = host_server(&bad, &[]);
    assert!(!ok);
    assert!(
        stdout.contains("model cnn version 1: load FAILED (status 4): ")
            && stdout.contains("model.dat"),
        "{stdout}"
    );
}
