//! `ovsatool check`, the customer's diagnostic, against a real license service (TLS 1.3 on
//! loopback, SQLite) and a real swtpm vTPM: every step reported, the model decrypted in memory,
//! and a revoked license refused with the service's reason.

use std::process::Command;

use ovsa_core::identity::KeystoreProtection;
use ovsa_core::license::{Policy, Validity};
use ovsa_test_support::world;
use swtpm_tests::{names, Swtpm};

#[test]
fn check_reports_each_step_and_refusals() {
    let w = world::World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: Some(5),
            instance_limit: None,
        },
        &w.customer,
        None,
    );
    let d = w.dir.path();
    lic.save(&d.join("m.lic"), 0o644, true).unwrap();
    w.customer
        .save(&d.join("customer.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_ovsatool"))
            .current_dir(d)
            .env("TSS2_LOG", "all+none")
            .args([
                "check",
                "--keystore",
                "customer.ks",
                "--license",
                "m.lic",
                "--package",
            ])
            .arg(&w.package)
            .args(["--tcti", &vtpm.tcti()])
            .output()
            .unwrap()
    };
    let o = run();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for step in [
        "verifies (signed by",
        "matches the license",
        "licensed customer",
        "TLS 1.3, server key pinned",
        "credential activated",
        "attestation accepted",
        "uses 1 of 5",
        "decrypted and verified in memory",
        "result: OK",
    ] {
        assert!(out.contains(step), "missing '{step}' in:\n{out}");
    }

    // --json: one machine-readable result on stdout.
    let json_run = || {
        Command::new(env!("CARGO_BIN_EXE_ovsatool"))
            .current_dir(d)
            .env("TSS2_LOG", "all+none")
            .args([
                "check",
                "--json",
                "--keystore",
                "customer.ks",
                "--license",
                "m.lic",
                "--package",
            ])
            .arg(&w.package)
            .args(["--tcti", &vtpm.tcti()])
            .output()
            .unwrap()
    };
    let o = json_run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON value");
    assert_eq!(v["result"], "ok", "{v}");
    assert_eq!(v["uses"], 2, "{v}");
    assert_eq!(v["usage_limit"], 5, "{v}");
    assert_eq!(v["spent_a_use"], true, "{v}");
    assert_eq!(v["license"], lic.body().license_guid.to_string(), "{v}");
    assert!(v["steps"].as_array().is_some_and(|s| s.len() >= 6), "{v}");

    w.revoke(lic.body().license_guid);
    let o = json_run();
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON value");
    assert_eq!(v["result"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("license_revoked")),
        "{v}"
    );
    let o = run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("license_revoked") && !err.contains("panicked"),
        "{err}"
    );
}

/// The host admin's flow through the real binary: `host-quote` with an unenrolled AK is refused
/// by the service, `host-enroll` enrols the cached host AK, `host-quote --ak-cache-dir` with the
/// same directory signs with it, and `check` then passes with host evidence.
#[test]
fn host_enroll_then_host_quote_with_the_enrolled_ak() {
    let w = world::World::sqlite();
    let host = Swtpm::start(names::HOST);
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell_with_tcb(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: None,
        },
        &w.customer,
        None,
        &w.tcb_with_host(&host),
    );
    let d = w.dir.path();
    lic.save(&d.join("h.lic"), 0o644, true).unwrap();
    w.customer
        .save(&d.join("customer.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let tool = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ovsatool"))
            .current_dir(d)
            .env("TSS2_LOG", "all+none")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let o = tool(args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let package = w.package.display().to_string();
    let check = [
        "check",
        "--keystore",
        "customer.ks",
        "--license",
        "h.lic",
        "--package",
        &package,
        "--tcti",
        &vtpm.tcti(),
    ];
    let (host_tcti, vtpm_tcti) = (host.tcti(), vtpm.tcti());
    let quote = [
        "host-quote",
        "--host-tcti",
        &host_tcti,
        "--vtpm-tcti",
        &vtpm_tcti,
    ];

    // Without enrolment: the service refuses the host evidence and says what to do.
    let out = ok(&quote);
    assert!(out.contains("host-enroll"), "{out}");
    let o = tool(&check);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("host_evidence_invalid") && err.contains("host-enroll"),
        "{err}"
    );

    let out = ok(&[
        "host-enroll",
        "--keystore",
        "customer.ks",
        "--license",
        "h.lic",
        "--host-tcti",
        &host_tcti,
        "--ak-cache-dir",
        "host-ak",
    ]);
    assert!(out.contains("enrolled"), "{out}");
    let mut with_ak = quote.to_vec();
    with_ak.extend_from_slice(&["--ak-cache-dir", "host-ak"]);
    ok(&with_ak);
    let out = ok(&check);
    assert!(
        out.contains("+ host evidence") && out.contains("result: OK"),
        "{out}"
    );
}

/// `check` refuses what the runtime plugin refuses, with the plugin's message (both open the
/// files with `ovsa_client::CustomerBundle::open`). The case where they used to differ: a
/// keystore with the licensed key but a re-issued certificate. `check` compared public keys and
/// passed that step (then the service refused the TLS client certificate); the plugin compared
/// the certificate and refused. Now `check` refuses before touching the TPM (the TCTI here is
/// dead, so going further would fail differently), saying what to do.
#[test]
fn check_refuses_a_reissued_certificate_like_the_plugin() {
    let w = world::World::sqlite();
    let lic = w.sell(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: None,
        },
        &w.customer,
        None,
    );
    let d = w.dir.path();
    lic.save(&d.join("m.lic"), 0o644, true).unwrap();
    let mut reissued = ovsa_core::identity::Keystore::from_bytes(
        &w.customer.to_bytes(&KeystoreProtection::None).unwrap(),
        None,
    )
    .unwrap();
    reissued
        .import_certificate(
            ovsa_core::identity::cert::self_signed(
                w.customer.key(),
                "CN=Customer One reissued",
                30,
            )
            .unwrap(),
            vec![],
        )
        .unwrap();
    reissued
        .save(&d.join("reissued.ks"), &KeystoreProtection::None, true)
        .unwrap();
    for json in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovsatool"));
        cmd.current_dir(d).env("TSS2_LOG", "all+none").arg("check");
        if json {
            cmd.arg("--json");
        }
        let o = cmd
            .args([
                "--keystore",
                "reissued.ks",
                "--license",
                "m.lic",
                "--package",
            ])
            .arg(&w.package)
            .args(["--tcti", "swtpm:host=127.0.0.1,port=1"])
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(!o.status.success(), "{out}");
        // The plugin's message (tests/runtime_e2e.rs asserts the same text for a load).
        assert!(
            err.contains(
                "keystore 'reissued.ks' holds 'CN=Customer One reissued', but the license was \
                 sold to another certificate ('CN=Customer One'): the keystore has the licensed \
                 key but a different certificate, and the license service accepts only the exact \
                 certificate the license was sold to; import that certificate into the keystore \
                 (`ovsatool keygen --import-cert`) or ask the ISV for a license for this one"
            ),
            "{err}"
        );
        assert!(
            out.contains("matches the license") && !out.contains("TPM opened"),
            "{out}"
        );
        if json {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["result"], "failed", "{v}");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("sold to another certificate")),
                "{v}"
            );
        } else {
            assert!(!out.contains("licensed customer"), "{out}");
        }
    }
}
