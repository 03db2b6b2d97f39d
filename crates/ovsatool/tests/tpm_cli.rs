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
    let out = ok(
        d,
        &[
            "attest",
            "--tcti",
            &vtpm,
            "--nonce",
            nonce,
            "--out-dir",
            "ev",
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
    // The printed command works as printed (pcrs.bin in tpm2-tools' serialized format, the
    // default 8 PCRs, no -l), and fails for another nonce.
    let verify = out
        .lines()
        .find_map(|l| l.strip_prefix("verify with: "))
        .unwrap_or_else(|| panic!("no 'verify with' line: {out}"));
    assert!(!verify.contains(" -l "), "{verify}");
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .current_dir(d)
            .env("TSS2_LOG", "all+none")
            .output()
            .expect("sh")
    };
    let check = sh(verify);
    assert!(
        check.status.success(),
        "{verify}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let wrong = verify.replace(nonce, "00112233445566778899aabbccddeeee");
    assert_ne!(wrong, verify);
    assert!(!sh(&wrong).status.success(), "wrong nonce accepted");

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

/// Runs ovsatool with a deadline (a hang fails the test instead of blocking it) and the given
/// environment changes (`None` removes the variable).
fn tool_within(
    dir: &Path,
    args: &[&str],
    env: &[(&str, Option<&str>)],
    limit: std::time::Duration,
) -> Output {
    use std::process::Stdio;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovsatool"));
    cmd.current_dir(dir)
        .env("TSS2_LOG", "all+none")
        .env_remove("TCTI")
        .env_remove("TPM2TOOLS_TCTI")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().expect("run ovsatool");
    let t0 = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "ovsatool {args:?} still running after {limit:?} (killed):\n{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

const PROMPT: std::time::Duration = std::time::Duration::from_secs(20);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// No transient object or session left in the TPM (tpm2-tools' own view).
fn assert_nothing_loaded(tcti: &str) {
    for cap in [
        "handles-transient",
        "handles-loaded-session",
        "handles-saved-session",
    ] {
        let o = Command::new("tpm2_getcap")
            .args(["-T", tcti, cap])
            .env("TSS2_LOG", "all+none")
            .output()
            .expect("tpm2_getcap (tpm2-tools)");
        assert!(o.status.success(), "tpm2_getcap {cap}: {}", stderr(&o));
        let listed = String::from_utf8_lossy(&o.stdout);
        assert!(listed.trim().is_empty(), "{cap} left in the TPM: {listed}");
    }
}

/// The swtpm TPMs have only a sha256 bank. Asking any command for sha1 used to spin in the
/// PCR read loop forever; now each returns promptly, naming the bank and the TPM's banks, and
/// leaves nothing loaded.
#[test]
fn a_missing_pcr_bank_fails_fast_naming_the_bank() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let pair = TpmPair::start();
    let (host, vtpm) = (pair.host.tcti(), pair.vtpm.tcti());
    ok(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=isv"],
    );
    let runs: [(&[&str], &str); 3] = [
        (
            &[
                "attest",
                "--tcti",
                &vtpm,
                "--nonce",
                "00",
                "--out-dir",
                "ev",
                "--bank",
                "sha1",
            ],
            "--bank",
        ),
        (
            &[
                "tcb",
                "--keystore",
                "isv.ks",
                "--out",
                "vm.tcb",
                "--from-tpm",
                &vtpm,
                "--vtpm-bank",
                "sha1",
            ],
            "--vtpm-bank",
        ),
        (
            &[
                "host-quote",
                "--host-tcti",
                &host,
                "--vtpm-tcti",
                &vtpm,
                "--bank",
                "sha1",
            ],
            "--bank",
        ),
    ];
    for (args, flag) in runs {
        let o = tool_within(d, args, &[], PROMPT);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            err.contains(flag)
                && err.contains("no sha1 PCR bank")
                && err.contains("its PCR banks: sha256"),
            "{args:?}: {err}"
        );
    }
    assert!(!d.join("ev").exists() && !d.join("vm.tcb").exists());
    assert_nothing_loaded(&host);
    assert_nothing_loaded(&vtpm);
    // Nothing was written to the vTPM: it still has no host evidence.
    let o = tool_within(
        d,
        &[
            "attest",
            "--tcti",
            &vtpm,
            "--nonce",
            "00",
            "--out-dir",
            "ev",
        ],
        &[],
        PROMPT,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ev: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("ev/evidence.json")).unwrap()).unwrap();
    assert!(ev["host_evidence"].is_null());
}

/// `tcb` takes what tpm2-tools prints and writes, from a real swtpm: `tpm2_pcrread` text with
/// all banks (empty sha1/sha384/sha512 banks skipped), its default `-o` binary (digests only)
/// and its `-F serialized -o` binary; all give the same reference as `--from-tpm`, which also
/// finds the TPM through TPM2TOOLS_TCTI alone.
#[test]
fn tcb_accepts_tpm2_pcrread_output() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let s = swtpm_tests::Swtpm::start(swtpm_tests::names::VTPM);
    let tcti = s.tcti();
    // Some non-zero PCRs, so a mix-up of indices would show.
    Command::new("tpm2_pcrextend")
        .args([
            "-T",
            &tcti,
            "3:sha256=3333333333333333333333333333333333333333333333333333333333333333",
            "9:sha256=9999999999999999999999999999999999999999999999999999999999999999",
        ])
        .env("TSS2_LOG", "all+none")
        .status()
        .expect("tpm2_pcrextend");
    let pcrread = |args: &[&str]| {
        let o = Command::new("tpm2_pcrread")
            .args(args)
            .current_dir(d)
            .env("TPM2TOOLS_TCTI", &tcti)
            .env("TSS2_LOG", "all+none")
            .output()
            .expect("tpm2_pcrread (tpm2-tools)");
        assert!(o.status.success(), "tpm2_pcrread {args:?}: {}", stderr(&o));
        o.stdout
    };
    let text = pcrread(&[]);
    let shown = String::from_utf8_lossy(&text);
    assert!(
        shown.contains("sha1:") && shown.contains("sha512:"),
        "{shown}"
    );
    std::fs::write(d.join("all.txt"), &text).unwrap();
    pcrread(&["-o", "values.bin", "sha256:0,1,2,3,4,5,6,7,8,9"]);
    pcrread(&[
        "-F",
        "serialized",
        "-o",
        "serialized.bin",
        "sha256:0,1,2,3,4,5,6,7,8,9",
    ]);
    ok(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=isv"],
    );
    let pcrs = "0,1,2,3,4,5,6,7,8,9";
    let vtpm_of = |out: &str| {
        let shown = ok(d, &["inspect", out]);
        let start = shown.find('{').unwrap();
        let v: serde_json::Value = serde_json::Deserializer::from_str(&shown[start..])
            .into_iter::<serde_json::Value>()
            .next()
            .unwrap()
            .unwrap();
        fn find(v: &serde_json::Value) -> Option<serde_json::Value> {
            if let Some(x) = v.get("vtpm") {
                return Some(x.clone());
            }
            v.as_object()?.values().find_map(find)
        }
        find(&v).unwrap_or_else(|| panic!("no vtpm in {shown}"))
    };
    let o = tool_within(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "live.tcb",
            "--from-tpm",
            "--pcrs",
            pcrs,
        ],
        &[("TPM2TOOLS_TCTI", Some(&tcti))],
        PROMPT,
    );
    assert!(
        o.status.success(),
        "--from-tpm via TPM2TOOLS_TCTI: {}",
        stderr(&o)
    );
    let live = vtpm_of("live.tcb");
    let entries = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["pcrs"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .clone()
    };
    assert_eq!(live["bank"], "sha256", "{live}");
    assert_eq!(entries(&live).len(), 10, "{live}");
    let zero = "00".repeat(32);
    let nonzero: Vec<u64> = entries(&live)
        .iter()
        .filter(|e| e["value"] != zero.as_str())
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(nonzero, [3, 9], "{live}");
    for (file, out) in [
        ("values.bin", "values.tcb"),
        ("serialized.bin", "serialized.tcb"),
    ] {
        ok(
            d,
            &[
                "tcb",
                "--keystore",
                "isv.ks",
                "--out",
                out,
                "--vtpm-pcrs-file",
                file,
                "--pcrs",
                pcrs,
            ],
        );
        assert_eq!(vtpm_of(out), live, "{file}");
    }
    // The text file has all 24 PCRs; the reference holds them all, those of --from-tpm among them.
    ok(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "text.tcb",
            "--vtpm-pcrs-file",
            "all.txt",
        ],
    );
    let all = entries(&vtpm_of("text.tcb"));
    assert_eq!(all.len(), 24);
    assert_eq!(all[..10], entries(&live)[..]);
    // A bank the file has no values of: named, with the banks it has.
    let o = tool(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "x.tcb",
            "--vtpm-pcrs-file",
            "all.txt",
            "--vtpm-bank",
            "sha1",
        ],
    );
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("sha1") && err.contains("banks with values: sha256"),
        "{err}"
    );
    // A values file that does not match --pcrs: a clear error, not a wrong reference.
    let o = tool(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "x.tcb",
            "--vtpm-pcrs-file",
            "values.bin",
        ],
    );
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("--pcrs") && err.contains("serialized"),
        "{err}"
    );
    // An endless input fails fast (bounded reader) and names the flag.
    let o = tool_within(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "x.tcb",
            "--vtpm-pcrs-file",
            "/dev/zero",
        ],
        &[],
        PROMPT,
    );
    let err = stderr(&o);
    assert!(
        !o.status.success()
            && err.contains("--vtpm-pcrs-file /dev/zero")
            && err.contains("larger than"),
        "{err}"
    );
    assert!(!d.join("x.tcb").exists());
}

/// `attest` checks every output path before it writes anything, refuses to replace files
/// without --force, and keeps the old `--out` spelling as an alias.
#[test]
fn attest_refuses_to_overwrite_without_force() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let s = swtpm_tests::Swtpm::start(swtpm_tests::names::VTPM);
    let tcti = s.tcti();
    std::fs::create_dir(d.join("ev")).unwrap();
    std::fs::write(d.join("ev/evidence.json"), b"keep me").unwrap();
    let o = tool(
        d,
        &[
            "attest",
            "--tcti",
            &tcti,
            "--nonce",
            "01",
            "--out-dir",
            "ev",
        ],
    );
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("evidence.json") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join("ev/evidence.json")).unwrap(),
        b"keep me"
    );
    for f in ["quote.msg", "quote.sig", "pcrs.bin", "ak.pub"] {
        assert!(
            !d.join("ev").join(f).exists(),
            "{f} written before the check"
        );
    }
    ok(
        d,
        &[
            "attest",
            "--tcti",
            &tcti,
            "--nonce",
            "01",
            "--out-dir",
            "ev",
            "--force",
        ],
    );
    assert_ne!(
        std::fs::read(d.join("ev/evidence.json")).unwrap(),
        b"keep me"
    );
    // The old spelling still works; TCTI from the environment when --tcti is not given.
    let o = tool_within(
        d,
        &["attest", "--nonce", "01", "--out", "ev2"],
        &[("TPM2TOOLS_TCTI", Some(&tcti))],
        PROMPT,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.join("ev2/pcrs.bin").exists());
}

/// host-quote: the same TPM as host and vTPM is refused; a --ak-cache-dir without an enrolled
/// AK is warned about (and the old --ak-cache spelling accepted); tpm2-tss prints no ERROR
/// lines on success even when the user has not set TSS2_LOG.
#[test]
fn host_quote_checks_and_quiet_output() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let pair = TpmPair::start();
    let (host, vtpm) = (pair.host.tcti(), pair.vtpm.tcti());

    let same = vtpm
        .replace("host=127.0.0.1,port=", "port=")
        .replace("swtpm:", "swtpm:host=localhost,");
    let o = tool_within(
        d,
        &["host-quote", "--host-tcti", &vtpm, "--vtpm-tcti", &same],
        &[],
        PROMPT,
    );
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("same TPM") && err.contains("--vtpm-tcti"),
        "{err}"
    );

    let args = [
        "host-quote",
        "--host-tcti",
        &host,
        "--vtpm-tcti",
        &vtpm,
        "--ak-cache-dir",
        "ak",
    ];
    let o = tool_within(d, &args, &[("TSS2_LOG", None)], PROMPT);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("not enrolled") && err.contains("host-enroll"),
        "{err}"
    );
    assert!(!err.contains("ERROR"), "tpm2-tss noise: {err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("ERROR"));
    // Second run: the AK is in the cache now (enrolment itself is tested in check.rs).
    let o = tool_within(
        d,
        &[
            "host-quote",
            "--host-tcti",
            &host,
            "--vtpm-tcti",
            &vtpm,
            "--ak-cache",
            "ak",
        ],
        &[("TSS2_LOG", None)],
        PROMPT,
    );
    let err = stderr(&o);
    assert!(
        o.status.success() && !err.contains("warning") && !err.contains("ERROR"),
        "{err}"
    );
    assert_nothing_loaded(&host);
    assert_nothing_loaded(&vtpm);
}

/// One name per concept: `--ak-cache-dir` on every command that caches an AK, `--out-dir` for
/// attest's directory; the old spellings are hidden aliases (not in --help, still accepted).
#[test]
fn flag_names_are_consistent() {
    let d = tempfile::tempdir().unwrap();
    let help = |cmd: &str| ok(d.path(), &[cmd, "--help"]);
    for cmd in ["check", "host-quote", "host-enroll"] {
        let h = help(cmd);
        assert!(h.contains("--ak-cache-dir <DIR>"), "{cmd}: {h}");
        assert!(!h.contains("--ak-cache <"), "{cmd}: {h}");
    }
    let h = help("attest");
    assert!(
        h.contains("--out-dir <DIR>") && h.contains("--force"),
        "{h}"
    );
    assert!(!h.contains("--out <"), "{h}");
    // The hidden alias of check is accepted by the parser (it fails later, on the missing files).
    let o = tool(
        d.path(),
        &[
            "check",
            "--keystore",
            "none.ks",
            "--license",
            "none.lic",
            "--package",
            "none.dat",
            "--ak-cache",
            "ak",
        ],
    );
    let err = stderr(&o);
    assert!(
        !o.status.success() && !err.contains("unexpected argument"),
        "{err}"
    );
}
