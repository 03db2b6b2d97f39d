//! `ovsatool check` gives back the seat it took: after a check on one machine, another machine
//! can load a license with `instance_limit: 1` at once (without the release, the check's lease
//! would hold the only seat for lease + grace). Real license service (TLS 1.3 on loopback,
//! SQLite), real swtpm vTPMs, the real binary.

use ovsa_test_support::world;

use std::process::Command;

use ovsa_core::identity::KeystoreProtection;
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use swtpm_tests::{names, Swtpm};

#[test]
fn check_releases_its_lease_so_another_machine_can_load_with_instance_limit_one() {
    let w = world::World::sqlite();
    let first = Swtpm::start(names::VTPM);
    let second = Swtpm::start(names::VTPM_B);
    let lic = w.sell(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: Some(1),
        },
        &w.customer,
        None,
    );
    let guid = lic.body().license_guid;
    let d = w.dir.path();
    lic.save(&d.join("one.lic"), 0o644, true).unwrap();
    w.customer
        .save(&d.join("customer.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let check = |vtpm: &Swtpm, json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ovsatool"));
        c.current_dir(d)
            .env("TSS2_LOG", "all+none")
            .arg("check")
            .args(json.then_some("--json"))
            .args([
                "--keystore",
                "customer.ks",
                "--license",
                "one.lic",
                "--package",
            ])
            .arg(&w.package)
            .args(["--tcti", &vtpm.tcti()]);
        c.output().unwrap()
    };
    let live = || {
        w.rt.block_on(w.state.store.leases(guid, time::OffsetDateTime::now_utc()))
            .unwrap()
            .len()
    };

    let o = check(&first, false);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Another machine loads at once under instance_limit 1.
    let r = w
        .check(&lic, &w.customer, &second, Purpose::Load)
        .expect("the second machine loads: the check's seat was released");
    assert!(
        out.contains("released: this check holds no seat") && out.contains("result: OK"),
        "{out}"
    );
    assert_eq!(r.response.uses, 2);
    // While that machine holds the seat, a check from the first one is refused (the limit still
    // holds), and says why.
    let o = check(&first, true);
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains(Reason::InstanceLimitReached.as_str())),
        "{v}"
    );
    // Once it releases, a --json check reports the release too.
    let lease = r.response.lease_id.unwrap();
    assert!(ovsa_client::release_lease(
        lic.body(),
        &w.customer,
        lease,
        &ovsa_client::ClientOptions::default()
    )
    .unwrap());
    let o = check(&first, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lease_released"], true, "{v}");
    assert_eq!(live(), 0);
}
