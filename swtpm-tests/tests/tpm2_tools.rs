//! Cross-checks with an independent client (tpm2-tools): `tpm2_checkquote` accepts our quotes,
//! and our Verifier accepts quotes made by `tpm2_quote`.

use std::process::Command;

use ovsa_core::attest::{self, AttestError, HashAlg};
use ovsa_tpm::{AkAlg, EkKind};
use swtpm_tests::{names, Swtpm};

const PCRS: [u8; 6] = [0, 1, 2, 7, 8, 16];

/// The same PCRs in tpm2-tools' selection syntax.
fn pcr_list() -> String {
    let l: Vec<String> = PCRS.iter().map(|p| p.to_string()).collect();
    format!("sha256:{}", l.join(","))
}

fn tool(s: &Swtpm, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", s.tcti())
        .env("TSS2_LOG", "all+none")
        .output()
        .expect("tpm2-tools installed (see scripts/setup.sh)")
}

/// `pcrs.bin` is in tpm2-tools' serialized format, so the plain command (no `-l`) verifies,
/// also with 8 and more PCRs (the raw values format needs `-l`, which tpm2-tools 5.4 mis-reads
/// from 8 PCRs on).
#[test]
fn tpm2_checkquote_accepts_our_quotes() {
    let s = Swtpm::start(names::VTPM);
    let mut tpm = s.open();
    tpm.pcr_extend(8, HashAlg::Sha256, &[0x11; 32]).unwrap();
    let qd = attest::quote_qualifying_data(b"nonce", b"epk", None);
    let eight: Vec<u8> = (0..8).collect();
    let ten: Vec<u8> = (0..10).collect();
    for (alg, pcrs) in [
        (AkAlg::EcdsaP256, &PCRS[..]),
        (AkAlg::Rsa2048, &PCRS[..]),
        (AkAlg::EcdsaP256, &eight[..]),
        (AkAlg::EcdsaP256, &ten[..]),
        (AkAlg::EcdsaP256, &[16][..]),
    ] {
        let ak = tpm.create_ak(EkKind::Rsa2048, alg).unwrap();
        let q = tpm.quote(&ak, &qd, HashAlg::Sha256, pcrs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        ovsa_tpm::tools::write_tpm2_tools_files(dir.path(), &q, &ak.public).unwrap();
        let check = |qhex: &str| {
            tool(
                &s,
                dir.path(),
                &[
                    "tpm2_checkquote",
                    "-u",
                    "ak.pub",
                    "-m",
                    "quote.msg",
                    "-s",
                    "quote.sig",
                    "-f",
                    "pcrs.bin",
                    "-g",
                    "sha256",
                    "-q",
                    qhex,
                ],
            )
        };
        let out = check(&hex::encode(qd));
        assert!(
            out.status.success(),
            "{alg:?} {pcrs:?}: tpm2_checkquote refused our quote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // ... and refuses it for another nonce (so the check above is meaningful).
        let out = check(&hex::encode([0u8; 32]));
        assert!(
            !out.status.success(),
            "tpm2_checkquote accepted a wrong nonce"
        );
        // ... and for other PCR values than the quoted ones.
        let mut other = q.clone();
        if let Some(v) = other.pcrs.values.values_mut().next() {
            v[0] ^= 1;
        }
        ovsa_tpm::tools::write_tpm2_tools_files(dir.path(), &other, &ak.public).unwrap();
        let out = check(&hex::encode(qd));
        assert!(
            !out.status.success(),
            "tpm2_checkquote accepted other PCR values"
        );
    }
}

#[test]
fn our_verifier_accepts_tpm2_quote() {
    let s = Swtpm::start(names::VTPM);
    let dir = tempfile::tempdir().unwrap();
    let qd = attest::quote_qualifying_data(b"nonce", b"epk", None);
    let qhex = hex::encode(qd);
    let list = pcr_list();
    for args in [
        // swtpm has no resource manager: flush what each tool leaves loaded.
        &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"][..],
        &["tpm2_flushcontext", "-t"][..],
        &[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            "ecc",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
        ][..],
        &["tpm2_flushcontext", "-t"][..],
        &["tpm2_flushcontext", "-s"][..],
        &[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            &list,
            "-q",
            &qhex,
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "pcrs.out",
            "-g",
            "sha256",
        ][..],
    ] {
        let out = tool(&s, dir.path(), args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    let mut tpm = s.open();
    let pcrs = tpm.read_pcrs(HashAlg::Sha256, &PCRS).unwrap();
    // tpm2_quote's own PCR file (serialized format) parses to the same values, and ours is
    // the same bytes where it matters (tpm2-tools may leave padding uninitialized).
    assert_eq!(
        ovsa_tpm::tools::parse_pcrs_serialized(&read("pcrs.out")).unwrap(),
        vec![pcrs.clone()]
    );
    assert_eq!(
        read("pcrs.out").len(),
        ovsa_tpm::tools::pcrs_serialized(&pcrs).len()
    );
    let info = attest::verify_quote_only(
        &read("ak.pub"),
        &read("quote.msg"),
        &read("quote.sig"),
        &pcrs,
        &qd,
    )
    .expect("our verifier must accept tpm2_quote's quote");
    assert_eq!(info.extra_data, qd);
    // The AK Name we compute equals tpm2-tools' ak.name.
    let ak = attest::wire::parse_public(&read("ak.pub")).unwrap();
    assert_eq!(ak.name().unwrap(), read("ak.name"));
    // And refuses it for another nonce.
    assert_eq!(
        attest::verify_quote_only(
            &read("ak.pub"),
            &read("quote.msg"),
            &read("quote.sig"),
            &pcrs,
            &[0u8; 32]
        ),
        Err(AttestError::QualifyingDataMismatch)
    );
}
