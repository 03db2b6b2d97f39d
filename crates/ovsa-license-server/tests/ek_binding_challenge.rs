//! The license's EK binding is checked at `/v1/challenge` already: a vTPM the license was not
//! sold for is refused before any credential work on the client, with
//! `ek_not_allowed_for_license`, audited once (the challenge), and no session is stored. Real
//! swtpm vTPMs, real TLS 1.3 on loopback, SQLite and PostgreSQL.

mod common;
use ovsa_test_support::world;

use ovsa_client::{ClientError, Step};
use ovsa_core::attest::{EkBinding, EkCertDigest};
use ovsa_core::license::{Policy, TcbReference, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use ovsa_tpm::EkKind;
use swtpm_tests::{names, Swtpm};
use world::World;

/// Deletes every stored session (all of them count as expired a day from now) and returns how
/// many there were.
fn sessions(w: &World) -> u64 {
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    w.rt.block_on(w.state.store.purge_sessions(later)).unwrap()
}

fn refused_at_challenge(w: &World) {
    let victim = Swtpm::start(names::VTPM);
    let thief = Swtpm::start(names::VTPM_B);
    let eks = {
        let mut tpm = victim.open();
        [EkKind::Rsa2048, EkKind::EccP384]
            .into_iter()
            .filter_map(|k| tpm.ek_certificate(k).ok())
            .map(|der| EkCertDigest::of(&der))
            .collect::<Vec<_>>()
    };
    let tcb = TcbReference::bind_ek(&w.tcb, &EkBinding { cas: vec![], eks }, &w.isv).unwrap();
    let lic = w.sell_with_tcb(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: Some(3),
            instance_limit: None,
        },
        &w.customer,
        None,
        &tcb,
    );
    let guid = lic.body().license_guid;
    sessions(w);

    for purpose in [Purpose::Load, Purpose::Renew] {
        let before = w.audit(guid).len();
        let mut steps = Vec::new();
        let r = w.check_observed(&lic, &w.customer, &thief, purpose, &mut steps);
        match r {
            Err(ClientError::Refused { reason, message }) => {
                assert_eq!(reason, Reason::EkNotAllowedForLicense, "{message}");
                assert!(
                    message.contains("not allowed for the license")
                        && message.contains("the EK certificate with SHA-256"),
                    "{message}"
                );
            }
            other => panic!("expected a refusal at the challenge, got {other:?}"),
        }
        // Refused at the challenge: no challenge answered, no credential activated.
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::Connected(_) | Step::Unreachable(_))),
            "{steps:?}"
        );
        // Audited once, as the challenge, under the license.
        let audit = w.audit(guid);
        assert_eq!(audit.len(), before + 1, "{audit:?}");
        let row = &audit[0];
        assert_eq!(row.action, "challenge");
        assert_eq!(row.result, "refused");
        assert_eq!(row.reason, Some(Reason::EkNotAllowedForLicense));
        assert!(row.instance_id.is_some());
        // No session was stored.
        assert_eq!(sessions(w), 0, "a refused challenge left a session");
    }

    // The victim's vTPM: a challenge (one session, consumed by its attestation), the share.
    let released = w
        .check(&lic, &w.customer, &victim, Purpose::Load)
        .expect("the bound vTPM loads");
    assert_eq!(released.response.uses, 1);
    w.assert_model_decrypts(&lic, released.share.as_ref().unwrap());
    // And an issued challenge is a stored session (what the count above would have seen).
    let (_conn, _req) = w.prepare_load(&lic, &victim);
    assert_eq!(sessions(w), 1);
}

#[test]
fn a_vtpm_outside_the_ek_binding_is_refused_at_the_challenge_sqlite() {
    refused_at_challenge(&World::sqlite());
}

#[test]
fn a_vtpm_outside_the_ek_binding_is_refused_at_the_challenge_postgres() {
    let db = common::TestDb::postgres();
    let w = World::with_db(tempfile::tempdir().unwrap(), &db.url);
    refused_at_challenge(&w);
}
