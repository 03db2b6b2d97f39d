use ovsa_tpm::attest::{self, HashAlg};
use ovsa_tpm::{AkAlg, EkKind};
use swtpm_tests::{names, Swtpm, TpmPair};

#[test]
fn attester_basics() {
    let t0 = std::time::Instant::now();
    let s = Swtpm::start(names::VTPM);
    eprintln!("start: {:?}", t0.elapsed());
    let mut tpm = s.open();
    let certs = tpm.ek_certificates().unwrap();
    eprintln!(
        "certs: {:?}",
        certs.iter().map(|(k, c)| (*k, c.len())).collect::<Vec<_>>()
    );
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    for alg in [AkAlg::EcdsaP256, AkAlg::Rsa2048] {
        let ak = tpm.create_ak(EkKind::Rsa2048, alg).unwrap();
        let q = tpm
            .quote(
                &ak,
                b"0123456789abcdef0123456789abcdef",
                HashAlg::Sha256,
                &[0, 1, 2, 16],
            )
            .unwrap();
        attest::verify_quote_only(
            &ak.public,
            &q.attest,
            &q.signature,
            &q.pcrs,
            b"0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let secret = [7u8; 32];
        let ch = attest::make_credential_rsa(
            &attest::ek_spki(&ek).unwrap(),
            &ak.name().unwrap(),
            &secret,
        )
        .unwrap();
        let got = tpm
            .activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
            .unwrap();
        assert_eq!(&got[..], &secret[..]);
    }
    let trust = attest::EkTrust::from_pem(&s.ca.chain_pem()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    attest::verify_ek_chain(&trust, &ek, now).unwrap();
    eprintln!(
        "total: {:?}, commands {}",
        t0.elapsed(),
        tpm.command_count()
    );
}

#[test]
fn host_evidence_roundtrip() {
    let p = TpmPair::start();
    let mut host = p.host.open();
    let mut vtpm = p.vtpm.open();
    let ev =
        ovsa_tpm::host::write_host_evidence(&mut host, &mut vtpm, &Default::default()).unwrap();
    let back = ovsa_tpm::host::read_host_evidence(&mut vtpm).unwrap();
    assert_eq!(ev, back);
}
