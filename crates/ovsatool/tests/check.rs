//! `ovsatool check`, the customer's diagnostic, against a real license service (TLS 1.3 on
//! loopback, SQLite) and a real swtpm vTPM: every step reported, the model decrypted in memory,
//! and a revoked license refused with the service's reason.

#[path = "../../ovsa-license-server/tests/world/mod.rs"]
mod world;

use std::process::Command;

use ovsa_core::identity::KeystoreProtection;
use ovsa_core::license::{Policy, Validity};
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

    w.revoke(lic.body().license_guid);
    let o = run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("license_revoked") && !err.contains("panicked"),
        "{err}"
    );
}
