//! `ovsatool keygen`.

use ovsa_core::fsutil::{write_atomic, MODE_PUBLIC};
use ovsa_core::identity::{Certificate, Keystore, KeystoreProtection};

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
            Some(p) => Certificate::load_all(p)?,
            None => Vec::new(),
        };
        ks.import_certificate(cert, chain)?;
        let protection = protection(a.encrypt, pass_file)?;
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
