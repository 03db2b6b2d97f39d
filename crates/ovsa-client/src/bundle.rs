//! The customer's three files (protected model package, customer license, customer keystore)
//! opened and cross-checked in one place, so that the runtime plugin and `ovsatool check`
//! accept and refuse exactly the same bundles, with the same messages.
//!
//! [`CustomerBundle::open`] verifies the package header's ISV signature, the license's ISV
//! signature, that the license was sold for this package by the package's ISV, and that the
//! keystore holds the very certificate the license was sold to. The last check compares the
//! certificate bytes, not only the public key: the license service authenticates the TLS client
//! by the SHA-256 of its certificate, so a keystore with the licensed key but a re-issued
//! certificate would pass a key comparison here and then be refused by the service.

use std::fs::File;
use std::path::{Path, PathBuf};

use ovsa_core::envelope::Signed;
use ovsa_core::identity::Keystore;
use ovsa_core::license::CustomerLicense;
use ovsa_core::package::Package;

/// Where the three files are.
#[derive(Debug, Clone, Copy)]
pub struct BundleFiles<'a> {
    /// The protected model package (`.dat`).
    pub package: &'a Path,
    /// The customer license (`.lic`).
    pub license: &'a Path,
    /// The customer keystore.
    pub keystore: &'a Path,
}

/// The customer's files, verified and consistent with each other.
pub struct CustomerBundle {
    /// The package (header signature verified).
    pub package: Package<File>,
    /// The customer license (ISV signature verified, bound to `package`).
    pub license: Signed<CustomerLicense>,
    /// The keystore holding the certificate the license was sold to, and its key.
    pub keystore: Keystore,
}

/// Progress of [`CustomerBundle::open`], for step-by-step reports (`ovsatool check`).
#[non_exhaustive]
pub enum BundleStep<'a> {
    /// The license's ISV signature verified (the package's already had).
    LicenseVerified(&'a Signed<CustomerLicense>),
    /// The license was sold for this package, by the package's ISV.
    LicenseMatchesPackage(&'a Package<File>),
    /// The keystore holds the licensed certificate and its key.
    KeystoreMatches(&'a Keystore),
}

/// Why a bundle cannot be used. The message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The package does not open or verify.
    #[error("model package: {error}")]
    Package {
        /// The package file.
        path: PathBuf,
        /// What failed.
        error: Box<ovsa_core::Error>,
    },
    /// The license does not load or verify.
    #[error("license '{}': {error}", path.display())]
    License {
        /// The license file.
        path: PathBuf,
        /// What failed.
        error: Box<ovsa_core::Error>,
    },
    /// The license belongs to another package (or another ISV).
    #[error("license '{}' does not belong to package '{}': {error}", license.display(), package.display())]
    LicenseNotForPackage {
        /// The license file.
        license: PathBuf,
        /// The package file.
        package: PathBuf,
        /// What differs.
        error: Box<ovsa_core::Error>,
    },
    /// The keystore does not load (unreadable, malformed, wrong passphrase).
    #[error("keystore '{}': {error}", path.display())]
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// What failed.
        error: Box<ovsa_core::Error>,
    },
    /// The keystore's certificate is not the one the license was sold to.
    #[error("keystore '{}' holds '{found}', but the license was sold to another certificate ('{expected}'){}", path.display(), if *same_key {
        ": the keystore has the licensed key but a different certificate, and the license service accepts only the exact certificate the license was sold to; import that certificate into the keystore (`ovsatool keygen --import-cert`) or ask the ISV for a license for this one"
    } else {
        "; use the keystore the license was sold to"
    })]
    NotLicensedCertificate {
        /// The keystore file.
        path: PathBuf,
        /// Subject of the keystore's certificate.
        found: String,
        /// Subject of the license's customer certificate.
        expected: String,
        /// Whether the keystore holds the licensed key (only the certificate differs).
        same_key: bool,
    },
}

impl CustomerBundle {
    /// Opens and cross-checks the three files (package, then license, then keystore, reporting
    /// each verified step to `observe`). `passphrase` opens a passphrase-protected keystore.
    pub fn open(
        files: BundleFiles<'_>,
        passphrase: Option<&str>,
        observe: &mut dyn FnMut(BundleStep<'_>),
    ) -> Result<Self, BundleError> {
        let package = Package::open(files.package).map_err(|error| BundleError::Package {
            path: files.package.to_path_buf(),
            error: Box::new(error),
        })?;
        let license = Signed::<CustomerLicense>::load(files.license).map_err(|error| {
            BundleError::License {
                path: files.license.to_path_buf(),
                error: Box::new(error),
            }
        })?;
        observe(BundleStep::LicenseVerified(&license));
        CustomerLicense::check_package(&license, package.header()).map_err(|error| {
            BundleError::LicenseNotForPackage {
                license: files.license.to_path_buf(),
                package: files.package.to_path_buf(),
                error: Box::new(error),
            }
        })?;
        observe(BundleStep::LicenseMatchesPackage(&package));
        let keystore =
            Keystore::load(files.keystore, passphrase).map_err(|error| BundleError::Keystore {
                path: files.keystore.to_path_buf(),
                error: Box::new(error),
            })?;
        licensed_certificate(license.body(), &keystore, files.keystore)?;
        observe(BundleStep::KeystoreMatches(&keystore));
        Ok(CustomerBundle {
            package,
            license,
            keystore,
        })
    }
}

/// Fails unless `keystore` (read from `path`) holds exactly the certificate `license` was sold
/// to (the bytes the license service will compare with the TLS client certificate).
pub fn licensed_certificate(
    license: &CustomerLicense,
    keystore: &Keystore,
    path: &Path,
) -> Result<(), BundleError> {
    if license.customer_certificate == keystore.certificate().der() {
        return Ok(());
    }
    let licensed = license.customer_certificate().ok();
    Err(BundleError::NotLicensedCertificate {
        path: path.to_path_buf(),
        found: keystore.certificate().subject().to_string(),
        expected: licensed
            .as_ref()
            .map_or_else(|| "unparsable".to_string(), |c| c.subject().to_string()),
        same_key: licensed
            .and_then(|c| c.public_key().ok())
            .is_some_and(|k| k == keystore.key().public_key()),
    })
}
