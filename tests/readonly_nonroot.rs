//! The plugin and the license service as docs/HARDENING.md deploys them: a non-root user, a
//! read-only root file system, a tmpfs at /tmp for what must be writable.
//!
//! The test re-runs this binary (its `#[ignore]`d `readonly_child` test) inside a new mount
//! namespace (`unshare --mount`) in which `/` and `/dev/shm` are remounted read-only and a
//! fresh tmpfs is mounted on /tmp, as uid/gid 65534 with no supplementary groups, no
//! capabilities and no_new_privs (`setpriv`). When not run as root it uses a user namespace
//! instead (`unshare --map-root-user`, then a nested one mapping back to the caller's uid).
//! There the child checks that it is not root and that writing outside the tmpfs fails with
//! EROFS, then runs the license service (in-process: TLS on loopback, SQLite on the tmpfs), a
//! swtpm vTPM (state on the tmpfs) and the plugin, through its C API and through the C++ shim
//! as OVMS drives it (`tests/ovms_driver.cpp`): both loads succeed and the decrypted bytes are
//! the plaintext. The test is skipped (with a message) only when the kernel refuses to create
//! the namespaces.

mod common_lib;
mod plugin;
use ovsa_test_support::runtime_fixture;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common_lib::{plugin_path, root};
use plugin::{Plugin, MODEL_TYPE_IR, OK};
use runtime_fixture::{Fixture, OPTIONS};

const CHILD_ENV: &str = "OVSA_READONLY_CHILD";
const DRIVER_ENV: &str = "OVSA_READONLY_DRIVER";
/// errno EROFS (Linux): "read-only file system".
const EROFS: i32 = 30;
/// The unprivileged user the child runs as (nobody).
const NOBODY: u32 = 65534;

/// Mounts of the child's namespace: read-only root and /dev/shm, a fresh tmpfs on /tmp.
const MOUNTS: &str = "mount -o remount,ro,bind / && \
     { ! mountpoint -q /dev/shm || mount -o remount,ro,bind /dev/shm; } && \
     mount -t tmpfs -o mode=1777,nosuid,nodev,size=1g ovsa-tmpfs /tmp";

fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 1469598103934665603;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(1099511628211);
    }
    format!("{h:016x}")
}

fn euid() -> u32 {
    status_ids("Uid:")[1]
}

/// The four ids of a `Uid:`/`Gid:` line of /proc/self/status.
fn status_ids(field: &str) -> Vec<u32> {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Compiles the OVMS-like C++ driver (while the file system is still writable).
fn build_driver() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readonly_nonroot");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("ovms_driver");
    let status = Command::new("g++")
        .args([
            "-std=c++17",
            "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-Wall",
            "-Werror",
            "-Wno-unused-parameter",
            "-pthread",
            "-I",
        ])
        .arg(root().join("include"))
        .arg(root().join("tests/ovms_driver.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg("-ldl")
        .status()
        .expect("g++");
    assert!(status.success(), "the OVMS driver must compile");
    exe
}

#[test]
fn plugin_and_service_run_as_non_root_on_a_read_only_root() {
    // The kernel must let us create the namespaces; a refusal is the only reason to skip.
    let probe = if euid() == 0 {
        Command::new("unshare").args(["--mount", "true"]).output()
    } else {
        Command::new("unshare")
            .args(["--map-root-user", "--mount", "true"])
            .output()
    };
    let probe = probe.expect("unshare (util-linux; scripts/setup.sh installs it)");
    if !probe.status.success() {
        eprintln!(
            "SKIPPED: the kernel refused a mount namespace ({}); this test needs \
             `unshare --mount` (root, or unprivileged user namespaces)",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let driver = build_driver();
    let exe = std::env::current_exe().unwrap();
    let test_args = "--exact readonly_child --include-ignored --nocapture --test-threads=1";
    let script = if euid() == 0 {
        format!(
            "{MOUNTS} && exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups \
             --inh-caps=-all --bounding-set=-all --no-new-privs -- \"$0\" {test_args}"
        )
    } else {
        // Root of a user namespace only for the mounts; the nested namespace maps the caller's
        // uid back, so the child runs with no privilege at all.
        format!(
            "{MOUNTS} && exec unshare --map-user={} --setuid={} -- \"$0\" {test_args}",
            euid(),
            euid()
        )
    };
    let mut cmd = Command::new("unshare");
    if euid() != 0 {
        cmd.arg("--map-root-user");
    }
    let out = cmd
        .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
        .arg(&script)
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .env(DRIVER_ENV, &driver)
        .env("TMPDIR", "/tmp")
        .env("HOME", "/tmp")
        .env_remove("OVSA_SWTPM_CACHE_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for marker in [
        "child: not root",
        "child: root file system read-only",
        "child: C API load ok",
        "child: C++ shim load ok",
    ] {
        assert!(
            stdout.contains(marker),
            "'{marker}' missing:\n{stdout}\n{stderr}"
        );
    }
}

/// Writing here must fail with EROFS (the namespace's read-only mounts).
fn assert_read_only(dir: &Path) {
    let p = dir.join(format!("ovsa-ro-probe-{}", std::process::id()));
    match std::fs::write(&p, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&p);
            panic!("{} is writable", dir.display());
        }
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(EROFS),
            "writing in {}: {e} (expected EROFS)",
            dir.display()
        ),
    }
}

/// The body run inside the namespace (see the module comment); a no-op elsewhere.
#[test]
#[ignore = "run by plugin_and_service_run_as_non_root_on_a_read_only_root inside its namespace"]
fn readonly_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Not root: real, effective, saved and file-system ids all unprivileged; no capabilities.
    let (uids, gids) = (status_ids("Uid:"), status_ids("Gid:"));
    assert!(uids.iter().all(|&u| u != 0), "uids {uids:?}");
    assert!(gids.iter().all(|&g| g != 0), "gids {gids:?}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(cap_eff.ends_with("0000000000000000"), "{cap_eff}");
    println!("child: not root ({uids:?}, {cap_eff})");

    // Nothing outside the tmpfs can be written: the repository, the build directory, /, /var/tmp
    // and /dev/shm are on read-only mounts (EROFS, not merely a permission error).
    for dir in [
        root(),
        plugin_path().parent().unwrap().to_path_buf(),
        PathBuf::from("/"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev/shm"),
    ] {
        if dir.is_dir() {
            assert_read_only(&dir);
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&"/tmp") && l.contains(" - tmpfs ")
        }),
        "/tmp is not a tmpfs:\n{mountinfo}"
    );
    assert_eq!(std::env::temp_dir(), Path::new("/tmp"));
    println!("child: root file system read-only; /tmp a tmpfs");

    // The license service (in this process), the vTPM and the plugin, all writing only to /tmp.
    let f = Fixture::new();
    let (base, _) = f.good_model("models/m", 1);
    let (xml, bin) = f.plaintext();
    let config = f.config("loader.json", "");

    let plugin = Plugin::new(Some(&config)).unwrap();
    let l = plugin.load("m", &base, 1, OPTIONS);
    assert_eq!(l.status, MODEL_TYPE_IR, "{}", l.error);
    assert!(l.model == xml && l.weights == bin, "plaintext differs");
    assert_eq!(plugin.unload("m", 1), OK);
    println!("child: C API load ok");

    // The C++ shim, driven as OVMS drives it.
    let driver = std::env::var_os(DRIVER_ENV).expect(DRIVER_ENV);
    let mut child = swtpm_tests::command_without_inherited_fds(&driver)
        .arg(plugin_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "init A {config}\nload A m {base} {OPTIONS}\nshutdown\nquit"
        )
        .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "driver: {}\n{stdout}", out.status);
    let expected = format!(
        "load m 1 {MODEL_TYPE_IR} {} {} {} {}",
        xml.len(),
        bin.len(),
        fnv1a(&xml),
        fnv1a(&bin)
    );
    assert!(
        stdout.lines().any(|l| l == expected),
        "expected '{expected}' in:\n{stdout}"
    );
    println!("child: C++ shim load ok");
}
