//! Client TLS: TLS 1.3 only, the customer's certificate as client identity, and the server
//! accepted only if its public key matches one of the license's pins (no CA involved: the ISV
//! pinned its own service).

use std::sync::Arc;

use ovsa_core::crypto::{ct_eq, hash::sha256};
use ovsa_core::identity::Keystore;
use ovsa_core::license::policy::Pin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Builds the client configuration for one service.
pub fn client_config(customer: &Keystore, pins: &[Pin]) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedServer {
        pins: pins.iter().map(|p| p.0).collect(),
        provider: provider.clone(),
    });
    let mut chain = vec![CertificateDer::from(customer.certificate().der().to_vec())];
    chain.extend(
        customer
            .chain()
            .iter()
            .map(|c| CertificateDer::from(c.der().to_vec())),
    );
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(customer.key().pkcs8().to_vec()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// SHA-256 of the DER SubjectPublicKeyInfo of a certificate.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    ovsa_core::identity::Certificate::from_der(cert)
        .ok()
        .map(|c| sha256(c.spki_der()))
}

/// The error the verifier raises when the server's key is not pinned (carries the key's pin so
/// the operator can compare it with the license).
#[derive(Debug, thiserror::Error)]
#[error("server key pin {} is not in the license", hex::encode(found))]
pub struct PinMismatch {
    /// SHA-256 of the server's SubjectPublicKeyInfo.
    pub found: [u8; 32],
}

#[derive(Debug)]
struct PinnedServer {
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = spki_pin(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        // Constant-time comparison against every pin (no early exit on the first mismatch).
        let matched = self.pins.iter().fold(false, |acc, p| acc | ct_eq(p, &pin));
        if matched {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    found: pin,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
