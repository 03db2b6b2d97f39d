//! `ovsatool sale`.

use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::{MODE_PUBLIC, MODE_SECRET};
use ovsa_core::identity::{Certificate, CertificateUsage};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::{sell, LicenseConfig, MasterLicense, TcbReference};

use crate::cli::SaleArgs;
use crate::error::{CliError, CliResult};
use crate::secrets::load_keystore;

pub fn run(a: &SaleArgs) -> CliResult<()> {
    for p in [&a.out, &a.registration] {
        if !a.force && p.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                p.display()
            )));
        }
    }
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let master = Signed::<MasterLicense>::load(&a.master_license)?;
    let config = Signed::<LicenseConfig>::load(&a.config)?;
    let tcb = Signed::<TcbReference>::load(&a.tcb)?;
    let customer = Certificate::load(&a.customer_cert)?;
    if let Some(ca) = &a.customer_ca {
        let anchors = Certificate::load_all(ca)?;
        customer.verify_chain(
            &[],
            &anchors,
            CertificateUsage::Customer,
            time::OffsetDateTime::now_utc(),
        )?;
    }
    let sale = sell(&SaleRequest {
        isv: &isv,
        master: &master,
        config: &config,
        tcb: &tcb,
        customer: &customer,
    })?;
    sale.registration
        .save(&a.registration, MODE_SECRET, a.force)?;
    sale.license.save(&a.out, MODE_PUBLIC, a.force)?;
    let l = sale.license.body();
    say!(
        "sold license {} for '{}' version {} to '{}'",
        l.license_guid,
        l.model_name,
        l.model_version,
        customer.subject()
    );
    say!(
        "customer license:      {} (give to the customer)",
        a.out.display()
    );
    say!(
        "service registration:  {} (SECRET: import into the license service, then delete)",
        a.registration.display()
    );
    Ok(())
}
