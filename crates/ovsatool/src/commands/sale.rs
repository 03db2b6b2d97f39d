//! `ovsatool sale`.

use ovsa_core::envelope::Signed;
use ovsa_core::text::escape_controls;
use std::io::Write;

use ovsa_core::fsutil::{commit_all, AtomicFile, MODE_PUBLIC, MODE_SECRET};
use ovsa_core::identity::{Certificate, CertificateUsage};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::{sell, LicenseConfig, MasterLicense, TcbReference};

use crate::cli::SaleArgs;
use crate::error::CliResult;
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
    Ok(())
}
