//! Attester (ovsa-tpm) behaviour on swtpm: typed errors, EK certificates, AK caching across
//! connections, objects flushed.

use ovsa_core::attest::{self, HashAlg};
use ovsa_tpm::{parse_tcti, AkAlg, AkBlob, EkKind, Tpm, TpmError};
use swtpm_tests::{names, Swtpm};

#[test]
fn typed_errors() {
    assert!(matches!(
        parse_tcti(Some("bogus:whatever")),
        Err(TpmError::BadTcti { .. })
    ));
    // Nothing listens on port 1.
    assert!(matches!(
        Tpm::open(Some("swtpm:host=127.0.0.1,port=1")),
        Err(TpmError::Unreachable { .. })
    ));
    let s = Swtpm::start(names::VTPM);
    let mut tpm = s.open();
    assert!(matches!(
        tpm.ek_certificate(EkKind::EccP256),
        Err(TpmError::NoEkCertificate(EkKind::EccP256))
    ));
    assert!(matches!(
        tpm.nv_read(0x0140_0000),
        Err(TpmError::NvIndexMissing(0x0140_0000))
    ));
    assert!(matches!(
        AkBlob::from_json("{}"),
        Err(TpmError::BadAkBlob(_))
    ));
}

#[test]
fn ek_certificates_and_cached_ak_across_connections() {
    let s = Swtpm::start(names::VTPM);
    let trust = attest::EkTrust::from_pem(&s.ca.chain_pem()).unwrap();
    let blob_json = {
        let mut tpm = s.open();
        let certs = tpm.ek_certificates().unwrap();
        let kinds: Vec<EkKind> = certs.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![EkKind::Rsa2048, EkKind::EccP384]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for (_, c) in &certs {
            attest::verify_ek_chain(&trust, c, now).unwrap();
        }
        tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256)
            .unwrap()
            .to_json()
    };
    // A later process loads the cached AK instead of creating one; many operations in a row do
    // not exhaust swtpm's 3 object slots (everything loaded is flushed).
    let ak = AkBlob::from_json(&blob_json).unwrap();
    let mut tpm = s.open();
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    for i in 0..10u8 {
        let qd = [i; 32];
        let q = tpm.quote(&ak, &qd, HashAlg::Sha256, &[0, 7]).unwrap();
        assert_eq!(q.attempts, 1);
        attest::verify_quote_only(&ak.public, &q.attest, &q.signature, &q.pcrs, &qd).unwrap();
        let ch =
            attest::make_credential_rsa(&attest::ek_spki(&ek).unwrap(), &ak.name().unwrap(), &qd)
                .unwrap();
        let got = tpm
            .activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
            .unwrap();
        assert_eq!(&got[..], &qd[..]);
    }
    // PCR extension is visible in the next quote.
    let before = tpm.read_pcrs(HashAlg::Sha256, &[16]).unwrap();
    tpm.pcr_extend(16, HashAlg::Sha256, &[1; 32]).unwrap();
    let q = tpm.quote(&ak, &[0; 32], HashAlg::Sha256, &[16]).unwrap();
    assert_ne!(q.pcrs, before);
    let expected = HashAlg::Sha256.digest(&[before.values[&16].as_slice(), &[1u8; 32]].concat());
    assert_eq!(q.pcrs.values[&16], expected);
}

#[test]
fn ecc_p256_ek_credential_activation() {
    use tss_esapi::{
        abstraction::{ek, AsymmetricAlgorithmSelection},
        interface_types::ecc::EccCurve,
        traits::Marshall,
    };
    let s = Swtpm::start(names::VTPM);
    let mut tpm = s.open();
    // swtpm provisions no P-256 EK certificate; take the EK's public point from the TPM.
    let point = {
        let ctx = tpm.context();
        let h = ek::create_ek_object_2(
            ctx,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            None,
        )
        .unwrap();
        let (public, _, _) = ctx.read_public(h).unwrap();
        ctx.flush_context(h.into()).unwrap();
        match attest::wire::parse_public(&public.marshall().unwrap())
            .unwrap()
            .key
        {
            attest::wire::PublicKey::Ecc { x, y, .. } => [vec![4], x, y].concat(),
            other => panic!("{other:?}"),
        }
    };
    let ak = tpm.create_ak(EkKind::EccP256, AkAlg::EcdsaP256).unwrap();
    let secret = [0x5a; 32];
    let ch = attest::make_credential_ecc_p256(&point, &ak.name().unwrap(), &secret).unwrap();
    let got = tpm
        .activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
        .unwrap();
    assert_eq!(&got[..], &secret[..]);
    // Made for another AK Name: the TPM refuses.
    let other = attest::make_credential_ecc_p256(&point, &[0, 0x0b, 1, 2, 3], &secret).unwrap();
    assert!(tpm
        .activate_credential(&ak, &other.id_object, &other.encrypted_secret)
        .is_err());
}
