//! What kind of file is this? One detector for every "wrong file given" message.
//!
//! `ovsatool inspect` dispatches on it, and every loader ([`crate::identity::Keystore::load`],
//! [`crate::envelope::Signed::load`], [`crate::identity::Certificate::load`]) uses it when a file
//! does not parse as what was asked for, so the error says what the file *is*
//! ("fd.lic is a customer license, not a keystore") instead of a parser's complaint.

use std::io::Read;
use std::path::Path;

use crate::error::Error;

/// The kinds of file an OVSA user hands around.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArtifactKind {
    /// A protected model (`.dat`, starts with the package magic).
    Package,
    /// A keystore (`ovsatool keygen`).
    Keystore,
    /// A master license (`.masterlic`).
    MasterLicense,
    /// A license policy config (`ovsatool licgen`).
    LicenseConfig,
    /// A TCB reference (`ovsatool tcb`).
    TcbReference,
    /// A customer license (`.lic`).
    CustomerLicense,
    /// A license service registration (`.reg`).
    Registration,
    /// A bare package header envelope.
    PackageHeader,
    /// A JSON file with an `ovsa` type tag this build does not know.
    OtherOvsa(String),
    /// An X.509 certificate (PEM or DER).
    Certificate,
    /// A PKCS#10 certificate signing request (e.g. `KEYSTORE.csr`).
    CertificateRequest,
    /// A PEM private key.
    PrivateKey,
    /// Some other PEM block (its label).
    OtherPem(String),
    /// An OpenVINO IR model description (`.xml`).
    IrXml,
    /// PCR values as printed by `tpm2_pcrread`.
    PcrList,
    /// An empty file.
    Empty,
    /// JSON that is not an OVSA artifact.
    Json,
    /// Some other text.
    Text,
    /// Some other binary data.
    Binary,
}

impl ArtifactKind {
    /// The kind for a signed artifact's `ovsa` type tag (or the keystore's).
    pub fn from_type(tag: &str) -> Self {
        match tag {
            "keystore" => ArtifactKind::Keystore,
            "master-license" => ArtifactKind::MasterLicense,
            "license-config" => ArtifactKind::LicenseConfig,
            "tcb-reference" => ArtifactKind::TcbReference,
            "license" => ArtifactKind::CustomerLicense,
            "registration" => ArtifactKind::Registration,
            "package-header" => ArtifactKind::PackageHeader,
            other => ArtifactKind::OtherOvsa(other.to_string()),
        }
    }

    /// A short name with its article: "a customer license (.lic)".
    pub fn describe(&self) -> String {
        match self {
            ArtifactKind::Package => "an OVSA protected model package (.dat)".into(),
            ArtifactKind::Keystore => "a keystore".into(),
            ArtifactKind::MasterLicense => "a master license (.masterlic)".into(),
            ArtifactKind::LicenseConfig => "a license policy config (from licgen)".into(),
            ArtifactKind::TcbReference => "a TCB reference (from tcb)".into(),
            ArtifactKind::CustomerLicense => "a customer license (.lic)".into(),
            ArtifactKind::Registration => "a license service registration (.reg)".into(),
            ArtifactKind::PackageHeader => "a package header".into(),
            ArtifactKind::OtherOvsa(t) => format!("an OVSA artifact of unknown type '{t}'"),
            ArtifactKind::Certificate => "an X.509 certificate".into(),
            ArtifactKind::CertificateRequest => "a certificate signing request (CSR)".into(),
            ArtifactKind::PrivateKey => "a PEM private key".into(),
            ArtifactKind::OtherPem(label) => format!("a PEM file holding a '{label}' block"),
            ArtifactKind::IrXml => "an OpenVINO IR model (.xml)".into(),
            ArtifactKind::PcrList => "a list of PCR values (tpm2_pcrread output)".into(),
            ArtifactKind::Empty => "an empty file".into(),
            ArtifactKind::Json => "a JSON file with no OVSA type".into(),
            ArtifactKind::Text => "a text file".into(),
            ArtifactKind::Binary => "a binary file".into(),
        }
    }

    /// Where a file of this kind comes from, for "expected" hints.
    pub fn origin(&self) -> &'static str {
        match self {
            ArtifactKind::Package => "the .dat file written by `ovsatool protect --out`",
            ArtifactKind::Keystore => {
                "the keystore file written by `ovsatool keygen --keystore FILE` (not its .crt or .csr)"
            }
            ArtifactKind::MasterLicense => {
                "the file written by `ovsatool protect --master-license`"
            }
            ArtifactKind::LicenseConfig => "the file written by `ovsatool licgen --out`",
            ArtifactKind::TcbReference => "the file written by `ovsatool tcb --out`",
            ArtifactKind::CustomerLicense => "the .lic file written by `ovsatool sale --out`",
            ArtifactKind::Registration => {
                "the .reg file written by `ovsatool sale --registration`"
            }
            ArtifactKind::Certificate => {
                "a PEM or DER certificate, such as the KEYSTORE.crt written by `ovsatool keygen`"
            }
            _ => "",
        }
    }
}

/// Detects the kind of file from its first bytes (up to the whole file).
pub fn detect(bytes: &[u8]) -> ArtifactKind {
    if bytes.is_empty() {
        return ArtifactKind::Empty;
    }
    if bytes.starts_with(crate::package::format::MAGIC.as_slice()) {
        return ArtifactKind::Package;
    }
    let trimmed = bytes
        .strip_prefix(b"\xef\xbb\xbf".as_slice())
        .unwrap_or(bytes)
        .trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN ") {
        let rest = &trimmed[b"-----BEGIN ".len()..];
        let end = rest.iter().position(|&b| b == b'-').unwrap_or(rest.len());
        let label = String::from_utf8_lossy(&rest[..end]).into_owned();
        return match label.as_str() {
            "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" => ArtifactKind::Certificate,
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => ArtifactKind::CertificateRequest,
            l if l.ends_with("PRIVATE KEY") => ArtifactKind::PrivateKey,
            _ => ArtifactKind::OtherPem(label),
        };
    }
    if trimmed.starts_with(b"{") {
        #[derive(serde::Deserialize)]
        struct Peek {
            ovsa: String,
        }
        return match serde_json::from_slice::<Peek>(trimmed) {
            Ok(p) => ArtifactKind::from_type(&p.ovsa),
            Err(_) => ArtifactKind::Json,
        };
    }
    if trimmed.starts_with(b"<") {
        let head = &trimmed[..trimmed.len().min(64 * 1024)];
        if head.windows(4).any(|w| w == b"<net") {
            return ArtifactKind::IrXml;
        }
        return ArtifactKind::Text;
    }
    // DER: a SEQUENCE that parses as a certificate.
    if bytes[0] == 0x30 && crate::identity::Certificate::from_der(bytes).is_ok() {
        return ArtifactKind::Certificate;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let t = text.trim_start();
            if t.starts_with("sha1:") || t.starts_with("sha256:") || t.starts_with("sha384:") {
                ArtifactKind::PcrList
            } else {
                ArtifactKind::Text
            }
        }
        Err(_) => ArtifactKind::Binary,
    }
}

/// Detects the kind of a file from at most its first MiB (never reads more).
pub fn detect_file(path: &Path) -> Option<ArtifactKind> {
    let f = std::fs::File::open(path).ok()?;
    let mut head = Vec::new();
    f.take(crate::encoding::MAX_JSON_ARTIFACT as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some(detect(&head))
}

/// If the file at `path` is of another kind than `expected`, the error saying so
/// ([`Error::WrongFile`]); `None` if it is of the expected kind (or cannot be read).
pub fn wrong_file(path: &Path, expected: &ArtifactKind) -> Option<Error> {
    let found = detect_file(path)?;
    if &found == expected {
        return None;
    }
    // A DER certificate that does not parse is only "binary" to the detector.
    if *expected == ArtifactKind::Certificate && found == ArtifactKind::Binary {
        return None;
    }
    let origin = expected.origin();
    Some(Error::WrongFile {
        path: path.to_path_buf(),
        found: found.describe(),
        expected: expected.describe(),
        hint: if origin.is_empty() {
            String::new()
        } else {
            format!("; give {origin}")
        },
    })
}

/// Replaces a load error by [`Error::WrongFile`] when the file is of another kind than
/// `expected`; otherwise returns it unchanged.
pub fn explain(e: Error, path: &Path, expected: &ArtifactKind) -> Error {
    match e {
        Error::Io { .. } => e,
        Error::InvalidInput(ref m) if m.contains("is larger than") || m.contains("directory") => e,
        other => wrong_file(path, expected).unwrap_or(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_common_kinds() {
        assert_eq!(detect(b""), ArtifactKind::Empty);
        assert_eq!(
            detect(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"),
            ArtifactKind::Certificate
        );
        assert_eq!(
            detect(b"-----BEGIN CERTIFICATE REQUEST-----\n"),
            ArtifactKind::CertificateRequest
        );
        assert_eq!(
            detect(b"-----BEGIN EC PRIVATE KEY-----\n"),
            ArtifactKind::PrivateKey
        );
        assert_eq!(
            detect(br#"{"ovsa":"license","version":1}"#),
            ArtifactKind::CustomerLicense
        );
        assert_eq!(detect(br#"{"a":1}"#), ArtifactKind::Json);
        assert_eq!(
            detect(b"<?xml version=\"1.0\"?>\n<net name=\"m\">"),
            ArtifactKind::IrXml
        );
        assert_eq!(detect(b"sha256:\n  0 : 0x00\n"), ArtifactKind::PcrList);
        assert_eq!(detect(&[0xff, 0x00, 0x80]), ArtifactKind::Binary);
        assert_eq!(detect(b"OVSAPKG\0rest"), ArtifactKind::Package);
    }
}
