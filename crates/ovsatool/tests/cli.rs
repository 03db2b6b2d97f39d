//! The model owner's whole flow through the real `ovsatool` binary, plus its error behaviour.

use std::path::Path;
use std::process::{Command, Output};

fn tool(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovsatool"))
        .current_dir(dir)
        .args(args)
        .env_remove("OVSA_KEYSTORE_PASSPHRASE")
        .output()
        .expect("run ovsatool")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = tool(dir, args);
    assert!(
        o.status.success(),
        "ovsatool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let o = tool(dir, args);
    assert!(
        !o.status.success(),
        "ovsatool {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// Pseudo-random model content; an `.xml` starts like an IR document and an `.onnx` like an
/// ONNX protobuf (protect checks both), the rest is random.
fn random_file(path: &Path, len: usize) {
    let mut x: u32 = 0x1234_5678 ^ len as u32;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let prefix: &[u8] = match path.extension().and_then(|e| e.to_str()) {
        Some("xml") => b"<?xml version=\"1.0\"?>\n<net name=\"m\" version=\"11\">\n",
        Some("onnx") => b"\x08\x07\x12\x07pytorch",
        _ => b"",
    };
    let n = prefix.len().min(len);
    bytes[..n].copy_from_slice(&prefix[..n]);
    std::fs::write(path, bytes).unwrap();
}

fn owner_setup(d: &Path) {
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "isv.ks",
            "--subject",
            "CN=Acme Models, O=Acme",
        ],
    );
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "cust.ks",
            "--subject",
            "CN=Customer One",
        ],
    );
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "srv.ks",
            "--subject",
            "CN=license.local",
        ],
    );
    // The license service's registration key: sold registrations are sealed to it.
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "reg.ks",
            "--subject",
            "CN=license.local registration",
        ],
    );
    ok(
        d,
        &[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "30day.config",
            "--days",
            "30",
            "--usage-limit",
            "100",
            "--instance-limit",
            "2",
            "--lease",
            "600",
            "--server",
            "https://127.0.0.1:8443",
            "--server-cert",
            "srv.ks.crt",
            "--next-server-cert",
            "cust.ks.crt",
        ],
    );
    std::fs::write(
        d.join("pcrs.txt"),
        format!(
            "sha256:\n  0 : 0x{}\n  7 : 0x{}\n",
            "00".repeat(32),
            "ab".repeat(32)
        ),
    )
    .unwrap();
    ok(
        d,
        &[
            "gen-tcb-signature",
            "--keystore",
            "isv.ks",
            "--out",
            "vm.tcb",
            "--vtpm-pcrs-file",
            "pcrs.txt",
            "--host-pcr",
            &format!("0={}", "11".repeat(32)),
        ],
    );
}

#[test]
fn owner_flow_ir_and_onnx_round_trip_through_the_cli() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    owner_setup(d);
    random_file(&d.join("model.xml"), 1234);
    random_file(&d.join("model.bin"), 3 * 1024 * 1024 + 7);
    random_file(&d.join("net.onnx"), 200_000);

    for (name, files) in [
        ("ir", vec!["model.xml", "model.bin"]),
        ("onnx", vec!["net.onnx"]),
    ] {
        let dat = format!("{name}.dat");
        let ml = format!("{name}.masterlic");
        let mut args = vec![
            "controlAccess",
            "--keystore",
            "isv.ks",
            "--name",
            name,
            "--version",
            "3",
            "--out",
            &dat,
            "--master-license",
            &ml,
            "--chunk-size",
            "65536",
        ];
        args.extend(files.iter());
        ok(d, &args);
        let lic = format!("{name}.lic");
        let reg = format!("{name}.reg");
        ok(
            d,
            &[
                "sale",
                "--registration-cert",
                "reg.ks.crt",
                "--keystore",
                "isv.ks",
                "--master-license",
                &ml,
                "--config",
                "30day.config",
                "--tcb",
                "vm.tcb",
                "--customer-cert",
                "cust.ks.crt",
                "--out",
                &lic,
                "--registration",
                &reg,
            ],
        );
        for artifact in [
            &dat,
            &ml,
            &lic,
            &reg,
            &"vm.tcb".to_string(),
            &"30day.config".to_string(),
        ] {
            let out = ok(d, &["inspect", artifact]);
            assert!(out.contains("\"verified\": true"), "{artifact}: {out}");
        }
        let reg_json = ok(d, &["inspect", &reg]);
        assert!(
            reg_json.contains("\"sealed\": true")
                && reg_json.contains("to_registration_certificate_sha256"),
            "the registration shows its share sealed: {reg_json}"
        );
        // An old (version 1) registration carried the share in clear: it is never printed,
        // also when the signature fails.
        let mut raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(&reg)).unwrap()).unwrap();
        let share = "c2VjcmV0LXNoYXJlLXNlY3JldC1zaGFyZS1zZWNyZXQtMTI=";
        raw["body"]["key_share"] = share.into();
        raw["body"]["model_version"] = "tampered".into();
        std::fs::write(d.join("tampered.reg"), raw.to_string()).unwrap();
        let o = tool(d, &["inspect", "tampered.reg"]);
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "{shown}");
        assert!(
            shown.contains("INVALID") && shown.contains("<redacted: secret>"),
            "{shown}"
        );
        assert!(!shown.contains(share), "share printed: {shown}");
        let out_dir = format!("{name}-out");
        ok(
            d,
            &[
                "decrypt",
                "--keystore",
                "isv.ks",
                "--master-license",
                &ml,
                "--package",
                &dat,
                "--out-dir",
                &out_dir,
            ],
        );
        for f in &files {
            assert_eq!(
                std::fs::read(d.join(&out_dir).join(f)).unwrap(),
                std::fs::read(d.join(f)).unwrap(),
                "{name}: {f} differs after decrypt"
            );
        }
    }
    // Permissions: secrets are 0600.
    use std::os::unix::fs::PermissionsExt;
    for secret in ["isv.ks", "ir.masterlic", "ir.reg"] {
        let mode = std::fs::metadata(d.join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
}

#[test]
fn inspect_fails_on_tampering_and_cli_errors_are_clear() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    owner_setup(d);
    random_file(&d.join("m.onnx"), 5000);
    ok(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--out",
            "m.dat",
            "--master-license",
            "m.masterlic",
            "m.onnx",
        ],
    );

    // A flipped bit in the package header or payload.
    let mut dat = std::fs::read(d.join("m.dat")).unwrap();
    dat[40] ^= 0x04;
    std::fs::write(d.join("bad.dat"), &dat).unwrap();
    let err = fails(d, &["inspect", "bad.dat"]);
    assert!(err.contains("bad.dat: "), "{err}");
    let mut dat = std::fs::read(d.join("m.dat")).unwrap();
    let n = dat.len();
    dat[n - 100] ^= 1;
    std::fs::write(d.join("bad2.dat"), &dat).unwrap();
    let err = fails(
        d,
        &[
            "decrypt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "m.masterlic",
            "--package",
            "bad2.dat",
            "--out-dir",
            "out",
        ],
    );
    assert!(err.contains("chunk 0 failed authentication"), "{err}");
    assert!(
        !d.join("out/m.onnx").exists(),
        "no partial plaintext may be left"
    );

    // A changed policy value.
    let text = std::fs::read_to_string(d.join("30day.config")).unwrap();
    std::fs::write(
        d.join("edited.config"),
        text.replace("\"usage_limit\": 100", "\"usage_limit\": 1000"),
    )
    .unwrap();
    let err = fails(d, &["inspect", "edited.config"]);
    assert!(err.contains("signature does not verify"), "{err}");

    // Another ISV cannot sell this model, and a master license of another package is refused.
    ok(
        d,
        &["keygen", "--keystore", "other.ks", "--subject", "CN=Other"],
    );
    let err = fails(
        d,
        &[
            "sale",
            "--registration-cert",
            "reg.ks.crt",
            "--keystore",
            "other.ks",
            "--master-license",
            "m.masterlic",
            "--config",
            "30day.config",
            "--tcb",
            "vm.tcb",
            "--customer-cert",
            "cust.ks.crt",
            "--out",
            "x.lic",
            "--registration",
            "x.reg",
        ],
    );
    assert!(
        err.contains("issued to") || err.contains("signed by"),
        "{err}"
    );

    // Usage errors.
    let err = fails(
        d,
        &[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "x.config",
            "--server",
            "http://h:1",
            "--server-cert",
            "srv.ks.crt",
            "--perpetual",
        ],
    );
    assert!(err.contains("https://"), "{err}");
    let err = fails(
        d,
        &[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "x.config",
            "--server",
            "https://h:1",
            "--server-cert",
            "srv.ks.crt",
        ],
    );
    assert!(err.contains("time limit"), "{err}");
    let err = fails(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--out",
            "y.dat",
            "--master-license",
            "y.masterlic",
            "m.onnx",
            "m.dat",
        ],
    );
    assert!(err.contains(".onnx"), "{err}");
    let err = fails(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=again"],
    );
    assert!(err.contains("--force"), "{err}");
    let err = fails(d, &["inspect", "pcrs.txt"]);
    assert!(err.contains("not an OVSA artifact"), "{err}");
    let err = fails(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "t.tcb",
            "--vtpm-pcr",
            "99=00",
        ],
    );
    assert!(err.contains("0..=23"), "{err}");
    let tcb_age = |age: &str| {
        vec![
            "tcb".to_string(),
            "--keystore".into(),
            "isv.ks".into(),
            "--out".into(),
            format!("age{age}.tcb"),
            "--vtpm-pcr".into(),
            format!("0={}", "00".repeat(32)),
            "--host-max-age".into(),
            age.into(),
        ]
    };
    let args = tcb_age("0");
    let err = fails(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--host-max-age 0"), "{err}");
    let args = tcb_age("3600");
    ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let signed = std::fs::read_to_string(d.join("age3600.tcb")).unwrap();
    assert!(
        signed.contains("\"host_max_age_seconds\": 3600"),
        "{signed}"
    );
    let err = fails(
        d,
        &[
            "protect",
            "--keystore",
            "missing.ks",
            "--name",
            "m",
            "--out",
            "z.dat",
            "--master-license",
            "z.masterlic",
            "m.onnx",
        ],
    );
    assert!(err.contains("missing.ks"), "{err}");
}

#[test]
fn passphrase_keystores_and_ca_signed_certificates() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("pass"), "correct horse\n").unwrap();
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "enc.ks",
            "--subject",
            "CN=Enc",
            "--encrypt",
            "--passphrase-file",
            "pass",
            "--algorithm",
            "p384",
        ],
    );
    let raw = std::fs::read_to_string(d.join("enc.ks")).unwrap();
    assert!(raw.contains("pbkdf2-sha256+aes-256-gcm") && !raw.contains("pkcs8"));
    let err = fails(
        d,
        &[
            "licgen",
            "--keystore",
            "enc.ks",
            "--out",
            "c",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            "enc.ks.crt",
        ],
    );
    assert!(err.contains("passphrase"), "{err}");
    std::fs::write(d.join("wrong"), "nope\n").unwrap();
    let err = fails(
        d,
        &[
            "licgen",
            "--keystore",
            "enc.ks",
            "--passphrase-file",
            "wrong",
            "--out",
            "c",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            "enc.ks.crt",
        ],
    );
    assert!(err.contains("passphrase does not open"), "{err}");
    ok(
        d,
        &[
            "licgen",
            "--keystore",
            "enc.ks",
            "--passphrase-file",
            "pass",
            "--out",
            "c",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            "enc.ks.crt",
        ],
    );

    // A CA signs the customer's CSR; the keystore imports it; sale can require the CA.
    use ovsa_core::crypto::{KeyAlgorithm, SigningKey};
    use ovsa_core::identity::cert;
    let ca_key = SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let ca = cert::self_signed_ca(&ca_key, "CN=Customer CA", 365).unwrap();
    std::fs::write(d.join("ca.pem"), ca.to_pem()).unwrap();
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "cust.ks",
            "--subject",
            "CN=Customer Two",
        ],
    );
    let csr = std::fs::read_to_string(d.join("cust.ks.csr")).unwrap();
    let issued = cert::sign_csr(&csr, &ca_key, &ca, 90).unwrap();
    std::fs::write(d.join("issued.pem"), issued.to_pem()).unwrap();
    // A certificate for another key is refused.
    let err = fails(
        d,
        &[
            "keygen",
            "--keystore",
            "enc.ks",
            "--passphrase-file",
            "pass",
            "--import-cert",
            "issued.pem",
        ],
    );
    assert!(err.contains("another key"), "{err}");
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "cust.ks",
            "--import-cert",
            "issued.pem",
            "--chain",
            "ca.pem",
        ],
    );
    let out = ok(d, &["inspect", "cust.ks"]);
    assert!(out.contains("Customer CA"), "{out}");
    ok(d, &["inspect", "--trust-ca", "ca.pem", "cust.ks.crt"]);
    let other = SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    std::fs::write(
        d.join("other-ca.pem"),
        cert::self_signed_ca(&other, "CN=Other CA", 10)
            .unwrap()
            .to_pem(),
    )
    .unwrap();
    let err = fails(d, &["inspect", "--trust-ca", "other-ca.pem", "cust.ks.crt"]);
    assert!(err.contains("not trusted"), "{err}");
    // --chain must be the issuing CA's chain.
    let err = fails(
        d,
        &[
            "keygen",
            "--keystore",
            "cust.ks",
            "--import-cert",
            "issued.pem",
            "--chain",
            "other-ca.pem",
        ],
    );
    assert!(err.contains("does not chain"), "{err}");

    // Importing into a passphrase-protected keystore keeps the key encrypted (no --encrypt).
    let enc_csr = std::fs::read_to_string(d.join("enc.ks.csr")).unwrap();
    let enc_issued = cert::sign_csr(&enc_csr, &ca_key, &ca, 90).unwrap();
    std::fs::write(d.join("enc-issued.pem"), enc_issued.to_pem()).unwrap();
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "enc.ks",
            "--passphrase-file",
            "pass",
            "--import-cert",
            "enc-issued.pem",
            "--chain",
            "ca.pem",
        ],
    );
    let raw = std::fs::read_to_string(d.join("enc.ks")).unwrap();
    assert!(
        raw.contains("pbkdf2-sha256+aes-256-gcm") && !raw.contains("pkcs8"),
        "key written in clear: {raw}"
    );
    let out = ok(d, &["inspect", "enc.ks.crt"]);
    assert!(out.contains("Customer CA"), "{out}");
}

#[test]
fn licgen_date_window_and_fallback_servers() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=isv"],
    );
    let licgen = |extra: &[&str]| {
        let mut args = vec![
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "w.config",
            "--force",
            "--server-cert",
            "isv.ks.crt",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = licgen(&[
        "--not-before",
        "2026-01-01",
        "--not-after",
        "2027-06-30",
        "--server",
        "https://ls-a.example:8443",
        "--server",
        "https://[::1]:9443",
    ]);
    ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let shown = ok(d, &["inspect", "w.config"]);
    for want in [
        "2026-01-01T00:00:00Z",
        "2027-06-30T23:59:59Z",
        "https://ls-a.example:8443",
        "https://[::1]:9443",
    ] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    let args = licgen(&["--not-after", "2027-13-40", "--server", "https://h:1"]);
    let err = fails(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("2027-13-40"), "{err}");
    let args = licgen(&["--perpetual", "--server", "https://[::1]junk"]);
    let err = fails(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("after the IPv6 address"), "{err}");

    // The signed lease and grace period: defaults (grace not written), explicit, out of range.
    let args = licgen(&["--perpetual", "--server", "https://h:1"]);
    let out = ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("\"lease_seconds\": 3600"), "{out}");
    assert!(!out.contains("grace_seconds"), "{out}");
    let args = licgen(&[
        "--perpetual",
        "--lease",
        "2",
        "--grace-seconds",
        "1",
        "--server",
        "https://h:1",
    ]);
    let out = ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("\"lease_seconds\": 2"), "{out}");
    assert!(out.contains("\"grace_seconds\": 1"), "{out}");
    let args = licgen(&[
        "--perpetual",
        "--grace-seconds",
        "86401",
        "--server",
        "https://h:1",
    ]);
    let err = fails(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("grace period of 86401 s is out of range 0..=86400"),
        "{err}"
    );
}

/// Files in a directory (names), sorted, hidden ones included.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Starts `ovsatool args`, waits until a hidden temp file appears in `watch` (the run is
/// mid-write), sends `signal` and returns the exit code.
fn interrupt(dir: &Path, args: &[&str], watch: &Path, signal: &str) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovsatool"))
        .current_dir(dir)
        .args(args)
        .env_remove("OVSA_KEYSTORE_PASSPHRASE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let writing = std::fs::read_dir(watch).ok().is_some_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with('.') && n.ends_with(".tmp") && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        });
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} finished before it could be interrupted"
        );
        assert!(start.elapsed().as_secs() < 60, "no temp file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    out.status.code()
}

#[test]
fn interrupted_protect_and_decrypt_leave_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    ok(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=isv"],
    );
    std::fs::create_dir(d.join("model")).unwrap();
    random_file(&d.join("model/big.xml"), 2000);
    // 320 MiB of sparse weights: long enough to interrupt in the middle.
    std::fs::File::create(d.join("model/big.bin"))
        .unwrap()
        .set_len(320 << 20)
        .unwrap();
    std::fs::create_dir(d.join("out")).unwrap();
    let protect = [
        "protect",
        "--keystore",
        "isv.ks",
        "--name",
        "big",
        "--chunk-size",
        "4096",
        "--out",
        "out/big.dat",
        "--master-license",
        "out/big.masterlic",
        "model/big.xml",
        "model/big.bin",
    ];
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let got = interrupt(d, &protect, &d.join("out"), signal);
        assert_eq!(got, Some(code), "protect {signal}");
        assert!(
            listing(&d.join("out")).is_empty(),
            "{:?}",
            listing(&d.join("out"))
        );
    }
    // A complete package, then interrupted decryptions into an existing and a new directory.
    ok(d, &protect);
    let before = listing(d);
    std::fs::create_dir(d.join("plain")).unwrap();
    let decrypt = |out_dir: &'static str| {
        [
            "decrypt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "out/big.masterlic",
            "--package",
            "out/big.dat",
            "--out-dir",
            out_dir,
        ]
    };
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let got = interrupt(d, &decrypt("plain"), &d.join("plain"), signal);
        assert_eq!(got, Some(code), "decrypt {signal}");
        assert!(
            listing(&d.join("plain")).is_empty(),
            "plaintext left: {:?}",
            listing(&d.join("plain"))
        );
    }
    // A directory decrypt created is removed again when interrupted.
    std::fs::remove_dir(d.join("plain")).unwrap();
    let watch = d.join("fresh");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovsatool"))
        .current_dir(d)
        .args(decrypt("fresh"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !std::fs::read_dir(&watch).is_ok_and(|mut r| r.next().is_some()) {
        assert!(child.try_wait().unwrap().is_none());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(
        listing(d),
        before,
        "the new output directory must be removed"
    );
}

/// The bytes of every file in `dir` (to prove a refused run changed nothing).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .filter(|n| d_is_file(&dir.join(n)))
        .map(|n| {
            let b = std::fs::read(dir.join(&n)).unwrap();
            (n, b)
        })
        .collect()
}

fn d_is_file(p: &Path) -> bool {
    p.is_file()
}

#[test]
fn outputs_are_checked_against_each_other_and_the_inputs_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    owner_setup(d);
    random_file(&d.join("m.onnx"), 5000);
    std::fs::write(d.join("pass"), "correct horse battery\n").unwrap();
    let refused = |args: &[&str], want: &str| {
        let before = snapshot(d);
        let err = fails(d, args);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(snapshot(d), before, "{args:?} changed files");
    };
    // keygen: the passphrase file as the keystore.
    refused(
        &[
            "keygen",
            "--keystore",
            "pass",
            "--subject",
            "CN=x",
            "--encrypt",
            "--passphrase-file",
            "pass",
            "--force",
        ],
        "is the input --passphrase-file",
    );
    // protect: two outputs on one path, an output on the model (with --force), through another
    // spelling of the same path, and through a hard link.
    let protect = |out: &str, ml: &str| {
        vec![
            "protect".to_string(),
            "--keystore".into(),
            "isv.ks".into(),
            "--name".into(),
            "m".into(),
            "--out".into(),
            out.into(),
            "--master-license".into(),
            ml.into(),
            "--force".into(),
            "m.onnx".into(),
        ]
    };
    let strs = |v: &[String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (out, ml, want) in [
        ("x.dat", "x.dat", "are the same file"),
        ("x.dat", "./sub/../x.dat", "are the same file"),
        ("m.onnx", "m.masterlic", "is the input MODEL_FILE m.onnx"),
        ("./m.onnx", "m.masterlic", "is the input MODEL_FILE"),
        ("x.dat", "isv.ks", "is the input --keystore"),
        ("link.dat", "m.masterlic", "is the input MODEL_FILE"),
    ] {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        if out == "link.dat" {
            std::fs::hard_link(d.join("m.onnx"), d.join("link.dat")).unwrap();
        }
        let args = strs(&protect(out, ml));
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), want);
    }
    // licgen: over the keystore or the server certificate.
    for (out, want) in [("isv.ks", "--keystore"), ("srv.ks.crt", "--server-cert")] {
        refused(
            &[
                "licgen",
                "--keystore",
                "isv.ks",
                "--out",
                out,
                "--force",
                "--perpetual",
                "--server",
                "https://h:1",
                "--server-cert",
                "srv.ks.crt",
            ],
            want,
        );
    }
    // tcb: over its PCR file or the keystore.
    std::fs::write(d.join("pcrs.txt"), "sha256:\n  0 : 0x00\n").unwrap();
    for (out, want) in [
        ("pcrs.txt", "is the input --vtpm-pcrs-file"),
        ("isv.ks", "is the input --keystore"),
    ] {
        refused(
            &[
                "tcb",
                "--keystore",
                "isv.ks",
                "--out",
                out,
                "--force",
                "--vtpm-pcrs-file",
                "pcrs.txt",
            ],
            want,
        );
    }
    // sale: both outputs on one path; an output on an input.
    ok(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--out",
            "m.dat",
            "--master-license",
            "m.masterlic",
            "m.onnx",
        ],
    );
    let sale = |out: &str, reg: &str| {
        fails(
            d,
            &[
                "sale",
                "--registration-cert",
                "reg.ks.crt",
                "--keystore",
                "isv.ks",
                "--master-license",
                "m.masterlic",
                "--config",
                "30day.config",
                "--tcb",
                "vm.tcb",
                "--customer-cert",
                "cust.ks.crt",
                "--out",
                out,
                "--registration",
                reg,
                "--force",
            ],
        )
    };
    let before = snapshot(d);
    assert!(sale("x.lic", "x.lic").contains("are the same file"));
    assert!(sale("x.lic", "30day.config").contains("is the input --config"));
    assert!(sale("cust.ks.crt", "x.reg").contains("is the input --customer-cert"));
    assert_eq!(snapshot(d), before);
    // decrypt: a model file would land on the package itself.
    std::fs::create_dir(d.join("o")).unwrap();
    std::fs::copy(d.join("m.dat"), d.join("o/m.onnx")).unwrap();
    let before = snapshot(&d.join("o"));
    let err = fails(
        d,
        &[
            "decrypt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "m.masterlic",
            "--package",
            "o/m.onnx",
            "--out-dir",
            "o",
            "--force",
        ],
    );
    assert!(err.contains("is the input --package"), "{err}");
    assert_eq!(snapshot(&d.join("o")), before);
}

#[test]
fn huge_inputs_fail_fast_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    owner_setup(d);
    random_file(&d.join("m.onnx"), 5000);
    ok(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--out",
            "m.dat",
            "--master-license",
            "m.masterlic",
            "m.onnx",
        ],
    );
    let z = "/dev/zero";
    let licgen = |ks: &str, pass: Option<&str>, cert: &str, next: &str| {
        let mut v = vec![
            "licgen",
            "--keystore",
            ks,
            "--out",
            "z.config",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            cert,
            "--next-server-cert",
            next,
        ];
        if let Some(p) = pass {
            v.extend(["--passphrase-file", p]);
        }
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let sale = |ml: &str, cfg: &str, tcb: &str, cert: &str, ca: &str| {
        [
            "sale",
            "--registration-cert",
            "reg.ks.crt",
            "--keystore",
            "isv.ks",
            "--master-license",
            ml,
            "--config",
            cfg,
            "--tcb",
            tcb,
            "--customer-cert",
            cert,
            "--customer-ca",
            ca,
            "--out",
            "z.lic",
            "--registration",
            "z.reg",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    };
    let cases: Vec<Vec<String>> = vec![
        licgen(z, None, "srv.ks.crt", "srv.ks.crt"),
        licgen("isv.ks", Some(z), "srv.ks.crt", "srv.ks.crt"),
        licgen("isv.ks", None, z, "srv.ks.crt"),
        licgen("isv.ks", None, "srv.ks.crt", z),
        sale(z, "30day.config", "vm.tcb", "cust.ks.crt", "cust.ks.crt"),
        sale("m.masterlic", z, "vm.tcb", "cust.ks.crt", "cust.ks.crt"),
        sale(
            "m.masterlic",
            "30day.config",
            z,
            "cust.ks.crt",
            "cust.ks.crt",
        ),
        sale("m.masterlic", "30day.config", "vm.tcb", z, "cust.ks.crt"),
        sale("m.masterlic", "30day.config", "vm.tcb", "cust.ks.crt", z),
        ["keygen", "--keystore", "cust.ks", "--import-cert", z]
            .map(String::from)
            .to_vec(),
        [
            "keygen",
            "--keystore",
            "cust.ks",
            "--import-cert",
            "cust.ks.crt",
            "--chain",
            z,
        ]
        .map(String::from)
        .to_vec(),
        ["inspect", "--trust-ca", z, "cust.ks.crt"]
            .map(String::from)
            .to_vec(),
        ["inspect", z].map(String::from).to_vec(),
        [
            "check",
            "--keystore",
            "cust.ks",
            "--license",
            z,
            "--package",
            "m.dat",
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
        ]
        .map(String::from)
        .to_vec(),
        [
            "decrypt",
            "--keystore",
            "isv.ks",
            "--master-license",
            z,
            "--package",
            "m.dat",
            "--out-dir",
            "zz",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let err = fails(d, &args);
        assert!(
            start.elapsed().as_secs() < 10,
            "{args:?} took {:?}",
            start.elapsed()
        );
        assert!(
            err.contains("/dev/zero") && err.contains("larger than"),
            "{args:?}: {err}"
        );
    }
}

/// No Rust enum or struct Debug text in a user-facing message.
fn assert_plain(err: &str) {
    for bad in [
        "{",
        "::",
        "Der(",
        "KeyMismatch",
        "InvalidSignatureForPublicKey",
        "UnexpectedTag",
    ] {
        assert!(!err.contains(bad), "'{bad}' in: {err}");
    }
}

#[test]
fn wrong_artifact_kinds_are_named_with_what_was_expected() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    owner_setup(d);
    random_file(&d.join("m.onnx"), 5000);
    ok(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--out",
            "m.dat",
            "--master-license",
            "m.masterlic",
            "m.onnx",
        ],
    );
    ok(
        d,
        &[
            "sale",
            "--registration-cert",
            "reg.ks.crt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "m.masterlic",
            "--config",
            "30day.config",
            "--tcb",
            "vm.tcb",
            "--customer-cert",
            "cust.ks.crt",
            "--out",
            "m.lic",
            "--registration",
            "m.reg",
        ],
    );
    let licgen = |ks: &'static str, cert: &'static str| {
        vec![
            "licgen",
            "--keystore",
            ks,
            "--out",
            "w.config",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            cert,
        ]
    };
    let sale = |ml: &'static str, cfg: &'static str, tcb: &'static str, cert: &'static str| {
        vec![
            "sale",
            "--registration-cert",
            "reg.ks.crt",
            "--keystore",
            "isv.ks",
            "--master-license",
            ml,
            "--config",
            cfg,
            "--tcb",
            tcb,
            "--customer-cert",
            cert,
            "--out",
            "w.lic",
            "--registration",
            "w.reg",
        ]
    };
    let cases: Vec<(Vec<&str>, &str, &str, &str)> = vec![
        (
            licgen("m.lic", "srv.ks.crt"),
            "m.lic",
            "a customer license",
            "not a keystore",
        ),
        (
            licgen("isv.ks.crt", "srv.ks.crt"),
            "isv.ks.crt",
            "an X.509 certificate",
            "not a keystore",
        ),
        (
            licgen("isv.ks.csr", "srv.ks.crt"),
            "isv.ks.csr",
            "certificate signing request",
            "not a keystore",
        ),
        (
            licgen("isv.ks", "srv.ks"),
            "srv.ks",
            "a keystore",
            "not an X.509 certificate",
        ),
        (
            licgen("isv.ks", "m.masterlic"),
            "m.masterlic",
            "a master license",
            "not an X.509 certificate",
        ),
        (
            sale("30day.config", "30day.config", "vm.tcb", "cust.ks.crt"),
            "30day.config",
            "a license policy config",
            "not a master license",
        ),
        (
            sale("m.masterlic", "vm.tcb", "vm.tcb", "cust.ks.crt"),
            "vm.tcb",
            "a TCB reference",
            "not a license policy config",
        ),
        (
            sale("m.masterlic", "30day.config", "m.lic", "cust.ks.crt"),
            "m.lic",
            "a customer license",
            "not a TCB reference",
        ),
        (
            sale("m.masterlic", "30day.config", "vm.tcb", "cust.ks"),
            "cust.ks",
            "a keystore",
            "not an X.509 certificate",
        ),
        (
            sale("m.masterlic", "30day.config", "vm.tcb", "pcrs.txt"),
            "pcrs.txt",
            "PCR values",
            "not an X.509 certificate",
        ),
        (
            vec![
                "check",
                "--keystore",
                "cust.ks",
                "--license",
                "m.reg",
                "--package",
                "m.dat",
                "--tcti",
                "swtpm:port=1",
            ],
            "m.reg",
            "a license service registration",
            "not a customer license",
        ),
        (
            vec![
                "decrypt",
                "--keystore",
                "isv.ks",
                "--master-license",
                "m.masterlic",
                "--package",
                "m.masterlic",
                "--out-dir",
                "o",
            ],
            "m.masterlic",
            "a master license",
            "not an OVSA protected model package",
        ),
        (
            vec![
                "keygen",
                "--keystore",
                "cust.ks",
                "--import-cert",
                "cust.ks.csr",
            ],
            "cust.ks.csr",
            "certificate signing request",
            "not an X.509 certificate",
        ),
    ];
    for (args, file, is, expected) in cases {
        let err = fails(d, &args);
        assert!(
            err.contains(&format!("{file} is ")) && err.contains(is) && err.contains(expected),
            "{args:?}: {err}"
        );
        assert_plain(&err);
    }
    // A damaged certificate and keystore: plain words, not parser enums.
    std::fs::write(
        d.join("junk.crt"),
        [0x30, 0x82, 0x01, 0x00, 0xa0, 0x03, 0x02],
    )
    .unwrap();
    let err = fails(d, &licgen("isv.ks", "junk.crt"));
    assert!(err.contains("junk.crt"), "{err}");
    assert_plain(&err);
    let mut ks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("isv.ks")).unwrap()).unwrap();
    ks["private_key"]["pkcs8"] = "AAAA".into();
    std::fs::write(d.join("broken.ks"), ks.to_string()).unwrap();
    let err = fails(d, &licgen("broken.ks", "srv.ks.crt"));
    assert!(
        err.contains("broken.ks") && err.contains("damaged"),
        "{err}"
    );
    assert_plain(&err);
    ks["surprise"] = 1.into();
    std::fs::write(d.join("extra.ks"), ks.to_string()).unwrap();
    let err = fails(d, &licgen("extra.ks", "srv.ks.crt"));
    assert!(err.contains("extra.ks"), "{err}");
    assert_plain(&err);

    // An X.509 v1 customer certificate (openssl x509 -req without extensions) is named as the
    // problem, with the recipe.
    let run = |args: &[&str]| {
        let st = Command::new("openssl")
            .current_dir(d)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed for this test");
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca.key",
    ]);
    run(&[
        "req",
        "-new",
        "-x509",
        "-key",
        "ca.key",
        "-subj",
        "/CN=Test CA",
        "-days",
        "30",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "cust.ks.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-days",
        "30",
        "-out",
        "v1.crt",
    ]);
    let err = fails(d, &sale("m.masterlic", "30day.config", "vm.tcb", "v1.crt"));
    assert!(
        err.contains("v1.crt")
            && err.contains("X.509 version 1")
            && err.contains("-extfile")
            && err.contains("--import-cert"),
        "{err}"
    );
    let err = fails(
        d,
        &["keygen", "--keystore", "cust.ks", "--import-cert", "v1.crt"],
    );
    assert!(err.contains("X.509 version 1"), "{err}");
    let err = fails(d, &["inspect", "v1.crt"]);
    assert!(err.contains("X.509 version 1"), "{err}");
}

#[test]
fn small_usability_checks() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // --version.
    let out = ok(d, &["--version"]);
    assert!(
        out.starts_with("ovsatool ") && out.trim().len() > "ovsatool ".len(),
        "{out}"
    );
    // check's help says it spends a use, and documents --json.
    let help = ok(d, &["check", "--help"]);
    assert!(
        help.contains("use") && help.contains("--renew-only") && help.contains("--json"),
        "{help}"
    );
    assert!(help.contains("counts one use"), "{help}");
    // No ANSI colour codes when the streams are not terminals (usage errors, help, progress).
    let o = tool(d, &["protect", "--bogus"]);
    assert!(!o.status.success());
    for s in [&o.stdout, &o.stderr] {
        assert!(!s.contains(&0x1b), "ANSI escape in redirected output");
    }
    ok(
        d,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=isv"],
    );
    std::fs::File::create(d.join("w.bin"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    random_file(&d.join("w.xml"), 300);
    let o = tool(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "w",
            "--out",
            "w.dat",
            "--master-license",
            "w.masterlic",
            "w.xml",
            "w.bin",
        ],
    );
    assert!(o.status.success());
    for s in [&o.stdout, &o.stderr] {
        assert!(!s.contains(&0x1b), "ANSI escape in redirected output");
    }

    // licgen: windows in the past, empty windows, a lone --not-before.
    let licgen = |extra: &[&str]| {
        let mut v = vec![
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "c.config",
            "--server",
            "https://h:1",
            "--server-cert",
            "isv.ks.crt",
        ];
        v.extend_from_slice(extra);
        fails(d, &v)
    };
    let err = licgen(&["--not-after", "2001-01-01"]);
    assert!(err.contains("in the past"), "{err}");
    let err = licgen(&["--not-before", "2100-01-02", "--not-after", "2100-01-01"]);
    assert!(err.contains("not before --not-after"), "{err}");
    let err = licgen(&["--not-before", "2100-01-02", "--days", "3"]);
    assert!(err.contains("--not-after"), "{err}");
    assert!(!d.join("c.config").exists());

    // protect: empty and non-model inputs, names with '/' or '..'.
    let protect = |name: &str, files: &[&str]| {
        let mut v = vec![
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            name,
            "--out",
            "p.dat",
            "--master-license",
            "p.masterlic",
        ];
        v.extend_from_slice(files);
        let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        fails(d, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    std::fs::write(d.join("empty.onnx"), b"").unwrap();
    let err = protect("p", &["empty.onnx"]);
    assert!(err.contains("empty.onnx is empty"), "{err}");
    std::fs::write(d.join("notes.onnx"), b"these are my notes").unwrap();
    let err = protect("p", &["notes.onnx"]);
    assert!(
        err.contains("notes.onnx is a text file, not an ONNX model"),
        "{err}"
    );
    std::fs::write(d.join("fake.xml"), b"{\"not\": \"xml\"}").unwrap();
    let err = protect("p", &["fake.xml", "w.bin"]);
    assert!(err.contains("not an OpenVINO IR model"), "{err}");
    random_file(&d.join("ok.onnx"), 1000);
    for name in ["../etc", "a/b", "x..y", ".."] {
        let err = protect(name, &["ok.onnx"]);
        assert!(err.contains("is not a plain name"), "{name}: {err}");
    }
    let err = fails(
        d,
        &[
            "licgen",
            "--keystore",
            "isv.ks",
            "--name",
            "../x",
            "--out",
            "c.config",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            "isv.ks.crt",
        ],
    );
    assert!(err.contains("is not a plain name"), "{err}");
    assert!(!d.join("p.dat").exists() && !d.join("p.masterlic").exists());

    // A keystore readable by others warns; the run still works.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("isv.ks"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = tool(
        d,
        &[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "c.config",
            "--perpetual",
            "--server",
            "https://h:1",
            "--server-cert",
            "isv.ks.crt",
        ],
    );
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600 isv.ks"),
        "{err}"
    );

    // keygen: a 1-character passphrase is refused; --passphrase-file without --encrypt warns.
    std::fs::write(d.join("short"), "x\n").unwrap();
    let err = fails(
        d,
        &[
            "keygen",
            "--keystore",
            "s.ks",
            "--subject",
            "CN=s",
            "--encrypt",
            "--passphrase-file",
            "short",
        ],
    );
    assert!(err.contains("at least 8"), "{err}");
    assert!(!d.join("s.ks").exists() && !d.join("s.ks.crt").exists());
    std::fs::write(d.join("long"), "a long enough passphrase\n").unwrap();
    let o = tool(
        d,
        &[
            "keygen",
            "--keystore",
            "n.ks",
            "--subject",
            "CN=n",
            "--passphrase-file",
            "long",
        ],
    );
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ignored without --encrypt"), "{err}");
}

/// Text from certificates and artifacts (here a customer subject) carrying a newline, ESC
/// sequences, a C1 control and a bidi override cannot forge output lines or drive the terminal:
/// `keygen`, `sale`, `inspect` and error messages print it escaped, one line per
/// event, and `inspect`'s JSON still parses back to the exact text.
#[test]
fn customer_text_cannot_forge_output_lines() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    owner_setup(d);
    random_file(&d.join("model.xml"), 300);
    random_file(&d.join("model.bin"), 1000);
    let forged =
        "sold license 00000000-0000-0000-0000-000000000000 for 'm' version 1 to 'CN=forged'";
    let subject = format!("CN=evil\n{forged}\x1b[31m\u{9b}2J\u{202e}gnp.exe");
    // No raw control character or bidi override (a newline only ends a line).
    let clean = |what: &str, out: &str| {
        assert!(
            !out.chars().any(|c| (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "{what}: raw control characters in {out:?}"
        );
        assert_eq!(
            out.lines().filter(|l| l.contains("CN=forged")).count(),
            out.matches("CN=forged").count(),
            "{what}: {out}"
        );
    };
    let made = ok(
        d,
        &["keygen", "--keystore", "evil.ks", "--subject", &subject],
    );
    clean("keygen", &made);
    assert_eq!(made.lines().count(), 2, "{made}");
    assert!(made.contains("CN=evil\\nsold license"), "{made}");
    let protected = ok(
        d,
        &[
            "controlAccess",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--version",
            "1",
            "--out",
            "m.dat",
            "--master-license",
            "m.masterlic",
            "model.xml",
            "model.bin",
        ],
    );
    clean("controlAccess", &protected);
    let sold = ok(
        d,
        &[
            "sale",
            "--registration-cert",
            "reg.ks.crt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "m.masterlic",
            "--config",
            "30day.config",
            "--tcb",
            "vm.tcb",
            "--customer-cert",
            "evil.ks.crt",
            "--out",
            "m.lic",
            "--registration",
            "m.reg",
        ],
    );
    clean("sale", &sold);
    assert_eq!(sold.lines().count(), 3, "{sold}");
    assert!(
        sold.lines()
            .next()
            .unwrap()
            .contains("\\x1b[31m\\x9b2J\\u{202e}gnp.exe"),
        "{sold}"
    );
    for file in ["m.lic", "evil.ks.crt"] {
        let out = ok(d, &["inspect", file]);
        clean(file, &out);
        assert!(out.contains("\\u001b"), "{file}: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let text = v.to_string();
        assert!(
            text.contains("\\u001b") && v.to_string().contains("\\n"),
            "{file}: {text}"
        );
    }
    let lic: serde_json::Value = serde_json::from_str(&ok(d, &["inspect", "m.lic"])).unwrap();
    let sold_to = lic["details"]["customer"]["subject"].as_str().unwrap();
    assert!(sold_to.starts_with("CN=evil\nsold license"), "{lic}");
    assert!(
        sold_to.ends_with("\x1b[31m\u{9b}2J\u{202e}gnp.exe"),
        "{lic}"
    );
    let cert: serde_json::Value =
        serde_json::from_str(&ok(d, &["inspect", "evil.ks.crt"])).unwrap();
    assert!(
        cert["details"]["subject"]
            .as_str()
            .unwrap()
            .contains("\u{9b}2J\u{202e}gnp.exe"),
        "{cert}"
    );
    // Error messages quoting the user's text are one line too.
    let err = fails(
        d,
        &[
            "keygen",
            "--keystore",
            "x.ks",
            "--subject",
            "CN=a, Q\n\x1b[31m=b",
        ],
    );
    clean("keygen error", &err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Q\\n\\x1b[31M"), "{err}");
}
