//! EK certificate chain validation (rustls-webpki with the aws-lc-rs provider).

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};

use super::error::AttestError;

/// `tcg-kp-EKCertificate` (2.23.133.8.1), DER content octets of the OID.
pub const TCG_KP_EK_CERTIFICATE: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];

/// Trusted CAs for EK certificates (e.g. the vTPM CA for the guest, a TPM vendor CA for the host).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EkTrust {
    /// Trust anchors (root CA certificates, DER).
    #[serde(with = "crate::encoding::b64_vec")]
    pub roots: Vec<Vec<u8>>,
    /// Intermediate CA certificates that may be needed to build the chain (DER).
    #[serde(default, with = "crate::encoding::b64_vec")]
    pub intermediates: Vec<Vec<u8>>,
}

impl EkTrust {
    /// Build from PEM text holding any number of certificates; self-signed ones become roots,
    /// the others intermediates.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, AttestError> {
        let mut t = EkTrust::default();
        for p in
            pem::parse_many(pem_text).map_err(|e| AttestError::EkCertMalformed(e.to_string()))?
        {
            if p.tag() != "CERTIFICATE" {
                continue;
            }
            let der = p.into_contents();
            let (_, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
            if c.subject() == c.issuer() {
                t.roots.push(der);
            } else {
                t.intermediates.push(der);
            }
        }
        Ok(t)
    }
}

/// Parse an EK certificate and return its SubjectPublicKeyInfo (DER).
pub fn ek_spki(ek_cert_der: &[u8]) -> Result<Vec<u8>, AttestError> {
    let (rest, c) = x509_parser::parse_x509_certificate(ek_cert_der)
        .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AttestError::EkCertMalformed("trailing bytes".into()));
    }
    Ok(c.public_key().raw.to_vec())
}

/// Validate `ek_cert_der` against `trust` at time `now` (seconds since the Unix epoch).
///
/// webpki checks signatures along the path, validity periods, CA basic constraints and path
/// length. The EKU policy is "tcg-kp-EKCertificate if an EKU extension is present": many vendor
/// EK certificates carry no EKU at all.
pub fn verify_ek_chain(trust: &EkTrust, ek_cert_der: &[u8], now: u64) -> Result<(), AttestError> {
    let ee_der = CertificateDer::from(ek_cert_der);
    let ee = webpki::EndEntityCert::try_from(&ee_der)
        .map_err(|e| AttestError::EkCertMalformed(format!("{e:?}")))?;
    let root_ders: Vec<CertificateDer<'_>> = trust
        .roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AttestError::EkCertUntrusted(format!("bad trust anchor: {e:?}")))?;
    let inter: Vec<CertificateDer<'_>> = trust
        .intermediates
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
        webpki::KeyUsage::required_if_present(TCG_KP_EK_CERTIFICATE),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| AttestError::EkCertUntrusted(format!("{e:?}")))
}
