//! `ovsatool keygen`.

use ovsa_core::fsutil::{write_atomic, MODE_PUBLIC};
use ovsa_core::identity::{Certificate, CertificateUsage, Keystore, KeystoreProtection};

use super::with_suffix;
use crate::cli::KeygenArgs;
use crate::error::{CliError, CliResult};
use crate::secrets::{load_keystore, passphrase, PASSPHRASE_ENV};

pub fn run(a: &KeygenArgs) -> CliResult<()> {
    let pass_file = a.ks.passphrase_file.as_deref();
    if let Some(cert_path) = &a.import_cert {
        let mut ks = load_keystore(&a.ks.keystore, pass_file)?;
        let cert = Certificate::load(cert_path)?;
        cert.check_validity_now()?;
        let chain = match &a.chain {
            Some(p) => {
                let chain = Certificate::load_all(p)?;
                verify_against_chain(&cert, &chain, p)?;
                chain
            }
            None => Vec::new(),
        };
        ks.import_certificate(cert, chain)?;
        // A passphrase-protected keystore stays protected (with the passphrase it was opened
        // with) even without --encrypt: importing a certificate never writes the key in clear.
        let protection = protection(a.encrypt || ks.was_passphrase_protected(), pass_file)?;
        ks.save(&a.ks.keystore, &protection, true)?;
        write_atomic(
            &with_suffix(&a.ks.keystore, ".crt"),
            ks.certificate().to_pem().as_bytes(),
            MODE_PUBLIC,
            true,
        )?;
        say!(
            "imported certificate '{}' (issuer '{}') into {}",
            ks.certificate().subject(),
            ks.certificate().issuer(),
            a.ks.keystore.display()
        );
        return Ok(());
    }
    let subject = a
        .subject
        .as_deref()
        .ok_or_else(|| CliError::Usage("--subject is required".into()))?;
    let alg = a.algorithm.parse()?;
    let protection = protection(a.encrypt, pass_file)?;
    let (ks, csr) = Keystore::generate(alg, subject, a.days)?;
    let csr_path = with_suffix(&a.ks.keystore, ".csr");
    let crt_path = with_suffix(&a.ks.keystore, ".crt");
    for p in [&a.ks.keystore, &csr_path, &crt_path] {
        if !a.force && p.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                p.display()
            )));
        }
    }
    ks.save(&a.ks.keystore, &protection, a.force)?;
    write_atomic(&csr_path, csr.as_bytes(), MODE_PUBLIC, a.force)?;
    write_atomic(
        &crt_path,
        ks.certificate().to_pem().as_bytes(),
        MODE_PUBLIC,
        a.force,
    )?;
    say!(
        "created {} ({}, '{}'{}), {} and {}",
        a.ks.keystore.display(),
        alg.name(),
        ks.certificate().subject(),
        if matches!(protection, KeystoreProtection::Passphrase(_)) {
            ", passphrase-protected"
        } else {
            ""
        },
        csr_path.display(),
        crt_path.display()
    );
    say!(
        "certificate SHA-256 fingerprint: {}",
        hex::encode(ks.certificate().fingerprint())
    );
    Ok(())
}

/// The imported certificate must chain to the CA certificates given with it (the last one is
/// the root), for one of the identities a keystore serves (ISV signer, customer, TLS server).
fn verify_against_chain(
    cert: &Certificate,
    chain: &[Certificate],
    chain_path: &std::path::Path,
) -> CliResult<()> {
    let Some((root, intermediates)) = chain.split_last() else {
        return Err(CliError::Usage(format!(
            "{}: holds no certificate",
            chain_path.display()
        )));
    };
    let now = time::OffsetDateTime::now_utc();
    let anchors = std::slice::from_ref(root);
    let mut first_error = None;
    for usage in [
        CertificateUsage::Isv,
        CertificateUsage::Customer,
        CertificateUsage::Server,
    ] {
        match cert.verify_chain(intermediates, anchors, usage, now) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(CliError::Usage(format!(
        "certificate '{}' does not chain to the CA chain in {} ({}); pass the chain of the CA that signed it, root last",
        cert.subject(),
        chain_path.display(),
        first_error.map(|e| e.to_string()).unwrap_or_default()
    )))
}

fn protection(encrypt: bool, pass_file: Option<&std::path::Path>) -> CliResult<KeystoreProtection> {
    if !encrypt {
        return Ok(KeystoreProtection::None);
    }
    match passphrase(pass_file)? {
        Some(p) => Ok(KeystoreProtection::Passphrase(p)),
        None => Err(CliError::Usage(format!(
            "--encrypt needs a passphrase: pass --passphrase-file FILE or set {PASSPHRASE_ENV}"
        ))),
    }
}
