//! The license service end to end: a real server on loopback with real TLS 1.3, real swtpm
//! vTPMs (EK certificates from a private CA), the real client, SQLite storage (and PostgreSQL
//! where noted), and the model key actually unwrapped and used to decrypt the package.

mod common;
mod world;

use ovsa_client::{ClientError, Step};
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use swtpm_tests::{names, Swtpm};
use world::{refused, World};

fn perpetual(usage: Option<u64>, instances: Option<u32>) -> Policy {
    Policy {
        validity: Validity::Perpetual,
        usage_limit: usage,
        instance_limit: instances,
    }
}

#[test]
fn happy_path_releases_the_share_and_the_model_decrypts() {
    let w = World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    let sold = w.sell(perpetual(Some(10), Some(1)), &w.customer, None);
    let mut steps = Vec::new();
    let released = w
        .check_observed(&sold, &w.customer, &vtpm, Purpose::Load, &mut steps)
        .expect("check");
    assert_eq!(released.response.uses, 1);
    assert_eq!(released.response.usage_limit, Some(10));
    assert!(steps.iter().any(|s| matches!(s, Step::CredentialActivated)));
    // The share opens the model: byte-identical plaintext.
    w.assert_model_decrypts(
        &sold,
        released.share.as_ref().expect("a load releases the share"),
    );
    // A renewal counts no use and releases no key material; a second load does count.
    let renewed = w.check(&sold, &w.customer, &vtpm, Purpose::Renew).unwrap();
    assert_eq!(renewed.response.uses, 1);
    assert!(renewed.share.is_none() && renewed.response.share.is_none());
    assert_eq!(
        w.check(&sold, &w.customer, &vtpm, Purpose::Load)
            .unwrap()
            .response
            .uses,
        2
    );
    // Audit: every decision is logged.
    let audit = w.audit(sold.body().license_guid);
    assert!(
        audit.iter().filter(|e| e.result == "granted").count() >= 3,
        "{audit:?}"
    );
}

#[test]
fn policy_limits_are_enforced() {
    let w = World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    let other_vm = Swtpm::start(names::VTPM_B);

    // Usage limit: exactly N loads.
    let lic = w.sell(perpetual(Some(2), None), &w.customer, None);
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    assert_eq!(
        refused(w.check(&lic, &w.customer, &vtpm, Purpose::Load)),
        Reason::UsageLimitReached
    );
    // ...while a loaded model's lease can still be renewed.
    w.check(&lic, &w.customer, &vtpm, Purpose::Renew).unwrap();

    // Instance limit: the second machine is refused, the first keeps working.
    let lic = w.sell(perpetual(None, Some(1)), &w.customer, None);
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    assert_eq!(
        refused(w.check(&lic, &w.customer, &other_vm, Purpose::Load)),
        Reason::InstanceLimitReached
    );
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();

    // Time window: not yet valid, and expired.
    let later = Policy {
        validity: Validity::Window {
            not_before: Some("2999-01-01T00:00:00Z".into()),
            not_after: "3000-01-01T00:00:00Z".into(),
        },
        usage_limit: None,
        instance_limit: None,
    };
    let lic = w.sell(later, &w.customer, None);
    assert_eq!(
        refused(w.check(&lic, &w.customer, &vtpm, Purpose::Load)),
        Reason::LicenseNotYetValid
    );
    let end = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let short = Policy {
        validity: Validity::Window {
            not_before: None,
            not_after: ovsa_core::encoding::format_rfc3339(end),
        },
        usage_limit: None,
        instance_limit: None,
    };
    let lic = w.sell(short, &w.customer, None);
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2600));
    assert_eq!(
        refused(w.check(&lic, &w.customer, &vtpm, Purpose::Renew)),
        Reason::LicenseExpired
    );
}

#[test]
fn revocation_takes_effect_on_the_next_check() {
    let w = World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell(perpetual(None, None), &w.customer, None);
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    w.revoke(lic.body().license_guid);
    let e = w
        .check(&lic, &w.customer, &vtpm, Purpose::Renew)
        .unwrap_err();
    assert!(e.is_license_refusal(), "{e}");
    assert_eq!(refused::<()>(Err(e)), Reason::LicenseRevoked);
}

#[test]
fn identity_pins_and_tls_version_are_enforced() {
    let w = World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell(perpetual(None, None), &w.customer, None);

    // Another customer's keystore (TLS client certificate) is refused.
    let mallory = World::keystore("CN=mallory");
    assert_eq!(
        refused(w.check(&lic, &mallory, &vtpm, Purpose::Load)),
        Reason::ClientCertificateMismatch
    );

    // A license pinning another server key: the client refuses the server.
    let wrong_pin = ovsa_core::license::policy::Pin([0x42; 32]);
    let pinned_wrong = w.sell(perpetual(None, None), &w.customer, Some(vec![wrong_pin]));
    match w.check(&pinned_wrong, &w.customer, &vtpm, Purpose::Load) {
        Err(ClientError::PinMismatch { found, .. }) => assert_eq!(found.len(), 64, "{found}"),
        other => panic!(
            "expected a pin mismatch, got {:?}",
            other.map(|r| r.response)
        ),
    }
    // The next key's pin (rotation) is accepted.
    let rotated = w.sell(
        perpetual(None, None),
        &w.customer,
        Some(vec![wrong_pin, w.server_pin()]),
    );
    w.check(&rotated, &w.customer, &vtpm, Purpose::Load)
        .unwrap();

    // TLS 1.2 is refused by the service.
    assert!(w.tls12_handshake_fails());

    // Unknown license.
    let mut unknown = lic.body().clone();
    unknown.license_guid = uuid::Uuid::new_v4();
    assert_eq!(
        refused(w.check_body(&unknown, &w.customer, &vtpm, Purpose::Load)),
        Reason::UnknownLicense
    );
}

#[test]
fn replayed_sessions_and_tampered_evidence_are_refused() {
    let w = World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell(perpetual(None, None), &w.customer, None);
    // A session is single use: replaying the same attest request is refused.
    let (first, second) = w.attest_twice(&lic, &vtpm);
    assert!(first.is_ok(), "{:?}", first.err());
    assert_eq!(refused(second.map(|_| ())), Reason::UnknownSession);
    // The replay is in the audit log (it names no license: the session is gone).
    assert!(
        w.audit_all().iter().any(|e| e.license_guid.is_none()
            && e.result == "refused"
            && e.reason == Some(Reason::UnknownSession)),
        "replay not audited"
    );
    // An ephemeral key that cannot receive the share is refused without spending a use: the
    // license's one use is still there afterwards.
    let once = w.sell(perpetual(Some(1), None), &w.customer, None);
    assert_eq!(
        refused(w.check_tampered(&once, &vtpm, world::Tamper::EphemeralKey)),
        Reason::MalformedRequest
    );
    w.check(&once, &w.customer, &vtpm, Purpose::Load).unwrap();
    // Tampered PCR values in the evidence.
    assert_eq!(
        refused(w.check_tampered(&lic, &vtpm, world::Tamper::PcrValue)),
        Reason::QuoteInvalid
    );
    // A quote bound to another nonce / key / channel.
    assert_eq!(
        refused(w.check_tampered(&lic, &vtpm, world::Tamper::QualifyingData)),
        Reason::QuoteInvalid
    );
    // A wrong credential activation.
    assert_eq!(
        refused(w.check_tampered(&lic, &vtpm, world::Tamper::ActivatedSecret)),
        Reason::CredentialMismatch
    );
    // A vTPM whose EK certificate comes from an untrusted CA.
    let rogue = Swtpm::start(names::ROGUE);
    assert_eq!(
        refused(w.check(&lic, &w.customer, &rogue, Purpose::Load)),
        Reason::UntrustedEk
    );
    // PCRs moved after the TCB reference was taken.
    let mut t = vtpm.open();
    t.pcr_extend(7, ovsa_core::attest::HashAlg::Sha256, &[9u8; 32])
        .unwrap();
    drop(t);
    assert_eq!(
        refused(w.check(&lic, &w.customer, &vtpm, Purpose::Load)),
        Reason::PcrMismatch
    );
}

#[test]
fn malformed_requests_get_reasons_not_crashes() {
    let w = World::sqlite();
    for (body, want) in [
        (&b"{not json"[..], Reason::MalformedRequest),
        (&br#"{"license_guid": 5}"#[..], Reason::MalformedRequest),
        (&br#"{"license_guid":"00000000-0000-0000-0000-000000000000","purpose":"load","ek_certificate":"AA==","ak_public":"AA=="}"#[..], Reason::UnknownLicense),
    ] {
        let (status, reason) = w.raw_post("/v1/challenge", body);
        assert_eq!(reason, Some(want), "status {status}");
    }
    let (status, body) = w.announce_body("/v1/challenge", 200 * 1024);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");
    let (status, reason) = w.raw_post("/v1/attest", br#"{"session_id":"7d3f1c1e-7a6e-4d0e-9c53-7a1b0c8f2e11","evidence":{},"activated_secret":"","ephemeral_public_key":""}"#);
    assert_eq!((status, reason), (400, Some(Reason::MalformedRequest)));
    let (status, reason) = w.raw_post("/v1/nothing", b"{}");
    assert_eq!((status, reason), (400, Some(Reason::MalformedRequest)));
    // Still serving.
    assert!(w.healthz());
    let metrics = w.metrics();
    assert!(
        metrics.contains("ovsa_license_decisions_total"),
        "{metrics}"
    );
}

#[test]
fn two_replicas_on_one_postgres_race_for_the_last_use_and_exactly_one_wins() {
    let db = common::TestDb::postgres();
    let mut w = World::with_db(tempfile::tempdir().unwrap(), &db.url);
    let second = w.replica(&db.url);
    let lic = w.sell(perpetual(Some(1), None), &w.customer, None);
    // Half the clients go to replica A, half to replica B (same license, services reordered).
    let mut via_b = lic.body().clone();
    via_b.services[0].url = second;
    let tpms: Vec<Swtpm> = (0..6).map(|_| Swtpm::start(names::VTPM)).collect();
    let barrier = std::sync::Barrier::new(tpms.len());
    let results: Vec<Result<u64, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = tpms
            .iter()
            .enumerate()
            .map(|(i, tpm)| {
                let body = if i % 2 == 0 {
                    lic.body().clone()
                } else {
                    via_b.clone()
                };
                let (w, barrier) = (&w, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    w.check_body(&body, &w.customer, tpm, Purpose::Load)
                        .map(|r| r.response.uses)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    ClientError::Refused {
                        reason: Reason::UsageLimitReached,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
    let stored =
        w.rt.block_on(w.state.store.license(lic.body().license_guid))
            .unwrap()
            .unwrap();
    assert_eq!(stored.uses, 1);
}
