//! Live seats and vTPM clone detection end to end: real swtpm vTPMs (a clone is a copy of a
//! running swtpm's state directory served by a second swtpm), the real client over TLS 1.3 on
//! loopback, SQLite and PostgreSQL.

mod common;
use ovsa_test_support::world;

use ovsa_client::{release_lease, ClientError, ClientOptions};
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{AttestResponse, Purpose, Reason};
use ovsa_license_server::tpm_clock::CLOCK_SKEW_MS;
use swtpm_tests::{names, Swtpm};
use world::{refused, World};

fn limit(instance_limit: u32) -> Policy {
    Policy {
        validity: Validity::Perpetual,
        usage_limit: None,
        instance_limit: Some(instance_limit),
    }
}

fn postgres_world() -> (common::TestDb, World) {
    let db = common::TestDb::postgres();
    let w = World::with_db(tempfile::tempdir().unwrap(), &db.url);
    (db, w)
}

/// The red team's attack: `instance_limit: 1`, the original vTPM loads, a copy of its state
/// loads too. Now the copy is refused (`tpm_clone_suspected`, audited) while the original's
/// lease is live; another machine is refused by the limit; after the original releases its
/// seat (unload), another machine takes it.
fn clone_is_refused_while_the_original_holds_the_seat(w: &World) {
    let lic = w.sell(limit(1), &w.customer, None);
    let original = Swtpm::start(names::VTPM);
    let loaded = w
        .check(&lic, &w.customer, &original, Purpose::Load)
        .expect("the original loads");
    let lease = loaded.response.lease_id.expect("a load returns its lease");
    let clone = original.clone_state();
    let e = w.check(&lic, &w.customer, &clone, Purpose::Load);
    assert_eq!(refused(e), Reason::TpmCloneSuspected);
    let audited = w.audit(lic.body().license_guid);
    let row = audited
        .iter()
        .find(|a| a.reason == Some(Reason::TpmCloneSuspected))
        .expect("the clone attempt is audited");
    assert_eq!(row.result, "refused");
    assert!(row.message.contains("clone"), "{}", row.message);
    let ek = {
        use ovsa_client::Attester;
        ovsa_client::TpmAttester::open(Some(&original.tcti()), None)
            .unwrap()
            .ek_certificate()
            .unwrap()
    };
    assert_eq!(row.instance_id, Some(ovsa_core::crypto::hash::sha256(&ek)));
    // The original keeps its seat: it renews on its lease.
    let renewed = ovsa_client::check_license_lease(
        lic.body(),
        &w.customer,
        &mut ovsa_client::TpmAttester::open(Some(&original.tcti()), None).unwrap(),
        Purpose::Renew,
        Some(lease),
        &ClientOptions::default(),
        &mut |_| {},
    )
    .expect("the original renews");
    assert_eq!(renewed.response.lease_id, Some(lease));
    // Another machine (another vTPM template: another EK): the one seat is held.
    let other = Swtpm::start(names::VTPM_B);
    let e = w.check(&lic, &w.customer, &other, Purpose::Load);
    assert_eq!(refused(e), Reason::InstanceLimitReached);
    // Unload on the original releases the seat; the other machine takes it.
    let opts = ClientOptions::default();
    assert!(release_lease(lic.body(), &w.customer, lease, &opts).unwrap());
    assert!(!release_lease(lic.body(), &w.customer, lease, &opts).unwrap());
    let taken = w
        .check(&lic, &w.customer, &other, Purpose::Load)
        .expect("a released seat is free");
    assert!(taken.share.is_some());
    let audited = w.audit(lic.body().license_guid);
    assert!(audited
        .iter()
        .any(|a| a.action == "release" && a.result == "released"));
}

#[test]
fn clone_is_refused_while_the_original_holds_the_seat_sqlite() {
    clone_is_refused_while_the_original_holds_the_seat(&World::sqlite());
}

#[test]
fn clone_is_refused_while_the_original_holds_the_seat_postgres() {
    let (_db, w) = postgres_world();
    clone_is_refused_while_the_original_holds_the_seat(&w);
}

/// Two quotes of one vTPM, the first made more than the skew window before the second, reach
/// the service in the other order: the older one shows a clock behind what the vTPM already
/// showed and is refused (`tpm_clock_regressed`, audited); nothing is counted.
#[test]
fn a_quote_whose_clock_went_back_is_refused() {
    let w = World::sqlite();
    let lic = w.sell(limit(1), &w.customer, None);
    let vtpm = Swtpm::start(names::VTPM);
    let (mut c_old, old) = w.prepare_load(&lic, &vtpm);
    std::thread::sleep(std::time::Duration::from_millis(CLOCK_SKEW_MS + 1_500));
    let (mut c_new, new) = w.prepare_load(&lic, &vtpm);
    let granted: AttestResponse = c_new
        .post_json("/v1/attest", &new)
        .expect("the later quote");
    assert_eq!(granted.uses, 1);
    let e: Result<AttestResponse, ClientError> = c_old.post_json("/v1/attest", &old);
    assert_eq!(refused(e), Reason::TpmClockRegressed);
    let audited = w.audit(lic.body().license_guid);
    assert!(audited
        .iter()
        .any(|a| a.reason == Some(Reason::TpmClockRegressed) && a.result == "refused"));
    let rec =
        w.rt.block_on(w.state.store.license(lic.body().license_guid))
            .unwrap()
            .unwrap();
    assert_eq!(rec.uses, 1, "the refused quote spent nothing");
}

/// What real machines do: several models of one license load in one VM (one seat; one after
/// the other here: swtpm has no resource manager, a VM's kernel has one); the VM reboots (swtpm restarted with TPM2_Startup(CLEAR): the reset
/// count goes up) after a clean shutdown that released its leases, and loads again. After a
/// crash (no release) the rebooted VM is refused (`tpm_clone_suspected`, not final) until the
/// crashed boot's leases lapse.
#[test]
fn several_models_and_a_reboot_are_tolerated() {
    let w = World::sqlite();
    let lic = w.sell(limit(1), &w.customer, None);
    let mut vtpm = Swtpm::start(names::VTPM);
    let leases: Vec<_> = (0..3)
        .map(|_| {
            w.check(&lic, &w.customer, &vtpm, Purpose::Load)
                .expect("every model of the VM loads")
                .response
                .lease_id
                .unwrap()
        })
        .collect();
    assert_eq!(leases.len(), 3);
    // Clean shutdown: OVMS unloads every model, each release ends its lease.
    let opts = ClientOptions::default();
    for l in &leases {
        assert!(release_lease(lic.body(), &w.customer, *l, &opts).unwrap());
    }
    vtpm.reboot();
    let after = w
        .check(&lic, &w.customer, &vtpm, Purpose::Load)
        .expect("a rebooted VM loads");
    // Crash: no release; then a reboot.
    assert!(after.response.lease_id.is_some());
    vtpm.reboot();
    let e = w.check(&lic, &w.customer, &vtpm, Purpose::Load);
    let reason = refused(e);
    assert_eq!(reason, Reason::TpmCloneSuspected);
    assert!(!reason.is_license_refusal(), "retried, not blacklisted");
}

/// Many vTPMs load at once through two replicas on one PostgreSQL database: exactly
/// `instance_limit` machines get a seat.
#[test]
fn concurrent_loads_never_exceed_the_limit() {
    let (db, mut w) = postgres_world();
    let second = w.replica(&db.url);
    let lic = w.sell(limit(2), &w.customer, None);
    let mut via_b = lic.body().clone();
    via_b.services[0].url = second;
    // Six machines: six vTPM templates, six EKs.
    let tpms: Vec<Swtpm> = (0..6)
        .map(|i| Swtpm::start(&format!("vtpm-seat-{i}")))
        .collect();
    let barrier = std::sync::Barrier::new(tpms.len());
    let results: Vec<Result<(), Reason>> = std::thread::scope(|s| {
        let handles: Vec<_> = tpms
            .iter()
            .enumerate()
            .map(|(i, tpm)| {
                let (w, barrier, via_b, lic) = (&w, &barrier, &via_b, &lic);
                s.spawn(move || {
                    barrier.wait();
                    let body = if i % 2 == 0 { lic.body() } else { via_b };
                    w.check_body(body, &w.customer, tpm, Purpose::Load)
                        .map(|_| ())
                        .map_err(|e| refused::<()>(Err(e)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let granted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(granted, 2, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || *r == Err(Reason::InstanceLimitReached)));
}
