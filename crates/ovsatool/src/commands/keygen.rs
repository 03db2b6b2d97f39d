//! `ovsatool keygen`.

use std::io::Write;

use ovsa_core::fsutil::{commit_all, AtomicFile, MODE_PUBLIC, MODE_SECRET};
use ovsa_core::identity::{Certificate, CertificateUsage, Keystore, KeystoreProtection};

use super::with_suffix;
use crate::cli::KeygenArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_outputs, named};
use crate::secrets::{load_keystore, passphrase, MIN_PASSPHRASE_CHARS, PASSPHRASE_ENV};

/// An atomic file holding `bytes`, not yet in place.
fn staged(path: &std::path::Path, bytes: &[u8], mode: u32, force: bool) -> CliResult<AtomicFile> {
    let mut f = AtomicFile::create(path, mode, force)?;
    f.write_all(bytes)
        .map_err(|e| ovsa_core::Error::io(path, e))?;
    Ok(f)
}

pub fn run(a: &KeygenArgs) -> CliResult<()> {
    let pass_file = a.ks.passphrase_file.as_deref();
    if let Some(cert_path) = &a.import_cert {
        let crt_path = with_suffix(&a.ks.keystore, ".crt");
        // The keystore itself is rewritten in place (that is the point); its .crt is replaced.
        let mut inputs = vec![named("--import-cert", cert_path.as_path())];
        if let Some(p) = pass_file {
            inputs.push(named("--passphrase-file", p));
        }
        if let Some(c) = &a.chain {
            inputs.push(named("--chain", c));
        }
        check_outputs(&[named("--keystore", &a.ks.keystore)], &inputs, true)?;
        // Importing the keystore's own FILE.crt (a CA-signed certificate saved there) is fine:
        // it is read completely before FILE.crt is replaced by the same certificate.
        check_outputs(
            &[named("--keystore FILE.crt", &crt_path)],
            &inputs[1..],
            true,
        )?;
        let mut ks = load_keystore(&a.ks.keystore, pass_file)?;
        let cert = Certificate::load(cert_path)?;
        cert.require_v3(&format!("--import-cert {}", cert_path.display()))?;
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
        let protection = protection(
            a.encrypt || ks.was_passphrase_protected(),
            pass_file,
            a.encrypt && !ks.was_passphrase_protected(),
        )?;
        commit_all(vec![
            staged(
                &a.ks.keystore,
                &ks.to_bytes(&protection)?,
                MODE_SECRET,
                true,
            )?,
            staged(
                &crt_path,
                ks.certificate().to_pem().as_bytes(),
                MODE_PUBLIC,
                true,
            )?,
        ])?;
        say!(
            "imported certificate '{}' (issuer '{}') into {}",
            ovsa_core::text::escape_controls(ks.certificate().subject()),
            ovsa_core::text::escape_controls(ks.certificate().issuer()),
            a.ks.keystore.display()
        );
        return Ok(());
    }
    let subject = a
        .subject
        .as_deref()
        .ok_or_else(|| CliError::Usage("--subject is required".into()))?;
    let alg = a.algorithm.parse()?;
    let csr_path = with_suffix(&a.ks.keystore, ".csr");
    let crt_path = with_suffix(&a.ks.keystore, ".crt");
    let inputs: Vec<_> = pass_file
        .map(|p| named("--passphrase-file", p))
        .into_iter()
        .collect();
    check_outputs(
        &[
            named("--keystore", &a.ks.keystore),
            named("--keystore FILE.csr", &csr_path),
            named("--keystore FILE.crt", &crt_path),
        ],
        &inputs,
        a.force,
    )?;
    if !a.encrypt && pass_file.is_some() {
        eprintln!(
            "ovsatool: warning: --passphrase-file is ignored without --encrypt: the private key is stored unencrypted (file mode 0600)"
        );
    }
    let protection = protection(a.encrypt, pass_file, true)?;
    let (ks, csr) = Keystore::generate(alg, subject, a.days)?;
    commit_all(vec![
        staged(
            &a.ks.keystore,
            &ks.to_bytes(&protection)?,
            MODE_SECRET,
            a.force,
        )?,
        staged(&csr_path, csr.as_bytes(), MODE_PUBLIC, a.force)?,
        staged(
            &crt_path,
            ks.certificate().to_pem().as_bytes(),
            MODE_PUBLIC,
            a.force,
        )?,
    ])?;
    say!(
        "created {} ({}, '{}'{}), {} and {}",
        a.ks.keystore.display(),
        alg.name(),
        ovsa_core::text::escape_controls(ks.certificate().subject()),
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

/// The protection to save with. A new passphrase (`new_passphrase`: keygen --encrypt) must have
/// at least [`MIN_PASSPHRASE_CHARS`] characters; re-saving a keystore that already had one keeps
/// it as it is.
fn protection(
    encrypt: bool,
    pass_file: Option<&std::path::Path>,
    new_passphrase: bool,
) -> CliResult<KeystoreProtection> {
    if !encrypt {
        return Ok(KeystoreProtection::None);
    }
    match passphrase(pass_file)? {
        Some(p) if new_passphrase && p.chars().count() < MIN_PASSPHRASE_CHARS => {
            Err(CliError::Usage(format!(
                "the passphrase has {} character(s); a keystore passphrase needs at least {MIN_PASSPHRASE_CHARS} (it is all that protects the private key if the file leaks)",
                p.chars().count()
            )))
        }
        Some(p) => Ok(KeystoreProtection::Passphrase(p)),
        None => Err(CliError::Usage(format!(
            "--encrypt needs a passphrase: pass --passphrase-file FILE or set {PASSPHRASE_ENV}"
        ))),
    }
}
