//! TLS for the service: TLS 1.3 only, the service key from PEM (or an OVSA keystore), and client
//! authentication that admits, during the handshake, only the certificates of registered
//! customers (the exact certificate a registered license names) and of operators
//! (`--metrics-client-cert`): see [`ClientRegistry`]. The API then still requires the certificate
//! to be the one the license of each request names, compared byte for byte.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ovsa_core::crypto::{ct_eq, hash::sha256};

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
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    server_config_with_passphrase(cert, key, None)
}

/// [`server_config`] with the keystore passphrase given. Both files are read through
/// [`crate::config::read_input`] (bounded; errors name `--tls-cert` or `--tls-key`).
pub fn server_config_with_passphrase(
    cert: &Path,
    key: &Path,
    passphrase: Option<&str>,
) -> Result<ServerTls, TlsError> {
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
    let clients = Arc::new(ClientRegistry::default());
    let verifier = Arc::new(RegisteredClients {
        provider: provider(),
        clients: clients.clone(),
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
    Ok(ServerTls { config, clients })
}

/// Client authentication: a certificate is mandatory, the client must prove possession of its
/// key (the TLS 1.3 CertificateVerify signature), and the certificate must be one the
/// [`ClientRegistry`] admits; the API then requires it to be the one the license names.
#[derive(Debug)]
struct RegisteredClients {
    provider: Arc<CryptoProvider>,
    clients: Arc<ClientRegistry>,
}

impl ClientCertVerifier for RegisteredClients {
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
        // Synchronous and cheap: an in-memory lookup, never the database.
        match self.clients.admit(&sha256(end_entity)) {
            Admission::Known | Admission::Provisional => Ok(ClientCertVerified::assertion()),
            // Sent as an `access_denied` alert; the accept loop counts it
            // (`ovsa_license_handshakes_refused_total`), nothing is audited.
            Admission::Refused => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
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

/// The service's TLS configuration and the registry of client certificates its verifier admits
/// ([`crate::server::start`] keeps the registry up to date from the store).
pub struct ServerTls {
    /// The rustls configuration.
    pub config: ServerConfig,
    /// The certificates admitted at the handshake.
    pub clients: Arc<ClientRegistry>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Most reloads a burst of unknown certificates may trigger at once (then one per
/// [`MISS_RELOAD_INTERVAL`]).
pub const MISS_RELOAD_BURST: u32 = 8;
/// One reload triggered by an unknown certificate per this interval, on average: handshakes with
/// unregistered certificates cannot become more database queries than that.
pub const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// The registered certificates are reloaded this often regardless.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// SHA-256 of a certificate's DER, compared in constant time. Looked up in a hash set with a
/// randomly keyed hasher (std's SipHash), so lookup time says nothing about how close a guess is.
#[derive(Clone, Copy, Debug)]
struct CertHash([u8; 32]);

impl PartialEq for CertHash {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for CertHash {}

impl Hash for CertHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// What the handshake decided about a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// In the snapshot (a registered customer or an operator).
    Known,
    /// Not in the snapshot, but a reload is allowed: admitted at the handshake on condition that
    /// [`ClientRegistry::confirm`] finds it after reloading, before any request is served.
    Provisional,
    /// Not in the snapshot, and the reload budget is spent.
    Refused,
}

/// Who a connection's client certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientKind {
    /// The customer certificate of at least one registered license.
    Customer,
    /// An operator certificate (`--metrics-client-cert`): may read `/metrics`.
    Operator,
    /// Neither (the connection is closed before any request is read).
    Unregistered,
}

/// The client certificates the service admits, in memory: the SHA-256 of each registered
/// license's customer certificate (loaded from the store at start, every [`REFRESH_INTERVAL`],
/// and when an unknown certificate arrives, at most [`MISS_RELOAD_BURST`] at once and one per
/// [`MISS_RELOAD_INTERVAL`] after that) and of each operator certificate (set at start).
///
/// rustls calls the verifier synchronously inside the handshake, so it only reads the snapshot.
/// A certificate the snapshot does not know is admitted *provisionally* while the reload budget
/// lasts; the accept loop then awaits [`ClientRegistry::confirm`] (which reloads from the store,
/// asynchronously) before it reads any request, and closes the connection if the certificate is
/// still unknown. So a license added by `license add` (another process, or another replica's
/// database) is accepted on its first connection, and an unregistered certificate never reaches
/// the API: refused in the handshake once the budget is spent, closed right after it before that.
#[derive(Debug)]
pub struct ClientRegistry {
    customers: RwLock<Arc<HashSet<CertHash>>>,
    operators: RwLock<Arc<HashSet<CertHash>>>,
    misses: Mutex<MissBudget>,
    reload: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct MissBudget {
    tokens: u32,
    refilled: Instant,
    /// Provisional admissions not yet confirmed: each may spend one reload.
    provisional: u32,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        ClientRegistry {
            customers: RwLock::default(),
            operators: RwLock::default(),
            misses: Mutex::new(MissBudget {
                tokens: MISS_RELOAD_BURST,
                refilled: Instant::now(),
                provisional: 0,
            }),
            reload: tokio::sync::Mutex::new(()),
        }
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = value;
}

impl ClientRegistry {
    /// Sets the operator certificates (DER): admitted at the handshake, and the only ones that
    /// may read `/metrics`.
    pub fn set_operators(&self, certs: &[Vec<u8>]) {
        write(
            &self.operators,
            Arc::new(certs.iter().map(|c| CertHash(sha256(c))).collect()),
        );
    }

    /// Replaces the registered customer certificates with the store's current set. On failure
    /// the previous set stays in force (and the error is returned).
    pub async fn reload(&self, store: &crate::store::Store) -> crate::store::StoreResult<usize> {
        let one_at_a_time = self.reload.lock().await;
        self.reload_locked(store, one_at_a_time).await
    }

    async fn reload_locked(
        &self,
        store: &crate::store::Store,
        _one_at_a_time: tokio::sync::MutexGuard<'_, ()>,
    ) -> crate::store::StoreResult<usize> {
        let hashes = store.customer_cert_hashes().await?;
        let n = hashes.len();
        write(
            &self.customers,
            Arc::new(hashes.into_iter().map(CertHash).collect()),
        );
        Ok(n)
    }

    /// Number of distinct registered customer certificates in the snapshot.
    pub fn customers(&self) -> usize {
        read(&self.customers).len()
    }

    fn kind(&self, h: &CertHash) -> ClientKind {
        if read(&self.operators).contains(h) {
            ClientKind::Operator
        } else if read(&self.customers).contains(h) {
            ClientKind::Customer
        } else {
            ClientKind::Unregistered
        }
    }

    /// The handshake's decision (synchronous, no I/O).
    fn admit(&self, sha256: &[u8; 32]) -> Admission {
        if self.kind(&CertHash(*sha256)) != ClientKind::Unregistered {
            return Admission::Known;
        }
        let mut b = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(b.refilled).as_millis() / MISS_RELOAD_INTERVAL.as_millis();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(earned).min(MISS_RELOAD_BURST);
            b.refilled = if b.tokens == MISS_RELOAD_BURST {
                now
            } else {
                b.refilled + MISS_RELOAD_INTERVAL * earned
            };
        }
        if b.tokens == 0 {
            return Admission::Refused;
        }
        b.tokens -= 1;
        b.provisional = b.provisional.saturating_add(1);
        Admission::Provisional
    }

    /// After the handshake, before any request: who the certificate (its SHA-256) belongs to. A
    /// certificate the snapshot does not know (admitted provisionally) costs one reload from the
    /// store, and only if the handshake granted one; otherwise it is
    /// [`ClientKind::Unregistered`]. A failed reload is logged and leaves it unregistered.
    pub async fn confirm(&self, store: &crate::store::Store, sha256: &[u8; 32]) -> ClientKind {
        let h = CertHash(*sha256);
        let kind = self.kind(&h);
        if kind != ClientKind::Unregistered {
            return kind;
        }
        {
            let mut b = self.misses.lock().unwrap_or_else(|e| e.into_inner());
            if b.provisional == 0 {
                return ClientKind::Unregistered;
            }
            b.provisional -= 1;
        }
        let one_at_a_time = self.reload.lock().await;
        // Another connection's reload may have brought it in meanwhile.
        let kind = self.kind(&h);
        if kind != ClientKind::Unregistered {
            return kind;
        }
        if let Err(e) = self.reload_locked(store, one_at_a_time).await {
            tracing::warn!(
                "reloading the registered client certificates: {}",
                crate::text::escape_controls(&e.to_string())
            );
        }
        self.kind(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_certificates_spend_a_bounded_reload_budget() {
        let r = ClientRegistry::default();
        r.set_operators(&[b"operator".to_vec()]);
        assert_eq!(r.admit(&sha256(b"operator")), Admission::Known);
        for _ in 0..MISS_RELOAD_BURST {
            assert_eq!(r.admit(&[7; 32]), Admission::Provisional);
        }
        // The burst is spent: refused at the handshake, however many come.
        for _ in 0..100 {
            assert_eq!(r.admit(&[7; 32]), Admission::Refused);
        }
        // Known certificates are unaffected by the spent budget.
        assert_eq!(r.admit(&sha256(b"operator")), Admission::Known);
        // One more after the interval.
        std::thread::sleep(MISS_RELOAD_INTERVAL + Duration::from_millis(50));
        assert_eq!(r.admit(&[7; 32]), Admission::Provisional);
        assert_eq!(r.admit(&[7; 32]), Admission::Refused);
    }
}
