//! Licenses bound to EK CAs or enrolled EKs (security issue item 5): a thief with a customer's
//! stolen files (license + keystore) and a vTPM of their own, certified by another EK CA the
//! service trusts (or by the same CA), cannot spend the customer's license. Real swtpm vTPMs,
//! real TLS 1.3 on loopback, SQLite.

mod common;
use ovsa_test_support::world;

use ovsa_client::ClientError;
use ovsa_core::attest::{EkBinding, EkCertDigest};
use ovsa_core::envelope::Signed;
use ovsa_core::license::{Policy, TcbReference, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use ovsa_tpm::EkKind;
use swtpm_tests::{names, Swtpm};
use world::World;

fn policy() -> Policy {
    Policy {
        validity: Validity::Perpetual,
        usage_limit: Some(10),
        instance_limit: None,
    }
}

fn bound(w: &World, binding: &EkBinding) -> Signed<TcbReference> {
    TcbReference::bind_ek(&w.tcb, binding, &w.isv).unwrap()
}

/// The refusal's reason and message (panics on success or another error).
fn refusal<T>(r: Result<T, ClientError>) -> (Reason, String) {
    match r {
        Err(ClientError::Refused { reason, message }) => (reason, message),
        Err(e) => panic!("expected a refusal, got: {e}"),
        Ok(_) => panic!("expected a refusal, got success"),
    }
}

/// The service trusts two vTPM EK CAs ("vtpm-ca", and the harness's "rogue-ca" playing a second
/// vTPM vendor the operator trusts). The victim's license is bound to vtpm-ca. The thief uses the
/// victim's license and keystore with a vTPM of their own from rogue-ca: granted when the license
/// is unbound (the attack), refused with `ek_not_allowed_for_license` when bound, audited, no
/// use spent; the victim's own vTPM still gets the share and the model decrypts.
#[test]
fn a_stolen_license_with_a_vtpm_from_another_trusted_ca_is_refused_when_bound_to_ek_cas() {
    let w = World::sqlite_trusting_vtpm_cas(&[names::VTPM_CA, names::ROGUE_CA]);
    let victim_vtpm = Swtpm::start(names::VTPM);
    let thief_vtpm = Swtpm::start(names::ROGUE);
    let vtpm_ca = swtpm_tests::ca(names::VTPM_CA);

    // Without a binding the attack works: any vTPM from any trusted CA attests for the license.
    let unbound = w.sell(policy(), &w.customer, None);
    let stolen = w
        .check(&unbound, &w.customer, &thief_vtpm, Purpose::Load)
        .expect("an unbound license accepts a vTPM from any trusted EK CA");
    w.assert_model_decrypts(&unbound, stolen.share.as_ref().unwrap());

    // Bound to the victim's EK CA (its root; the service's intermediate completes the path).
    let binding = EkBinding {
        cas: vec![vtpm_ca.root_der()],
        eks: vec![],
    };
    let lic = w.sell_with_tcb(policy(), &w.customer, None, &bound(&w, &binding));
    let guid = lic.body().license_guid;
    let (reason, message) = refusal(w.check(&lic, &w.customer, &thief_vtpm, Purpose::Load));
    assert_eq!(reason, Reason::EkNotAllowedForLicense, "{message}");
    assert!(message.contains("not allowed for the license"), "{message}");
    let root_sha = hex::encode(ovsa_core::crypto::hash::sha256(&vtpm_ca.root_der()));
    assert!(
        message.contains("swtpm-localca-rootca") && message.contains(&root_sha),
        "the message names the allowed CA: {message}"
    );
    // A renewal from the thief's vTPM is refused the same way.
    assert_eq!(
        refusal(w.check(&lic, &w.customer, &thief_vtpm, Purpose::Renew)).0,
        Reason::EkNotAllowedForLicense
    );
    // Audited under the license, with its own reason.
    let audit = w.audit(guid);
    assert!(
        audit.iter().any(|e| e.result == "refused"
            && e.reason == Some(Reason::EkNotAllowedForLicense)
            && e.message.contains("not allowed for the license")),
        "{audit:?}"
    );
    // The victim's own vTPM works, and the thief's attempts spent no use.
    let released = w
        .check(&lic, &w.customer, &victim_vtpm, Purpose::Load)
        .expect("the bound license works on the victim's vTPM");
    assert_eq!(released.response.uses, 1);
    w.assert_model_decrypts(&lic, released.share.as_ref().unwrap());

    // Bound to the intermediate (issuer) CA instead of the root: the same.
    let by_issuer = EkBinding {
        cas: vec![vtpm_ca.issuer_der()],
        eks: vec![],
    };
    let lic = w.sell_with_tcb(policy(), &w.customer, None, &bound(&w, &by_issuer));
    assert_eq!(
        refusal(w.check(&lic, &w.customer, &thief_vtpm, Purpose::Load)).0,
        Reason::EkNotAllowedForLicense
    );
    w.check(&lic, &w.customer, &victim_vtpm, Purpose::Load)
        .expect("bound to the issuing CA");

    // A binding never widens the service's trust: a license bound to an EK CA the service does
    // not trust still refuses that CA's vTPMs as untrusted.
    let w2 = World::sqlite();
    let lic = w2.sell_with_tcb(
        policy(),
        &w2.customer,
        None,
        &bound(
            &w2,
            &EkBinding {
                cas: vec![swtpm_tests::ca(names::ROGUE_CA).root_der()],
                eks: vec![],
            },
        ),
    );
    assert_eq!(
        refusal(w2.check(&lic, &w2.customer, &thief_vtpm, Purpose::Load)).0,
        Reason::UntrustedEk
    );
}

/// Enrolled-EK variant: the license is bound to the victim's vTPM EK certificates. Another vTPM
/// from the very same trusted CA (the thief's, or any other VM) is refused with
/// `ek_not_allowed_for_license`; the victim's vTPM works.
#[test]
fn a_stolen_license_with_another_vtpm_of_the_same_ca_is_refused_when_bound_to_enrolled_eks() {
    let w = World::sqlite();
    let victim_vtpm = Swtpm::start(names::VTPM);
    let thief_vtpm = Swtpm::start(names::VTPM_B);

    // The attack, unbound: the other vTPM of the same CA is accepted.
    let unbound = w.sell(policy(), &w.customer, None);
    w.check(&unbound, &w.customer, &thief_vtpm, Purpose::Load)
        .expect("an unbound license accepts any vTPM of a trusted CA");

    let eks = {
        let mut tpm = victim_vtpm.open();
        [EkKind::Rsa2048, EkKind::EccP384]
            .into_iter()
            .filter_map(|k| tpm.ek_certificate(k).ok())
            .map(|der| EkCertDigest::of(&der))
            .collect::<Vec<_>>()
    };
    assert!(!eks.is_empty());
    let binding = EkBinding { cas: vec![], eks };
    let lic = w.sell_with_tcb(policy(), &w.customer, None, &bound(&w, &binding));
    let (reason, message) = refusal(w.check(&lic, &w.customer, &thief_vtpm, Purpose::Load));
    assert_eq!(reason, Reason::EkNotAllowedForLicense, "{message}");
    assert!(
        message.contains("the EK certificate with SHA-256"),
        "names the enrolled EKs: {message}"
    );
    assert!(w
        .audit(lic.body().license_guid)
        .iter()
        .any(|e| e.reason == Some(Reason::EkNotAllowedForLicense)));
    let released = w
        .check(&lic, &w.customer, &victim_vtpm, Purpose::Load)
        .expect("the enrolled vTPM works");
    assert_eq!(released.response.uses, 1);
    w.assert_model_decrypts(&lic, released.share.as_ref().unwrap());
}
