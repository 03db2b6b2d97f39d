//! The `ovsa-license-server` binary: admin commands on a real SQLite database, configuration
//! errors, and a served instance answering /healthz over TLS 1.3.

use std::path::Path;
use std::process::{Command, Output};

use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Keystore, KeystoreProtection};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{
    sell, LicenseConfig, MasterLicense, PcrBank, PcrSet, PcrValue, Policy, ServiceEndpoint,
    TcbReference, Validity,
};
use ovsa_core::package::{classify_inputs, protect, ProtectOptions};

fn server(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"))
        .current_dir(dir)
        .env_remove("OVSA_LS_DB")
        .env_remove("OVSA_LS_CONFIG")
        .args(args)
        .output()
        .expect("run ovsa-license-server")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = server(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let o = server(dir, args);
    assert!(!o.status.success(), "{args:?} unexpectedly succeeded");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Writes isv.crt, mallory.crt and a signed registration l.reg; returns the license GUID.
fn registration(d: &Path) -> String {
    let ks = |s: &str| {
        Keystore::generate(KeyAlgorithm::EcdsaP256, s, 30)
            .unwrap()
            .0
    };
    let (isv, customer, mallory) = (ks("CN=isv"), ks("CN=customer"), ks("CN=mallory"));
    std::fs::write(d.join("isv.crt"), isv.certificate().to_pem()).unwrap();
    std::fs::write(d.join("mallory.crt"), mallory.certificate().to_pem()).unwrap();
    std::fs::write(d.join("m.onnx"), [1u8; 100]).unwrap();
    let p = protect(
        &classify_inputs(&[d.join("m.onnx")]).unwrap(),
        &ProtectOptions {
            model_name: "m".into(),
            model_version: "1".into(),
            description: String::new(),
            chunk_size: 4096,
            overwrite: true,
        },
        &isv,
        &d.join("m.dat"),
        &mut |_| {},
    )
    .unwrap();
    let master = MasterLicense::create(&p, &isv).unwrap();
    let config = Signed::sign(
        LicenseConfig {
            name: "t".into(),
            policy: Policy {
                validity: Validity::DaysFromFirstUse { days: 7 },
                usage_limit: Some(5),
                instance_limit: None,
            },
            lease_seconds: 60,
            services: vec![ServiceEndpoint {
                url: "https://127.0.0.1:1".into(),
                pins: vec![Pin([0; 32])],
            }],
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    let tcb = Signed::sign(
        TcbReference {
            name: "t".into(),
            vtpm: PcrSet::new(
                PcrBank::Sha256,
                vec![PcrValue {
                    index: 0,
                    value: vec![0; 32],
                }],
            )
            .unwrap(),
            host: None,
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    let sale = sell(&SaleRequest {
        isv: &isv,
        master: &master,
        config: &config,
        tcb: &tcb,
        customer: customer.certificate(),
    })
    .unwrap();
    sale.registration
        .save(&d.join("l.reg"), 0o600, true)
        .unwrap();
    sale.license.body().license_guid.to_string()
}

#[test]
fn admin_commands_on_sqlite() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let guid = registration(d);
    let db = "sqlite:licenses.db";

    let err = fails(d, &["--db", db, "license", "add", "l.reg"]);
    assert!(err.contains("--trust-isv"), "{err}");
    let err = fails(
        d,
        &[
            "--db",
            db,
            "license",
            "add",
            "l.reg",
            "--trust-isv",
            "mallory.crt",
        ],
    );
    assert!(err.contains("not a trusted ISV"), "{err}");
    let out = ok(
        d,
        &[
            "--db",
            db,
            "license",
            "add",
            "l.reg",
            "--trust-isv",
            "isv.crt",
        ],
    );
    assert!(out.contains(&guid), "{out}");
    let err = fails(
        d,
        &[
            "--db",
            db,
            "license",
            "add",
            "l.reg",
            "--trust-isv",
            "isv.crt",
        ],
    );
    assert!(err.contains("already registered"), "{err}");

    let list = ok(d, &["--db", db, "license", "list"]);
    assert!(list.contains(&guid) && list.contains("active"), "{list}");
    let show = ok(d, &["--db", db, "license", "show", &guid, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["uses"], 0);
    assert!(!show.contains("key_share"), "the share must never be shown");
    ok(d, &["--db", db, "license", "revoke", &guid]);
    assert!(ok(d, &["--db", db, "license", "list"]).contains("revoked"));
    ok(d, &["--db", db, "license", "reinstate", &guid]);
    assert!(ok(d, &["--db", db, "license", "list"]).contains("active"));
    let audit = ok(d, &["--db", db, "audit", "--license", &guid]);
    assert!(
        audit.contains("revoke") && audit.contains("add") && audit.contains("reinstate"),
        "{audit}"
    );
    let err = fails(
        d,
        &[
            "--db",
            db,
            "license",
            "show",
            "00000000-0000-0000-0000-000000000000",
        ],
    );
    assert!(err.contains("not registered"), "{err}");
}

#[test]
fn configuration_errors_are_clear() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let err = fails(d, &["--db", "mysql://x", "license", "list"]);
    assert!(err.contains("sqlite:PATH"), "{err}");
    let err = fails(
        d,
        &["--db", "sqlite:/nonexistent-dir/x.db", "license", "list"],
    );
    assert!(
        err.contains("SQLite") || err.contains("nonexistent"),
        "{err}"
    );
    let err = fails(d, &["--db", "sqlite:x.db", "serve"]);
    assert!(err.contains("--tls-cert"), "{err}");
    std::fs::write(d.join("bad.toml"), "listen = 5\n").unwrap();
    let err = fails(d, &["--config", "bad.toml", "serve"]);
    assert!(err.contains("bad.toml"), "{err}");
    std::fs::write(d.join("unknown.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let err = fails(d, &["--config", "unknown.toml", "serve"]);
    assert!(err.contains("lisen"), "{err}");
    let ks = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=s", 30)
        .unwrap()
        .0;
    std::fs::write(d.join("s.crt"), ks.certificate().to_pem()).unwrap();
    ks.save(&d.join("s.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let err = fails(
        d,
        &[
            "--db",
            "sqlite:x.db",
            "serve",
            "--tls-cert",
            "s.crt",
            "--tls-key",
            "s.ks",
        ],
    );
    assert!(err.contains("--trust-ek-ca"), "{err}");
    let err = fails(
        d,
        &[
            "--db",
            "sqlite:x.db",
            "serve",
            "--tls-cert",
            "s.crt",
            "--tls-key",
            "s.crt",
            "--trust-ek-ca",
            "s.crt",
        ],
    );
    assert!(err.contains("s.crt"), "{err}");
}

/// `serve` from a TOML file plus environment variables: it answers /healthz over mutual TLS 1.3,
/// and SIGTERM stops it gracefully (exit status 0).
#[test]
fn serve_from_toml_and_env_answers_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let gen = |s: &str| {
        Keystore::generate(KeyAlgorithm::EcdsaP256, s, 30)
            .unwrap()
            .0
    };
    let (server_ks, client_ks, ek_ca) = (gen("CN=server"), gen("CN=client"), gen("CN=ek-ca"));
    std::fs::write(d.join("s.crt"), server_ks.certificate().to_pem()).unwrap();
    server_ks
        .save(&d.join("s.ks"), &KeystoreProtection::None, true)
        .unwrap();
    std::fs::write(d.join("ek-ca.pem"), ek_ca.certificate().to_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("ls.toml"),
        format!("listen = \"127.0.0.1:{port}\"\ntls_cert = \"s.crt\"\nsession_ttl_seconds = 30\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"))
        .current_dir(d)
        .env("OVSA_LS_CONFIG", "ls.toml")
        .env("OVSA_LS_DB", "sqlite:served.db")
        .env("OVSA_LS_TLS_KEY", "s.ks")
        .env("OVSA_LS_TRUST_EK_CA", "ek-ca.pem")
        .env("OVSA_LS_MAX_CONNECTIONS", "8")
        .arg("serve")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ovsa-license-server serve");

    let config = Arc::new(
        ovsa_client::tls::client_config(&client_ks, &[Pin(server_ks.certificate().spki_pin())])
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let attempt = (|| -> std::io::Result<String> {
            let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
            tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
            let conn =
                rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
                    .map_err(std::io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            Ok(out)
        })();
        match attempt {
            Ok(out) if !out.is_empty() => break out,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "server did not answer: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(d.join("served.db").exists());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.contains("shutting down"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
