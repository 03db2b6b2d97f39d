//! The C++ shim's buffer hygiene (`ffi/ovsa_shim_buffers.hpp`, used by
//! `ffi/ovsa_custom_loader.cpp` on OVMS's vectors): `tests/shim_buffers.cpp`, compiled here with
//! g++ and OVMS's ABI settings, resizes and releases vectors through an allocator that checks
//! every block it gets back. A shrink must leave the dropped bytes zero, a growth must free the
//! old block wiped, and a release must free it wiped (a plain `resize`/`swap` leaves plaintext).

mod common_lib;

use std::process::Command;

use common_lib::root;

#[test]
fn shim_wipes_bytes_it_drops_when_resizing_or_releasing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("shim_buffers");
    let status = Command::new("g++")
        .args([
            "-std=c++17",
            "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-O2",
            "-Wall",
            "-Werror",
            "-I",
        ])
        .arg(root().join("ffi"))
        .arg(root().join("tests/shim_buffers.cpp"))
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("g++");
    assert!(status.success(), "tests/shim_buffers.cpp must compile");
    let out = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for check in [
        "shrink-in-place",
        "shrink-wipes-dropped-bytes",
        "grow-frees-old-block",
        "grow-frees-wiped-block",
        "grow-leaves-no-old-bytes",
        "release-frees",
        "release-frees-wiped-block",
        "same-size",
        "empty",
    ] {
        assert!(
            stdout.lines().any(|l| l == format!("ok {check}")),
            "check {check} did not pass:\n{stdout}"
        );
    }
    assert!(out.status.success(), "{stdout}");
}
