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

/// Host evidence through the service: refused until the host AK that signs it is enrolled
/// (credential challenge under the host EK), accepted after; enrolment refused for another
/// customer, a wrong activation, a replayed session and a host EK from an untrusted CA; a fresh
/// (unenrolled) AK of the same host TPM refused again.
#[test]
fn host_evidence_needs_an_enrolled_host_ak() {
    use ovsa_client::{enroll_host_ak, TpmAttester};
    use ovsa_core::protocol::{
        HostAkChallengeRequest, HostAkChallengeResponse, HostAkEnrollRequest,
    };
    use ovsa_tpm::host::{write_host_evidence, HostQuoteOptions};

    let w = World::sqlite();
    let host = Swtpm::start(names::HOST);
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell_with_tcb(
        perpetual(None, None),
        &w.customer,
        None,
        &w.tcb_with_host(&host),
    );
    let ak_dir = tempfile::tempdir().unwrap();
    let quote_host = |ak_dir: Option<&std::path::Path>| {
        let mut att = TpmAttester::open(Some(&host.tcti()), ak_dir).unwrap();
        let host_ak = ak_dir.map(|_| att.ak().clone());
        let opts = HostQuoteOptions {
            host_ak,
            ..HostQuoteOptions::default()
        };
        write_host_evidence(att.tpm(), &mut vtpm.open(), &opts).unwrap();
    };

    // Evidence signed by a host AK that was never enrolled.
    quote_host(Some(ak_dir.path()));
    let e = w
        .check(&lic, &w.customer, &vtpm, Purpose::Load)
        .expect_err("unenrolled host AK accepted");
    assert!(
        matches!(&e, ClientError::Refused { reason: Reason::HostEvidenceInvalid, message } if message.contains("host-enroll")),
        "{e}"
    );

    // Enrolment: another customer cannot enrol for this license.
    let mallory = World::keystore("CN=Mallory");
    let mut host_att = TpmAttester::open(Some(&host.tcti()), Some(ak_dir.path())).unwrap();
    let opts = ovsa_client::ClientOptions::default();
    assert_eq!(
        refused(enroll_host_ak(
            lic.body(),
            &mallory,
            &mut host_att,
            &opts,
            &mut |_| {}
        )),
        Reason::ClientCertificateMismatch
    );
    // A host EK from an untrusted CA is refused at the challenge.
    let rogue = Swtpm::start(names::ROGUE);
    let mut rogue_att = TpmAttester::open(Some(&rogue.tcti()), None).unwrap();
    assert_eq!(
        refused(enroll_host_ak(
            lic.body(),
            &w.customer,
            &mut rogue_att,
            &opts,
            &mut |_| {}
        )),
        Reason::UntrustedEk
    );
    // A wrong activation, then a replay of the consumed session.
    {
        let mut c = w.connect(&w.customer);
        let ch: HostAkChallengeResponse = c
            .post_json(
                "/v1/host-ak/challenge",
                &HostAkChallengeRequest {
                    license_guid: lic.body().license_guid,
                    ek_certificate: ovsa_client::Attester::ek_certificate(&mut host_att).unwrap(),
                    ak_public: ovsa_client::Attester::ak_public(&mut host_att).unwrap(),
                },
            )
            .unwrap();
        let wrong = HostAkEnrollRequest {
            session_id: ch.session_id,
            activated_secret: vec![0; 32],
        };
        assert_eq!(
            refused(c.post_json::<_, serde_json::Value>("/v1/host-ak/enroll", &wrong)),
            Reason::CredentialMismatch
        );
        assert_eq!(
            refused(c.post_json::<_, serde_json::Value>("/v1/host-ak/enroll", &wrong)),
            Reason::UnknownSession
        );
    }
    // The real enrolment; the same evidence now passes and the model decrypts.
    let enrolled = enroll_host_ak(lic.body(), &w.customer, &mut host_att, &opts, &mut |_| {})
        .expect("enrolment");
    // Name = nameAlg (SHA-256) || SHA-256(public area), hex.
    assert_eq!(enrolled.response.ak_name.len(), 2 * (2 + 32));
    drop(host_att);
    let released = w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    w.assert_model_decrypts(&lic, released.share.as_ref().unwrap());
    assert!(w
        .audit(lic.body().license_guid)
        .iter()
        .any(|e| e.action == "host_ak_enroll" && e.result == "granted"));

    // A fresh AK of the same host TPM (not enrolled) is refused again.
    quote_host(None);
    assert_eq!(
        refused(w.check(&lic, &w.customer, &vtpm, Purpose::Load)),
        Reason::HostEvidenceInvalid
    );
}

/// A challenge is valid for the session TTL only (stored in whole seconds, rounded down: at
/// least TTL - 1 s): an attestation arriving later is refused
/// (`session_expired`) and spends nothing.
#[test]
fn an_expired_challenge_is_refused() {
    let w = World::sqlite_with_session_ttl(std::time::Duration::from_secs(2));
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell(perpetual(Some(1), None), &w.customer, None);
    assert_eq!(
        refused(w.attest_after(&lic, &vtpm, std::time::Duration::from_millis(3200))),
        Reason::SessionExpired
    );
    // The one use is still there.
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
}

/// Power-cycles a swtpm (CMD_INIT on its control port) and sends TPM2_Startup(CLEAR) on its
/// command port: a TPM Reset, so its reset count grows by one.
fn reset_swtpm(tpm: &Swtpm) {
    use std::io::{Read, Write};
    let ok = std::process::Command::new("swtpm_ioctl")
        .args(["--tcp", &format!("127.0.0.1:{}", tpm.port() + 1), "-i"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "swtpm_ioctl -i");
    // TPM_ST_NO_SESSIONS, size 12, TPM_CC_Startup, TPM_SU_CLEAR.
    let startup = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tpm.port())).unwrap();
    s.write_all(&startup).unwrap();
    let mut rsp = [0u8; 10];
    s.read_exact(&mut rsp).unwrap();
    assert_eq!(
        &rsp[6..10],
        &[0, 0, 0, 0],
        "TPM2_Startup(CLEAR): {rsp:02x?}"
    );
}

/// Host evidence expires and cannot be replayed across a host reboot: with
/// `host_max_age_seconds` in the signed TCB reference, a host quote first seen longer ago than
/// that is refused (`host_evidence_stale`); a host quote from before a host TPM reset the
/// service has seen evidence of is refused (`host_evidence_replayed`) even within the age limit.
/// Both refusals are audited; fresh evidence is accepted again.
#[test]
fn host_evidence_expires_and_is_not_replayed_across_a_host_reset() {
    use ovsa_client::{enroll_host_ak, TpmAttester};
    use ovsa_core::envelope::Signed;
    use ovsa_tpm::host::{
        read_host_evidence, read_host_evidence_blob, write_host_evidence, write_host_evidence_blob,
        HostQuoteOptions,
    };

    const MAX_AGE: u64 = 2;
    let w = World::sqlite();
    let host = Swtpm::start(names::HOST);
    let vtpm = Swtpm::start(names::VTPM);
    let mut tcb = w.tcb_with_host(&host).body().clone();
    tcb.host_max_age_seconds = Some(MAX_AGE);
    let tcb = Signed::sign(tcb, &w.isv).unwrap();
    let lic = w.sell_with_tcb(perpetual(None, None), &w.customer, None, &tcb);
    let ak_dir = tempfile::tempdir().unwrap();
    let opts = ovsa_client::ClientOptions::default();
    {
        let mut host_att = TpmAttester::open(Some(&host.tcti()), Some(ak_dir.path())).unwrap();
        enroll_host_ak(lic.body(), &w.customer, &mut host_att, &opts, &mut |_| {})
            .expect("host AK enrolment");
    }
    let quote_host = || {
        let mut att = TpmAttester::open(Some(&host.tcti()), Some(ak_dir.path())).unwrap();
        let opts = HostQuoteOptions {
            host_ak: Some(att.ak().clone()),
            ..HostQuoteOptions::default()
        };
        write_host_evidence(att.tpm(), &mut vtpm.open(), &opts).unwrap();
    };
    let reset_count = || {
        let ev = read_host_evidence(&mut vtpm.open()).unwrap();
        ovsa_core::attest::wire::parse_quote(&ev.quote)
            .unwrap()
            .clock
            .reset_count
    };

    // Fresh evidence: accepted, and again within the age limit.
    quote_host();
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    w.check(&lic, &w.customer, &vtpm, Purpose::Renew).unwrap();

    // Older than the maximum age: stale.
    std::thread::sleep(std::time::Duration::from_millis(1000 * MAX_AGE + 1200));
    let e = w
        .check(&lic, &w.customer, &vtpm, Purpose::Load)
        .expect_err("stale host evidence accepted");
    assert!(
        matches!(&e, ClientError::Refused { reason: Reason::HostEvidenceStale, message } if message.contains("ovsatool host-quote")),
        "{e}"
    );

    // Fresh evidence passes again; keep it, reset the host TPM, write and use evidence of the
    // new reset, then put the old blob back: replayed (well within the age limit).
    quote_host();
    let before = reset_count();
    let old_blob = read_host_evidence_blob(&mut vtpm.open()).unwrap();
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    reset_swtpm(&host);
    quote_host();
    assert_eq!(reset_count(), before + 1, "the host TPM was not reset");
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    write_host_evidence_blob(&mut vtpm.open(), &old_blob).unwrap();
    let e = w
        .check(&lic, &w.customer, &vtpm, Purpose::Load)
        .expect_err("host evidence from before the host reset accepted");
    assert!(
        matches!(&e, ClientError::Refused { reason: Reason::HostEvidenceReplayed, message } if message.contains("reset count")),
        "{e}"
    );

    // Both refusals are in the audit log.
    let audit = w.audit(lic.body().license_guid);
    for reason in [Reason::HostEvidenceStale, Reason::HostEvidenceReplayed] {
        assert!(
            audit
                .iter()
                .any(|a| a.action == "attest" && a.result == "refused" && a.reason == Some(reason)),
            "{reason} not audited: {audit:?}"
        );
    }
}
