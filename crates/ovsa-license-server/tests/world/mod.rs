//! Test fixture: an ISV, a customer, a protected model, and a running license service (real
//! TLS on loopback, SQLite or PostgreSQL storage) whose vTPM EK CA is the swtpm test CA.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ovsa_client::attester::{Attester, Quote};
use ovsa_client::http::Connection;
use ovsa_client::{check_license, ClientError, ClientOptions, Released, Step, TpmAttester};
use ovsa_core::attest::{EkTrust, HashAlg, VerifierConfig};
use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::Keystore;
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{
    sell, CustomerLicense, KeyShare, LicenseConfig, MasterLicense, PcrSet, Policy, ServiceEndpoint,
    TcbReference,
};
use ovsa_core::package::{classify_inputs, protect, Package, ProtectOptions};
use ovsa_core::protocol::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorResponse, Purpose,
    Reason, RuntimeEphemeral,
};
use ovsa_license_server::api::{AppState, Settings};
use ovsa_license_server::server::{self, Limits, RunningServer};
use ovsa_license_server::store::{AuditEntry, AuditFilter, LicenseRecord, Store};
use swtpm_tests::{names, Swtpm};
use zeroize::Zeroizing;

pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<RunningServer>,
    pub replicas: Vec<RunningServer>,
    pub state: Arc<AppState>,
    pub dir: tempfile::TempDir,
    pub isv: Keystore,
    pub customer: Keystore,
    /// The operator (`--metrics-client-cert`): the only reader of `/metrics`.
    pub operator: Keystore,
    pub server_ks: Keystore,
    /// The service's registration key: sold registrations are sealed to it.
    pub registration_ks: Keystore,
    pub package: PathBuf,
    pub model_files: Vec<PathBuf>,
    pub master: Signed<MasterLicense>,
    pub tcb: Signed<TcbReference>,
}

/// The reason of a refusal (panics on success or another error).
pub fn refused<T>(r: Result<T, ClientError>) -> Reason {
    match r {
        Err(ClientError::Refused { reason, .. }) => reason,
        Err(e) => panic!("expected a refusal, got: {e}"),
        Ok(_) => panic!("expected a refusal, got success"),
    }
}

impl World {
    pub fn keystore(subject: &str) -> Keystore {
        Keystore::generate(KeyAlgorithm::EcdsaP256, subject, 30)
            .unwrap()
            .0
    }

    pub fn sqlite() -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("licenses.db").display());
        World::with_db(dir, &url)
    }

    pub fn with_db(dir: tempfile::TempDir, url: &str) -> World {
        World::with_db_and_session_ttl(dir, url, Duration::from_secs(30))
    }

    /// SQLite, with challenges that expire after `ttl`.
    pub fn sqlite_with_session_ttl(ttl: Duration) -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("licenses.db").display());
        World::with_db_and_session_ttl(dir, &url, ttl)
    }

    /// SQLite, with these network limits.
    pub fn sqlite_with_limits(limits: Limits) -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("licenses.db").display());
        World::build(dir, &url, Duration::from_secs(30), limits)
    }

    pub fn with_db_and_session_ttl(dir: tempfile::TempDir, url: &str, ttl: Duration) -> World {
        World::build(dir, url, ttl, Limits::default())
    }

    /// SQLite, with a service that trusts the vTPM EK CAs `vtpm_cas` (swtpm-tests CA names).
    pub fn sqlite_trusting_vtpm_cas(vtpm_cas: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("licenses.db").display());
        World::build_trusting(
            dir,
            &url,
            Duration::from_secs(30),
            Limits::default(),
            vtpm_cas,
        )
    }

    fn build(dir: tempfile::TempDir, url: &str, ttl: Duration, limits: Limits) -> World {
        World::build_trusting(dir, url, ttl, limits, &[names::VTPM_CA])
    }

    fn build_trusting(
        dir: tempfile::TempDir,
        url: &str,
        ttl: Duration,
        limits: Limits,
        vtpm_cas: &[&str],
    ) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let isv = Self::keystore("CN=Acme Models");
        let customer = Self::keystore("CN=Customer One");
        let server_ks = Self::keystore("CN=license.local");
        // A small model.
        let xml = dir.path().join("model.xml");
        let bin = dir.path().join("model.bin");
        std::fs::write(&xml, b"<net name='test'/>").unwrap();
        std::fs::write(
            &bin,
            (0..200_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let package = dir.path().join("model.dat");
        let protected = protect(
            &classify_inputs(&[xml.clone(), bin.clone()]).unwrap(),
            &ProtectOptions {
                model_name: "test".into(),
                model_version: "1".into(),
                description: String::new(),
                chunk_size: 65536,
                overwrite: true,
            },
            &isv,
            &package,
            &mut |_| {},
        )
        .unwrap();
        let master = MasterLicense::create(&protected, &isv).unwrap();
        // TCB reference from a live vTPM of the same template.
        let probe = Swtpm::start(names::VTPM);
        let pcrs = probe
            .open()
            .read_pcrs(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7])
            .unwrap();
        drop(probe);
        let tcb = Signed::sign(
            TcbReference {
                name: "test-vm".into(),
                vtpm: PcrSet::from_attest(&pcrs).unwrap(),
                host: None,
                host_max_age_seconds: None,
                vtpm_ek: None,
                events: None,
                runtime: None,
                created: now_rfc3339(),
            },
            &isv,
        )
        .unwrap();
        // The service.
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.ks");
        std::fs::write(&cert_path, server_ks.certificate().to_pem()).unwrap();
        server_ks
            .save(
                &key_path,
                &ovsa_core::identity::KeystoreProtection::None,
                true,
            )
            .unwrap();
        let tls = ovsa_license_server::tls::server_config(&cert_path, &key_path).unwrap();
        let vtpm_chain: Vec<u8> = vtpm_cas
            .iter()
            .flat_map(|name| swtpm_tests::ca(name).chain_pem())
            .collect();
        let operator = Self::keystore("CN=Operator");
        tls.clients
            .set_operators(&[operator.certificate().der().to_vec()]);
        let store = rt.block_on(Store::open(url)).unwrap();
        let state = Arc::new(AppState {
            store,
            verifier: VerifierConfig {
                vtpm_ek_trust: EkTrust::from_pem(&vtpm_chain).unwrap(),
                host_ek_trust: EkTrust::from_pem(&swtpm_tests::ca(names::HOST_CA).chain_pem())
                    .unwrap(),
                ..Default::default()
            },
            settings: Settings {
                session_ttl: ttl,
                require_host_evidence: false,
                request_timeout: Duration::from_secs(10),
                allow_unenrolled_host_ak: false,
            },
            metrics: Default::default(),
        });
        let server = rt
            .block_on(server::start(
                "127.0.0.1:0".parse().unwrap(),
                tls,
                state.clone(),
                limits,
            ))
            .unwrap();
        World {
            rt,
            server: Some(server),
            replicas: Vec::new(),
            state,
            dir,
            isv,
            customer,
            operator,
            server_ks,
            registration_ks: Self::keystore("CN=license.local registration"),
            package,
            model_files: vec![xml, bin],
            master,
            tcb,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.server.as_ref().unwrap().addr)
    }

    /// Starts another replica of the service on the same database (same TLS key); returns its
    /// URL. It runs until the world is dropped.
    pub fn replica(&mut self, db_url: &str) -> String {
        let cert_path = self.dir.path().join("server.crt");
        let key_path = self.dir.path().join("server.ks");
        let tls = ovsa_license_server::tls::server_config(&cert_path, &key_path).unwrap();
        tls.clients
            .set_operators(&[self.operator.certificate().der().to_vec()]);
        let store = self.rt.block_on(Store::open(db_url)).unwrap();
        let state = Arc::new(AppState {
            store,
            verifier: self.state.verifier.clone(),
            settings: self.state.settings.clone(),
            metrics: Default::default(),
        });
        let server = self
            .rt
            .block_on(server::start(
                "127.0.0.1:0".parse().unwrap(),
                tls,
                state,
                Limits::default(),
            ))
            .unwrap();
        let url = format!("https://{}", server.addr);
        self.replicas.push(server);
        url
    }

    pub fn server_pin(&self) -> Pin {
        Pin(self.server_ks.certificate().spki_pin())
    }

    /// Sells a license with `policy` to `customer` and registers it with the service.
    pub fn sell(
        &self,
        policy: Policy,
        customer: &Keystore,
        pins: Option<Vec<Pin>>,
    ) -> Signed<CustomerLicense> {
        self.sell_with_tcb(policy, customer, pins, &self.tcb)
    }

    /// The vTPM TCB reference of this world plus the host PCRs 0-7 of `host` (a license that
    /// requires host evidence).
    pub fn tcb_with_host(&self, host: &Swtpm) -> Signed<TcbReference> {
        let pcrs = host
            .open()
            .read_pcrs(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7])
            .unwrap();
        let mut body = self.tcb.body().clone();
        body.host = Some(PcrSet::from_attest(&pcrs).unwrap());
        Signed::sign(body, &self.isv).unwrap()
    }

    pub fn sell_with_tcb(
        &self,
        policy: Policy,
        customer: &Keystore,
        pins: Option<Vec<Pin>>,
        tcb: &Signed<TcbReference>,
    ) -> Signed<CustomerLicense> {
        let config = Signed::sign(
            LicenseConfig {
                name: "test".into(),
                policy,
                lease_seconds: 60,
                grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
                services: vec![ServiceEndpoint {
                    url: self.url(),
                    pins: pins.unwrap_or_else(|| vec![self.server_pin()]),
                }],
                created: now_rfc3339(),
            },
            &self.isv,
        )
        .unwrap();
        let sale = sell(&SaleRequest {
            isv: &self.isv,
            master: &self.master,
            config: &config,
            tcb,
            customer: customer.certificate(),
            service: self.registration_ks.certificate(),
        })
        .unwrap();
        let share = sale
            .registration
            .body()
            .open_share(&self.registration_ks)
            .unwrap();
        let rec = LicenseRecord::from_registration(
            sale.registration.body(),
            &share,
            sale.registration.signer().fingerprint(),
            time::OffsetDateTime::now_utc(),
        );
        self.rt
            .block_on(self.state.store.add_license(&rec))
            .unwrap();
        sale.license
    }

    pub fn check(
        &self,
        lic: &Signed<CustomerLicense>,
        customer: &Keystore,
        vtpm: &Swtpm,
        purpose: Purpose,
    ) -> Result<Released, ClientError> {
        self.check_body(lic.body(), customer, vtpm, purpose)
    }

    pub fn check_body(
        &self,
        lic: &CustomerLicense,
        customer: &Keystore,
        vtpm: &Swtpm,
        purpose: Purpose,
    ) -> Result<Released, ClientError> {
        let mut att = TpmAttester::open(Some(&vtpm.tcti()), None)?;
        check_license(
            lic,
            customer,
            &mut att,
            purpose,
            &ClientOptions::default(),
            &mut |_| {},
        )
    }

    pub fn check_observed(
        &self,
        lic: &Signed<CustomerLicense>,
        customer: &Keystore,
        vtpm: &Swtpm,
        purpose: Purpose,
        steps: &mut Vec<Step>,
    ) -> Result<Released, ClientError> {
        let mut att = TpmAttester::open(Some(&vtpm.tcti()), None)?;
        check_license(
            lic.body(),
            customer,
            &mut att,
            purpose,
            &ClientOptions::default(),
            &mut |s| steps.push(s.clone()),
        )
    }

    pub fn assert_model_decrypts(&self, lic: &Signed<CustomerLicense>, share: &KeyShare) {
        let pkg = Package::open(&self.package).unwrap();
        CustomerLicense::check_package(lic, pkg.header()).unwrap();
        let key = lic
            .body()
            .unwrap_model_key(&self.customer, Some(share))
            .unwrap();
        let model = pkg.decrypt_model(&key, 2).unwrap();
        for ((_, plain), path) in model.files.iter().zip(&self.model_files) {
            assert_eq!(plain.as_slice(), std::fs::read(path).unwrap().as_slice());
        }
    }

    pub fn audit(&self, guid: uuid::Uuid) -> Vec<AuditEntry> {
        self.audit_filtered(Some(guid))
    }

    /// The whole audit log (also entries that name no license, e.g. replays).
    pub fn audit_all(&self) -> Vec<AuditEntry> {
        self.audit_filtered(None)
    }

    fn audit_filtered(&self, license_guid: Option<uuid::Uuid>) -> Vec<AuditEntry> {
        self.rt
            .block_on(self.state.store.audit(&AuditFilter {
                license_guid,
                limit: 100,
            }))
            .unwrap()
    }

    pub fn revoke(&self, guid: uuid::Uuid) {
        assert!(self
            .rt
            .block_on(
                self.state
                    .store
                    .revoke(guid, time::OffsetDateTime::now_utc())
            )
            .unwrap());
    }

    pub fn reinstate(&self, guid: uuid::Uuid) {
        assert!(self.rt.block_on(self.state.store.reinstate(guid)).unwrap());
    }

    pub fn connect(&self, customer: &Keystore) -> Connection {
        let config = ovsa_client::tls::client_config(customer, &[self.server_pin()]).unwrap();
        Connection::open(&self.url(), Arc::new(config), Duration::from_secs(10)).unwrap()
    }

    /// Posts raw bytes; returns the status and the reason code if the body is an OVSA error.
    pub fn raw_post(&self, path: &str, body: &[u8]) -> (u16, Option<Reason>) {
        let mut c = self.connect(&self.customer);
        let (status, body) = c.post(path, body).unwrap();
        let reason = serde_json::from_slice::<ErrorResponse>(&body)
            .ok()
            .map(|e| e.error.code);
        (status, reason)
    }

    /// Sends only a request head announcing a `content_length`-byte body (no body follows) and
    /// returns the status: a body over the limit must be refused from its declared length, before
    /// anything is read (sending the whole body instead races the server's close).
    pub fn announce_body(&self, path: &str, content_length: usize) -> (u16, String) {
        self.raw(&format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
        ))
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.get_as(&self.customer, path)
    }

    /// `GET path` with `client`'s certificate: the status and the whole response.
    pub fn get_as(&self, client: &Keystore, path: &str) -> (u16, String) {
        self.raw_as(
            client,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
    }

    fn raw(&self, head: &str) -> (u16, String) {
        self.raw_as(&self.customer, head)
    }

    fn raw_as(&self, client: &Keystore, head: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let config = ovsa_client::tls::client_config(client, &[self.server_pin()]).unwrap();
        let addr = self.server.as_ref().unwrap().addr;
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(head.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }

    pub fn healthz(&self) -> bool {
        self.get("/healthz").0 == 200
    }

    /// `/metrics` as the operator.
    pub fn metrics(&self) -> String {
        self.get_as(&self.operator, "/metrics").1
    }

    /// A TLS 1.2-only client must fail the handshake.
    pub fn tls12_handshake_fails(&self) -> bool {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAll))
            .with_no_client_auth();
        let addr = self.server.as_ref().unwrap().addr;
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        let mut failed = false;
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                failed = true;
                break;
            }
        }
        failed
    }

    /// Runs challenge + quote, waits `delay`, then sends the attestation.
    pub fn attest_after(
        &self,
        lic: &Signed<CustomerLicense>,
        vtpm: &Swtpm,
        delay: Duration,
    ) -> Result<AttestResponse, ClientError> {
        let mut att = TpmAttester::open(Some(&vtpm.tcti()), None).unwrap();
        let mut c = self.connect(&self.customer);
        let req = self.attest_request(&mut c, lic, &mut att, Tamper::None);
        std::thread::sleep(delay);
        c.post_json("/v1/attest", &req)
    }

    /// Runs challenge + quote for a load on a new connection, without sending the attestation:
    /// send the request on the returned connection (the quote is bound to it).
    pub fn prepare_load(
        &self,
        lic: &Signed<CustomerLicense>,
        vtpm: &Swtpm,
    ) -> (Connection, AttestRequest) {
        let mut att = TpmAttester::open(Some(&vtpm.tcti()), None).unwrap();
        let mut c = self.connect(&self.customer);
        let req = self.attest_request(&mut c, lic, &mut att, Tamper::None);
        (c, req)
    }

    /// Runs challenge + attest, then sends the identical attest request again.
    pub fn attest_twice(
        &self,
        lic: &Signed<CustomerLicense>,
        vtpm: &Swtpm,
    ) -> (
        Result<AttestResponse, ClientError>,
        Result<AttestResponse, ClientError>,
    ) {
        let mut att = TpmAttester::open(Some(&vtpm.tcti()), None).unwrap();
        let mut c = self.connect(&self.customer);
        let req = self.attest_request(&mut c, lic, &mut att, Tamper::None);
        let first = c.post_json("/v1/attest", &req);
        let second = c.post_json("/v1/attest", &req);
        (first, second)
    }

    fn attest_request(
        &self,
        c: &mut Connection,
        lic: &Signed<CustomerLicense>,
        att: &mut TpmAttester,
        tamper: Tamper,
    ) -> AttestRequest {
        let ek = att.ek_certificate().unwrap();
        let ak = att.ak_public().unwrap();
        let ch: ChallengeResponse = c
            .post_json(
                "/v1/challenge",
                &ChallengeRequest {
                    license_guid: lic.body().license_guid,
                    purpose: Purpose::Load,
                    ek_certificate: ek.clone(),
                    ak_public: ak.clone(),
                },
            )
            .unwrap();
        let mut secret = att.activate_credential(&ch.credential).unwrap();
        if tamper == Tamper::ActivatedSecret {
            secret = Zeroizing::new(vec![0u8; secret.len()]);
        }
        let eph = RuntimeEphemeral::generate().unwrap();
        let mut epk = eph.public_key().to_vec();
        if tamper == Tamper::EphemeralKey {
            // Not a point on P-256, yet honestly bound into the quote.
            epk = vec![0x04; epk.len()];
        }
        let mut qd =
            ovsa_core::attest::quote_qualifying_data(&ch.nonce, &epk, Some(&c.exporter().unwrap()));
        if tamper == Tamper::QualifyingData {
            qd = ovsa_core::attest::quote_qualifying_data(&ch.nonce, &epk, None);
        }
        let Quote {
            attest,
            signature,
            mut pcrs,
        } = att.quote(&qd, ch.pcr_bank, &ch.pcr_indices).unwrap();
        if tamper == Tamper::PcrValue {
            if let Some(v) = pcrs.values.values_mut().next() {
                v[0] ^= 1;
            }
        }
        AttestRequest {
            session_id: ch.session_id,
            evidence: ovsa_core::attest::Evidence {
                ek_cert: ek,
                ak_public: ak,
                quote: attest,
                signature,
                pcrs,
                host_evidence: None,
                event_log: None,
                ima_log: None,
            },
            activated_secret: secret.to_vec(),
            ephemeral_public_key: epk,
            lease_id: None,
        }
    }

    /// One check with tampered evidence.
    pub fn check_tampered(
        &self,
        lic: &Signed<CustomerLicense>,
        vtpm: &Swtpm,
        tamper: Tamper,
    ) -> Result<(), ClientError> {
        let mut att = TpmAttester::open(Some(&vtpm.tcti()), None).unwrap();
        let mut c = self.connect(&self.customer);
        let req = self.attest_request(&mut c, lic, &mut att, tamper);
        c.post_json::<_, AttestResponse>("/v1/attest", &req)
            .map(|_| ())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
        for s in self.replicas.drain(..) {
            self.rt.block_on(s.shutdown());
        }
    }
}

/// What to tamper with in [`World::check_tampered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    PcrValue,
    QualifyingData,
    ActivatedSecret,
    /// An ephemeral key that cannot receive the share (bound into an otherwise valid quote).
    EphemeralKey,
}

#[derive(Debug)]
struct AcceptAll;

impl rustls::client::danger::ServerCertVerifier for AcceptAll {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
