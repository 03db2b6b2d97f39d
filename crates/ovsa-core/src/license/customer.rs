//! The customer license (`.lic`) and the license service's registration record (`.reg`).
//!
//! `sell` draws a fresh license GUID and a fresh 32-byte key share, wraps the model key so that
//! both the customer's private key and the share are needed ([`super::wrap`]), and signs two
//! artifacts: the license for the customer (no share inside) and the registration record for the
//! license service (the policy, the TCB reference and the share **sealed to the license
//! service's registration key**, so that only the service can import it: whoever holds a `.reg`
//! file and the customer's files still cannot compute the model key).

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::master::{check_package, require_same_key, MasterLicense};
use super::policy::{
    default_grace_seconds, is_default_grace_seconds, LicenseConfig, Policy, ServiceEndpoint,
};
use super::tcb::TcbReference;
use super::wrap::{self, WrappedKey};
use crate::encoding::{b64, b64_secret, hex32, now_rfc3339};
use crate::envelope::{Artifact, Signed};
use crate::error::{Error, Result};
use crate::identity::{Certificate, Keystore};
use crate::package::{ModelKey, PackageHeader};

const LABEL: &[u8] = b"OVSA-v1 customer-license kek";
/// HKDF label of the share sealed into a registration.
const SHARE_LABEL: &[u8] = b"OVSA-v1 registration share kek";
/// AEAD associated-data prefix of the sealed share (a sealed share never opens as a model key).
const SHARE_AAD: &[u8] = b"OVSA-v1 registration key share";
/// Length of a key share.
pub const SHARE_LEN: usize = 32;

/// The license service's per-license secret. Zeroized on drop; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyShare(#[serde(with = "b64_secret")] Zeroizing<Vec<u8>>);

impl KeyShare {
    /// Generates a fresh share.
    pub fn generate() -> Result<Self> {
        Ok(KeyShare(Zeroizing::new(
            crate::crypto::random_array::<SHARE_LEN>()?.to_vec(),
        )))
    }

    /// Wraps share bytes (e.g. as released by the license service).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SHARE_LEN {
            return Err(Error::InvalidInput(format!(
                "a key share is {SHARE_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(KeyShare(Zeroizing::new(bytes.to_vec())))
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyShare(<secret>)")
    }
}

/// Body of a customer license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerLicense {
    /// Fresh identifier of this sale.
    pub license_guid: Uuid,
    /// The package's model GUID.
    pub model_guid: Uuid,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Header hash of the package.
    #[serde(with = "hex32")]
    pub header_hash: [u8; 32],
    /// The customer's certificate (DER): the key the model key is wrapped to and the TLS client
    /// identity the license service expects.
    #[serde(with = "b64")]
    pub customer_certificate: Vec<u8>,
    /// The limits (enforced by the license service).
    pub policy: Policy,
    /// Seconds between re-checks: the longest a runtime serves without a successful check.
    pub lease_seconds: u32,
    /// How long past an expired lease a runtime keeps serving while the license service is
    /// unreachable, seconds. Absent in licenses sold before the field:
    /// [`super::policy::DEFAULT_GRACE_SECONDS`] (and not serialized when it is the default, so
    /// those licenses verify unchanged).
    #[serde(
        default = "default_grace_seconds",
        skip_serializing_if = "is_default_grace_seconds"
    )]
    pub grace_seconds: u32,
    /// License services and their pins.
    pub services: Vec<ServiceEndpoint>,
    /// Expected measurements.
    pub tcb: TcbReference,
    /// The model key, wrapped to the customer key and the service's share.
    pub wrapped_model_key: WrappedKey,
    /// Sale time, RFC 3339.
    pub issued: String,
}

impl Artifact for CustomerLicense {
    const TYPE: &'static str = "license";
    const VERSION: u64 = 1;

    fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        super::policy::validate_lease(self.lease_seconds)?;
        super::policy::validate_grace(self.grace_seconds)?;
        self.services
            .iter()
            .try_for_each(ServiceEndpoint::validate)?;
        self.tcb.validate()?;
        Certificate::from_der(&self.customer_certificate)?.public_key()?;
        Ok(())
    }
}

/// Body of a registration record: what the license service imports for one sold license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The license's GUID.
    pub license_guid: Uuid,
    /// The package's model GUID.
    pub model_guid: Uuid,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Header hash of the package.
    #[serde(with = "hex32")]
    pub header_hash: [u8; 32],
    /// Digest of the signed customer license.
    #[serde(with = "hex32")]
    pub license_digest: [u8; 32],
    /// The customer's certificate (DER).
    #[serde(with = "b64")]
    pub customer_certificate: Vec<u8>,
    /// The limits to enforce.
    pub policy: Policy,
    /// Lease length to hand out.
    pub lease_seconds: u32,
    /// The license's grace period (as signed into the customer license): a seat stays live for
    /// `lease_seconds + grace_seconds` after its last successful check. Absent in registrations
    /// made before the field: [`super::policy::DEFAULT_GRACE_SECONDS`].
    #[serde(
        default = "default_grace_seconds",
        skip_serializing_if = "is_default_grace_seconds"
    )]
    pub grace_seconds: u32,
    /// Expected measurements.
    pub tcb: TcbReference,
    /// The secret share released after successful attestation, sealed to the license service's
    /// registration key ([`Registration::open_share`]).
    pub sealed_share: SealedShare,
    /// Sale time, RFC 3339.
    pub issued: String,
}

/// The key share sealed to the license service's registration key: ECDH-ES (P-256/P-384) +
/// HKDF-SHA256 + AES-256-GCM, the construction of [`super::wrap`], salt = the license GUID,
/// bound to the package header hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    /// SHA-256 of the DER certificate of the registration key it is sealed to (which key
    /// `license add` needs).
    #[serde(with = "hex32")]
    pub recipient: [u8; 32],
    /// The sealed share.
    pub wrapped: WrappedKey,
}

impl Artifact for Registration {
    const TYPE: &'static str = "registration";
    /// Version 2: the share is sealed ([`SealedShare`]); version 1 carried it in clear.
    const VERSION: u64 = 2;

    fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        self.tcb.validate()?;
        let w = &self.sealed_share.wrapped;
        if w.alg != wrap::WRAP_ALG || w.nonce.len() != 12 || w.ciphertext.len() != SHARE_LEN + 16 {
            return Err(Error::malformed(
                "registration",
                "the sealed key share is not a wrapped 32-byte share",
            ));
        }
        Certificate::from_der(&self.customer_certificate)?.public_key()?;
        Ok(())
    }
}

impl Registration {
    /// Opens the sealed share with the license service's registration keystore: only the holder
    /// of that key can import the registration.
    pub fn open_share(&self, service: &Keystore) -> Result<KeyShare> {
        let have = service.certificate().fingerprint();
        if have != self.sealed_share.recipient {
            return Err(Error::InvalidInput(format!(
                "the key share of license {} is sealed to the registration key whose certificate \
                 has SHA-256 {}, not to this one ({}, SHA-256 {}); use the registration keystore \
                 whose certificate the ISV gave to `sale --registration-cert`",
                self.license_guid,
                hex::encode(self.sealed_share.recipient),
                service.certificate().subject(),
                hex::encode(have)
            )));
        }
        let bytes = wrap::open_secret(
            &self.sealed_share.wrapped,
            service.key(),
            &[],
            self.license_guid.as_bytes(),
            SHARE_LABEL,
            SHARE_AAD,
            &self.header_hash,
            "registration's sealed key share",
        )?;
        KeyShare::from_bytes(&bytes[..])
    }
}

/// Everything `sell` needs.
pub struct SaleRequest<'a> {
    /// The ISV keystore (must hold the key of the master license).
    pub isv: &'a Keystore,
    /// The master license of the package.
    pub master: &'a Signed<MasterLicense>,
    /// The policy config.
    pub config: &'a Signed<LicenseConfig>,
    /// The TCB reference.
    pub tcb: &'a Signed<TcbReference>,
    /// The customer's certificate.
    pub customer: &'a Certificate,
    /// The license service's registration certificate: the share is sealed to its key.
    pub service: &'a Certificate,
}

/// The two artifacts of a sale.
#[derive(Debug)]
pub struct Sale {
    /// For the customer.
    pub license: Signed<CustomerLicense>,
    /// For the license service (secret: holds the key share).
    pub registration: Signed<Registration>,
}

/// Sells a license: see the module documentation.
pub fn sell(req: &SaleRequest<'_>) -> Result<Sale> {
    let isv = req.isv;
    require_same_key("license config", req.config.signer(), isv)?;
    require_same_key("TCB reference", req.tcb.signer(), isv)?;
    let dek: ModelKey = MasterLicense::unwrap_model_key(req.master, isv)?;
    req.customer.check_validity_now()?;
    let customer_key = req.customer.public_key()?;
    let config = req.config.body();
    if let Some(end) = config.policy.window_end() {
        if end <= time::OffsetDateTime::now_utc() {
            return Err(Error::InvalidInput(
                "the license config's validity window has already ended; make a new config".into(),
            ));
        }
    }
    req.service.check_validity_now()?;
    let service_key = req.service.public_key()?;
    let m = req.master.body();
    let license_guid = Uuid::new_v4();
    let share = KeyShare::generate()?;
    let share_bytes: Zeroizing<[u8; SHARE_LEN]> = Zeroizing::new(
        share
            .as_bytes()
            .try_into()
            .map_err(|_| Error::Crypto("key share length"))?,
    );
    let sealed_share = SealedShare {
        recipient: req.service.fingerprint(),
        wrapped: wrap::seal_secret(
            &share_bytes,
            &service_key,
            &[],
            license_guid.as_bytes(),
            SHARE_LABEL,
            SHARE_AAD,
            &m.header_hash,
        )?,
    };
    let wrapped = wrap::wrap(
        &dek,
        &customer_key,
        share.as_bytes(),
        license_guid.as_bytes(),
        LABEL,
        &m.header_hash,
    )?;
    let issued = now_rfc3339();
    let license = Signed::sign(
        CustomerLicense {
            license_guid,
            model_guid: m.model_guid,
            model_name: m.model_name.clone(),
            model_version: m.model_version.clone(),
            header_hash: m.header_hash,
            customer_certificate: req.customer.der().to_vec(),
            policy: config.policy.clone(),
            lease_seconds: config.lease_seconds,
            grace_seconds: config.grace_seconds,
            services: config.services.clone(),
            tcb: req.tcb.body().clone(),
            wrapped_model_key: wrapped,
            issued: issued.clone(),
        },
        isv,
    )?;
    let registration = Signed::sign(
        Registration {
            license_guid,
            model_guid: m.model_guid,
            model_name: m.model_name.clone(),
            model_version: m.model_version.clone(),
            header_hash: m.header_hash,
            license_digest: license.digest(),
            customer_certificate: req.customer.der().to_vec(),
            policy: config.policy.clone(),
            lease_seconds: config.lease_seconds,
            grace_seconds: config.grace_seconds,
            tcb: req.tcb.body().clone(),
            sealed_share,
            issued,
        },
        isv,
    )?;
    Ok(Sale {
        license,
        registration,
    })
}

impl CustomerLicense {
    /// The customer certificate.
    pub fn customer_certificate(&self) -> Result<Certificate> {
        Certificate::from_der(&self.customer_certificate)
    }

    /// Fails unless the license was sold for this package, by the ISV that signed it.
    pub fn check_package(
        license: &Signed<CustomerLicense>,
        package: &Signed<PackageHeader>,
    ) -> Result<()> {
        check_package("license", &license.body().header_hash, &package.digest())?;
        if license.signer().public_key()? != package.signer().public_key()? {
            return Err(Error::SignerMismatch {
                what: "license",
                expected: package.signer().subject().to_string(),
                found: license.signer().subject().to_string(),
            });
        }
        Ok(())
    }

    /// Unwraps the model key with the customer's keystore and the share released by the license
    /// service.
    pub fn unwrap_model_key(
        &self,
        customer: &Keystore,
        share: Option<&KeyShare>,
    ) -> Result<ModelKey> {
        require_same_key("license", &self.customer_certificate()?, customer)?;
        let share = share.ok_or(Error::MissingShare)?;
        wrap::unwrap(
            &self.wrapped_model_key,
            customer.key(),
            share.as_bytes(),
            self.license_guid.as_bytes(),
            LABEL,
            &self.header_hash,
            "license",
        )
    }
}
