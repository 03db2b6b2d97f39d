//! The master license: the model key wrapped to the ISV's own key, bound to the package.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::wrap::{self, WrappedKey};
use crate::encoding::{hex32, now_rfc3339};
use crate::envelope::{Artifact, Signed};
use crate::error::{Error, Result};
use crate::identity::Keystore;
use crate::package::{ModelKey, Protected};

const LABEL: &[u8] = b"OVSA-v1 master-license kek";

/// Body of a master license (`.masterlic`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterLicense {
    /// The package's model GUID.
    pub model_guid: Uuid,
    /// Model name (informational).
    pub model_name: String,
    /// Model version (informational).
    pub model_version: String,
    /// Header hash of the package this key belongs to.
    #[serde(with = "hex32")]
    pub header_hash: [u8; 32],
    /// Creation time, RFC 3339.
    pub created: String,
    /// The model key wrapped to the ISV's key.
    pub wrapped_model_key: WrappedKey,
}

impl Artifact for MasterLicense {
    const TYPE: &'static str = "master-license";
    const VERSION: u64 = 1;
}

impl MasterLicense {
    /// Makes the signed master license for a freshly protected package.
    pub fn create(protected: &Protected, isv: &Keystore) -> Result<Signed<MasterLicense>> {
        let h = protected.header.body();
        let header_hash = protected.header.digest();
        let wrapped = wrap::wrap(
            &protected.model_key,
            &isv.key().public_key(),
            &[],
            h.model_guid.as_bytes(),
            LABEL,
            &header_hash,
        )?;
        Signed::sign(
            MasterLicense {
                model_guid: h.model_guid,
                model_name: h.model_name.clone(),
                model_version: h.model_version.clone(),
                header_hash,
                created: now_rfc3339(),
                wrapped_model_key: wrapped,
            },
            isv,
        )
    }

    /// Fails with [`Error::PackageMismatch`] unless this license is for the package with
    /// `header_hash`.
    pub fn check_package(&self, header_hash: &[u8; 32]) -> Result<()> {
        check_package("master license", &self.header_hash, header_hash)
    }

    /// Unwraps the model key with the ISV keystore that made the master license.
    pub fn unwrap_model_key(signed: &Signed<MasterLicense>, isv: &Keystore) -> Result<ModelKey> {
        require_same_key("master license", signed.signer(), isv)?;
        let m = signed.body();
        wrap::unwrap(
            &m.wrapped_model_key,
            isv.key(),
            &[],
            m.model_guid.as_bytes(),
            LABEL,
            &m.header_hash,
            "master license",
        )
    }
}

pub(crate) fn check_package(what: &'static str, bound: &[u8; 32], given: &[u8; 32]) -> Result<()> {
    if crate::crypto::ct_eq(bound, given) {
        Ok(())
    } else {
        Err(Error::PackageMismatch {
            what,
            expected: hex::encode(given),
            found: hex::encode(bound),
        })
    }
}

/// Fails with [`Error::WrongKey`] unless `keystore` holds the key certified by `cert`.
pub(crate) fn require_same_key(
    what: &'static str,
    cert: &crate::identity::Certificate,
    keystore: &Keystore,
) -> Result<()> {
    if cert.public_key()? == keystore.key().public_key() {
        Ok(())
    } else {
        Err(Error::WrongKey {
            what,
            expected: cert.subject().to_string(),
            found: keystore.certificate().subject().to_string(),
        })
    }
}
