//! Per-license EK binding: which vTPMs may attest for one license.
//!
//! The Verifier's static policy ([`super::VerifierConfig::vtpm_ek_trust`]) says which EK CAs the
//! deployment trusts at all. A license may narrow that to the EK CAs its customer uses, or to
//! enrolled EK certificates ([`EkBinding`], carried in the ISV-signed TCB reference of the
//! license), so that a thief holding the customer's files and a vTPM of their own from another
//! trusted CA cannot spend the customer's license. [`check_ek_binding`] is the per-call check,
//! run after [`super::verify`] accepted the evidence.

use serde::{Deserialize, Serialize};

use super::ekcert::{verify_ek_chain, EkTrust};
use super::error::AttestError;
use super::verify::VerifierConfig;
use super::wire::HashAlg;

/// Most EK CAs one license may name.
pub const MAX_BOUND_CAS: usize = 16;
/// Most enrolled EK certificates one license may name.
pub const MAX_BOUND_EKS: usize = 256;

/// SHA-256 of an EK certificate (DER), hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EkCertDigest(#[serde(with = "crate::encoding::hex32")] pub [u8; 32]);

impl EkCertDigest {
    /// The digest of `ek_cert_der`.
    pub fn of(ek_cert_der: &[u8]) -> Self {
        let mut o = [0u8; 32];
        o.copy_from_slice(&HashAlg::Sha256.digest(ek_cert_der));
        EkCertDigest(o)
    }
}

/// The vTPMs allowed to attest for one license: an EK certificate is allowed when it chains to
/// one of `cas` (each CA certificate, root or intermediate, is a trust anchor of its own) or when
/// its SHA-256 is one of `eks`. The EK must also chain to a CA the service trusts: a binding only
/// narrows the service's trust, it never widens it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EkBinding {
    /// EK CA certificates (DER).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::encoding::b64_vec"
    )]
    pub cas: Vec<Vec<u8>>,
    /// Enrolled EK certificates, by SHA-256 of their DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eks: Vec<EkCertDigest>,
}

impl EkBinding {
    /// This binding plus everything `other` allows (duplicates left out).
    pub fn merged(&self, other: &EkBinding) -> EkBinding {
        let mut out = self.clone();
        for c in &other.cas {
            if !out.cas.contains(c) {
                out.cas.push(c.clone());
            }
        }
        for e in &other.eks {
            if !out.eks.contains(e) {
                out.eks.push(*e);
            }
        }
        out
    }

    /// Whether the binding allows nothing (an empty binding is refused by [`Self::validate`]).
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty() && self.eks.is_empty()
    }

    /// Checks the binding is usable: at least one CA or EK, within the limits, every CA a
    /// certificate that can serve as a trust anchor. The error text says which entry is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("the EK binding names no EK CA and no EK certificate".into());
        }
        if self.cas.len() > MAX_BOUND_CAS {
            return Err(format!(
                "the EK binding names {} EK CAs, at most {MAX_BOUND_CAS} are allowed",
                self.cas.len()
            ));
        }
        if self.eks.len() > MAX_BOUND_EKS {
            return Err(format!(
                "the EK binding names {} EK certificates, at most {MAX_BOUND_EKS} are allowed",
                self.eks.len()
            ));
        }
        for (i, der) in self.cas.iter().enumerate() {
            let c = rustls_pki_types::CertificateDer::from(der.as_slice());
            webpki::anchor_from_trusted_cert(&c).map_err(|e| {
                format!(
                    "EK CA number {} is not a usable CA certificate ({e:?})",
                    i + 1
                )
            })?;
        }
        Ok(())
    }

    /// One line per allowed CA (its subject) and EK (its SHA-256), for messages and `inspect`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .cas
            .iter()
            .map(|der| {
                format!(
                    "EKs issued under CA \"{}\" (certificate SHA-256 {})",
                    subject_of(der),
                    hex::encode(HashAlg::Sha256.digest(der))
                )
            })
            .collect();
        out.extend(
            self.eks
                .iter()
                .map(|d| format!("the EK certificate with SHA-256 {}", hex::encode(d.0))),
        );
        out
    }
}

/// Every certificate of a PEM file, or the one certificate of a DER file, as DER; each must
/// parse as X.509. The error says what was wrong (the caller names the file).
pub fn certificates_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let ders: Vec<Vec<u8>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        pem::parse_many(bytes)
            .map_err(|e| format!("not valid PEM ({e})"))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect()
    } else {
        vec![bytes.to_vec()]
    };
    if ders.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    for (i, der) in ders.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der) {
            Ok(([], _)) => {}
            Ok(_) => return Err(format!("certificate number {} has trailing bytes", i + 1)),
            Err(e) => {
                return Err(format!(
                    "certificate number {} is not an X.509 certificate ({e})",
                    i + 1
                ))
            }
        }
    }
    Ok(ders)
}

/// Whether a (parseable) certificate is a CA certificate: basicConstraints with `CA:TRUE`.
pub fn is_ca_certificate(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| c.basic_constraints().ok().flatten().map(|b| b.value.ca))
        .unwrap_or(false)
}

/// The subject of a certificate, with control characters escaped (customer-controlled text).
pub fn subject_of(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => crate::text::escape_controls(&c.subject().to_string()).into_owned(),
        Err(_) => "<unparseable certificate>".into(),
    }
}

fn issuer_of(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => crate::text::escape_controls(&c.issuer().to_string()).into_owned(),
        Err(_) => "<unparseable certificate>".into(),
    }
}

/// The per-license EK check: `Ok` when `binding` is `None` (a license sold without one: any
/// vTPM whose EK chains to the service's trusted CAs), or when the EK certificate is one of the
/// enrolled EKs or chains to one of the bound CAs (intermediates from `config` may complete the
/// path). Otherwise [`AttestError::EkNotAllowedForLicense`], naming what was expected. `now` is
/// seconds since the Unix epoch. Run it after [`super::verify`], which checks the EK against the
/// service's own trust.
pub fn check_ek_binding(
    config: &VerifierConfig,
    binding: Option<&EkBinding>,
    ek_cert: &[u8],
    now: u64,
) -> Result<(), AttestError> {
    let Some(b) = binding else {
        return Ok(());
    };
    let digest = EkCertDigest::of(ek_cert);
    if b.eks.contains(&digest) {
        return Ok(());
    }
    if !b.cas.is_empty() {
        let trust = EkTrust {
            roots: b.cas.clone(),
            intermediates: config.vtpm_ek_trust.intermediates.clone(),
        };
        if verify_ek_chain(&trust, ek_cert, now).is_ok() {
            return Ok(());
        }
    }
    Err(AttestError::EkNotAllowedForLicense {
        ek_sha256: hex::encode(digest.0),
        issuer: issuer_of(ek_cert),
        allowed: b.describe().join("; "),
    })
}
