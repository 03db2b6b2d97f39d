//! The TPM-facing commands against real swtpm TPMs: host-quote into the vTPM's NV, a TCB
//! reference from the live machine (vTPM PCRs + the host PCRs its evidence carries), and
//! `attest` output that tpm2-tools' own `tpm2_checkquote` accepts.

use std::path::Path;
use std::process::{Command, Output};

use swtpm_tests::TpmPair;

fn tool(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovsatool"))
        .current_dir(dir)
        .env("TSS2_LOG", "all+none")
        .args(args)
        .output()
        .expect("run ovsatool")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = tool(dir, args);
    assert!(
        o.status.success(),
        "ovsatool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn host_quote_tcb_from_tpm_and_attest_with_tpm2_tools_cross_check() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let pair = TpmPair::start();
    let (host, vtpm) = (pair.host.tcti(), pair.vtpm.tcti());

    ok(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=isv"],
    );
    // Before host-quote the vTPM holds no host evidence: attest still works and says so.
    ok(
        d,
        &["attest", "--tcti", &vtpm, "--nonce", "00", "--out", "ev0"],
    );
    let ev0: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("ev0/evidence.json")).unwrap()).unwrap();
    assert!(ev0["host_evidence"].is_null(), "{ev0}");

    let out = ok(
        d,
        &["host-quote", "--host-tcti", &host, "--vtpm-tcti", &vtpm],
    );
    assert!(out.contains("host evidence written"), "{out}");

    ok(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "vm.tcb",
            "--from-tpm",
            &vtpm,
            "--host-evidence",
        ],
    );
    let shown = ok(d, &["inspect", "vm.tcb"]);
    assert!(
        shown.contains("\"host\"") && shown.contains("\"vtpm\""),
        "{shown}"
    );

    let nonce = "00112233445566778899aabbccddeeff";
    ok(
        d,
        &[
            "attest",
            "--tcti",
            &vtpm,
            "--nonce",
            nonce,
            "--out",
            "ev",
            "--pcrs",
            "0,1,2,3,4,5,7",
        ],
    );
    for f in [
        "quote.msg",
        "quote.sig",
        "pcrs.bin",
        "ak.pub",
        "evidence.json",
    ] {
        assert!(d.join("ev").join(f).exists(), "{f}");
    }
    let check = Command::new("tpm2_checkquote")
        .current_dir(d.join("ev"))
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "pcrs.bin",
            "-l",
            "sha256:0,1,2,3,4,5,7",
            "-g",
            "sha256",
            "-q",
            nonce,
        ])
        .output()
        .expect("tpm2_checkquote (tpm2-tools)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Host evidence that does not verify (bound to another vTPM's EK certificate) is not turned
    // into a signed TCB reference.
    {
        use ovsa_tpm::host::{host_quote, write_host_evidence_blob, HostQuoteOptions};
        let mut host_tpm = pair.host.open();
        let ev = host_quote(
            &mut host_tpm,
            b"another vTPM's EK certificate",
            &HostQuoteOptions::default(),
        )
        .unwrap();
        write_host_evidence_blob(&mut pair.vtpm.open(), &ev.encode().unwrap()).unwrap();
    }
    let o = tool(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "bad.tcb",
            "--from-tpm",
            &vtpm,
            "--host-evidence",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("does not verify"),
        "{err}"
    );
    assert!(!d.join("bad.tcb").exists());

    // An unreachable TPM is a clear error, not a crash.
    let o = tool(
        d,
        &[
            "attest",
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
            "--nonce",
            "00",
            "--out",
            "x",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("TPM") && !err.contains("panicked"), "{err}");
}
