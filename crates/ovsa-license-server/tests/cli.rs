//! The `ovsa-license-server` binary: admin commands on a real SQLite database, configuration
//! errors, and a served instance answering /healthz over TLS 1.3.

use std::path::Path;
use std::process::{Command, Output};

use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Certificate, Keystore, KeystoreProtection};
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
        // The registration keystore `registrations` writes beside the sold registrations.
        .env("OVSA_LS_REGISTRATION_KEY", "registration.ks")
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
    let customer = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=customer", 30)
        .unwrap()
        .0;
    registrations(d, &["l.reg"], customer.certificate()).remove(0)
}

/// Writes isv.crt, mallory.crt and one signed registration per name (each a new license for
/// `customer` of the same model); returns the license GUIDs.
fn registrations(d: &Path, names: &[&str], customer: &Certificate) -> Vec<String> {
    let ks = |s: &str| {
        Keystore::generate(KeyAlgorithm::EcdsaP256, s, 30)
            .unwrap()
            .0
    };
    let (isv, mallory) = (ks("CN=isv"), ks("CN=mallory"));
    // The service's registration key (one per directory: later calls reuse it).
    let reg_path = d.join("registration.ks");
    let service = match std::fs::read(&reg_path) {
        Ok(bytes) => Keystore::from_bytes(&bytes, None).unwrap(),
        Err(_) => {
            let k = ks("CN=registration");
            k.save(&reg_path, &KeystoreProtection::None, false).unwrap();
            k
        }
    };
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
            grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
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
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    names
        .iter()
        .map(|name| {
            let sale = sell(&SaleRequest {
                isv: &isv,
                master: &master,
                config: &config,
                tcb: &tcb,
                customer,
                service: service.certificate(),
            })
            .unwrap();
            sale.registration.save(&d.join(name), 0o600, true).unwrap();
            sale.license.body().license_guid.to_string()
        })
        .collect()
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
    // An operator certificate file that holds no certificate is named, before anything starts.
    std::fs::write(d.join("notes.txt"), "not a certificate\n").unwrap();
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
            "--trust-ek-ca",
            "s.crt",
            "--metrics-client-cert",
            "notes.txt",
        ],
    );
    assert!(
        err.contains("--metrics-client-cert") && err.contains("notes.txt"),
        "{err}"
    );
}

/// `serve` from a TOML file plus environment variables: it answers /healthz over mutual TLS 1.3,
/// and SIGTERM stops it gracefully (exit status 0).
#[test]
fn serve_from_toml_and_env_answers_and_stops_on_sigterm() {
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
    // The client is an operator (only registered customers and operators pass the handshake).
    std::fs::write(d.join("client.crt"), client_ks.certificate().to_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("ls.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ntls_cert = \"s.crt\"\nsession_ttl_seconds = 30\n\
             metrics_client_cert = [\"client.crt\"]\n"
        ),
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

    let reply = healthz(&mut child, &client_ks, &server_ks, "127.0.0.1", port);
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
    assert!(
        !err.contains('\x1b'),
        "colour codes in a log that is not a terminal: {err:?}"
    );
}

/// GET /healthz over mutual TLS 1.3 from `host:port`, retried until the server answers (30 s).
fn healthz(
    child: &mut std::process::Child,
    client_ks: &Keystore,
    server_ks: &Keystore,
    host: &str,
    port: u16,
) -> String {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let config = Arc::new(
        ovsa_client::tls::client_config(client_ks, &[Pin(server_ks.certificate().spki_pin())])
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let tcp = std::net::TcpStream::connect((host, port))?;
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
            Ok(out) if !out.is_empty() => return out,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("server did not answer: {err}");
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `serve --passphrase-file` opens a passphrase-protected keystore (without it the error says
/// how to give one), and `--listen localhost:PORT` is resolved.
#[test]
fn serve_with_passphrase_file_and_host_name() {
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
        .save(
            &d.join("s.ks"),
            &KeystoreProtection::Passphrase(zeroize::Zeroizing::new("correct horse".into())),
            true,
        )
        .unwrap();
    std::fs::write(d.join("ek-ca.pem"), ek_ca.certificate().to_pem()).unwrap();
    std::fs::write(d.join("pass.txt"), "correct horse\n").unwrap();
    // The client is an operator (only registered customers and operators pass the handshake).
    std::fs::write(d.join("client.crt"), client_ks.certificate().to_pem()).unwrap();
    std::fs::write(d.join("wrong.txt"), "wrong\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("localhost:{port}");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "--db",
            "sqlite:served.db",
            "serve",
            "--listen",
            listen.as_str(),
            "--tls-cert",
            "s.crt",
            "--tls-key",
            "s.ks",
            "--trust-ek-ca",
            "ek-ca.pem",
            "--metrics-client-cert",
            "client.crt",
        ];
        a.extend(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"))
            .current_dir(d)
            .env_remove("OVSA_LS_DB")
            .env_remove("OVSA_LS_CONFIG")
            .env_remove("OVSA_KEYSTORE_PASSPHRASE")
            .args(a)
            .output()
            .unwrap()
    };
    let o = run(args(&[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--passphrase-file"),
        "{err}"
    );
    let o = run(args(&["--passphrase-file", "wrong.txt"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--tls-key s.ks"),
        "{err}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"))
        .current_dir(d)
        .env_remove("OVSA_LS_DB")
        .env_remove("OVSA_LS_CONFIG")
        .env_remove("OVSA_KEYSTORE_PASSPHRASE")
        .args(args(&["--passphrase-file", "pass.txt"]))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ovsa-license-server serve");
    let reply = healthz(&mut child, &client_ks, &server_ks, "localhost", port);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Issue 8: the new-user sweep.

use ovsa_license_server::store::{AuditEntry, Store};

/// Appends audit entries to `sqlite:FILE` in `d` through the library (as the service would).
fn append_audit(d: &Path, db_file: &str, entries: &[AuditEntry]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&format!("sqlite:{}", d.join(db_file).display()))
            .await
            .unwrap();
        for e in entries {
            store.append_audit(e).await.unwrap();
        }
    });
}

fn audit_entry(action: &str, client: &str, message: &str) -> AuditEntry {
    AuditEntry {
        at: time::OffsetDateTime::now_utc(),
        license_guid: None,
        client: client.into(),
        action: action.into(),
        purpose: None,
        result: "issued".into(),
        reason: None,
        message: message.into(),
        instance_id: None,
    }
}

/// A self-signed rcgen certificate (P-256) with this common name, DER.
fn rcgen_cert(common_name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn version_and_defaults_in_help() {
    let t = tempfile::tempdir().unwrap();
    let v = ok(t.path(), &["--version"]);
    assert_eq!(
        v.trim(),
        format!("ovsa-license-server {}", env!("CARGO_PKG_VERSION"))
    );
    let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = words(ok(t.path(), &["serve", "--help"]));
    for default in [
        "[default: 127.0.0.1:8443]",
        "[default: 60]",
        "[default: 10]",
        "[default: 256]",
        "[default: sqlite:licenses.db]",
        "--passphrase-file",
    ] {
        assert!(help.contains(default), "{default} missing from:\n{help}");
    }
    let help = words(ok(t.path(), &["audit", "--help"]));
    assert!(
        help.contains("[default: 50]") && help.contains("0 shows them all"),
        "{help}"
    );
}

/// `license list|show|audit` (and revoke/reinstate) never create a database: a mistyped --db is
/// an error naming the path and how to create one, and leaves no file behind. A database file
/// made read-only (0444) is still listed, and reading it leaves it byte for byte unchanged
/// (root bypasses file modes, so that is what holds regardless of who runs the test).
#[test]
fn read_commands_never_create_or_change_a_database() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let guid = registration(d);
    for args in [
        vec!["license", "list"],
        vec!["license", "show", guid.as_str()],
        vec!["audit"],
        vec!["license", "revoke", guid.as_str()],
        vec!["license", "reinstate", guid.as_str()],
    ] {
        let mut full = vec!["--db", "sqlite:licneses.db"];
        full.extend(&args);
        let err = fails(d, &full);
        assert!(
            err.contains("licneses.db")
                && err.contains("does not exist")
                && err.contains("license add")
                && err.contains("serve"),
            "{args:?}: {err}"
        );
        assert!(!d.join("licneses.db").exists(), "{args:?} created the file");
    }

    let db = "sqlite:licenses.db";
    ok(
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
    let file = d.join("licenses.db");
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&file, perms).unwrap();
    let before = std::fs::read(&file).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let list = ok(d, &["--db", db, "license", "list"]);
    assert!(list.contains(&guid), "{list}");
    assert!(ok(d, &["--db", db, "license", "show", &guid]).contains(&guid));
    assert!(ok(d, &["--db", db, "audit"]).contains("add"));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "a read command wrote"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    // A file that is not a database is named, not silently "empty".
    std::fs::write(d.join("notes.txt"), "not a database\n").unwrap();
    let err = fails(d, &["--db", "sqlite:notes.txt", "license", "list"]);
    assert!(
        err.contains("notes.txt") && err.contains("not an SQLite database"),
        "{err}"
    );
}

/// The red team's "stolen .reg": a registration's share is sealed to the service's
/// registration key; `license add` with any other key (or none) imports nothing and says why.
#[test]
fn registrations_open_only_with_the_service_registration_key() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    registration(d);
    let thief = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=thief", 30)
        .unwrap()
        .0;
    thief
        .save(&d.join("thief.ks"), &KeystoreProtection::None, false)
        .unwrap();
    let db = "sqlite:licenses.db";
    let add = [
        "--db",
        db,
        "license",
        "add",
        "--trust-isv",
        "isv.crt",
        "l.reg",
    ];
    let err = fails(d, &[&add[..], &["--registration-key", "thief.ks"]].concat());
    assert!(
        err.contains("nothing imported")
            && err.contains("l.reg")
            && err.contains("sealed to the registration key"),
        "{err}"
    );
    assert!(!d.join("licenses.db").exists(), "a database was created");
    // Without any registration key: the setting is named in every layer.
    let o = Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"))
        .current_dir(d)
        .env_remove("OVSA_LS_REGISTRATION_KEY")
        .env_remove("OVSA_LS_CONFIG")
        .args(add)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--registration-key") && err.contains("OVSA_LS_REGISTRATION_KEY"),
        "{err}"
    );
    // With the service's key (from OVSA_LS_REGISTRATION_KEY, as the helper sets): imported.
    ok(d, &add);
}

#[test]
fn add_checks_every_file_before_importing_any() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let customer = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=customer", 30)
        .unwrap()
        .0;
    let guids = registrations(d, &["a.reg", "b.reg"], customer.certificate());
    std::fs::write(d.join("bad.reg"), "{\"ovsa\": \"nope\"}").unwrap();
    let db = "sqlite:licenses.db";
    let add = |files: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["--db", db, "license", "add", "--trust-isv", "isv.crt"];
        args.extend(files);
        args
    };
    let err = fails(d, &add(&["a.reg", "bad.reg", "b.reg"]));
    assert!(
        err.contains("nothing imported") && err.contains("bad.reg") && !err.contains("a.reg:"),
        "{err}"
    );
    assert!(!d.join("licenses.db").exists(), "a database was created");
    // The same license twice in one command.
    let err = fails(d, &add(&["a.reg", "a.reg"]));
    assert!(
        err.contains("nothing imported") && err.contains("also in"),
        "{err}"
    );
    // /dev/zero as a registration: fails at once, naming it.
    let start = std::time::Instant::now();
    let err = fails(d, &add(&["/dev/zero"]));
    assert!(
        err.contains("registration /dev/zero") && err.contains("larger than"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));

    ok(d, &add(&["a.reg"]));
    let err = fails(d, &add(&["b.reg", "a.reg"]));
    assert!(
        err.contains("nothing imported")
            && err.contains("a.reg")
            && err.contains("already registered"),
        "{err}"
    );
    let list = ok(d, &["--db", db, "license", "list"]);
    assert!(
        list.contains(&guids[0]) && !list.contains(&guids[1]),
        "{list}"
    );
    ok(d, &add(&["b.reg"]));
    let list = ok(d, &["--db", db, "license", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["license_guid"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(guids.iter().all(|g| listed.contains(&g.as_str())), "{list}");
    assert_eq!(v[0]["state"], "active");
}

#[test]
fn revoke_and_reinstate_say_when_nothing_changed() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let guid = registration(d);
    let db = "sqlite:licenses.db";
    ok(
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
    let out = ok(d, &["--db", db, "license", "reinstate", &guid]);
    assert!(out.contains("not revoked; nothing changed"), "{out}");
    let out = ok(d, &["--db", db, "license", "revoke", &guid]);
    assert!(out.starts_with("revoked license"), "{out}");
    let out = ok(d, &["--db", db, "license", "revoke", &guid]);
    assert!(
        out.contains("already revoked") && out.contains("nothing changed"),
        "{out}"
    );
    let audit = ok(d, &["--db", db, "audit", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let actions: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "add"], "{audit}");
    let out = ok(d, &["--db", db, "license", "reinstate", &guid]);
    assert!(out.starts_with("reinstated license"), "{out}");
}

/// `audit --limit 0` shows every entry; the table's columns line up whatever the length of the
/// action (host_ak_challenge) or client; `--json` gives the same entries.
#[test]
fn audit_limit_zero_json_and_aligned_columns() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let guid = registration(d);
    let db = "sqlite:licenses.db";
    ok(
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
    append_audit(
        d,
        "licenses.db",
        &[
            audit_entry(
                "host_ak_challenge",
                "CN=a much longer client name (sha256:00)",
                "x",
            ),
            audit_entry("host_ak_enroll", "CN=c", "enrolled"),
        ],
    );
    ok(d, &["--db", db, "license", "revoke", &guid]);
    let lines = |out: &str| out.lines().map(str::to_string).collect::<Vec<_>>();
    let one = lines(&ok(d, &["--db", db, "audit", "--limit", "1"]));
    assert_eq!(one.len(), 2, "{one:?}");
    let all = lines(&ok(d, &["--db", db, "audit", "--limit", "0"]));
    assert_eq!(all.len(), 5, "{all:?}");
    let header = &all[0];
    for column in [
        "action", "result", "purpose", "reason", "license", "client", "message",
    ] {
        let at = header.find(column).unwrap();
        for row in &all[1..] {
            let b = row.as_bytes();
            assert!(
                b.len() > at && b[at - 2] == b' ' && b[at - 1] == b' ' && b[at] != b' ',
                "column {column} does not line up:\n{}",
                all.join("\n")
            );
        }
    }
    let json = ok(d, &["--db", db, "audit", "--limit", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(v[2]["action"], "host_ak_challenge");
}

/// A customer certificate whose subject holds a newline and terminal escapes cannot forge an
/// output line or drive the terminal through `license list|show|audit`.
#[test]
fn customer_text_cannot_forge_output_lines() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let forged = "00000000-0000-0000-0000-000000000000  m v1  0  active  CN=forged";
    let evil = format!("evil\n{forged}\x1b[2J\x1b]0;title\x07\u{9b}31m\r");
    let customer = Certificate::from_der(&rcgen_cert(&evil)).unwrap();
    assert!(customer.subject().contains('\n'), "{}", customer.subject());
    let guid = registrations(d, &["l.reg"], &customer).remove(0);
    let db = "sqlite:licenses.db";
    let added = ok(
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
    append_audit(
        d,
        "licenses.db",
        &[audit_entry(
            "attest",
            &format!("{} (sha256:00)", customer.subject()),
            &evil,
        )],
    );
    let clean = |what: &str, out: &str| {
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{what}: raw control characters in {out:?}"
        );
    };
    clean("add", &added);
    assert_eq!(added.lines().count(), 1, "{added}");
    let list = ok(d, &["--db", db, "license", "list"]);
    clean("list", &list);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.contains("CN=evil\\n00000000") && list.contains("\\x1b[2J"),
        "{list}"
    );
    let show = ok(d, &["--db", db, "license", "show", &guid]);
    clean("show", &show);
    assert_eq!(
        show.lines().filter(|l| l.contains("forged")).count(),
        1,
        "{show}"
    );
    let audit = ok(d, &["--db", db, "audit"]);
    clean("audit", &audit);
    assert_eq!(audit.lines().count(), 3, "{audit}");
    // JSON keeps the exact text (escaped), and parses back to it.
    for args in [
        vec!["license", "show", guid.as_str(), "--json"],
        vec!["license", "list", "--json"],
        vec!["audit", "--json"],
    ] {
        let mut full = vec!["--db", db];
        full.extend(&args);
        let out = ok(d, &full);
        clean("json", &out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(out.contains("\\u001b[2J"), "{out}");
        let text = v.to_string();
        assert!(text.contains("\\n00000000"), "{args:?}: {text}");
    }
}

/// An EK CA file with no self-signed certificate (it would anchor nothing) is refused at
/// `serve` start-up, naming the file; root and intermediate in separate files are accepted.
#[test]
fn ek_ca_file_without_a_root_is_refused_at_startup() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca("vTPM root CA");
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root_params, root_key);
    let inter_key = KeyPair::generate().unwrap();
    let inter = ca("vTPM intermediate CA")
        .signed_by(&inter_key, &issuer)
        .unwrap();
    std::fs::write(d.join("root.pem"), root.pem()).unwrap();
    std::fs::write(d.join("inter.pem"), inter.pem()).unwrap();
    std::fs::write(d.join("empty.pem"), "no certificates here\n").unwrap();
    let ks = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=s", 30)
        .unwrap()
        .0;
    std::fs::write(d.join("s.crt"), ks.certificate().to_pem()).unwrap();
    ks.save(&d.join("s.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let serve = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec![
            "--db",
            "sqlite:x.db",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "s.crt",
            "--tls-key",
            "s.ks",
        ];
        args.extend(extra);
        args
    };
    let err = fails(d, &serve(&["--trust-ek-ca", "inter.pem"]));
    assert!(
        err.contains("--trust-ek-ca inter.pem")
            && err.contains("self-signed")
            && err.contains("vTPM root CA"),
        "{err}"
    );
    let err = fails(
        d,
        &serve(&[
            "--trust-ek-ca",
            "root.pem",
            "--trust-host-ek-ca",
            "inter.pem",
        ]),
    );
    assert!(err.contains("--trust-host-ek-ca inter.pem"), "{err}");
    let err = fails(d, &serve(&["--trust-ek-ca", "empty.pem"]));
    assert!(
        err.contains("--trust-ek-ca empty.pem") && err.contains("no CERTIFICATE"),
        "{err}"
    );
    assert!(
        !d.join("x.db").exists(),
        "start-up failures must not create the database"
    );
    // Root and intermediate given separately make one chain.
    let trust = ovsa_license_server::config::load_ek_trust(
        &[d.join("inter.pem"), d.join("root.pem")],
        "--trust-ek-ca",
    )
    .unwrap();
    assert_eq!((trust.roots.len(), trust.intermediates.len()), (1, 1));
}

/// Every input file goes through a bounded reader: /dev/zero fails fast naming the setting;
/// out-of-range numbers are refused naming the flag, variable and key.
#[test]
fn input_files_are_bounded_and_ranges_checked() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ks = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=s", 30)
        .unwrap()
        .0;
    std::fs::write(d.join("s.crt"), ks.certificate().to_pem()).unwrap();
    ks.save(&d.join("s.ks"), &KeystoreProtection::None, true)
        .unwrap();
    registration(d);
    let base = |cert: &'static str, key: &'static str, ca: &'static str| {
        vec![
            "--db",
            "sqlite:x.db",
            "serve",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--trust-ek-ca",
            ca,
        ]
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (base("/dev/zero", "s.ks", "s.crt"), "--tls-cert /dev/zero"),
        (base("s.crt", "/dev/zero", "s.crt"), "--tls-key /dev/zero"),
        (
            base("s.crt", "s.ks", "/dev/zero"),
            "--trust-ek-ca /dev/zero",
        ),
        (
            [
                base("s.crt", "s.ks", "s.crt"),
                vec!["--trust-host-ek-ca", "/dev/zero"],
            ]
            .concat(),
            "--trust-host-ek-ca /dev/zero",
        ),
        (
            [
                base("s.crt", "s.ks", "s.crt"),
                vec!["--passphrase-file", "/dev/zero"],
            ]
            .concat(),
            "--passphrase-file /dev/zero",
        ),
        (
            vec!["--config", "/dev/zero", "license", "list"],
            "--config /dev/zero",
        ),
        (
            vec!["license", "add", "l.reg", "--trust-isv", "/dev/zero"],
            "--trust-isv /dev/zero",
        ),
        (
            [base("s.crt", "s.ks", "s.crt"), vec!["--session-ttl", "0"]].concat(),
            "--session-ttl (OVSA_LS_SESSION_TTL, `session_ttl_seconds`",
        ),
        (
            [
                base("s.crt", "s.ks", "s.crt"),
                vec!["--max-connections", "0"],
            ]
            .concat(),
            "--max-connections (OVSA_LS_MAX_CONNECTIONS",
        ),
        (
            [
                base("s.crt", "s.ks", "s.crt"),
                vec!["--request-timeout", "18446744073709551615"],
            ]
            .concat(),
            "--request-timeout (OVSA_LS_REQUEST_TIMEOUT",
        ),
        (
            [
                base("s.crt", "s.ks", "s.crt"),
                vec!["--listen", "127.0.0.1"],
            ]
            .concat(),
            "listen address '127.0.0.1'",
        ),
        (
            [
                base("s.crt", "s.ks", "s.crt"),
                vec!["--listen", "no-such-host.invalid:1"],
            ]
            .concat(),
            "cannot resolve",
        ),
    ];
    for (args, expected) in cases {
        let start = std::time::Instant::now();
        let err = fails(d, &args);
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in {err}"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{args:?} took {:?}",
            start.elapsed()
        );
    }
    std::fs::write(d.join("ttl.toml"), "session_ttl_seconds = 0\n").unwrap();
    let err = fails(
        d,
        &[vec!["--config", "ttl.toml"], base("s.crt", "s.ks", "s.crt")].concat(),
    );
    assert!(
        err.contains("session_ttl_seconds") && err.contains("got 0"),
        "{err}"
    );
    assert!(
        !d.join("x.db").exists(),
        "start-up failures must not create the database"
    );
}

/// An unusable environment value fails at start-up naming the variable, before anything is
/// created; a command-line value for the same setting wins over it.
#[test]
fn environment_values_are_checked_and_the_command_line_wins() {
    let t = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"));
        c.current_dir(t.path())
            .env_remove("OVSA_LS_DB")
            .env_remove("OVSA_LS_CONFIG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    };
    let o = run(
        &[("OVSA_LS_MAX_CONNECTIONS", "many")],
        &[
            "serve",
            "--tls-cert",
            "x.crt",
            "--tls-key",
            "x.key",
            "--trust-ek-ca",
            "x.pem",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("environment variable OVSA_LS_MAX_CONNECTIONS")
            && err.contains("'many' is not a whole number"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(std::fs::read_dir(t.path()).unwrap().next().is_none());
    // --db on the command line wins over OVSA_LS_DB: the missing-database error names the
    // command-line one.
    let o = run(
        &[("OVSA_LS_DB", "sqlite:from-env.db")],
        &["license", "list", "--db", "sqlite:from-cli.db"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("from-cli.db") && !err.contains("from-env.db"),
        "{err}"
    );
}
