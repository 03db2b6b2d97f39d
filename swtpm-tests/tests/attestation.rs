//! End-to-end attestation against real swtpm instances: host quote -> vTPM NV -> attest ->
//! verify, and the tamper cases, each of which must fail with its own error.

use ovsa_core::attest::{
    self, host_blob::HostEvidence, AkBinding, AttestError, EkTrust, Evidence, Expected, HashAlg,
    HostBlobError, HostPolicy, PcrSet, ReferenceValues, VerifierConfig,
};
use ovsa_tpm::host::{self, HostQuoteOptions};
use ovsa_tpm::{AkAlg, AkBlob, EkKind, Tpm, TpmError};
use swtpm_tests::{names, Swtpm, TpmPair};

const VTPM_PCRS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn trust(s: &Swtpm) -> EkTrust {
    EkTrust::from_pem(&s.ca.chain_pem()).expect("CA PEM")
}

/// Everything one successful attestation produced, for tampering.
struct Attested {
    config: VerifierConfig,
    /// Per-call host policy: host evidence required, and the enrolled host AKs (if checked).
    host_required: bool,
    enrolled_host_aks: Option<Vec<Vec<u8>>>,
    evidence: Evidence,
    reference: ReferenceValues,
    pending: attest::PendingCredential,
    response: Vec<u8>,
    nonce: Vec<u8>,
    epk: Vec<u8>,
}

impl Attested {
    fn qd(&self) -> [u8; 32] {
        attest::quote_qualifying_data(&self.nonce, &self.epk, None)
    }

    fn host(&self) -> HostPolicy<'_> {
        HostPolicy {
            required: self.host_required,
            enrolled_aks: self.enrolled_host_aks.as_deref(),
        }
    }

    fn verify(&self) -> Result<attest::AttestationResult, AttestError> {
        self.verify_with(&self.evidence, &self.reference)
    }

    fn verify_with(
        &self,
        ev: &Evidence,
        reference: &ReferenceValues,
    ) -> Result<attest::AttestationResult, AttestError> {
        let qd = self.qd();
        attest::verify(
            &self.config,
            ev,
            &Expected {
                qualifying_data: &qd,
                reference,
                binding: AkBinding::Activated {
                    pending: &self.pending,
                    response: &self.response,
                },
                host: self.host(),
                previous_clock: None,
                now: now(),
            },
        )
    }
}

/// Simulate boot measurements so the reference values are not all-zero.
fn measure(tpm: &mut Tpm, pcrs: &[u8], tag: &str) {
    for &p in pcrs {
        let d = HashAlg::Sha256.digest(format!("{tag}-pcr{p}").as_bytes());
        tpm.pcr_extend(p, HashAlg::Sha256, &d).expect("extend");
    }
}

/// Runs the runtime's side (credential challenge + quote + NV read) against `vtpm`.
fn attest_once(
    config: &VerifierConfig,
    vtpm: &mut Tpm,
    ak: &AkBlob,
    nonce: &[u8],
    epk: &[u8],
) -> (Evidence, attest::PendingCredential, Vec<u8>) {
    let ek_cert = vtpm.ek_certificate(EkKind::Rsa2048).expect("EK cert");
    let (pending, challenge) =
        attest::issue_credential(config, &ek_cert, &ak.public, now()).expect("challenge");
    let response = vtpm
        .activate_credential(ak, &challenge.id_object, &challenge.encrypted_secret)
        .expect("activate");
    let qd = attest::quote_qualifying_data(nonce, epk, None);
    let q = vtpm
        .quote(ak, &qd, HashAlg::Sha256, &VTPM_PCRS)
        .expect("quote");
    let host_evidence = host::read_host_evidence_blob_if_present(vtpm).expect("host evidence");
    (
        Evidence {
            ek_cert,
            ak_public: ak.public.clone(),
            quote: q.attest,
            signature: q.signature,
            pcrs: q.pcrs,
            host_evidence,
            event_log: None,
            ima_log: None,
        },
        pending,
        response.to_vec(),
    )
}

fn setup(pair: &TpmPair) -> (Attested, Tpm, Tpm, AkBlob) {
    let mut host_tpm = pair.host.open();
    let mut vtpm = pair.vtpm.open();
    measure(&mut host_tpm, &[0, 1, 2, 3, 4, 5, 6, 7], "host-firmware");
    measure(&mut vtpm, &[0, 4, 8, 9], "guest-boot");
    let ev = host::write_host_evidence(&mut host_tpm, &mut vtpm, &HostQuoteOptions::default())
        .expect("host quote");
    let config = VerifierConfig {
        vtpm_ek_trust: trust(&pair.vtpm),
        host_ek_trust: trust(&pair.host),
        require_safe_clock: true,
    };
    let ak = vtpm
        .create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256)
        .expect("AK");
    let nonce = b"server-nonce-0123456789abcdef012".to_vec();
    let epk = b"runtime-ephemeral-public-key".to_vec();
    let (evidence, pending, response) = attest_once(&config, &mut vtpm, &ak, &nonce, &epk);
    let reference = ReferenceValues {
        vtpm: evidence.pcrs.clone(),
        host: Some(ev.pcrs.clone()),
        events: None,
        runtime: None,
    };
    (
        Attested {
            config,
            host_required: true,
            enrolled_host_aks: None,
            evidence,
            reference,
            pending,
            response,
            nonce,
            epk,
        },
        host_tpm,
        vtpm,
        ak,
    )
}

#[test]
fn full_path_passes() {
    let pair = TpmPair::start();
    let (a, _, _, ak) = setup(&pair);
    let r = a.verify().expect("attestation must verify");
    assert_eq!(r.ak_name, ak.name().unwrap());
    let host = r.host.expect("host result");
    assert_eq!(host.pcrs.values.len(), 8);
    assert_eq!(r.pcrs.values.len(), VTPM_PCRS.len());
    // Evidence round-trips through JSON (the wire format to the license service).
    let json = serde_json::to_string(&a.evidence).unwrap();
    let back: Evidence = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a.evidence);
}

#[test]
fn rsa_ak_path_passes() {
    let pair = TpmPair::start();
    let (mut a, _, mut vtpm, _) = setup(&pair);
    let ak = vtpm.create_ak(EkKind::Rsa2048, AkAlg::Rsa2048).unwrap();
    let (ev, pending, response) = attest_once(&a.config, &mut vtpm, &ak, &a.nonce, &a.epk);
    a.evidence = ev;
    a.pending = pending;
    a.response = response;
    a.verify().expect("RSA AK attestation must verify");
}

fn blob_with_checksum(mut body: Vec<u8>) -> Vec<u8> {
    let n = body.len() - 32;
    body.truncate(n);
    let sum = HashAlg::Sha256.digest(&body);
    body.extend(sum);
    body
}

type Check = Box<dyn Fn(&AttestError) -> bool>;

#[test]
fn tamper_cases_each_fail_with_their_own_error() {
    let pair = TpmPair::start();
    let (a, mut host_tpm, mut vtpm, ak) = setup(&pair);
    a.verify().expect("baseline must verify");
    let base = a.evidence.clone();
    let host_blob = base.host_evidence.clone().unwrap();
    let mut cases: Vec<(&str, Result<attest::AttestationResult, AttestError>, Check)> = Vec::new();

    // 1. Wrong nonce: the server expects another nonce.
    {
        let mut b = Attested {
            nonce: b"another-nonce".to_vec(),
            ..clone_att(&a)
        };
        b.pending = a_pending(&a);
        cases.push((
            "wrong nonce",
            b.verify(),
            Box::new(|e| matches!(e, AttestError::QualifyingDataMismatch)),
        ));
    }
    // 2. Replayed quote: evidence of an earlier attestation presented for a new nonce.
    {
        let (old, _, _) = attest_once(&a.config, &mut vtpm, &ak, b"old-nonce", &a.epk);
        cases.push((
            "replayed quote (old nonce)",
            a.verify_with(&old, &a.reference),
            Box::new(|e| matches!(e, AttestError::QualifyingDataMismatch)),
        ));
    }
    // 3. Wrong epk: quote bound to another ephemeral key (relay).
    {
        let mut b = clone_att(&a);
        b.epk = b"attacker-key".to_vec();
        cases.push((
            "ephemeral key substituted",
            b.verify(),
            Box::new(|e| matches!(e, AttestError::QualifyingDataMismatch)),
        ));
    }
    // 4. Wrong PCR: the guest booted something else than the reference.
    {
        let mut r = a.reference.clone();
        r.vtpm.values.insert(8, vec![0xAA; 32]);
        cases.push((
            "wrong PCR value",
            a.verify_with(&base, &r),
            Box::new(|e| matches!(e, AttestError::PcrValueMismatch(8))),
        ));
    }
    // 5. Reported PCR edited to match the reference: digest no longer matches the quote.
    {
        let mut ev = base.clone();
        ev.pcrs.values.insert(8, vec![0xAA; 32]);
        let mut r = a.reference.clone();
        r.vtpm.values.insert(8, vec![0xAA; 32]);
        cases.push((
            "reported PCR value forged",
            a.verify_with(&ev, &r),
            Box::new(|e| matches!(e, AttestError::PcrDigestMismatch)),
        ));
    }
    // 6. Reported PCR list differs from the quoted selection.
    {
        let mut ev = base.clone();
        ev.pcrs.values.remove(&9);
        let mut r = a.reference.clone();
        r.vtpm.values.remove(&9);
        cases.push((
            "PCR dropped from report",
            a.verify_with(&ev, &r),
            Box::new(|e| matches!(e, AttestError::PcrSelectionMismatch)),
        ));
    }
    // 7. Reference needs a PCR the quote does not cover.
    {
        let mut r = a.reference.clone();
        r.vtpm.values.insert(15, vec![0; 32]);
        cases.push((
            "reference PCR not quoted",
            a.verify_with(&base, &r),
            Box::new(|e| matches!(e, AttestError::PcrNotQuoted(15))),
        ));
    }
    // 8. Wrong bank.
    {
        let mut r = a.reference.clone();
        r.vtpm = PcrSet {
            bank: HashAlg::Sha1,
            values: r.vtpm.values.keys().map(|k| (*k, vec![0; 20])).collect(),
        };
        cases.push((
            "wrong PCR bank",
            a.verify_with(&base, &r),
            Box::new(|e| matches!(e, AttestError::PcrBankMismatch { .. })),
        ));
    }
    // 9. Corrupted signature.
    {
        let mut ev = base.clone();
        let n = ev.signature.len();
        ev.signature[n - 5] ^= 0x01;
        cases.push((
            "corrupted quote signature",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::QuoteSignatureInvalid)),
        ));
    }
    // 10. Corrupted quote body (signature no longer covers it).
    {
        let mut ev = base.clone();
        let n = ev.quote.len();
        ev.quote[n - 1] ^= 0x01;
        cases.push((
            "quote body modified",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::QuoteSignatureInvalid)),
        ));
    }
    // 11. Not TPM-generated (magic changed).
    {
        let mut ev = base.clone();
        ev.quote[0] = 0;
        cases.push((
            "quote magic changed",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::NotTpmGenerated(_))),
        ));
    }
    // 12. Truncated quote structure.
    {
        let mut ev = base.clone();
        ev.quote.truncate(40);
        cases.push((
            "truncated quote",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::Malformed { .. })),
        ));
    }
    // 13. AK of another TPM: vTPM B's AK cannot activate a credential made for our EK.
    let vtpm_b = Swtpm::start(names::VTPM_B);
    let mut tb = vtpm_b.open();
    let ak_b = tb.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256).unwrap();
    {
        let ek_cert = base.ek_cert.clone();
        let (pending, challenge) =
            attest::issue_credential(&a.config, &ek_cert, &ak_b.public, now()).unwrap();
        let activation =
            tb.activate_credential(&ak_b, &challenge.id_object, &challenge.encrypted_secret);
        assert!(
            activation.is_err(),
            "another TPM must not activate our credential"
        );
        let qd = a.qd();
        let q = tb.quote(&ak_b, &qd, HashAlg::Sha256, &VTPM_PCRS).unwrap();
        let ev = Evidence {
            ak_public: ak_b.public.clone(),
            quote: q.attest,
            signature: q.signature,
            pcrs: q.pcrs,
            ..base.clone()
        };
        let guess = vec![0u8; 32];
        let r = attest::verify(
            &a.config,
            &ev,
            &Expected {
                qualifying_data: &qd,
                reference: &a.reference,
                binding: AkBinding::Activated {
                    pending: &pending,
                    response: &guess,
                },
                host: a.host(),
                previous_clock: None,
                now: now(),
            },
        );
        cases.push((
            "AK of another TPM",
            r,
            Box::new(|e| matches!(e, AttestError::CredentialMismatch)),
        ));
    }
    // 14. AK swapped after the challenge.
    {
        let ev = Evidence {
            ak_public: ak_b.public.clone(),
            ..base.clone()
        };
        cases.push((
            "AK swapped after challenge",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::AkNameMismatch)),
        ));
    }
    // 15. EK certificate of another (trusted) vTPM.
    {
        let ev = Evidence {
            ek_cert: tb.ek_certificate(EkKind::Rsa2048).unwrap(),
            ..base.clone()
        };
        cases.push((
            "EK cert of another vTPM",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::EkCertMismatch)),
        ));
    }
    // 16. Wrong activation response.
    {
        let mut b = clone_att(&a);
        b.response[0] ^= 1;
        b.pending = a_pending(&a);
        cases.push((
            "wrong credential response",
            b.verify(),
            Box::new(|e| matches!(e, AttestError::CredentialMismatch)),
        ));
    }
    // 17. EK certificate from an untrusted CA.
    {
        let rogue = Swtpm::start(names::ROGUE);
        let mut tr = rogue.open();
        let ev = Evidence {
            ek_cert: tr.ek_certificate(EkKind::Rsa2048).unwrap(),
            ..base.clone()
        };
        cases.push((
            "EK cert from untrusted CA",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::EkCertUntrusted(_))),
        ));
    }
    // 18. Non-restricted AK (attributes edited).
    {
        let mut ev = base.clone();
        ev.ak_public[5] &= !0x01; // clear TPMA_OBJECT_RESTRICTED (bit 16 of the BE u32 at offset 4)
        cases.push((
            "AK not restricted",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::AkNotRestrictedSigningKey(_))),
        ));
    }
    // 19. Host quote of another vTPM: host evidence made for vTPM B copied into our evidence.
    {
        let ek_b = tb.ek_certificate(EkKind::Rsa2048).unwrap();
        let other = host::host_quote(&mut host_tpm, &ek_b, &HostQuoteOptions::default()).unwrap();
        let ev = Evidence {
            host_evidence: Some(other.encode().unwrap()),
            ..base.clone()
        };
        cases.push((
            "host quote of another vTPM",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::HostBindingMismatch)),
        ));
    }
    // 20. Missing host evidence.
    {
        let ev = Evidence {
            host_evidence: None,
            ..base.clone()
        };
        cases.push((
            "missing host evidence",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::HostEvidenceMissing)),
        ));
    }
    // 21. Truncated NV blob.
    {
        let ev = Evidence {
            host_evidence: Some(host_blob[..host_blob.len() - 100].to_vec()),
            ..base.clone()
        };
        cases.push((
            "truncated host blob",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::HostBlob(HostBlobError::Truncated { .. }))),
        ));
    }
    // 22. Bit flip in the blob.
    {
        let mut b = host_blob.clone();
        b[100] ^= 0x40;
        let ev = Evidence {
            host_evidence: Some(b),
            ..base.clone()
        };
        cases.push((
            "host blob bit flip",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| matches!(e, AttestError::HostBlob(HostBlobError::BadChecksum))),
        ));
    }
    // 23. Unknown blob version.
    {
        let mut b = host_blob.clone();
        b[5] = 2;
        let ev = Evidence {
            host_evidence: Some(blob_with_checksum(b)),
            ..base.clone()
        };
        cases.push((
            "host blob unknown version",
            a.verify_with(&ev, &a.reference),
            Box::new(|e| {
                matches!(
                    e,
                    AttestError::HostBlob(HostBlobError::UnsupportedVersion(2))
                )
            }),
        ));
    }
    // 24. Host quote signature forged (checksum recomputed, as an attacker could).
    {
        let mut he = HostEvidence::decode(&host_blob).unwrap();
        let n = he.signature.len();
        he.signature[n - 3] ^= 0x10;
        let ev = Evidence {
            host_evidence: Some(he.encode().unwrap()),
            ..base.clone()
        };
        cases.push(("host quote signature forged", a.verify_with(&ev, &a.reference), Box::new(|e| matches!(e, AttestError::Host(inner) if **inner == AttestError::QuoteSignatureInvalid))));
    }
    // 25. Host PCR differs from the reference.
    {
        let mut r = a.reference.clone();
        if let Some(h) = r.host.as_mut() {
            h.values.insert(0, vec![0x55; 32]);
        }
        cases.push(("wrong host PCR", a.verify_with(&base, &r), Box::new(|e| matches!(e, AttestError::Host(inner) if **inner == AttestError::PcrValueMismatch(0)))));
    }
    // 26. Host EK certificate not from the TPM vendor CA.
    {
        let mut b = clone_att(&a);
        b.pending = a_pending(&a);
        b.config.host_ek_trust = trust(&pair.vtpm);
        cases.push(("host EK from untrusted CA", b.verify(), Box::new(|e| matches!(e, AttestError::Host(inner) if matches!(**inner, AttestError::EkCertUntrusted(_))))));
    }
    // 27. Host AK not enrolled.
    {
        let mut b = clone_att(&a);
        b.pending = a_pending(&a);
        b.enrolled_host_aks = Some(vec![ak_b.name().unwrap()]);
        cases.push((
            "host AK not enrolled",
            b.verify(),
            Box::new(|e| matches!(e, AttestError::HostAkNotEnrolled)),
        ));
    }
    // 28. TPM clock went backwards compared with an earlier accepted quote.
    {
        let qd = a.qd();
        let later = attest::wire::parse_quote(&base.quote).unwrap().clock;
        let mut prev = later;
        prev.clock += 1_000_000;
        let r = attest::verify(
            &a.config,
            &base,
            &Expected {
                qualifying_data: &qd,
                reference: &a.reference,
                binding: AkBinding::Activated {
                    pending: &a.pending,
                    response: &a.response,
                },
                host: a.host(),
                previous_clock: Some(prev),
                now: now(),
            },
        );
        cases.push((
            "clock went backwards",
            r,
            Box::new(|e| matches!(e, AttestError::ClockRegressed)),
        ));
    }

    let mut failed = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    eprintln!("{:<32} error", "tamper case");
    for (name, res, check) in &cases {
        match res {
            Ok(_) => failed.push(format!("{name}: ACCEPTED")),
            Err(e) => {
                eprintln!("{name:<32} {e}");
                if !check(e) {
                    failed.push(format!("{name}: unexpected error {e:?}"));
                }
                seen.insert(format!("{e:?}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(cases.len() >= 12);
}

fn clone_att(a: &Attested) -> Attested {
    Attested {
        config: a.config.clone(),
        host_required: a.host_required,
        enrolled_host_aks: a.enrolled_host_aks.clone(),
        evidence: a.evidence.clone(),
        reference: a.reference.clone(),
        pending: a_pending(a),
        response: a.response.clone(),
        nonce: a.nonce.clone(),
        epk: a.epk.clone(),
    }
}

fn a_pending(a: &Attested) -> attest::PendingCredential {
    a.pending.clone()
}

#[test]
fn nv_host_evidence_reader_errors() {
    let pair = TpmPair::start();
    let mut host_tpm = pair.host.open();
    let mut vtpm = pair.vtpm.open();
    // Nothing written yet.
    assert!(matches!(
        host::read_host_evidence(&mut vtpm),
        Err(TpmError::HostBlob(HostBlobError::Missing))
    ));
    // All 24 PCRs: the blob then spans two NV indices.
    let opts = HostQuoteOptions {
        pcrs: (0..24).collect(),
        ..Default::default()
    };
    let ev = host::write_host_evidence(&mut host_tpm, &mut vtpm, &opts).unwrap();
    let blob = ev.encode().unwrap();
    assert!(
        blob.len() > 2048,
        "evidence spans several NV indices ({} bytes)",
        blob.len()
    );
    assert_eq!(host::read_host_evidence(&mut vtpm).unwrap(), ev);
    // Second index removed (platform auth): truncated.
    vtpm_undefine(&mut vtpm, attest::HOST_EVIDENCE_NV_BASE + 1);
    assert!(matches!(
        host::read_host_evidence(&mut vtpm),
        Err(TpmError::HostBlob(HostBlobError::Truncated { .. }))
    ));
    // Garbage of another format: bad magic.
    host::write_host_evidence_blob(&mut vtpm, &[0x42; 100]).unwrap();
    assert!(matches!(
        host::read_host_evidence(&mut vtpm),
        Err(TpmError::HostBlob(HostBlobError::BadMagic))
    ));
    // Corrupted content: bad checksum.
    let mut bad = blob.clone();
    let at = 3000.min(bad.len() - 40);
    bad[at] ^= 1;
    host::write_host_evidence_blob(&mut vtpm, &bad).unwrap();
    assert!(matches!(
        host::read_host_evidence(&mut vtpm),
        Err(TpmError::HostBlob(HostBlobError::BadChecksum))
    ));
    // Rewriting restores it; stale indices of a longer blob are removed.
    assert_eq!(
        host::write_host_evidence_blob(&mut vtpm, &blob).unwrap(),
        blob.len().div_ceil(2048)
    );
    assert_eq!(host::read_host_evidence(&mut vtpm).unwrap(), ev);
}

#[test]
fn guest_cannot_rewrite_or_undefine_host_evidence() {
    use tss_esapi::{
        handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle},
        interface_types::resource_handles::{NvAuth, Provision},
        structures::MaxNvBuffer,
    };
    let pair = TpmPair::start();
    let mut host_tpm = pair.host.open();
    let mut vtpm = pair.vtpm.open();
    host::write_host_evidence(&mut host_tpm, &mut vtpm, &HostQuoteOptions::default()).unwrap();
    let ctx = vtpm.context();
    let nv = NvIndexTpmHandle::new(attest::HOST_EVIDENCE_NV_BASE).unwrap();
    ctx.clear_sessions();
    let obj = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv)))
        .unwrap();
    let h = NvIndexHandle::from(obj);
    let data = MaxNvBuffer::try_from(vec![0u8; 16]).unwrap();
    let w_owner =
        ctx.execute_with_nullauth_session(|c| c.nv_write(NvAuth::Owner, h, data.clone(), 0));
    assert!(w_owner.is_err(), "owner must not write host evidence");
    let w_index = ctx.execute_with_nullauth_session(|c| c.nv_write(NvAuth::NvIndex(h), h, data, 0));
    assert!(w_index.is_err(), "index auth must not write host evidence");
    let u_owner = ctx.execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, h));
    assert!(u_owner.is_err(), "owner must not undefine host evidence");
    assert!(host::read_host_evidence(&mut vtpm).is_ok());
    // The attributes documented in docs/ATTESTATION.md (plus TPMA_NV_WRITTEN), seen by tpm2-tools.
    let out = std::process::Command::new("tpm2_nvreadpublic")
        .arg("0x01000000")
        .env("TPM2TOOLS_TCTI", pair.vtpm.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("value: 0x62070001"), "{text}");
}

fn vtpm_undefine(vtpm: &mut Tpm, index: u32) {
    use tss_esapi::{
        handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle},
        interface_types::resource_handles::Provision,
    };
    let ctx = vtpm.context();
    let nv = NvIndexTpmHandle::new(index).unwrap();
    ctx.clear_sessions();
    let obj = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv)))
        .unwrap();
    ctx.execute_with_nullauth_session(|c| {
        c.nv_undefine_space(Provision::Platform, NvIndexHandle::from(obj))
    })
    .unwrap();
}
