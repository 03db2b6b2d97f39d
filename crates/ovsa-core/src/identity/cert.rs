//! X.509 certificates: parsing, validity and chain checks, generation (self-signed, CSR, CA).

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::crypto::{hash::sha256, PublicKey, SigningKey};
use crate::encoding::format_rfc3339;
use crate::error::{Error, Result};

/// Largest certificate accepted, in bytes.
pub const MAX_CERT_DER: usize = 16 * 1024;
/// Largest certificate file read (PEM, possibly a chain or a CA bundle), in bytes.
pub const MAX_CERT_FILE: usize = 1 << 20;

/// What a certificate is being validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateUsage {
    /// A customer identity: TLS client authentication (EKU clientAuth if EKUs are present).
    Customer,
    /// An ISV signing identity (EKU codeSigning if EKUs are present).
    Isv,
    /// A TLS server (EKU serverAuth if EKUs are present).
    Server,
}

// id-kp-codeSigning 1.3.6.1.5.5.7.3.3, DER content octets.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// A parsed X.509 certificate.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    subject: String,
    issuer: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    spki: Vec<u8>,
    /// X.509 version, 1-based (3 for certificates with extensions).
    version: u32,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .finish()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for Certificate {}

impl Certificate {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        if der.len() > MAX_CERT_DER {
            return Err(Error::BadCertificate(format!(
                "certificate is {} bytes; the limit is {MAX_CERT_DER}",
                der.len()
            )));
        }
        // x509-parser's error text is its enums' Debug output; say it in words instead.
        let (rest, cert) = X509Certificate::from_der(der).map_err(|_| {
            Error::BadCertificate(
                "not an X.509 certificate: its DER (ASN.1) structure does not parse".into(),
            )
        })?;
        if !rest.is_empty() {
            return Err(Error::BadCertificate(format!(
                "{} bytes after the certificate",
                rest.len()
            )));
        }
        Ok(Certificate {
            der: der.to_vec(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            spki: cert.public_key().raw.to_vec(),
            version: cert.version().0.saturating_add(1),
        })
    }

    /// Parses the first `CERTIFICATE` block of PEM text, or DER bytes.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self> {
        Self::chain_from_pem_or_der(bytes)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::BadCertificate("no CERTIFICATE block found".into()))
    }

    /// Parses every `CERTIFICATE` block of PEM text, or one DER certificate.
    pub fn chain_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Self>> {
        if bytes.starts_with(b"-----BEGIN") || bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let blocks = pem::parse_many(bytes)
                .map_err(|e| Error::BadCertificate(format!("invalid PEM: {e}")))?;
            blocks
                .iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(|b| Self::from_der(b.contents()))
                .collect()
        } else {
            Ok(vec![Self::from_der(bytes)?])
        }
    }

    /// Reads a PEM or DER certificate file (at most [`MAX_CERT_FILE`] bytes). A file of another
    /// kind (a keystore, a license, a CSR...) is named as such ([`Error::WrongFile`]).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_limited_as(path, MAX_CERT_FILE, "certificate")?;
        Self::from_pem_or_der(&bytes).map_err(|e| Self::explain_load_error(e, path))
    }

    /// Reads every certificate of a PEM file (or one DER certificate), at most
    /// [`MAX_CERT_FILE`] bytes.
    pub fn load_all(path: &Path) -> Result<Vec<Self>> {
        let bytes = crate::fsutil::read_limited_as(path, MAX_CERT_FILE, "certificate")?;
        let certs =
            Self::chain_from_pem_or_der(&bytes).map_err(|e| Self::explain_load_error(e, path))?;
        if certs.is_empty() {
            return Err(crate::artifact::wrong_file(
                path,
                &crate::artifact::ArtifactKind::Certificate,
            )
            .unwrap_or_else(|| {
                Error::BadCertificate(format!("{}: no certificate found", path.display()))
            }));
        }
        Ok(certs)
    }

    fn explain_load_error(e: Error, path: &Path) -> Error {
        if let Some(wrong) =
            crate::artifact::wrong_file(path, &crate::artifact::ArtifactKind::Certificate)
        {
            return wrong;
        }
        match e {
            Error::BadCertificate(m) => Error::BadCertificate(format!("{}: {m}", path.display())),
            other => other,
        }
    }

    /// The X.509 version (1 or 3; OVSA identities need 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Fails with a recipe if this is an X.509 v1 certificate (no extensions), which TLS
    /// authentication (rustls-webpki) refuses: `openssl x509 -req` without `-extfile` makes one.
    /// `role` names its use ("the customer certificate cust.crt").
    pub fn require_v3(&self, role: &str) -> Result<()> {
        if self.version >= 3 {
            return Ok(());
        }
        Err(Error::BadCertificate(format!(
            "{role} ('{}') is an X.509 version {} certificate (no extensions); TLS authentication \
             accepts only version 3. Have the CA sign the keystore's CSR again with extensions, e.g. \
             `openssl x509 -req -in KEYSTORE.csr -CA ca.crt -CAkey ca.key -days 365 -out cert.crt \
             -extfile <(printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyAgreement\\nextendedKeyUsage=clientAuth,codeSigning\\n')` \
             (or `-copy_extensions copy` with OpenSSL 3), then `ovsatool keygen --keystore KEYSTORE --import-cert cert.crt`",
            self.subject, self.version
        )))
    }

    /// DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }

    /// Subject distinguished name, RFC 4514 style.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Issuer distinguished name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// SHA-256 of the DER certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.der)
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo: the key pin used for license services.
    pub fn spki_pin(&self) -> [u8; 32] {
        sha256(&self.spki)
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The certificate's EC public key (P-256 or P-384).
    pub fn public_key(&self) -> Result<PublicKey> {
        PublicKey::from_spki_der(&self.spki)
    }

    /// Fails unless `at` lies within the validity period.
    pub fn check_validity_at(&self, at: OffsetDateTime) -> Result<()> {
        if at < self.not_before {
            return Err(Error::CertificateNotYetValid {
                subject: self.subject.clone(),
                not_before: format_rfc3339(self.not_before),
            });
        }
        if at > self.not_after {
            return Err(Error::CertificateExpired {
                subject: self.subject.clone(),
                not_after: format_rfc3339(self.not_after),
            });
        }
        Ok(())
    }

    /// Fails unless the certificate is valid now.
    pub fn check_validity_now(&self) -> Result<()> {
        self.check_validity_at(OffsetDateTime::now_utc())
    }

    /// Validates the certificate against trust anchors at time `at`.
    ///
    /// A certificate byte-identical to one of the anchors is accepted (a pinned self-signed
    /// identity) after its validity check; otherwise a chain through `intermediates` to an anchor
    /// is built and checked with `rustls-webpki`, including the extended key usage for `usage`.
    pub fn verify_chain(
        &self,
        intermediates: &[Certificate],
        anchors: &[Certificate],
        usage: CertificateUsage,
        at: OffsetDateTime,
    ) -> Result<()> {
        self.check_validity_at(at)?;
        if anchors.iter().any(|a| a == self) {
            return Ok(());
        }
        let untrusted = |reason: String| Error::UntrustedCertificate {
            subject: self.subject.clone(),
            reason,
        };
        if anchors.is_empty() {
            return Err(untrusted("no trusted CA is configured".into()));
        }
        let anchor_ders: Vec<CertificateDer<'_>> = anchors
            .iter()
            .map(|a| CertificateDer::from(a.der()))
            .collect();
        let trust: Vec<_> = anchor_ders
            .iter()
            .map(|d| {
                webpki::anchor_from_trusted_cert(d).map_err(|e| {
                    untrusted(format!(
                        "a trusted CA certificate is unusable: {}",
                        webpki_reason(&e)
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.der()))
            .collect();
        let ee_der = CertificateDer::from(self.der());
        let ee = webpki::EndEntityCert::try_from(&ee_der).map_err(|e| {
            untrusted(format!(
                "not usable as an end-entity certificate: {}",
                webpki_reason(&e)
            ))
        })?;
        let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let eku = match usage {
            CertificateUsage::Customer => webpki::KeyUsage::client_auth(),
            CertificateUsage::Server => webpki::KeyUsage::server_auth(),
            CertificateUsage::Isv => webpki::KeyUsage::required_if_present(EKU_CODE_SIGNING),
        };
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust,
            &inter,
            time,
            eku,
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } => Error::CertificateExpired {
                subject: self.subject.clone(),
                not_after: format_rfc3339(self.not_after),
            },
            webpki::Error::CertNotValidYet { .. } => Error::CertificateNotYetValid {
                subject: self.subject.clone(),
                not_before: format_rfc3339(self.not_before),
            },
            webpki::Error::UnknownIssuer => {
                untrusted("it is not issued by any configured CA".into())
            }
            webpki::Error::UnsupportedCertVersion => match self.require_v3("the certificate") {
                Err(e) => e,
                Ok(()) => untrusted(webpki_reason(&webpki::Error::UnsupportedCertVersion)),
            },
            other => untrusted(webpki_reason(&other)),
        })
    }
}

/// A webpki error in words (its Debug text is an enum name, not a message).
fn webpki_reason(e: &webpki::Error) -> String {
    use webpki::Error as W;
    match e {
        W::InvalidSignatureForPublicKey => "its signature does not verify under the issuing CA's key (it was not signed by that CA, or it was altered)".into(),
        W::UnsupportedCertVersion => "it is not an X.509 version 3 certificate".into(),
        W::CaUsedAsEndEntity => "it is a CA certificate, not an identity (end-entity) certificate".into(),
        W::EndEntityUsedAsCa => "an identity (end-entity) certificate was used as a CA".into(),
        W::RequiredEkuNotFoundContext(_) => {
            "its extended key usage does not allow this use (needs clientAuth for a customer, serverAuth for a license service, codeSigning for an ISV)".into()
        }
        W::BadDer | W::BadDerTime => "its DER encoding is invalid".into(),
        W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "it is signed with an unsupported algorithm".into()
        }
        W::PathLenConstraintViolated => "the CA chain is longer than a CA's path length allows".into(),
        W::UnknownIssuer => "it is not issued by any configured CA".into(),
        other => {
            // Fallback: the variant name as words ("NameConstraintViolation" -> "name constraint violation").
            let name = format!("{other:?}");
            let name = name.split(['(', '{', ' ']).next().unwrap_or_default();
            let mut words = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    words.push(' ');
                }
                words.push(c.to_ascii_lowercase());
            }
            format!("rejected by the X.509 validator: {words}")
        }
    }
}

/// Parses a subject such as `CN=Acme Models, O=Acme, C=US` into a distinguished name.
///
/// Recognised attributes: CN, O, OU, C, ST, L. A comma inside a value is written `\,`.
pub fn parse_subject(subject: &str) -> Result<rcgen::DistinguishedName> {
    let mut dn = rcgen::DistinguishedName::new();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = subject.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ',' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            Error::InvalidInput(format!(
                "subject part '{part}' is not KEY=VALUE (example: \"CN=Acme Models, O=Acme\")"
            ))
        })?;
        let ty = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => rcgen::DnType::CommonName,
            "O" => rcgen::DnType::OrganizationName,
            "OU" => rcgen::DnType::OrganizationalUnitName,
            "C" => rcgen::DnType::CountryName,
            "ST" => rcgen::DnType::StateOrProvinceName,
            "L" => rcgen::DnType::LocalityName,
            other => {
                return Err(Error::InvalidInput(format!(
                    "unsupported subject attribute '{other}' (use CN, O, OU, C, ST, L)"
                )))
            }
        };
        dn.push(ty, v.trim());
    }
    if dn.get(&rcgen::DnType::CommonName).is_none() {
        return Err(Error::InvalidInput(format!(
            "subject '{subject}' has no CN= part"
        )));
    }
    Ok(dn)
}

fn identity_params(subject: &str, days: u32) -> Result<rcgen::CertificateParams> {
    if days == 0 || days > 36_500 {
        return Err(Error::InvalidInput(format!(
            "certificate lifetime of {days} days is out of range 1..=36500"
        )));
    }
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = parse_subject(subject)?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(rcgen::SerialNumber::from_slice(
        &crate::crypto::random_array::<16>()?.map(|b| b & 0x7f),
    ));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::CodeSigning,
    ];
    Ok(params)
}

fn rcgen_err(e: rcgen::Error) -> Error {
    Error::BadCertificate(format!("certificate generation failed: {e}"))
}

/// Makes a self-signed identity certificate for `key` (EKUs clientAuth + codeSigning).
pub fn self_signed(key: &SigningKey, subject: &str, days: u32) -> Result<Certificate> {
    let params = identity_params(subject, days)?;
    let kp = key.rcgen_key_pair()?;
    let cert = params.self_signed(&kp).map_err(rcgen_err)?;
    Certificate::from_der(cert.der())
}

/// Makes a self-signed identity certificate with an explicit validity period (for renewals that
/// must line up with a contract, and for testing expiry handling).
pub fn self_signed_with_validity(
    key: &SigningKey,
    subject: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Certificate> {
    let mut params = identity_params(subject, 1)?;
    params.not_before = not_before;
    params.not_after = not_after;
    let kp = key.rcgen_key_pair()?;
    let cert = params.self_signed(&kp).map_err(rcgen_err)?;
    Certificate::from_der(cert.der())
}

/// Makes a PKCS#10 certificate signing request for `key`, as PEM.
pub fn csr_pem(key: &SigningKey, subject: &str) -> Result<String> {
    let mut params = identity_params(subject, 1)?;
    params.serial_number = None;
    let kp = key.rcgen_key_pair()?;
    params
        .serialize_request(&kp)
        .map_err(rcgen_err)?
        .pem()
        .map_err(rcgen_err)
}

/// Makes a self-signed CA certificate (for a private test or demo CA).
pub fn self_signed_ca(key: &SigningKey, subject: &str, days: u32) -> Result<Certificate> {
    let mut params = identity_params(subject, days)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![];
    let kp = key.rcgen_key_pair()?;
    let cert = params.self_signed(&kp).map_err(rcgen_err)?;
    Certificate::from_der(cert.der())
}

/// Signs a CSR (PEM) with a CA key, producing an identity certificate valid for `days`.
pub fn sign_csr(
    csr_pem: &str,
    ca_key: &SigningKey,
    ca_cert: &Certificate,
    days: u32,
) -> Result<Certificate> {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Error::BadCertificate(format!("invalid CSR: {e}")))?;
    let subject_params = identity_params("CN=placeholder", days)?;
    csr.params.not_before = subject_params.not_before;
    csr.params.not_after = subject_params.not_after;
    csr.params.serial_number = subject_params.serial_number;
    csr.params.key_usages = subject_params.key_usages;
    csr.params.extended_key_usages = subject_params.extended_key_usages;
    csr.params.use_authority_key_identifier_extension = true;
    let kp = ca_key.rcgen_key_pair()?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca_cert.der()), kp)
        .map_err(rcgen_err)?;
    let cert = csr.signed_by(&issuer).map_err(rcgen_err)?;
    Certificate::from_der(cert.der())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyAlgorithm;

    #[test]
    fn subject_parsing() {
        assert!(parse_subject("CN=Acme Models, O=Acme\\, Inc., C=US").is_ok());
        assert!(parse_subject("O=NoCommonName").is_err());
        assert!(parse_subject("CN").is_err());
        assert!(parse_subject("CN=x, XX=y").is_err());
    }

    #[test]
    fn self_signed_is_pinned_and_ca_chain_validates() {
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = self_signed(&key, "CN=isv", 30).unwrap();
        assert_eq!(cert.public_key().unwrap(), key.public_key());
        let now = OffsetDateTime::now_utc();
        cert.verify_chain(&[], std::slice::from_ref(&cert), CertificateUsage::Isv, now)
            .unwrap();

        let ca_key = SigningKey::generate(KeyAlgorithm::EcdsaP384).unwrap();
        let ca = self_signed_ca(&ca_key, "CN=Test CA", 365).unwrap();
        let csr = csr_pem(&key, "CN=customer one").unwrap();
        let issued = sign_csr(&csr, &ca_key, &ca, 10).unwrap();
        assert_eq!(issued.public_key().unwrap(), key.public_key());
        issued
            .verify_chain(
                &[],
                std::slice::from_ref(&ca),
                CertificateUsage::Customer,
                now,
            )
            .unwrap();
        // Not trusted by another CA.
        let other_key = SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let other = self_signed_ca(&other_key, "CN=Other CA", 365).unwrap();
        assert!(matches!(
            issued.verify_chain(&[], &[other], CertificateUsage::Customer, now),
            Err(Error::UntrustedCertificate { .. })
        ));
        // Expired in 11 days.
        let later = now + time::Duration::days(11);
        assert!(matches!(
            issued.verify_chain(&[], &[ca], CertificateUsage::Customer, later),
            Err(Error::CertificateExpired { .. })
        ));
    }
}
