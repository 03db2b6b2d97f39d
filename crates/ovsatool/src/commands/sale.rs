//! `ovsatool sale`.

use ovsa_core::attest::{
    certificates_from_pem_or_der, is_ca_certificate, subject_of, EkBinding, EkCertDigest,
};
use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::read_limited_as;
use ovsa_core::identity::cert::MAX_CERT_FILE;
use ovsa_core::text::escape_controls;
use std::io::Write;

use ovsa_core::fsutil::{commit_all, AtomicFile, MODE_PUBLIC, MODE_SECRET};
use ovsa_core::identity::{Certificate, CertificateUsage};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::{sell, LicenseConfig, MasterLicense, TcbReference};

use crate::cli::SaleArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_outputs, named};
use crate::secrets::load_keystore;

pub fn run(a: &SaleArgs) -> CliResult<()> {
    let mut inputs = vec![
        named("--keystore", &a.ks.keystore),
        named("--master-license", &a.master_license),
        named("--config", &a.config),
        named("--tcb", &a.tcb),
        named("--customer-cert", &a.customer_cert),
        named("--registration-cert", &a.registration_cert),
    ];
    if let Some(p) = &a.ks.passphrase_file {
        inputs.push(named("--passphrase-file", p));
    }
    if let Some(p) = &a.customer_ca {
        inputs.push(named("--customer-ca", p));
    }
    inputs.extend(a.ek_ca.iter().map(|p| named("--ek-ca", p)));
    inputs.extend(a.ek_cert.iter().map(|p| named("--ek-cert", p)));
    if let Some(p) = &a.runtime_policy {
        inputs.push(named("--runtime-policy", p));
    }
    check_outputs(
        &[
            named("--out", &a.out),
            named("--registration", &a.registration),
        ],
        &inputs,
        a.force,
    )?;
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let master = Signed::<MasterLicense>::load(&a.master_license)?;
    let config = Signed::<LicenseConfig>::load(&a.config)?;
    let tcb = Signed::<TcbReference>::load(&a.tcb)?;
    let customer = Certificate::load(&a.customer_cert)?;
    customer.require_v3(&format!("--customer-cert {}", a.customer_cert.display()))?;
    if let Some(ca) = &a.customer_ca {
        let anchors = Certificate::load_all(ca)?;
        customer.verify_chain(
            &[],
            &anchors,
            CertificateUsage::Customer,
            time::OffsetDateTime::now_utc(),
        )?;
    }
    let service = Certificate::load(&a.registration_cert)?;
    service.require_v3(&format!(
        "--registration-cert {}",
        a.registration_cert.display()
    ))?;
    let binding = ek_binding(a)?;
    let tcb = match &binding {
        Some(b) => TcbReference::bind_ek(&tcb, b, &isv)?,
        None => tcb,
    };
    let tcb = match &a.runtime_policy {
        Some(p) => TcbReference::bind_runtime_policy(
            &tcb,
            &Signed::<ovsa_core::license::RuntimePolicy>::load(p)?,
            &isv,
        )?,
        None => tcb,
    };
    let sale = sell(&SaleRequest {
        isv: &isv,
        master: &master,
        config: &config,
        tcb: &tcb,
        customer: &customer,
        service: &service,
    })?;
    // Both land together or neither does: a license without its registration (or the reverse)
    // is useless.
    let stage = |path: &std::path::Path, bytes: Vec<u8>, mode| -> CliResult<AtomicFile> {
        let mut f = AtomicFile::create(path, mode, a.force)?;
        f.write_all(&bytes)
            .map_err(|e| ovsa_core::Error::io(path, e))?;
        Ok(f)
    };
    commit_all(vec![
        stage(&a.registration, sale.registration.to_bytes()?, MODE_SECRET)?,
        stage(&a.out, sale.license.to_bytes()?, MODE_PUBLIC)?,
    ])?;
    let l = sale.license.body();
    say!(
        "sold license {} for '{}' version {} to '{}'",
        l.license_guid,
        escape_controls(&l.model_name),
        escape_controls(&l.model_version),
        escape_controls(customer.subject())
    );
    say!(
        "customer license:      {} (give to the customer)",
        a.out.display()
    );
    say!(
        "service registration:  {} (import into the license service; its key share is sealed to {})",
        a.registration.display(),
        escape_controls(service.subject())
    );
    if let Some(r) = &sale.license.body().tcb.runtime {
        say!(
            "runtime policy:        '{}' ({} patterns; PCR 10 and the IMA list are checked)",
            escape_controls(&r.name),
            r.files.len()
        );
    }
    match &sale.license.body().tcb.vtpm_ek {
        Some(b) => {
            say!("bound to vTPMs:        {}", b.describe().join("; "));
        }
        None => eprintln!(
            "warning: the license is not bound to EK CAs or EKs: any vTPM whose EK chains to a \
             CA the license service trusts can attest for it (with the customer's files); bind \
             it with --ek-ca or --ek-cert (see docs/THREAT-MODEL.md)"
        ),
    }
    Ok(())
}

/// The EK binding of `--ek-ca` and `--ek-cert`, if any was given.
fn ek_binding(a: &SaleArgs) -> CliResult<Option<EkBinding>> {
    if a.ek_ca.is_empty() && a.ek_cert.is_empty() {
        return Ok(None);
    }
    let read = |flag: &str, path: &std::path::Path| -> CliResult<Vec<Vec<u8>>> {
        let bytes = read_limited_as(path, MAX_CERT_FILE, "certificate")?;
        certificates_from_pem_or_der(&bytes).map_err(|e| {
            CliError::Usage(format!(
                "{flag} {}: {e}; give a certificate in PEM or DER",
                path.display()
            ))
        })
    };
    let mut b = EkBinding::default();
    for path in &a.ek_ca {
        for der in read("--ek-ca", path)? {
            if !is_ca_certificate(&der) {
                return Err(CliError::Usage(format!(
                    "--ek-ca {}: \"{}\" is not a CA certificate (no basicConstraints CA:TRUE); \
                     give the CA that issues the vTPMs' EK certificates, or pass a single vTPM's \
                     EK certificate with --ek-cert",
                    path.display(),
                    subject_of(&der)
                )));
            }
            if !b.cas.contains(&der) {
                b.cas.push(der);
            }
        }
    }
    for path in &a.ek_cert {
        let ders = read("--ek-cert", path)?;
        if ders.len() != 1 {
            return Err(CliError::Usage(format!(
                "--ek-cert {}: holds {} certificates; give one EK certificate per --ek-cert",
                path.display(),
                ders.len()
            )));
        }
        if is_ca_certificate(&ders[0]) {
            return Err(CliError::Usage(format!(
                "--ek-cert {}: \"{}\" is a CA certificate, not a vTPM's EK certificate; use \
                 --ek-ca for a CA",
                path.display(),
                subject_of(&ders[0])
            )));
        }
        let d = EkCertDigest::of(&ders[0]);
        if !b.eks.contains(&d) {
            b.eks.push(d);
        }
    }
    b.validate()
        .map_err(|e| CliError::Usage(format!("--ek-ca/--ek-cert: {e}")))?;
    Ok(Some(b))
}
