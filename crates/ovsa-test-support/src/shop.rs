//! The ISV's side of a sale, made with the real ovsa-core API: keystores, a protected model and
//! its master license, license terms, a TCB reference and the sale itself ("protect, licgen,
//! tcb, sell"). Every helper panics on failure: these are test fixtures.

use std::path::{Path, PathBuf};

use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Certificate, Keystore};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::{Pin, DEFAULT_GRACE_SECONDS};
use ovsa_core::license::{
    sell, LicenseConfig, MasterLicense, PcrBank, PcrSet, PcrValue, Policy, Sale, ServiceEndpoint,
    TcbReference, Validity,
};
use ovsa_core::package::{classify_inputs, protect, ModelInput, ProtectOptions, Protected};

/// A fresh ECDSA P-256 keystore with a self-signed certificate valid for 30 days.
pub fn keystore(subject: &str) -> Keystore {
    Keystore::generate(KeyAlgorithm::EcdsaP256, subject, 30)
        .unwrap()
        .0
}

/// Protect options for `name` version `version` with this chunk size, no description, and
/// overwriting an existing package.
pub fn protect_options(name: &str, version: &str, chunk_size: u32) -> ProtectOptions {
    ProtectOptions {
        model_name: name.into(),
        model_version: version.into(),
        description: String::new(),
        chunk_size,
        overwrite: true,
    }
}

/// A protected model: its package file, what `protect` returned, and its master license.
pub struct Protection {
    /// The package (`.dat`) written by `protect`.
    pub package: PathBuf,
    /// What `protect` returned (header, model key).
    pub protected: Protected,
    /// The master license of the package, signed by the ISV.
    pub master: Signed<MasterLicense>,
}

/// Protects `files` (their kinds from their names) into `package` and creates the master
/// license.
pub fn protect_files(
    files: &[PathBuf],
    options: &ProtectOptions,
    isv: &Keystore,
    package: &Path,
) -> Protection {
    protect_inputs(&classify_inputs(files).unwrap(), options, isv, package)
}

/// Protects `inputs` into `package` and creates the master license.
pub fn protect_inputs(
    inputs: &[ModelInput],
    options: &ProtectOptions,
    isv: &Keystore,
    package: &Path,
) -> Protection {
    let protected = protect(inputs, options, isv, package, &mut |_| {}).unwrap();
    let master = MasterLicense::create(&protected, isv).unwrap();
    Protection {
        package: package.to_path_buf(),
        protected,
        master,
    }
}

/// A perpetual policy with no usage or instance limit.
pub fn perpetual() -> Policy {
    Policy {
        validity: Validity::Perpetual,
        usage_limit: None,
        instance_limit: None,
    }
}

/// A license service endpoint.
pub fn endpoint(url: &str, pins: Vec<Pin>) -> ServiceEndpoint {
    ServiceEndpoint {
        url: url.into(),
        pins,
    }
}

/// License terms (the body of a license configuration) with test defaults: named "test",
/// perpetual, a 60 s lease, the default grace period, one service at
/// `https://127.0.0.1:8443` pinned to `[1; 32]`. Override fields with struct update syntax and
/// [`Terms::sign`] them.
#[derive(Debug, Clone)]
pub struct Terms {
    /// The configuration's name.
    pub name: String,
    /// Validity and limits.
    pub policy: Policy,
    /// Lease length (seconds).
    pub lease_seconds: u32,
    /// Grace period (seconds).
    pub grace_seconds: u32,
    /// The license services.
    pub services: Vec<ServiceEndpoint>,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            name: "test".into(),
            policy: perpetual(),
            lease_seconds: 60,
            grace_seconds: DEFAULT_GRACE_SECONDS,
            services: vec![endpoint("https://127.0.0.1:8443", vec![Pin([1; 32])])],
        }
    }
}

impl Terms {
    /// The license configuration with these terms, created now, signed by `isv`.
    pub fn sign(self, isv: &Keystore) -> Signed<LicenseConfig> {
        Signed::sign(
            LicenseConfig {
                name: self.name,
                policy: self.policy,
                lease_seconds: self.lease_seconds,
                grace_seconds: self.grace_seconds,
                services: self.services,
                created: now_rfc3339(),
            },
            isv,
        )
        .unwrap()
    }
}

/// PCRs `indices` of `bank`, PCR `i` holding the digest-sized value `[i; len]`.
pub fn pcrs(bank: PcrBank, indices: &[u8]) -> PcrSet {
    PcrSet::new(
        bank,
        indices
            .iter()
            .map(|i| PcrValue {
                index: *i,
                value: vec![*i; bank.digest_len()],
            })
            .collect(),
    )
    .unwrap()
}

/// A placeholder vTPM reference: SHA-256 PCR 0, all zeros (for tests that never attest).
pub fn pcr0_zero() -> PcrSet {
    pcrs(PcrBank::Sha256, &[0])
}

/// A TCB reference named `name` with these vTPM (and host) PCRs, created now, signed by `isv`.
pub fn tcb(isv: &Keystore, name: &str, vtpm: PcrSet, host: Option<PcrSet>) -> Signed<TcbReference> {
    Signed::sign(
        TcbReference {
            name: name.into(),
            vtpm,
            host,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: now_rfc3339(),
        },
        isv,
    )
    .unwrap()
}

/// Sells `master` under `config` and `tcb` to `customer`, the share sealed to `service` (the
/// license service's registration key).
pub fn sale(
    isv: &Keystore,
    master: &Signed<MasterLicense>,
    config: &Signed<LicenseConfig>,
    tcb: &Signed<TcbReference>,
    customer: &Certificate,
    service: &Certificate,
) -> Sale {
    sell(&SaleRequest {
        isv,
        master,
        config,
        tcb,
        customer,
        service,
    })
    .unwrap()
}
