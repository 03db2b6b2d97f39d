//! TLS for the service: TLS 1.3 only, the service key from PEM (or an OVSA keystore), and client
//! authentication that demands a certificate and proof of its key but leaves *which*
//! certificate is acceptable to the application: a license names exactly one customer
//! certificate, which the API compares byte for byte.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// TLS set-up errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key file is unusable.
    #[error("{path}: {detail}")]
    File {
        /// The setting and file (e.g. `--tls-key server.key`).
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The certificate or key file cannot be read (missing, a directory, too large).
    #[error(transparent)]
    Input(#[from] crate::config::ConfigError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
}

// The rustls error is part of the message, so it is not also the `source()` (a chain reporter
// would print it twice): the `From` is written out instead of thiserror's `#[from]`.
impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads the certificate chain (PEM) and an unprotected private key (PEM PKCS#8/SEC1, or an OVSA
/// keystore without a passphrase) and builds the server configuration. A passphrase-protected
/// keystore needs [`server_config_with_passphrase`]; this library reads no environment variable,
/// so the binary resolves the passphrase (`--passphrase-file` or `OVSA_KEYSTORE_PASSPHRASE`,
/// see [`crate::config::resolve_serve`]) and passes it in.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    server_config_with_passphrase(cert, key, None)
}

/// [`server_config`] with the keystore passphrase given. Both files are read through
/// [`crate::config::read_input`] (bounded; errors name `--tls-cert` or `--tls-key`).
pub fn server_config_with_passphrase(
    cert: &Path,
    key: &Path,
    passphrase: Option<&str>,
) -> Result<ServerConfig, TlsError> {
    use crate::config::{read_input, MAX_INPUT_FILE};
    let file_err = |flag: &str, p: &Path, d: String| TlsError::File {
        path: format!("{flag} {}", p.display()),
        detail: d,
    };
    let cert_bytes = read_input(cert, "--tls-cert", MAX_INPUT_FILE)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("--tls-cert", cert, format!("invalid PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(
            "--tls-cert",
            cert,
            "no CERTIFICATE block found; give the certificate chain in PEM".into(),
        ));
    }
    let key_bytes = zeroize::Zeroizing::new(read_input(key, "--tls-key", MAX_INPUT_FILE)?);
    let key_der: PrivateKeyDer<'static> = if key_bytes.trim_ascii_start().starts_with(b"{") {
        let ks = ovsa_core::identity::Keystore::from_bytes(&key_bytes, passphrase)
            .map_err(|e| file_err("--tls-key", key, e.to_string()))?;
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ks.key().pkcs8().to_vec()))
    } else {
        PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| file_err("--tls-key", key, format!("no usable private key: {e}")))?
    };
    let verifier = Arc::new(AnyClientCertificate {
        provider: provider(),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            file_err(
                "--tls-key",
                key,
                format!("key does not match the certificate or is unsupported: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Client authentication: a certificate is mandatory and the client must prove possession of
/// its key (the TLS 1.3 CertificateVerify signature); the API then requires the certificate to
/// be the one the license names.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Parse it to refuse garbage early; identity is checked against the license later.
        ovsa_core::identity::Certificate::from_der(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with TLS 1.3 only, but verify properly rather than assert.
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
