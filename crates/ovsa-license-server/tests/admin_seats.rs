//! The operator's view of live seats and EK bindings through the `ovsa-license-server` binary:
//! `license show` lists the live seats (machine, lease ids, last check, expiry on the service
//! clock) and says which vTPMs may attest (bound EK CAs / enrolled EKs, or any trusted vTPM),
//! `license list` says the binding; `license add` warns about an unbound license and, with
//! `require_ek_binding`, refuses it. Real TLS 1.3 on loopback, real swtpm vTPMs, SQLite and
//! PostgreSQL.

mod common;
use ovsa_test_support::world;

use std::path::Path;
use std::process::{Command, Output};

use ovsa_client::{release_lease, ClientOptions};
use ovsa_core::attest::{EkBinding, EkCertDigest};
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::KeystoreProtection;
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::{sell, LicenseConfig, Policy, ServiceEndpoint, TcbReference, Validity};
use ovsa_core::protocol::Purpose;
use ovsa_tpm::EkKind;
use swtpm_tests::{names, Swtpm};
use world::World;

/// Runs the binary in `dir` on the database `db`.
fn server(dir: &Path, db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"))
        .current_dir(dir)
        .env_remove("OVSA_LS_DB")
        .env_remove("OVSA_LS_CONFIG")
        .env_remove("OVSA_LS_REQUIRE_EK_BINDING")
        .args(["--db", db])
        .args(args)
        .output()
        .expect("run ovsa-license-server")
}

fn ok(dir: &Path, db: &str, args: &[&str]) -> (String, String) {
    let o = server(dir, db, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?}: {out}\n{err}");
    (out, err)
}

/// The value of a `key  value` line of `license show`.
fn field(show: &str, key: &str) -> String {
    show.lines()
        .find_map(|l| l.strip_prefix(key).filter(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no '{key}' line in:\n{show}"))
        .trim()
        .to_string()
}

fn no_raw_controls(what: &str, out: &str) {
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: raw control characters in {out:?}"
    );
}

/// A self-signed CA certificate (DER) whose subject is `common_name`.
fn ca_cert(common_name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    p.self_signed(&key).unwrap().der().to_vec()
}

/// SHA-256 of each EK certificate `vtpm` has.
fn ek_digests(vtpm: &Swtpm) -> Vec<EkCertDigest> {
    let mut tpm = vtpm.open();
    [EkKind::Rsa2048, EkKind::EccP384]
        .into_iter()
        .filter_map(|k| tpm.ek_certificate(k).ok())
        .map(|der| EkCertDigest::of(&der))
        .collect()
}

fn limit(n: u32) -> Policy {
    Policy {
        validity: Validity::Perpetual,
        usage_limit: None,
        instance_limit: Some(n),
    }
}

fn live_seats(db_url: &str) {
    let w = World::with_db(tempfile::tempdir().unwrap(), db_url);
    let d = w.dir.path();
    let (a, b) = (Swtpm::start(names::VTPM), Swtpm::start(names::VTPM_B));
    // Bound to a (hostile-named) EK CA and to the EKs of both machines.
    let evil_ca = "Evil\nCA\x1b[2J";
    let binding = EkBinding {
        cas: vec![ca_cert(evil_ca)],
        eks: [ek_digests(&a), ek_digests(&b)].concat(),
    };
    let n_eks = binding.eks.len();
    let tcb = TcbReference::bind_ek(&w.tcb, &binding, &w.isv).unwrap();
    let lic = w.sell_with_tcb(limit(2), &w.customer, None, &tcb);
    let unbound = w.sell(limit(1), &w.customer, None);
    let guid = lic.body().license_guid.to_string();

    // No seat yet.
    let (show, _) = ok(d, db_url, &["license", "show", &guid]);
    assert!(
        field(&show, "live seats").starts_with("0 of 2 at "),
        "{show}"
    );
    assert!(!show.contains("expires (service clock)"), "{show}");

    // Machine A loads twice (two models, two leases, one seat), machine B once.
    let lease = |r: ovsa_client::Released| r.response.lease_id.unwrap();
    let a1 = lease(w.check(&lic, &w.customer, &a, Purpose::Load).unwrap());
    let a2 = lease(w.check(&lic, &w.customer, &a, Purpose::Load).unwrap());
    let b1 = lease(w.check(&lic, &w.customer, &b, Purpose::Load).unwrap());
    let leases =
        w.rt.block_on(
            w.state
                .store
                .leases(lic.body().license_guid, time::OffsetDateTime::now_utc()),
        )
        .unwrap();
    assert_eq!(leases.len(), 3);
    let machine = |id| {
        hex::encode(
            leases
                .iter()
                .find(|l| l.lease_id == id)
                .unwrap()
                .instance_id,
        )
    };
    let (ma, mb) = (machine(a1), machine(b1));
    assert_ne!(ma, mb);

    let (show, _) = ok(d, db_url, &["license", "show", &guid]);
    no_raw_controls("show", &show);
    assert!(
        field(&show, "live seats").starts_with("2 of 2 at "),
        "{show}"
    );
    assert!(
        show.contains("seat (machine: EK sha256)") && show.contains("expires (service clock)"),
        "{show}"
    );
    for (m, l) in [(&ma, a1), (&ma, a2), (&mb, b1)] {
        assert_eq!(
            show.lines()
                .filter(|line| line.starts_with(m.as_str()) && line.contains(&l.to_string()))
                .count(),
            1,
            "one line for lease {l} of machine {m}:\n{show}"
        );
    }
    // The binding: the CA by its (escaped) subject and each enrolled EK.
    assert!(
        show.contains("vtpms allowed") && show.contains("CN=Evil\\nCA\\x1b[2J"),
        "{show}"
    );
    for e in &binding.eks {
        assert!(show.contains(&hex::encode(e.0)), "{show}");
    }

    // JSON: the same facts, in the existing style (snake_case keys, RFC 3339 times).
    let (out, _) = ok(d, db_url, &["license", "show", &guid, "--json"]);
    no_raw_controls("show --json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["live_seats"]["count"], 2, "{v}");
    let seats = v["live_seats"]["seats"].as_array().unwrap();
    let a_seat = seats.iter().find(|s| s["machine"] == ma).unwrap();
    let a_leases: Vec<_> = a_seat["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lease_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(a_leases.len(), 2, "{v}");
    assert!(a_leases.contains(&a1.to_string()) && a_leases.contains(&a2.to_string()));
    assert!(a_seat["last_check"].is_string(), "{v}");
    assert!(a_seat["leases"][0]["expires"].is_string(), "{v}");
    assert_eq!(v["vtpm_ek_binding"]["bound"], true, "{v}");
    assert_eq!(
        v["vtpm_ek_binding"]["ek_cas"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert_eq!(
        v["vtpm_ek_binding"]["enrolled_ek_certificates_sha256"]
            .as_array()
            .unwrap()
            .len(),
        n_eks,
        "{v}"
    );

    // B releases its lease: its seat is gone from the listing.
    let opts = ClientOptions::default();
    assert!(release_lease(lic.body(), &w.customer, b1, &opts).unwrap());
    let (show, _) = ok(d, db_url, &["license", "show", &guid]);
    assert!(
        field(&show, "live seats").starts_with("1 of 2 at "),
        "{show}"
    );
    let seat_lines = |show: &str, m: &str| {
        show.lines()
            .filter(|l| l.starts_with(m) && [a1, a2, b1].iter().any(|x| l.contains(&x.to_string())))
            .count()
    };
    assert_eq!(seat_lines(&show, &mb), 0, "{show}");
    assert_eq!(seat_lines(&show, &ma), 2, "{show}");

    // `license list` says the binding of each license.
    let (list, _) = ok(d, db_url, &["license", "list"]);
    no_raw_controls("list", &list);
    let row = |g: &str| list.lines().find(|l| l.starts_with(g)).unwrap().to_string();
    assert!(
        row(&guid).contains(&format!("bound: 1 EK CA, {n_eks} EK")),
        "{list}"
    );
    let unbound_guid = unbound.body().license_guid.to_string();
    assert!(row(&unbound_guid).contains("any trusted vTPM"), "{list}");
    let (out, _) = ok(d, db_url, &["license", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_guid = |g: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|l| l["license_guid"] == g)
            .unwrap()
            .clone()
    };
    assert_eq!(by_guid(&guid)["vtpm_ek_binding"]["bound"], true);
    assert_eq!(by_guid(&unbound_guid)["vtpm_ek_binding"]["bound"], false);
    let (show, _) = ok(d, db_url, &["license", "show", &unbound_guid]);
    assert!(show.contains("any trusted vTPM"), "{show}");
}

#[test]
fn license_show_lists_live_seats_and_the_ek_binding_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    live_seats(&format!(
        "sqlite:{}",
        dir.path().join("licenses.db").display()
    ));
}

#[test]
fn license_show_lists_live_seats_and_the_ek_binding_postgres() {
    let db = common::TestDb::postgres();
    live_seats(&db.url);
}

/// Writes the registration of a new license sold with `tcb` to `dir/name`; returns its GUID.
fn registration(w: &World, tcb: &Signed<TcbReference>, name: &str) -> String {
    let config = Signed::sign(
        LicenseConfig {
            name: "test".into(),
            policy: limit(1),
            lease_seconds: 60,
            grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
            services: vec![ServiceEndpoint {
                url: w.url(),
                pins: vec![w.server_pin()],
            }],
            created: now_rfc3339(),
        },
        &w.isv,
    )
    .unwrap();
    let sale = sell(&SaleRequest {
        isv: &w.isv,
        master: &w.master,
        config: &config,
        tcb,
        customer: w.customer.certificate(),
        service: w.registration_ks.certificate(),
    })
    .unwrap();
    sale.registration
        .save(&w.dir.path().join(name), 0o644, true)
        .unwrap();
    sale.license.body().license_guid.to_string()
}

/// `license add` of an unbound license warns on stderr (and imports it); with
/// `require_ek_binding` (flag, environment or config file) it refuses it, imports nothing, and
/// says what to do; a bound license is imported without a warning either way.
#[test]
fn license_add_warns_about_unbound_licenses_and_require_ek_binding_refuses_them() {
    let w = World::sqlite();
    let d = w.dir.path();
    let a = Swtpm::start(names::VTPM);
    std::fs::write(d.join("isv.crt"), w.isv.certificate().to_pem()).unwrap();
    w.registration_ks
        .save(&d.join("registration.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let unbound = registration(&w, &w.tcb, "unbound.reg");
    let binding = EkBinding {
        cas: vec![],
        eks: ek_digests(&a),
    };
    let bound_tcb = TcbReference::bind_ek(&w.tcb, &binding, &w.isv).unwrap();
    let bound = registration(&w, &bound_tcb, "bound.reg");
    let add = |db: &str, files: &[&str], extra: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ovsa-license-server"));
        c.current_dir(d)
            .env_remove("OVSA_LS_DB")
            .env_remove("OVSA_LS_CONFIG")
            .env_remove("OVSA_LS_REQUIRE_EK_BINDING")
            .args(["--db", db, "license", "add"])
            .args(files)
            .args([
                "--trust-isv",
                "isv.crt",
                "--registration-key",
                "registration.ks",
            ])
            .args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let text = |o: &Output| {
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    // Default: imported, with a warning on stderr naming the license and what to do.
    let o = add("sqlite:warn.db", &["unbound.reg"], &[], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("added license {unbound}")), "{out}");
    assert!(
        err.contains("warning:")
            && err.contains(&unbound)
            && err.contains("not bound to EK CAs or enrolled EKs")
            && err.contains("ovsatool sale --ek-ca/--ek-cert")
            && err.contains("--require-ek-binding"),
        "{err}"
    );
    assert!(
        !out.contains("warning"),
        "the warning goes to stderr: {out}"
    );
    // A bound license: no warning.
    let o = add("sqlite:warn.db", &["bound.reg"], &[], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!err.contains("warning"), "{err}");

    // require_ek_binding from each layer refuses the unbound one; nothing is imported, not even
    // the bound one given with it.
    std::fs::write(d.join("strict.toml"), "require_ek_binding = true\n").unwrap();
    for (db, extra, env) in [
        ("sqlite:flag.db", vec!["--require-ek-binding"], vec![]),
        (
            "sqlite:env.db",
            vec![],
            vec![("OVSA_LS_REQUIRE_EK_BINDING", "true")],
        ),
        (
            "sqlite:file.db",
            vec![],
            vec![("OVSA_LS_CONFIG", "strict.toml")],
        ),
    ] {
        let o = add(db, &["bound.reg", "unbound.reg"], &extra, &env);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{db}: {out}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("unbound.reg")
                && err.contains(&unbound)
                && err.contains("require_ek_binding is set")
                && err.contains("ovsatool sale --ek-ca")
                && err.contains("--ek-cert"),
            "{db}: {err}"
        );
        let file = db.strip_prefix("sqlite:").unwrap();
        assert!(
            !d.join(file).exists(),
            "{db}: nothing imported, no database made"
        );
        // The bound license alone is accepted under the same setting.
        let o = add(db, &["bound.reg"], &extra, &env);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{db}: {out}\n{err}");
        assert!(out.contains(&format!("added license {bound}")), "{out}");
    }
    // The environment's false wins over the file's true (and the flag's true over both).
    let o = add(
        "sqlite:envoff.db",
        &["unbound.reg"],
        &[],
        &[
            ("OVSA_LS_CONFIG", "strict.toml"),
            ("OVSA_LS_REQUIRE_EK_BINDING", "false"),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
}
