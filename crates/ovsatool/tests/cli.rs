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
            reg_json.contains("<redacted: secret>"),
            "registration share must not be printed"
        );
        // Nor when the signature fails: a tampered registration still carries the real share.
        let mut raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(&reg)).unwrap()).unwrap();
        let share = raw["body"]["key_share"].as_str().unwrap().to_string();
        raw["body"]["model_version"] = "tampered".into();
        std::fs::write(d.join("tampered.reg"), raw.to_string()).unwrap();
        let o = tool(d, &["inspect", "tampered.reg"]);
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "{shown}");
        assert!(
            shown.contains("INVALID") && shown.contains("<redacted: secret>"),
            "{shown}"
        );
        assert!(!shown.contains(&share), "share printed: {shown}");
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
}
