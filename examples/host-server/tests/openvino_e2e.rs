//! End to end with OpenVINO: a real license service (loopback TLS, SQLite), a swtpm vTPM, the
//! plugin `libovsaruntime.so` and the `ovsa-host-server` example reading an OVMS config.json.
//! A model generated with OpenVINO's own serializer (`examples/models/make_model.py`, run with
//! the venv of `scripts/setup.sh --openvino`) is protected, licensed and loaded through the
//! plugin; OpenVINO runs it from the decrypted buffers, and the outputs must be bit-identical
//! (INFERENCE_PRECISION_HINT=f32) to the plaintext model's.
//!
//! Needs the OpenVINO wheel in `.venv/` (`bash scripts/setup.sh --openvino`, which
//! `scripts/test.sh` runs): without it the test fails with that instruction, it never skips.

#[allow(dead_code)]
#[path = "../../../loader/ffi/status.rs"]
mod ovsa_status;

use std::path::{Path, PathBuf};
use std::process::Command;

use ovsa_test_support::plugin_path;
use ovsa_test_support::runtime_fixture::{Fixture, OPTIONS};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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

fn host_server(config: &Path, extra: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ovsa-host-server"))
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- host-server stdout\n{stdout}--- stderr\n{stderr}");
    (out.status.success(), stdout, stderr)
}

fn plaintext(name: &str, path: &Path) -> [String; 2] {
    [
        "--plaintext".to_string(),
        format!("{name}={}", path.display()),
    ]
}

/// An OVMS config.json with the plugin as loader "ovsa" and the given (name, base_path) models,
/// every version served.
fn ovms_config(f: &Fixture, file: &str, models: &[(&str, &str)]) -> PathBuf {
    let loader_config = f.config("loader.json", "");
    let models: Vec<String> = models
        .iter()
        .map(|(name, base)| {
            format!(
                r#"{{"config": {{"name": "{name}", "base_path": "{base}", "model_version_policy": {{"all": {{}}}}, "custom_loader_options": {OPTIONS}}}}}"#
            )
        })
        .collect();
    let config = f.path(file);
    std::fs::write(
        &config,
        format!(
            r#"{{
  "custom_loader_config_list": [
    {{"config": {{"loader_name": "ovsa", "library_path": "{}", "loader_config_file": "{loader_config}"}}}}
  ],
  "model_config_list": [
    {}
  ]
}}"#,
            plugin_path().display(),
            models.join(",\n    ")
        ),
    )
    .unwrap();
    config
}

/// Asserts version `v` of `name` was loaded as `kind` and matched its plaintext exactly.
fn assert_identical(stdout: &str, name: &str, v: i32, kind: &str) {
    let tag = format!("model {name} version {v}: ");
    assert!(
        stdout.contains(&format!("{tag}plugin load ")) && stdout.contains(&format!("ms ({kind}, ")),
        "{name} version {v} not loaded as {kind}:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&tag) && l.ends_with("outputs identical: yes")),
        "{name} version {v}: outputs differ from the plaintext model:\n{stdout}"
    );
}

#[test]
fn decrypted_ir_model_infers_exactly_like_the_plaintext() {
    let f = Fixture::new();
    let src = f.path("src-cnn");
    let (xml, bin) = make_model(&src, "2");
    let cnn = f.other_model_from(&[xml.clone(), bin.clone()], "cnn");
    let lic = f.sell_for(&cnn.master);
    // Two versions (the same files protected as version 1 and as version 2, each licensed):
    // "all" policy loads both.
    let base = f.version_dir(
        "models/cnn",
        1,
        Some(&cnn.package),
        Some(&lic),
        Some(&f.w.customer),
    );
    let cnn2 = f.other_model_versioned(&[xml.clone(), bin.clone()], "cnn", "2");
    let lic2 = f.sell_for(&cnn2.master);
    f.version_dir(
        "models/cnn",
        2,
        Some(&cnn2.package),
        Some(&lic2),
        Some(&f.w.customer),
    );
    let config = ovms_config(&f, "config.json", &[("cnn", &base)]);
    let (ok, stdout, stderr) = host_server(&config, &plaintext("cnn", &xml));
    assert!(ok, "host-server failed:\n{stdout}\n{stderr}");
    for v in [1, 2] {
        assert_identical(&stdout, "cnn", v, "IR");
        assert!(
            stdout.contains(&format!(
                "model cnn version {v}: output scores [1, 10]: argmax "
            )),
            "{stdout}"
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
        stdout.contains(&format!(
            "model cnn version 1: load FAILED (status {}): ",
            ovsa_status::OvsaStatus::MODEL_LOAD_ERROR.code()
        )) && stdout.contains("model.dat"),
        "{stdout}"
    );
}

/// Real pretrained models: the PP-OCRv4 text detector and recognizer and the PP-OCR mobile
/// direction classifier (ONNX, shipped in the PyPI package rapidocr-openvino, extracted by
/// `scripts/setup.sh --openvino` into .venv/ppocr/), served as ONNX through the plugin and, for
/// the classifier, also converted to IR by OpenVINO; every output bit-identical to the
/// plaintext model's.
#[test]
fn decrypted_ppocr_onnx_and_ir_models_infer_exactly_like_the_plaintext() {
    let ppocr = repo().join(".venv/ppocr");
    let cls = ppocr.join("ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let det = ppocr.join("ch_PP-OCRv4_det_infer.onnx");
    let rec = ppocr.join("ch_PP-OCRv4_rec_infer.onnx");
    for m in [&cls, &det, &rec] {
        assert!(
            m.is_file(),
            "{} missing: run `bash scripts/setup.sh --openvino`",
            m.display()
        );
    }
    let f = Fixture::new();
    // The classifier converted to IR by OpenVINO's converter.
    let ir_dir = f.path("src-cls-ir");
    let out = Command::new(venv_python())
        .arg(repo().join("examples/models/convert.py"))
        .arg(&cls)
        .arg(&ir_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "convert.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cls_xml = ir_dir.join("model.xml");
    let cls_bin = ir_dir.join("model.bin");

    let mut bases = Vec::new();
    for (name, files) in [
        ("cls", vec![cls.clone()]),
        ("det", vec![det.clone()]),
        ("rec", vec![rec.clone()]),
        ("cls-ir", vec![cls_xml.clone(), cls_bin.clone()]),
    ] {
        let m = f.other_model_from(&files, name);
        let lic = f.sell_for(&m.master);
        let base = f.version_dir(
            &format!("models/{name}"),
            1,
            Some(&m.package),
            Some(&lic),
            Some(&f.w.customer),
        );
        bases.push((name, base));
    }
    let pairs: Vec<(&str, &str)> = bases.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let config = ovms_config(&f, "config.json", &pairs);
    let mut extra = Vec::new();
    for (name, path) in [
        ("cls", &cls),
        ("det", &det),
        ("rec", &rec),
        ("cls-ir", &cls_xml),
    ] {
        extra.extend(plaintext(name, path));
    }
    for s in [
        "cls=1,3,48,192",
        "cls-ir=1,3,48,192",
        "rec=1,3,48,320",
        "det=1,3,320,320",
    ] {
        extra.extend(["--shape".to_string(), s.to_string()]);
    }
    let (ok, stdout, stderr) = host_server(&config, &extra);
    assert!(ok, "host-server failed:\n{stdout}\n{stderr}");
    assert_identical(&stdout, "cls", 1, "ONNX");
    assert_identical(&stdout, "det", 1, "ONNX");
    assert_identical(&stdout, "rec", 1, "ONNX");
    assert_identical(&stdout, "cls-ir", 1, "IR");
    // The direction classifier has two classes (0 and 180 degrees).
    assert!(stdout.contains("model cls version 1: output "), "{stdout}");
    assert!(stdout.contains("[1, 2]: argmax "), "{stdout}");
}

/// The host says what is wrong with a model's base_path instead of exiting 0 silently (no
/// version directory) or with a bare OS error (missing base_path); `--version` prints the
/// version.
#[test]
fn missing_base_path_and_missing_version_directories_are_reported() {
    let f = Fixture::new();
    let empty = f.path("models/empty");
    std::fs::create_dir_all(empty.join("not-a-version")).unwrap();
    let missing = f.path("models/missing");
    let config = ovms_config(
        &f,
        "config.json",
        &[
            ("empty", empty.to_str().unwrap()),
            ("missing", missing.to_str().unwrap()),
        ],
    );
    let (ok, stdout, _) = host_server(&config, &[]);
    assert!(!ok, "must exit non-zero:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "model empty: FAILED: no version to serve in base_path '{}': it has no numeric \
             version directory (OVMS serves numeric subdirectories such as '{}/1/'",
            empty.display(),
            empty.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "model missing: FAILED: base_path '{}' does not exist: it must be the model's \
             directory holding numeric version directories",
            missing.display()
        )),
        "{stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ovsa-host-server"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ovsa-host-server {}", env!("CARGO_PKG_VERSION"))
    );
}
