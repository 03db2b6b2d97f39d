//! OVSA Attester: TPM 2.0 access on `tss-esapi` 7.7 (tpm2-tss 3.x).
//!
//! - [`Tpm::open`]: connect through a TCTI string (`swtpm:host=..,port=..`, `device:/dev/tpmrm0`,
//!   or the `TCTI` environment variable).
//! - EK certificates from NV ([`Tpm::ek_certificate`]), the EK from the default template or its
//!   persistent handle, an AK ([`Tpm::create_ak`]) exported as a reloadable [`AkBlob`] so a slow
//!   hardware TPM creates it once.
//! - [`Tpm::activate_credential`] (TPM2_ActivateCredential) for the Verifier's challenge.
//! - [`Tpm::quote`]: PCR read + TPM2_Quote with caller-given qualifying data, retried when the
//!   PCRs move in between.
//! - Host evidence in the vTPM's NV: [`host::write_host_evidence`] and
//!   [`host::read_host_evidence`].
//! - [`tools::write_tpm2_tools_files`]: `quote.msg`, `quote.sig`, `pcrs.bin`, `ak.pub` for
//!   `tpm2_checkquote`.
//!
//! swtpm holds at most three loaded objects and has no resource manager, so every object this
//! crate loads is flushed before the call that loaded it returns, on success and on error.

use std::collections::BTreeMap;
use std::convert::TryFrom;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tss_esapi::{
    abstraction::{ak, ek, pcr as tss_pcr, AsymmetricAlgorithmSelection},
    attributes::SessionAttributesBuilder,
    constants::{response_code::Tss2ResponseCodeKind, SessionType},
    handles::{AuthHandle, KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm},
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        session_handles::PolicySession,
    },
    structures::{
        Data, Digest, DigestValues, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot,
        Private, Public, SignatureScheme, SymmetricDefinition,
    },
    tcti_ldr::TctiNameConf,
    traits::{Marshall, UnMarshall},
    Context,
};
use zeroize::Zeroizing;

/// The pure-Rust Verifier and evidence formats (re-exported from `ovsa-core`).
pub use ovsa_core::attest;

pub mod host;
pub mod tools;

use attest::{HashAlg, PcrSet};

/// Default TCTI when neither an explicit string nor `TCTI` is given.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Attester errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string could not be parsed.
    #[error("invalid TCTI {tcti:?}: {reason}")]
    BadTcti {
        /// The string given.
        tcti: String,
        /// Why it was refused.
        reason: String,
    },
    /// The TPM could not be reached (no device, simulator not running, wrong port).
    #[error("TPM unreachable via {tcti:?}: {source}")]
    Unreachable {
        /// The TCTI used.
        tcti: String,
        /// The library error.
        source: tss_esapi::Error,
    },
    /// An NV index that must exist is not defined.
    #[error("NV index {0:#010x} is not defined")]
    NvIndexMissing(u32),
    /// No EK certificate of the requested kind is provisioned.
    #[error("no {0:?} EK certificate provisioned in NV")]
    NoEkCertificate(EkKind),
    /// The TPM is in dictionary-attack lockout.
    #[error("TPM is in dictionary-attack lockout")]
    Lockout,
    /// PCRs changed between every PCR read and quote attempt.
    #[error("PCRs kept changing while quoting ({0} attempts)")]
    PcrsUnstable(u32),
    /// The host-evidence blob in NV is unreadable.
    #[error("host evidence: {0}")]
    HostBlob(#[from] attest::HostBlobError),
    /// A cached AK blob is unusable.
    #[error("AK blob invalid: {0}")]
    BadAkBlob(String),
    /// A request this attester does not support.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// Writing tpm2-tools files failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A TPM command failed.
    #[error("TPM {op} failed: {source}")]
    Command {
        /// The operation.
        op: &'static str,
        /// The library error.
        source: tss_esapi::Error,
    },
}

impl TpmError {
    fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
        move |source| {
            if let tss_esapi::Error::Tss2Error(rc) = source {
                if rc.kind() == Some(Tss2ResponseCodeKind::Lockout) {
                    return TpmError::Lockout;
                }
            }
            TpmError::Command { op, source }
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, TpmError>;

fn is_handle_error(e: &tss_esapi::Error) -> bool {
    matches!(e, tss_esapi::Error::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::Handle))
}

/// Which EK (and EK certificate NV index, TCG EK Credential Profile 2.3 §2.2.1.4/5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EkKind {
    /// RSA-2048, certificate at 0x01c00002.
    Rsa2048,
    /// ECC NIST P-256, certificate at 0x01c0000a.
    EccP256,
    /// ECC NIST P-384, certificate at 0x01c00016.
    EccP384,
}

impl EkKind {
    /// NV index of the EK certificate.
    pub fn cert_nv_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x01c0_0002,
            EkKind::EccP256 => 0x01c0_000a,
            EkKind::EccP384 => 0x01c0_0016,
        }
    }

    /// Persistent handle where platforms conventionally keep this EK (TCG Provisioning
    /// Guidance; swtpm_setup uses 0x81010001 and 0x81010016).
    pub fn persistent_handle(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x8101_0001,
            EkKind::EccP256 => 0x8101_0002,
            EkKind::EccP384 => 0x8101_0016,
        }
    }

    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            EkKind::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            EkKind::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            EkKind::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }
}

/// Attestation key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AkAlg {
    /// ECDSA NIST P-256 / SHA-256 (default: fast on hardware TPMs).
    #[default]
    EcdsaP256,
    /// RSASSA-PKCS1-v1_5 RSA-2048 / SHA-256.
    Rsa2048,
}

/// A created AK, exported so a later process can load it instead of creating it again.
/// The private part is wrapped by the TPM under the EK (useless outside that TPM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AkBlob {
    /// The EK this AK was created under.
    pub ek: EkKind,
    /// The AK algorithm.
    pub alg: AkAlg,
    /// Marshalled TPMT_PUBLIC.
    #[serde(with = "hex_bytes")]
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE content (TPM-wrapped).
    #[serde(with = "hex_bytes")]
    pub private: Vec<u8>,
}

impl AkBlob {
    /// Serialize to JSON (for a cache file).
    pub fn to_json(&self) -> String {
        // Invariant: a struct of strings and enums always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse from JSON.
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| TpmError::BadAkBlob(e.to_string()))
    }

    /// The AK's TPM Name (nameAlg || H(TPMT_PUBLIC)).
    pub fn name(&self) -> Result<Vec<u8>> {
        attest::wire::parse_public(&self.public)
            .and_then(|p| p.name())
            .map_err(|e| TpmError::BadAkBlob(e.to_string()))
    }
}

mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// A quote with everything a Verifier needs besides the EK certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteOutput {
    /// Marshalled TPMS_ATTEST (`quote.msg`).
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE (`quote.sig`).
    pub signature: Vec<u8>,
    /// The PCR values the quote covers (read right before it; digest-checked).
    pub pcrs: PcrSet,
    /// Number of attempts needed (1 unless PCRs moved).
    pub attempts: u32,
}

/// Parse a TCTI string; `None` means the `TCTI` environment variable, else [`DEFAULT_TCTI`].
pub fn parse_tcti(tcti: Option<&str>) -> Result<(String, TctiNameConf)> {
    let s = match tcti {
        Some(s) => s.to_string(),
        None => std::env::var("TCTI").unwrap_or_else(|_| DEFAULT_TCTI.to_string()),
    };
    let conf = TctiNameConf::from_str(&s).map_err(|e| TpmError::BadTcti {
        tcti: s.clone(),
        reason: e.to_string(),
    })?;
    Ok((s, conf))
}

fn hashing(alg: HashAlg) -> Result<HashingAlgorithm> {
    Ok(match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
        #[allow(unreachable_patterns)]
        _ => return Err(TpmError::Unsupported("PCR bank")),
    })
}

fn pcr_slots(pcrs: &[u8]) -> Result<Vec<PcrSlot>> {
    pcrs.iter()
        .map(|&i| {
            if i > 23 {
                return Err(TpmError::Unsupported("PCR index above 23"));
            }
            PcrSlot::try_from(1u32 << i).map_err(|_| TpmError::Unsupported("PCR index"))
        })
        .collect()
}

/// A connection to one TPM.
pub struct Tpm {
    ctx: Context,
    tcti: String,
    commands: u64,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.tcti)
            .field("commands", &self.commands)
            .finish()
    }
}

/// A transient or persistent EK handle to release after use.
struct EkHandle {
    handle: KeyHandle,
    persistent: bool,
}

impl Tpm {
    /// Connect. `tcti`: see [`parse_tcti`]. Silence tpm2-tss's own logging with
    /// `TSS2_LOG=all+none`.
    pub fn open(tcti: Option<&str>) -> Result<Self> {
        let (s, conf) = parse_tcti(tcti)?;
        let mut ctx = Context::new(conf).map_err(|source| TpmError::Unreachable {
            tcti: s.clone(),
            source,
        })?;
        // Probe: a cheap command so an absent TPM fails here, not at first use.
        ctx.get_tpm_property(tss_esapi::constants::PropertyTag::Manufacturer)
            .map_err(|source| TpmError::Unreachable {
                tcti: s.clone(),
                source,
            })?;
        Ok(Self {
            ctx,
            tcti: s,
            commands: 1,
        })
    }

    /// The TCTI string this connection uses.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// TPM commands sent so far by this connection (approximate: counts the commands issued by
    /// this crate's operations, including session start/flush).
    pub fn command_count(&self) -> u64 {
        self.commands
    }

    /// Direct access to the `tss-esapi` context (tests, tools).
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// Read an NV index in full with its own (empty) authorization. Errors with
    /// [`TpmError::NvIndexMissing`] if the index is not defined.
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>> {
        use tss_esapi::{handles::NvIndexTpmHandle, interface_types::resource_handles::NvAuth};
        let nv = NvIndexTpmHandle::new(index).map_err(|_| TpmError::Unsupported("NV index"))?;
        self.ctx.clear_sessions();
        let obj = match self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv)))
        {
            Ok(o) => o,
            Err(e) if is_handle_error(&e) => return Err(TpmError::NvIndexMissing(index)),
            Err(e) => return Err(TpmError::cmd("NV read public")(e)),
        };
        let auth = NvAuth::NvIndex(obj.into());
        let data = self
            .ctx
            .execute_with_nullauth_session(|c| tss_esapi::abstraction::nv::read_full(c, auth, nv))
            .map_err(TpmError::cmd("NV read"));
        // `read_full` closes the ESYS handle of the index (tpm2-tss hands out one ESYS object
        // per TPM handle, so `obj` is closed with it).
        let data = data?;
        // NV_ReadPublic x2, GetCapability, StartAuthSession, FlushContext, NV_Read per 1024 bytes
        self.commands += 5 + data.len().div_ceil(1024) as u64;
        Ok(data)
    }

    /// Read the EK certificate (DER) of `kind`.
    pub fn ek_certificate(&mut self, kind: EkKind) -> Result<Vec<u8>> {
        match self.nv_read(kind.cert_nv_index()) {
            Err(TpmError::NvIndexMissing(_)) => Err(TpmError::NoEkCertificate(kind)),
            Ok(mut der) => {
                // Some TPMs pad the NV index: trim to the DER length.
                if let Some(len) = der_len(&der) {
                    der.truncate(len);
                }
                Ok(der)
            }
            Err(e) => Err(e),
        }
    }

    /// All provisioned EK certificates, in the order RSA-2048, P-256, P-384.
    pub fn ek_certificates(&mut self) -> Result<Vec<(EkKind, Vec<u8>)>> {
        let mut out = Vec::new();
        for k in [EkKind::Rsa2048, EkKind::EccP256, EkKind::EccP384] {
            match self.ek_certificate(k) {
                Ok(c) => out.push((k, c)),
                Err(TpmError::NoEkCertificate(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn load_ek(&mut self, kind: EkKind) -> Result<EkHandle> {
        // Prefer the persistent EK (no key generation on slow TPMs); fall back to creating the
        // EK from the default template. A wrong persistent key only makes the credential
        // activation fail: the Verifier's challenge is made for the certified EK.
        let ph = PersistentTpmHandle::new(kind.persistent_handle())
            .map_err(|_| TpmError::Unsupported("persistent handle"))?;
        self.ctx.clear_sessions();
        if let Ok(obj) = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(ph)))
        {
            self.commands += 1;
            return Ok(EkHandle {
                handle: obj.into(),
                persistent: true,
            });
        }
        let handle = ek::create_ek_object_2(&mut self.ctx, kind.selection(), None)
            .map_err(TpmError::cmd("create EK"))?;
        self.commands += 3; // StartAuthSession, CreatePrimary, FlushContext
        Ok(EkHandle {
            handle,
            persistent: false,
        })
    }

    fn release_ek(&mut self, ek: EkHandle) {
        let mut obj: ObjectHandle = ek.handle.into();
        if ek.persistent {
            let _ = self.ctx.tr_close(&mut obj);
        } else {
            let _ = self.ctx.flush_context(obj);
            self.commands += 1;
        }
    }

    /// Create an AK under the EK of `ek` and return its exportable blob. The AK is not left
    /// loaded.
    pub fn create_ak(&mut self, ek: EkKind, alg: AkAlg) -> Result<AkBlob> {
        let ekh = self.load_ek(ek)?;
        let (key_alg, scheme) = match alg {
            AkAlg::EcdsaP256 => (
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            AkAlg::Rsa2048 => (
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
        };
        let res = ak::create_ak_2(
            &mut self.ctx,
            ekh.handle,
            HashingAlgorithm::Sha256,
            key_alg,
            scheme,
            None,
            None,
        );
        // ReadPublic, StartAuthSession x2, PolicySecret, FlushContext x2, Create
        self.commands += 7;
        self.release_ek(ekh);
        let res = res.map_err(TpmError::cmd("create AK"))?;
        let public = res
            .out_public
            .marshall()
            .map_err(TpmError::cmd("marshal AK public"))?;
        Ok(AkBlob {
            ek,
            alg,
            public,
            private: res.out_private.value().to_vec(),
        })
    }

    /// Load `ak` under its EK; run `f` with the AK handle (and the EK handle if `keep_ek`); flush
    /// everything afterwards, also on error.
    fn with_ak<T>(
        &mut self,
        ak_blob: &AkBlob,
        keep_ek: bool,
        f: impl FnOnce(&mut Self, KeyHandle, KeyHandle) -> Result<T>,
    ) -> Result<T> {
        let public =
            Public::unmarshall(&ak_blob.public).map_err(|e| TpmError::BadAkBlob(e.to_string()))?;
        let private = Private::try_from(ak_blob.private.clone())
            .map_err(|e| TpmError::BadAkBlob(e.to_string()))?;
        let ekh = self.load_ek(ak_blob.ek)?;
        let loaded = ak::load_ak(&mut self.ctx, ekh.handle, None, private, public);
        // ReadPublic, StartAuthSession x2, PolicySecret, FlushContext x2, Load
        self.commands += 7;
        let akh = match loaded {
            Ok(h) => h,
            Err(e) => {
                self.release_ek(ekh);
                return Err(TpmError::cmd("load AK")(e));
            }
        };
        let ek_handle = ekh.handle;
        let ekh = if keep_ek {
            Some(ekh)
        } else {
            self.release_ek(ekh);
            None
        };
        let out = f(self, akh, ek_handle);
        let _ = self.ctx.flush_context(akh.into());
        self.commands += 1;
        if let Some(ekh) = ekh {
            self.release_ek(ekh);
        }
        out
    }

    /// TPM2_ActivateCredential: recover the Verifier's secret, which the TPM releases only if
    /// `ak` is loaded in the TPM holding the EK. `id_object` and `encrypted_secret` are the
    /// TPM2B payloads of a [`attest::CredentialChallenge`]. RSA-2048 EKs only (policy A).
    pub fn activate_credential(
        &mut self,
        ak_blob: &AkBlob,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if ak_blob.ek != EkKind::Rsa2048 && ak_blob.ek != EkKind::EccP256 {
            return Err(TpmError::Unsupported(
                "credential activation needs an EK with policy A (RSA-2048 or P-256)",
            ));
        }
        let id = IdObject::try_from(id_object.to_vec())
            .map_err(|_| TpmError::Unsupported("ID object size"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(|_| TpmError::Unsupported("encrypted secret size"))?;
        self.with_ak(ak_blob, true, move |tpm, akh, ekh| {
            let ctx = &mut tpm.ctx;
            let (attrs, mask) = SessionAttributesBuilder::new().build();
            let hmac = ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Hmac,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(TpmError::cmd("start session"))?
                .ok_or(TpmError::Unsupported("no session"))?;
            let policy = match ctx.start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            ) {
                Ok(Some(p)) => p,
                Ok(None) => return Err(TpmError::Unsupported("no session")),
                Err(e) => {
                    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(hmac).into());
                    return Err(TpmError::cmd("start policy session")(e));
                }
            };
            let run = (|| -> Result<Digest> {
                ctx.tr_sess_set_attributes(hmac, attrs, mask)
                    .map_err(TpmError::cmd("session attributes"))?;
                ctx.tr_sess_set_attributes(policy, attrs, mask)
                    .map_err(TpmError::cmd("session attributes"))?;
                let ps = PolicySession::try_from(policy)
                    .map_err(|_| TpmError::Unsupported("policy session"))?;
                ctx.execute_with_session(Some(hmac), |c| {
                    c.policy_secret(
                        ps,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(TpmError::cmd("policy secret"))?;
                ctx.set_sessions((Some(hmac), Some(policy), None));
                let r = ctx.activate_credential(akh, ekh, id, secret);
                ctx.clear_sessions();
                r.map_err(TpmError::cmd("activate credential"))
            })();
            for s in [hmac, policy] {
                let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(s).into());
            }
            tpm.commands += 6;
            let d = run?;
            Ok(Zeroizing::new(d.value().to_vec()))
        })
    }

    /// Read PCR values of one bank.
    pub fn read_pcrs(&mut self, bank: HashAlg, pcrs: &[u8]) -> Result<PcrSet> {
        let alg = hashing(bank)?;
        let slots = pcr_slots(pcrs)?;
        let sel = PcrSelectionListBuilder::new()
            .with_selection(alg, &slots)
            .build()
            .map_err(TpmError::cmd("PCR selection"))?;
        self.ctx.clear_sessions();
        let data = self
            .ctx
            .execute_without_session(|c| tss_pcr::read_all(c, sel))
            .map_err(TpmError::cmd("PCR read"))?;
        self.commands += pcrs.len().div_ceil(8).max(1) as u64;
        let bank_data = data
            .pcr_bank(alg)
            .ok_or(TpmError::Unsupported("PCR bank not active"))?;
        let mut values = BTreeMap::new();
        for (&i, slot) in pcrs.iter().zip(slots) {
            let d = bank_data
                .get_digest(slot)
                .ok_or(TpmError::Unsupported("PCR not returned"))?;
            values.insert(i, d.value().to_vec());
        }
        Ok(PcrSet { bank, values })
    }

    /// Extend a PCR of one bank with `digest` (tests and demos: simulate a measurement).
    pub fn pcr_extend(&mut self, pcr: u8, bank: HashAlg, digest: &[u8]) -> Result<()> {
        let handle =
            PcrHandle::try_from(u32::from(pcr)).map_err(|_| TpmError::Unsupported("PCR index"))?;
        let mut vals = DigestValues::new();
        vals.set(
            hashing(bank)?,
            Digest::try_from(digest.to_vec()).map_err(|_| TpmError::Unsupported("digest"))?,
        );
        self.ctx
            .execute_with_nullauth_session(|c| c.pcr_extend(handle, vals))
            .map_err(TpmError::cmd("PCR extend"))?;
        self.commands += 3;
        Ok(())
    }

    /// Quote `pcrs` of `bank` with `qualifying_data` (at most 64 bytes) under the AK.
    ///
    /// Reads the PCRs, quotes, and checks that the quote's PCR digest equals the hash of the
    /// values read; if a PCR moved in between, retries (up to 5 attempts).
    pub fn quote(
        &mut self,
        ak_blob: &AkBlob,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<QuoteOutput> {
        let alg = hashing(bank)?;
        let slots = pcr_slots(pcrs)?;
        let qd = Data::try_from(qualifying_data.to_vec())
            .map_err(|_| TpmError::Unsupported("qualifying data longer than 64 bytes"))?;
        self.with_ak(ak_blob, false, move |tpm, akh, _| {
            const ATTEMPTS: u32 = 5;
            for attempt in 1..=ATTEMPTS {
                let values = tpm.read_pcrs(bank, pcrs)?;
                let sel = PcrSelectionListBuilder::new()
                    .with_selection(alg, &slots)
                    .build()
                    .map_err(TpmError::cmd("PCR selection"))?;
                let qd = qd.clone();
                let (attest, sig) = tpm
                    .ctx
                    .execute_with_nullauth_session(|c| c.quote(akh, qd, SignatureScheme::Null, sel))
                    .map_err(TpmError::cmd("quote"))?;
                tpm.commands += 3;
                let attest = attest.marshall().map_err(TpmError::cmd("marshal quote"))?;
                let signature = sig.marshall().map_err(TpmError::cmd("marshal signature"))?;
                let info = attest::wire::parse_quote(&attest)
                    .map_err(|_| TpmError::Unsupported("TPM returned an unparsable quote"))?;
                // Both AK algorithms sign with SHA-256, which is also the PCR digest hash.
                let digest =
                    HashAlg::Sha256.digest_parts(values.values.values().map(|v| v.as_slice()));
                if digest == info.pcr_digest {
                    return Ok(QuoteOutput {
                        attest,
                        signature,
                        pcrs: values,
                        attempts: attempt,
                    });
                }
            }
            Err(TpmError::PcrsUnstable(ATTEMPTS))
        })
    }
}

/// Length of a DER TLV at the start of `b` (for trimming padded NV contents).
fn der_len(b: &[u8]) -> Option<usize> {
    if b.len() < 2 || b[0] != 0x30 {
        return None;
    }
    let l = b[1] as usize;
    if l < 0x80 {
        return Some(2 + l);
    }
    let n = l & 0x7f;
    if n == 0 || n > 4 || b.len() < 2 + n {
        return None;
    }
    let len = b[2..2 + n]
        .iter()
        .fold(0usize, |a, &x| (a << 8) | x as usize);
    Some(2 + n + len).filter(|&t| t <= b.len())
}
