//! The plugin driven exactly as OpenVINO Model Server drives a custom loader, by a C++ host
//! (`tests/ovms_driver.cpp`, compiled here with g++ against the project's OVMS interface header,
//! so the real C++ ABI is exercised): dlopen/dlsym, shared_ptr ownership, loaderInit (throwing on
//! a bad config), loads per version directory (IR and ONNX), a failed load followed by
//! unloadModel, blacklist polling with unload and reload across a service outage, an options
//! change, retire, and shutdown unloading every version.

mod common_lib;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common_lib::{plugin_path, root};
use ovsa_test_support::runtime_fixture::{Fixture, OPTIONS};
use ovsaruntime::ffi::OvsaStatus;

// The statuses the driver prints (`static_cast<int>(ovms::CustomLoaderStatus)`); the plugin's
// OvsaStatus values equal them (the C++ shim asserts so at compile time).
const OK: i32 = OvsaStatus::OK.code();
const IR: i32 = OvsaStatus::MODEL_TYPE_IR.code();
const ONNX: i32 = OvsaStatus::MODEL_TYPE_ONNX.code();
const LOAD_ERROR: i32 = OvsaStatus::MODEL_LOAD_ERROR.code();
const BLACKLISTED: i32 = OvsaStatus::MODEL_BLACKLISTED.code();

fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 1469598103934665603;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(1099511628211);
    }
    format!("{h:016x}")
}

/// Compiles the driver with OVMS's ABI settings.
pub fn build_driver(out_dir: &Path) -> PathBuf {
    build_driver_with(out_dir, None)
}

/// The OpenVINO wheel installed by `scripts/setup.sh --openvino`: its package directory
/// (`include/`, `libs/libopenvino.so.N`) and the venv's python.
fn openvino_wheel() -> (PathBuf, PathBuf) {
    let venv = root().join(".venv");
    let lib = venv.join("lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|py| py.path().join("site-packages/openvino"))
        .find(|d| d.join("include/openvino/openvino.hpp").is_file());
    let dir = found.unwrap_or_else(|| {
        panic!(
            "the OpenVINO wheel (headers, libopenvino.so) is missing in {}: run \
             `bash scripts/setup.sh --openvino`",
            venv.display()
        )
    });
    (dir, venv.join("bin/python"))
}

/// Compiles the driver; with `openvino` (the wheel's package directory) also its OpenVINO
/// commands, linked against the wheel's libopenvino.so.N.
fn build_driver_with(out_dir: &Path, openvino: Option<&Path>) -> PathBuf {
    let exe = out_dir.join(if openvino.is_some() {
        "ovms_driver_ov"
    } else {
        "ovms_driver"
    });
    let mut cmd = Command::new("g++");
    let mut link = Vec::new();
    if let Some(ov) = openvino {
        let libs = ov.join("libs");
        let core = std::fs::read_dir(&libs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("libopenvino.so.")
            })
            .expect("libopenvino.so.N in the wheel");
        cmd.arg("-DOVSA_WITH_OPENVINO")
            .arg("-isystem")
            .arg(ov.join("include"));
        link.push(core.into_os_string());
        link.push(format!("-Wl,-rpath,{}", libs.display()).into());
    }
    let status = cmd
        .args([
            "-std=c++17",
            "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-Wall",
            "-Werror",
            "-Wno-unused-parameter",
            "-g",
            "-pthread",
            "-I",
        ])
        .arg(root().join("include"))
        .arg(root().join("tests/ovms_driver.cpp"))
        .arg("-o")
        .arg(&exe)
        .args(link)
        .arg("-ldl")
        .status()
        .expect("g++");
    assert!(status.success(), "the OVMS driver must compile");
    exe
}

struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn start(exe: &Path) -> Driver {
        let mut child = Command::new(exe)
            .arg(plugin_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Driver {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command; returns its output lines (without the closing "done").
    fn run(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            if n == 0 {
                let status = self.child.wait();
                panic!("the driver died ({status:?}) during '{command}' after {lines:?}");
            }
            let line = line.trim_end().to_string();
            if line == "done" {
                return lines;
            }
            lines.push(line);
        }
    }

    fn quit(mut self) -> std::process::ExitStatus {
        writeln!(self.stdin, "quit").unwrap();
        drop(self.stdin);
        self.child.wait().unwrap()
    }
}

fn has(lines: &[String], prefix: &str) -> bool {
    lines.iter().any(|l| l.starts_with(prefix))
}

#[test]
fn ovms_sequence_through_the_cpp_interface() {
    let mut f = Fixture::new();
    let exe = build_driver(f.root.path());
    let config = f.config(
        "loader.json",
        r#""lease_seconds_override":1,"grace_seconds":2,"retry_seconds":1,"blacklist_recheck_seconds":2"#,
    );
    // Model m: versions 1 and 2 (IR; the same files protected as each version). Model onnx:
    // version 1. Model bad: version 1 lacks its .dat.
    let (base_m, lic) = f.good_model("models/m", 1);
    f.good_version("models/m", 2);
    let onnx = f.onnx_model("onnx");
    let onnx_lic = f.sell_for(&onnx.master);
    let base_onnx = f.version_dir(
        "models/onnx",
        1,
        Some(&onnx.package),
        Some(&onnx_lic),
        Some(&f.w.customer),
    );
    let base_bad = f.version_dir("models/bad", 1, None, Some(&lic), Some(&f.w.customer));
    let (xml, bin) = f.plaintext();
    let onnx_bytes = std::fs::read(&onnx.files[0]).unwrap();
    let ir_line = |what: &str, v: i32| {
        format!(
            "{what} m {v} {IR} {} {} {} {}",
            xml.len(),
            bin.len(),
            fnv1a(&xml),
            fnv1a(&bin)
        )
    };
    let onnx_line = |what: &str| {
        format!(
            "{what} onnx 1 {ONNX} {} 0 {} {}",
            onnx_bytes.len(),
            fnv1a(&onnx_bytes),
            fnv1a(&[])
        )
    };

    let mut d = Driver::start(&exe);
    // Two loader objects from one library (two loader_names), and one whose config is unusable:
    // loaderInit throws std::runtime_error, so OVMS would not register it.
    assert_eq!(d.run(&format!("init A {config}")), vec!["init A ok"]);
    assert_eq!(d.run(&format!("init C {config}")), vec!["init C ok"]);
    let bad = d.run("init B /nonexistent/loader.json");
    assert!(
        bad.len() == 1
            && bad[0].starts_with("init B exception ovsa loader init failed: ")
            && bad[0].contains("/nonexistent/loader.json"),
        "{bad:?}"
    );

    // Loads per version directory, byte-identical to the plaintext.
    assert_eq!(
        d.run(&format!("load A m {base_m} {OPTIONS}")),
        vec![ir_line("load", 1), ir_line("load", 2)]
    );
    assert_eq!(
        d.run(&format!("load C onnx {base_onnx} {OPTIONS}")),
        vec![onnx_line("load")]
    );
    let failed = d.run(&format!("load A bad {base_bad} {OPTIONS}"));
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].starts_with(&format!("load bad 1 {LOAD_ERROR} 0 0 ")),
        "{failed:?}"
    );

    // Healthy: the watcher finds nothing blacklisted (OVMS keeps retrying the failed load).
    let quiet = d.run("watch 2.5 500");
    assert!(!has(&quiet, "blacklisted"), "{quiet:?}");
    assert!(!has(&quiet, "slow-status"), "{quiet:?}");
    assert!(
        !has(&quiet, "reload m") && !has(&quiet, "reload onnx"),
        "{quiet:?}"
    );
    assert!(
        has(&quiet, &format!("reload bad 1 {LOAD_ERROR}")),
        "{quiet:?}"
    );

    // License service down: after the grace period every loaded version is blacklisted and
    // unloaded; status polls stay fast throughout.
    f.stop_service();
    let outage = d.run("watch 7 500");
    for v in [
        format!("blacklisted m 1 {BLACKLISTED}"),
        format!("blacklisted m 2 {BLACKLISTED}"),
        format!("blacklisted onnx 1 {BLACKLISTED}"),
    ] {
        assert!(outage.contains(&v), "{v} missing in {outage:?}");
    }
    assert!(!has(&outage, "slow-status"), "{outage:?}");
    assert!(!has(&outage, &format!("reload m 1 {IR}")), "{outage:?}");

    // Service back: the blacklist clears at the recheck and the watcher reloads every version.
    f.start_service();
    let recovery = d.run("watch 8 500");
    for l in [
        ir_line("reload", 1),
        ir_line("reload", 2),
        onnx_line("reload"),
    ] {
        assert!(recovery.contains(&l), "{l} missing in {recovery:?}");
    }
    let status = d.run("status m 1");
    assert_eq!(status, vec![format!("status m 1 {OK}")]);

    // Options changed: unload then load with the new options (an absolute keystore path now;
    // each version keeps its own package).
    let abs = format!(
        r#"{{"loader_name":"ovsa","keystore":"{base_m}/1/customer.ks","controlled_access_file":"model"}}"#
    );
    assert_eq!(
        d.run(&format!("options m {abs}")),
        vec![
            format!("unload m 1 {OK}"),
            ir_line("load", 1),
            format!("unload m 2 {OK}"),
            ir_line("load", 2)
        ]
    );

    // Model removed from the config: retire, then unload each version.
    assert_eq!(
        d.run("retire bad"),
        vec![format!("retire bad {OK}"), format!("unload bad 1 {OK}")]
    );

    // Shutdown: unload every version; destroy the objects through the virtual destructor.
    let down = d.run("shutdown");
    assert_eq!(
        &down[..3],
        &[
            format!("unload m 1 {OK}"),
            format!("unload m 2 {OK}"),
            format!("unload onnx 1 {OK}")
        ]
    );
    let ms: u64 = down[3]
        .strip_prefix("shutdown ok ")
        .unwrap_or_else(|| panic!("{down:?}"))
        .parse()
        .unwrap();
    assert!(ms < 500, "destruction took {ms} ms");
    assert!(d.quit().success());
}

/// Where OVMS says, nothing else: OVMS calls `loadModel` for every numeric version directory;
/// the package of version 1 placed in directories 0 and 7 is refused there (only directory 1
/// loads), and a `controlled_access_file` leaving the version directory is refused although the
/// files exist where it points.
#[test]
fn ovms_loads_a_package_only_from_its_own_version_directory() {
    let f = Fixture::new();
    let exe = build_driver(f.root.path());
    let config = f.config("loader.json", "");
    let (base, lic) = f.good_model("models/m", 1);
    for v in [0, 7] {
        f.version_dir(
            "models/m",
            v,
            Some(&f.w.package),
            Some(&lic),
            Some(&f.w.customer),
        );
    }
    let up3 = f.root.path();
    std::fs::copy(format!("{base}/1/model.dat"), up3.join("fd.dat")).unwrap();
    std::fs::copy(format!("{base}/1/model.lic"), up3.join("fd.lic")).unwrap();
    let (xml, bin) = f.plaintext();
    let mut d = Driver::start(&exe);
    assert_eq!(d.run(&format!("init A {config}")), vec!["init A ok"]);
    let mut lines = d.run(&format!("load A m {base} {OPTIONS}"));
    lines.sort();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("load m 0 {LOAD_ERROR} 0 0 ")),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "load m 1 {IR} {} {} {} {}",
            xml.len(),
            bin.len(),
            fnv1a(&xml),
            fnv1a(&bin)
        )
    );
    assert!(
        lines[2].starts_with(&format!("load m 7 {LOAD_ERROR} 0 0 ")),
        "{lines:?}"
    );
    let traversal =
        r#"{"loader_name":"ovsa","keystore":"customer.ks","controlled_access_file":"../../../fd"}"#;
    let lines = d.run(&format!("load A t {base} {traversal}"));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.split(' ').nth(3) == Some(LOAD_ERROR.to_string().as_str())),
        "{lines:?}"
    );
    d.run("shutdown");
    assert!(d.quit().success());
}

/// The same host under valgrind (memcheck): no invalid reads/writes, no uninitialised use in
/// the plugin's paths, no definite leaks across init (good and throwing), load (IR), a failed
/// load (missing package), polling, options change, retire and shutdown. valgrind is required
/// (scripts/setup.sh installs it): a missing valgrind fails the test rather than skipping it.
#[test]
fn ovms_sequence_is_valgrind_clean() {
    assert!(
        Command::new("valgrind").arg("--version").output().is_ok(),
        "valgrind is not installed: run `bash scripts/setup.sh` (Debian package valgrind)"
    );
    let f = Fixture::new();
    let exe = build_driver(f.root.path());
    let config = f.config("loader.json", r#""lease_seconds_override":1"#);
    let (base_m, lic) = f.good_model("models/m", 1);
    let base_bad = f.version_dir("models/bad", 1, None, Some(&lic), Some(&f.w.customer));
    let (xml, bin) = f.plaintext();
    let log = f.path("valgrind.log");
    let mut child = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--track-origins=no",
        ])
        .arg(format!("--log-file={}", log.display()))
        .env("OVSA_DRIVER_STATUS_LIMIT_US", "30000000")
        .arg(&exe)
        .arg(plugin_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Driver {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    assert_eq!(d.run(&format!("init A {config}")), vec!["init A ok"]);
    let bad = d.run("init B /nonexistent/loader.json");
    assert!(bad[0].starts_with("init B exception"), "{bad:?}");
    let loaded = d.run(&format!("load A m {base_m} {OPTIONS}"));
    assert_eq!(
        loaded,
        vec![format!(
            "load m 1 {IR} {} {} {} {}",
            xml.len(),
            bin.len(),
            fnv1a(&xml),
            fnv1a(&bin)
        )]
    );
    let failed = d.run(&format!("load A bad {base_bad} {OPTIONS}"));
    assert!(
        failed[0].starts_with(&format!("load bad 1 {LOAD_ERROR} 0 0 ")),
        "{failed:?}"
    );
    let watched = d.run("watch 3 500");
    assert!(!has(&watched, "blacklisted"), "{watched:?}");
    let abs = format!(
        r#"{{"loader_name":"ovsa","keystore":"{base_m}/1/customer.ks","controlled_access_file":"{base_m}/1/model"}}"#
    );
    assert!(has(
        &d.run(&format!("options m {abs}")),
        &format!("load m 1 {IR} ")
    ));
    assert_eq!(
        d.run("retire m"),
        vec![format!("retire m {OK}"), format!("unload m 1 {OK}")]
    );
    assert!(has(&d.run("shutdown"), "shutdown ok"));
    let status = d.quit();
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    for line in report
        .lines()
        .filter(|l| l.contains("SUMMARY") || l.contains("lost:"))
    {
        eprintln!("{line}");
    }
    assert!(
        status.success(),
        "valgrind reported errors ({status}):\n{report}"
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
}

/// OVMS's next step after loadModel: the buffers the plugin filled become an OpenVINO model
/// (IR: the XML string and a u8 weights tensor; ONNX: the model string), compiled for CPU with
/// INFERENCE_PRECISION_HINT=f32. The outputs on a fixed input equal those of the plaintext model
/// read from its files, for an IR model generated by examples/models/make_model.py and for the
/// real PP-OCR direction classifier (ONNX) that scripts/setup.sh --openvino extracts.
#[test]
fn ovms_buffers_handed_to_openvino_infer_like_the_plaintext() {
    let (ov, python) = openvino_wheel();
    let f = Fixture::new();
    let exe = build_driver_with(f.root.path(), Some(&ov));
    let config = f.config("loader.json", "");

    let src = f.path("src-cnn");
    let out = Command::new(&python)
        .arg(root().join("examples/models/make_model.py"))
        .arg(&src)
        .args(["--weights-mib", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_model.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = src.join("model.xml");
    let cnn = f.other_model_from(&[xml.clone(), src.join("model.bin")], "cnn");
    let cnn_lic = f.sell_for(&cnn.master);
    let base_cnn = f.version_dir(
        "models/cnn",
        1,
        Some(&cnn.package),
        Some(&cnn_lic),
        Some(&f.w.customer),
    );
    let cls = root().join(".venv/ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx");
    assert!(
        cls.is_file(),
        "{} missing: run `bash scripts/setup.sh --openvino`",
        cls.display()
    );
    let onnx = f.other_model_from(std::slice::from_ref(&cls), "cls");
    let onnx_lic = f.sell_for(&onnx.master);
    let base_cls = f.version_dir(
        "models/cls",
        1,
        Some(&onnx.package),
        Some(&onnx_lic),
        Some(&f.w.customer),
    );

    let mut d = Driver::start(&exe);
    assert_eq!(d.run(&format!("init A {config}")), vec!["init A ok"]);
    let loaded = d.run(&format!("load A cnn {base_cnn} {OPTIONS}"));
    assert!(
        loaded[0].starts_with(&format!("load cnn 1 {IR} ")),
        "{loaded:?}"
    );
    let loaded = d.run(&format!("load A cls {base_cls} {OPTIONS}"));
    assert!(
        loaded[0].starts_with(&format!("load cls 1 {ONNX} ")),
        "{loaded:?}"
    );

    let digest = |lines: Vec<String>, prefix: &str| -> String {
        assert_eq!(lines.len(), 1, "{lines:?}");
        let d = lines[0]
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{lines:?}"))
            .to_string();
        assert_eq!(d.len(), 16, "{lines:?}");
        d
    };
    let from_plugin = digest(d.run("infer cnn 1"), "infer cnn 1 ");
    let from_file = digest(
        d.run(&format!("infer-file {}", xml.display())),
        "infer-file ",
    );
    assert_eq!(from_plugin, from_file, "IR outputs differ");
    let shape = "1,3,48,192";
    let from_plugin = digest(d.run(&format!("infer cls 1 {shape}")), "infer cls 1 ");
    let from_file = digest(
        d.run(&format!("infer-file {} {shape}", cls.display())),
        "infer-file ",
    );
    assert_eq!(from_plugin, from_file, "ONNX outputs differ");
    assert!(has(&d.run("shutdown"), "shutdown ok"));
    assert!(d.quit().success());
}
