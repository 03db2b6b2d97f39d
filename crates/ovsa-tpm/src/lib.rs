//! OVSA Attester: TPM 2.0 access on `tss-esapi` 7.7 (tpm2-tss 3.x).
//!
//! - [`Tpm::open`]: connect through a TCTI string (`swtpm:host=..,port=..`, `device:/dev/tpmrm0`,
//!   or the `TCTI`, else `TPM2TOOLS_TCTI` environment variable).
//! - EK certificates from NV ([`Tpm::ek_certificate`]), the EK from the default template or its
//!   persistent handle, an AK ([`Tpm::create_ak`]) exported as a reloadable [`AkBlob`] so a slow
//!   hardware TPM creates it once.
//! - [`Tpm::activate_credential`] (TPM2_ActivateCredential) for the Verifier's challenge.
//! - [`Tpm::quote`]: PCR read + TPM2_Quote with caller-given qualifying data, retried when the
//!   PCRs move in between (at most [`QUOTE_ATTEMPTS`]).
//! - PCR banks: [`Tpm::pcr_banks`] (TPM2_GetCapability, once per connection) and
//!   [`Tpm::check_pcr_bank`]; a bank the TPM lacks is [`TpmError::PcrBankNotAllocated`] before
//!   anything is loaded. Every loop over TPM commands is bounded.
//! - Host evidence in the vTPM's NV: [`host::write_host_evidence`] and
//!   [`host::read_host_evidence`].
//! - [`tools::write_tpm2_tools_files`]: `quote.msg`, `quote.sig`, `pcrs.bin` (tpm2-tools'
//!   serialized format), `ak.pub` for a plain `tpm2_checkquote`.
//!
//! swtpm holds at most three loaded objects and has no resource manager, so every object this
//! crate loads is flushed before the call that loaded it returns, on success and on error. What a
//! connection keeps between calls holds no TPM resource: the ESYS handle of a persistent EK and
//! the saved context (TPM2_ContextSave) of the last AK, which brings the AK back with one
//! TPM2_ContextLoad.
//!
//! TPM commands per operation (persistent EK already known to the connection, AK context
//! saved, 10 PCRs): [`Tpm::activate_credential`] 5, [`Tpm::quote`] 5,
//! [`Tpm::activate_and_quote`] 8. The first AK use on a connection costs 2 more (Load under
//! the EK policy, ContextSave), the first EK use 2 (ReadPublic x2) and the first PCR operation 1
//! (GetCapability of the PCR banks). The comment on
//! authorization in this file's source explains why most commands carry a password
//! authorization, not an HMAC session (in short: all auth values are empty and the sessions
//! were unsalted and unbound, so they protected nothing).

use std::collections::BTreeMap;
use std::convert::TryFrom;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tss_esapi::{
    abstraction::{ak, ek, AsymmetricAlgorithmSelection},
    attributes::SessionAttributesBuilder,
    constants::{response_code::Tss2ResponseCodeKind, SessionType},
    handles::{AuthHandle, KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm},
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        session_handles::{AuthSession, PolicySession},
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

/// PCR read + quote attempts while the PCRs move in between (then [`TpmError::PcrsUnstable`]).
pub const QUOTE_ATTEMPTS: u32 = 5;

/// Default TCTI when neither an explicit string nor `TCTI`/`TPM2TOOLS_TCTI` is given.
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
    /// The TPM has no allocated PCR bank of this hash algorithm (e.g. sha1 on a sha256-only
    /// TPM). Found with TPM2_GetCapability(TPM_CAP_PCRS) before any PCR is read.
    #[error(
        "the TPM has no {bank} PCR bank (its PCR banks: {}); use one of those or allocate the bank (tpm2_pcrallocate)",
        bank_list(.available)
    )]
    PcrBankNotAllocated {
        /// The bank asked for.
        bank: HashAlg,
        /// The banks the TPM has allocated (non-empty selections).
        available: Vec<HashAlg>,
    },
    /// A PCR index the TPM's bank does not have.
    #[error("the TPM's {bank} PCR bank has no PCR {pcr} (it has PCRs {})", index_ranges(.present))]
    PcrNotPresent {
        /// The bank.
        bank: HashAlg,
        /// The PCR index asked for.
        pcr: u8,
        /// The PCR indices the bank has.
        present: Vec<u8>,
    },
    /// TPM2_PCR_Read did not return the PCRs asked for within a bounded number of calls.
    #[error(
        "the TPM returned no value for PCR(s) {} of its {bank} bank after {calls} TPM2_PCR_Read calls",
        index_ranges(.missing)
    )]
    PcrReadIncomplete {
        /// The bank.
        bank: HashAlg,
        /// The PCRs still missing.
        missing: Vec<u8>,
        /// TPM2_PCR_Read calls made.
        calls: u32,
    },
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

fn bank_list(banks: &[HashAlg]) -> String {
    if banks.is_empty() {
        return "none".into();
    }
    banks
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `0-7,10` style list of PCR indices.
fn index_ranges(pcrs: &[u8]) -> String {
    if pcrs.is_empty() {
        return "none".into();
    }
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < pcrs.len() {
        let mut j = i;
        while j + 1 < pcrs.len() && pcrs[j + 1] == pcrs[j].wrapping_add(1) {
            j += 1;
        }
        out.push(if i == j {
            pcrs[i].to_string()
        } else {
            format!("{}-{}", pcrs[i], pcrs[j])
        });
        i = j + 1;
    }
    out.join(",")
}

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

/// The TCTI used when none is given: the `TCTI` environment variable, else `TPM2TOOLS_TCTI`
/// (what tpm2-tools users already have set), else [`DEFAULT_TCTI`]. Empty values count as unset.
pub fn default_tcti() -> String {
    ["TCTI", "TPM2TOOLS_TCTI"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_TCTI.to_string())
}

/// Parse a TCTI string; `None` means [`default_tcti`] (env `TCTI`, else `TPM2TOOLS_TCTI`, else
/// [`DEFAULT_TCTI`]).
pub fn parse_tcti(tcti: Option<&str>) -> Result<(String, TctiNameConf)> {
    let s = match tcti {
        Some(s) => s.to_string(),
        None => default_tcti(),
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

// Authorization model: which commands carry which session, and why this loses nothing.
//
// Every object and hierarchy this crate authorizes against has an EMPTY auth value: the
// endorsement hierarchy (PolicySecret for the EK policy), the AK (created by `create_ak` with
// no auth), the EK certificate and host-evidence NV indices (read with their own, empty auth).
// Earlier versions wrapped each such command in an unsalted, unbound HMAC session
// (`execute_with_nullauth_session`: StartAuthSession + the command + FlushContext, with a KDFa,
// HMACs and AES parameter encryption in tpm2-tss for every command). With an empty auth value
// and neither a salt nor a bind key, the session key is empty and every HMAC and
// parameter-encryption key is derived only from values sent in the clear (nonceCaller,
// nonceTPM): anyone who can see or alter the bus traffic computes the same keys. Such a session
// therefore gives no integrity, no confidentiality and no authorization beyond a password
// session with the same empty password. We use `AuthSession::Password` (the empty password,
// no TPM session, no crypto) for those authorizations, and no session at all where none is
// needed (PCR_Read, ReadPublic, NV_ReadPublic, GetCapability).
//
// A *salted* session (salt encrypted to the EK) would give the bus protection the unsalted one
// only pretends to; none was ever used. The security of the protocol does not rest on the bus:
// the Verifier checks the quote signature (AK), binds the AK to the certified EK through
// TPM2_ActivateCredential (the TPM releases the secret only to the holder of the EK's private
// key, for an AK Name it has loaded) and binds the quote to its nonce, ephemeral key and TLS
// channel through the qualifying data. A bus attacker can at most make a check fail.
//
// The EK's authPolicy (policy A: TPM2_PolicySecret on the endorsement hierarchy) still needs a
// real policy session for Load under the EK and for ActivateCredential; it is unsalted and
// unbound like before (policy sessions carry no HMAC the TPM checks here). One policy session
// serves the AK Load and the activation that follows: after it authorizes a command with
// continueSession set, the TPM resets its policy digest, and PolicySecret satisfies it again.
// Its last use clears continueSession, so the TPM flushes it itself.

/// TCG EK Credential Profile, policy A for SHA-256 (PolicySecret(TPM_RH_ENDORSEMENT)): the
/// authPolicy of the default (low-range) RSA-2048 and P-256 EK templates.
const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// A connection to one TPM.
pub struct Tpm {
    ctx: Context,
    tcti: String,
    commands: u64,
    /// What this connection learned about each EK it used (see [`EkInfo`]).
    eks: Vec<(EkKind, EkInfo)>,
    /// TPM_PT_NV_BUFFER_MAX, read once per connection.
    nv_buffer_max: Option<usize>,
    /// The saved context of the AK last loaded by this connection (see [`SavedAk`]).
    saved_ak: Option<SavedAk>,
    /// The allocated PCR banks and their PCR indices (TPM2_GetCapability(TPM_CAP_PCRS)), read
    /// once per connection before the first PCR read.
    pcr_banks: Option<Vec<(HashAlg, Vec<u8>)>>,
}

/// A TPM2_ContextSave of a loaded AK, kept so later operations of this connection bring the AK
/// back with one TPM2_ContextLoad (no session, no policy, no ESYS crypto) instead of
/// StartAuthSession + PolicySecret + TPM2_Load under the EK. The context blob is encrypted and
/// integrity-protected by the TPM with a key derived from the hierarchy proof, usable only on
/// this TPM, and only until a TPM Reset (Startup(CLEAR) without a preceding Shutdown(STATE)),
/// disabling of the endorsement hierarchy or a change of its seed: it grants nothing the AK
/// blob (TPM-wrapped under the EK) does not. A saved *object* context holds no TPM resource
/// (the TPM tracks only saved session contexts), so the AK is still flushed before every call
/// returns and swtpm's three object slots stay free. This is what a TPM resource manager (e.g. /dev/tpmrm0) does for every object anyway.
struct SavedAk {
    blob: AkBlob,
    context: tss_esapi::utils::TpmsContext,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.tcti)
            .field("commands", &self.commands)
            .finish()
    }
}

/// Per-connection facts about an EK, learned once: whether its authPolicy is policy A with
/// SHA-256 (then this crate satisfies it itself with one PolicySecret; otherwise it defers to
/// `tss-esapi`'s generic `load_ak`), and, for a persistent EK, its ESYS handle. That handle is
/// ESYS metadata only (handle number and Name), holds no TPM object slot and needs no flush;
/// keeping it saves the TPM2_ReadPublic (and the Name hash) each operation would repeat. If an
/// operation using it fails, it is dropped and read again next time (the persistent handle may
/// have been evicted or replaced: the TPM then refuses the command, nothing worse).
#[derive(Debug, Clone, Copy)]
struct EkInfo {
    persistent: Option<KeyHandle>,
    policy_a_sha256: bool,
}

/// A transient or persistent EK handle to release after use.
struct EkHandle {
    kind: EkKind,
    handle: KeyHandle,
    persistent: bool,
    policy_a_sha256: bool,
}

/// What [`Tpm::run_with_ak`] returns: the activated secret and the quote, each if asked for.
type AkRun = (Option<Zeroizing<Vec<u8>>>, Option<QuoteOutput>);

/// The quote part of [`Tpm::run_with_ak`].
struct QuoteRequest<'a> {
    qualifying_data: Data,
    bank: HashAlg,
    alg: HashingAlgorithm,
    slots: Vec<PcrSlot>,
    pcrs: &'a [u8],
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
            eks: Vec::new(),
            nv_buffer_max: None,
            saved_ak: None,
            pcr_banks: None,
        })
    }

    /// The TCTI string this connection uses.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// TPM commands sent so far by this connection, counting every command this crate's
    /// operations send, including session start and flush (exact on the paths tested against a
    /// counting proxy in `swtpm-tests`). Not counted: commands sent through [`Tpm::context`],
    /// and resubmissions tpm2-tss makes by itself when the TPM answers `TPM_RC_RETRY`.
    pub fn command_count(&self) -> u64 {
        self.commands
    }

    /// Direct access to the `tss-esapi` context (tests, tools).
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// Read an NV index in full with its own (empty) authorization, as a password
    /// authorization (see the note on authorization above). Errors with
    /// [`TpmError::NvIndexMissing`] if the index is not defined.
    ///
    /// Commands: NV_ReadPublic x2 (ESYS handle, then the size), NV_Read per
    /// TPM_PT_NV_BUFFER_MAX bytes, and GetCapability once per connection.
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>> {
        use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle};
        let nv = NvIndexTpmHandle::new(index).map_err(|_| TpmError::Unsupported("NV index"))?;
        self.ctx.clear_sessions();
        let obj = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv)));
        self.commands += 1;
        let mut obj = match obj {
            Ok(o) => o,
            Err(e) if is_handle_error(&e) => return Err(TpmError::NvIndexMissing(index)),
            Err(e) => return Err(TpmError::cmd("NV read public")(e)),
        };
        let data = self.nv_read_handle(NvIndexHandle::from(obj));
        // ESYS metadata only (no TPM command).
        let _ = self.ctx.tr_close(&mut obj);
        data
    }

    fn nv_read_handle(&mut self, h: tss_esapi::handles::NvIndexHandle) -> Result<Vec<u8>> {
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let public = self.ctx.nv_read_public(h);
        self.commands += 1;
        let size = public
            .map_err(TpmError::cmd("NV read public"))?
            .0
            .data_size();
        let max = match self.nv_buffer_max {
            Some(m) => m,
            None => {
                let m = tss_esapi::abstraction::nv::max_nv_buffer_size(&mut self.ctx);
                self.commands += 1;
                let m = m.map_err(TpmError::cmd("NV buffer size"))?.clamp(64, 2048);
                self.nv_buffer_max = Some(m);
                m
            }
        };
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            let len = (size - data.len()).min(max);
            let off = data.len();
            let (len16, off16) = match (u16::try_from(len), u16::try_from(off)) {
                (Ok(l), Ok(o)) => (l, o),
                _ => return Err(TpmError::Unsupported("NV index larger than 64 KiB")),
            };
            let chunk = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.nv_read(NvAuth::NvIndex(h), h, len16, off16)
                });
            self.commands += 1;
            let chunk = chunk.map_err(TpmError::cmd("NV read"))?;
            // TPM2_NV_Read returns exactly the size asked for; anything else (a short or empty
            // answer) would make this loop ask again and again: stop instead. The loop
            // therefore runs at most ceil(size / TPM_PT_NV_BUFFER_MAX) times.
            if chunk.len() != len {
                return Err(TpmError::Unsupported(
                    "TPM answered TPM2_NV_Read with a different size than asked for",
                ));
            }
            data.extend_from_slice(&chunk);
        }
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

    fn ek_info(&self, kind: EkKind) -> Option<EkInfo> {
        self.eks.iter().find(|(k, _)| *k == kind).map(|(_, i)| *i)
    }

    /// The EK of `kind`: no command when this connection already holds the persistent EK's ESYS
    /// handle; else ReadPublic of the persistent handle (plus, once per connection, a
    /// ReadPublic for its policy), or CreatePrimary from the default template.
    fn load_ek(&mut self, kind: EkKind) -> Result<EkHandle> {
        let cached = self.ek_info(kind);
        if let Some(EkInfo {
            persistent: Some(handle),
            policy_a_sha256,
        }) = cached
        {
            return Ok(EkHandle {
                kind,
                handle,
                persistent: true,
                policy_a_sha256,
            });
        }
        // Prefer the persistent EK (no key generation on slow TPMs); fall back to creating the
        // EK from the default template. A wrong persistent key only makes the credential
        // activation fail: the Verifier's challenge is made for the certified EK.
        let ph = PersistentTpmHandle::new(kind.persistent_handle())
            .map_err(|_| TpmError::Unsupported("persistent handle"))?;
        self.ctx.clear_sessions();
        let found = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(ph)));
        self.commands += 1;
        let (handle, persistent) = match found {
            Ok(obj) => (KeyHandle::from(obj), true),
            Err(_) => {
                let h = ek::create_ek_object_2(&mut self.ctx, kind.selection(), None);
                self.commands += 3; // StartAuthSession, CreatePrimary, FlushContext
                (h.map_err(TpmError::cmd("create EK"))?, false)
            }
        };
        let policy_a_sha256 = match cached {
            Some(i) => i.policy_a_sha256,
            None => {
                let public = self.ctx.read_public(handle);
                self.commands += 1;
                match public {
                    Ok((p, _, _)) => {
                        p.name_hashing_algorithm() == HashingAlgorithm::Sha256
                            && p.auth_policy().value() == POLICY_A_SHA256
                    }
                    Err(e) => {
                        self.release_ek(EkHandle {
                            kind,
                            handle,
                            persistent,
                            policy_a_sha256: false,
                        });
                        self.forget_ek(kind);
                        return Err(TpmError::cmd("read EK public")(e));
                    }
                }
            }
        };
        let info = EkInfo {
            persistent: persistent.then_some(handle),
            policy_a_sha256,
        };
        self.eks.retain(|(k, _)| *k != kind);
        self.eks.push((kind, info));
        Ok(EkHandle {
            kind,
            handle,
            persistent,
            policy_a_sha256,
        })
    }

    /// Flush a transient EK; a persistent one stays cached for this connection.
    fn release_ek(&mut self, ek: EkHandle) {
        if !ek.persistent {
            let _ = self.ctx.flush_context(ek.handle.into());
            self.commands += 1;
        }
    }

    /// Drop what this connection knows about the EK of `kind` (after a failure that may come
    /// from a stale persistent handle).
    fn forget_ek(&mut self, kind: EkKind) {
        if let Some(EkInfo {
            persistent: Some(h),
            ..
        }) = self.ek_info(kind)
        {
            let mut obj: ObjectHandle = h.into();
            let _ = self.ctx.tr_close(&mut obj);
        }
        self.eks.retain(|(k, _)| *k != kind);
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
        // ReadPublic, StartAuthSession x2, PolicySecret, FlushContext x2, Create (plus PolicyOR
        // for high-range EKs)
        self.commands += if ekh.policy_a_sha256 { 7 } else { 8 };
        let persistent = ekh.persistent;
        self.release_ek(ekh);
        if res.is_err() && persistent {
            self.forget_ek(ek);
        }
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

    /// Start a policy session (SHA-256, unsalted, unbound, no parameter encryption) and satisfy
    /// policy A in it. 2 commands.
    fn ek_policy_session(&mut self) -> Result<AuthSession> {
        // nonceCaller from our CSPRNG (aws-lc), not from tpm2-tss, which instantiates a new
        // OpenSSL DRBG per call (a large part of its CPU per session). In an unsalted, unbound
        // session it only feeds HMACs the TPM does not check for this policy; fresh anyway.
        let nonce = ovsa_core::crypto::random_array::<32>()
            .ok()
            .and_then(|n| tss_esapi::structures::Nonce::try_from(n.to_vec()).ok());
        let s = self.ctx.start_auth_session(
            None,
            None,
            nonce,
            SessionType::Policy,
            SymmetricDefinition::Null,
            HashingAlgorithm::Sha256,
        );
        self.commands += 1;
        let s = s
            .map_err(TpmError::cmd("start policy session"))?
            .ok_or(TpmError::Unsupported("no session"))?;
        if let Err(e) = self
            .set_continue(s, true)
            .and_then(|()| self.policy_secret(s))
        {
            self.flush_session(s);
            return Err(e);
        }
        Ok(s)
    }

    /// TPM2_PolicySecret(TPM_RH_ENDORSEMENT) in `s`, the endorsement hierarchy's empty auth
    /// given as a password. 1 command.
    fn policy_secret(&mut self, s: AuthSession) -> Result<()> {
        let ps = PolicySession::try_from(s).map_err(|_| TpmError::Unsupported("policy session"))?;
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.policy_secret(
                    ps,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            });
        self.commands += 1;
        r.map(|_| ()).map_err(TpmError::cmd("policy secret"))
    }

    fn set_continue(&mut self, s: AuthSession, keep: bool) -> Result<()> {
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(keep)
            .build();
        self.ctx
            .tr_sess_set_attributes(s, attrs, mask)
            .map_err(TpmError::cmd("session attributes"))
    }

    fn flush_session(&mut self, s: AuthSession) {
        let _ = self
            .ctx
            .flush_context(tss_esapi::handles::SessionHandle::from(s).into());
        self.commands += 1;
    }

    /// Close the ESYS handle of a session the TPM flushed itself (continueSession clear), so
    /// neither ESYS nor `tss-esapi` keeps it. No TPM command.
    fn forget_session(&mut self, s: AuthSession) {
        let mut obj: ObjectHandle = tss_esapi::handles::SessionHandle::from(s).into();
        let _ = self.ctx.tr_close(&mut obj);
    }

    /// Load `ak_blob` under its EK, then run TPM2_ActivateCredential (if `activation`) and the
    /// quote (if `quote`) with the one loaded AK, and flush the AK before returning, also on
    /// error (swtpm holds three objects and has no resource manager: nothing stays loaded).
    ///
    /// Commands with a policy-A EK whose persistent handle this connection already knows, AK
    /// context saved: ContextLoad, [StartAuthSession, PolicySecret, ActivateCredential],
    /// [PCR_Read per 8 PCRs, Quote], FlushContext (AK). First use of an AK on the connection:
    /// StartAuthSession, PolicySecret, Load, ContextSave, [PolicySecret, ActivateCredential]...
    /// (the policy session of the Load serves the activation). The policy session is flushed by
    /// the TPM after its last use (continueSession clear), or by us after a failure.
    fn run_with_ak(
        &mut self,
        ak_blob: &AkBlob,
        activation: Option<(IdObject, EncryptedSecret)>,
        quote: Option<QuoteRequest<'_>>,
    ) -> Result<AkRun> {
        let public =
            Public::unmarshall(&ak_blob.public).map_err(|e| TpmError::BadAkBlob(e.to_string()))?;
        let private = Private::try_from(ak_blob.private.clone())
            .map_err(|e| TpmError::BadAkBlob(e.to_string()))?;
        // The EK is needed to load the AK from its blob and for the activation, not for a quote
        // with the AK's saved context.
        let mut akh = None;
        let mut ekh = None;
        if activation.is_none() {
            akh = self.load_saved_ak(ak_blob);
        }
        if akh.is_none() || activation.is_some() {
            ekh = Some(self.load_ek(ak_blob.ek)?);
        }
        let mut session = None;
        if akh.is_none() && activation.is_some() {
            akh = self.load_saved_ak(ak_blob);
        }
        let akh = match akh {
            Some(h) => h,
            None => {
                let Some(ek) = ekh.as_ref() else {
                    return Err(TpmError::Unsupported("no EK"));
                };
                match self.load_ak(ek, private, public, activation.is_some()) {
                    Ok((h, s)) => {
                        session = s;
                        self.save_ak(ak_blob, h);
                        h
                    }
                    Err(e) => {
                        if let Some(ek) = ekh {
                            let (kind, persistent) = (ek.kind, ek.persistent);
                            self.release_ek(ek);
                            if persistent {
                                self.forget_ek(kind);
                            }
                        }
                        return Err(e);
                    }
                }
            }
        };
        let mut out = (None, None);
        let mut res = Ok(());
        if let (Some((id, secret)), Some(ek)) = (activation, ekh.as_ref()) {
            match self.activate_loaded(akh, ek, session, id, secret) {
                Ok(d) => out.0 = Some(d),
                Err(e) => res = Err(e),
            }
        }
        if let (Ok(()), Some(q)) = (&res, quote) {
            match self.quote_loaded(akh, q) {
                Ok(q) => out.1 = Some(q),
                Err(e) => res = Err(e),
            }
        }
        let _ = self.ctx.flush_context(akh.into());
        self.commands += 1;
        if let Some(ek) = ekh {
            self.release_ek(ek);
        }
        res.map(|()| out)
    }

    /// TPM2_ContextLoad of the AK's saved context, if this connection saved one for `ak_blob`.
    /// A refused context (TPM Reset, hierarchy disabled or its seed changed, ...) is
    /// dropped and the caller loads the AK from its blob. 1 command.
    fn load_saved_ak(&mut self, ak_blob: &AkBlob) -> Option<KeyHandle> {
        let saved = self
            .saved_ak
            .as_ref()
            .filter(|s| s.blob == *ak_blob)?
            .context
            .clone();
        let r = self.ctx.context_load(saved);
        self.commands += 1;
        match r {
            Ok(h) => Some(h.into()),
            Err(_) => {
                self.saved_ak = None;
                None
            }
        }
    }

    /// TPM2_ContextSave of the just loaded AK (once per AK and connection; the object stays
    /// loaded until the caller flushes it). 1 command.
    fn save_ak(&mut self, ak_blob: &AkBlob, akh: KeyHandle) {
        let r = self.ctx.context_save(akh.into());
        self.commands += 1;
        self.saved_ak = r.ok().map(|context| SavedAk {
            blob: ak_blob.clone(),
            context,
        });
    }

    /// TPM2_Load of the AK under the EK (policy A). With `keep_session`, returns the policy
    /// session still open (continueSession set) for the activation that follows; without, the
    /// TPM flushes it after the Load.
    fn load_ak(
        &mut self,
        ekh: &EkHandle,
        private: Private,
        public: Public,
        keep_session: bool,
    ) -> Result<(KeyHandle, Option<AuthSession>)> {
        if !ekh.policy_a_sha256 {
            // Another EK policy (e.g. a high-range template: PolicySecret + PolicyOR): the
            // generic loader. ReadPublic, StartAuthSession x2, PolicySecret, FlushContext x2,
            // Load, and PolicyOR unless the EK uses SHA-256.
            let r = ak::load_ak(&mut self.ctx, ekh.handle, None, private, public);
            self.commands += 8;
            return r.map(|h| (h, None)).map_err(TpmError::cmd("load AK"));
        }
        let s = self.ek_policy_session()?;
        let r = self.set_continue(s, keep_session).and_then(|()| {
            self.ctx.set_sessions((Some(s), None, None));
            let r = self.ctx.load(ekh.handle, private, public);
            self.ctx.clear_sessions();
            self.commands += 1;
            r.map_err(TpmError::cmd("load AK"))
        });
        match r {
            Ok(h) if keep_session => Ok((h, Some(s))),
            Ok(h) => {
                self.forget_session(s);
                Ok((h, None))
            }
            Err(e) => {
                // A failed command leaves the session loaded.
                self.flush_session(s);
                Err(e)
            }
        }
    }

    /// TPM2_ActivateCredential with the loaded AK (admin role: its empty auth as a password)
    /// and the EK (user role: policy A in `session`, or in a new session if none is given).
    fn activate_loaded(
        &mut self,
        akh: KeyHandle,
        ekh: &EkHandle,
        session: Option<AuthSession>,
        id: IdObject,
        secret: EncryptedSecret,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let s = match session {
            Some(s) => match self.policy_secret(s) {
                Ok(()) => s,
                Err(e) => {
                    self.flush_session(s);
                    return Err(e);
                }
            },
            None => self.ek_policy_session()?,
        };
        let r = self.set_continue(s, false).and_then(|()| {
            self.ctx
                .set_sessions((Some(AuthSession::Password), Some(s), None));
            let r = self.ctx.activate_credential(akh, ekh.handle, id, secret);
            self.ctx.clear_sessions();
            self.commands += 1;
            r.map_err(TpmError::cmd("activate credential"))
        });
        match r {
            Ok(d) => {
                self.forget_session(s);
                Ok(Zeroizing::new(d.value().to_vec()))
            }
            Err(e) => {
                self.flush_session(s);
                Err(e)
            }
        }
    }

    /// PCR_Read + TPM2_Quote (the AK's empty auth as a password) with the loaded AK, retried
    /// while the PCRs move in between.
    fn quote_loaded(&mut self, akh: KeyHandle, q: QuoteRequest<'_>) -> Result<QuoteOutput> {
        for attempt in 1..=QUOTE_ATTEMPTS {
            let values = self.read_pcrs(q.bank, q.pcrs)?;
            let sel = PcrSelectionListBuilder::new()
                .with_selection(q.alg, &q.slots)
                .build()
                .map_err(TpmError::cmd("PCR selection"))?;
            let qd = q.qualifying_data.clone();
            let r = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(akh, qd, SignatureScheme::Null, sel)
                });
            self.commands += 1;
            let (attest, sig) = r.map_err(TpmError::cmd("quote"))?;
            let attest = attest.marshall().map_err(TpmError::cmd("marshal quote"))?;
            let signature = sig.marshall().map_err(TpmError::cmd("marshal signature"))?;
            let info = attest::wire::parse_quote(&attest)
                .map_err(|_| TpmError::Unsupported("TPM returned an unparsable quote"))?;
            // Both AK algorithms sign with SHA-256, which is also the PCR digest hash.
            let digest = HashAlg::Sha256.digest_parts(values.values.values().map(|v| v.as_slice()));
            if digest == info.pcr_digest {
                return Ok(QuoteOutput {
                    attest,
                    signature,
                    pcrs: values,
                    attempts: attempt,
                });
            }
        }
        Err(TpmError::PcrsUnstable(QUOTE_ATTEMPTS))
    }

    fn check_activation_ek(ak_blob: &AkBlob) -> Result<()> {
        if ak_blob.ek != EkKind::Rsa2048 && ak_blob.ek != EkKind::EccP256 {
            return Err(TpmError::Unsupported(
                "credential activation needs an EK with policy A (RSA-2048 or P-256)",
            ));
        }
        Ok(())
    }

    fn activation_payload(
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<(IdObject, EncryptedSecret)> {
        let id = IdObject::try_from(id_object.to_vec())
            .map_err(|_| TpmError::Unsupported("ID object size"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(|_| TpmError::Unsupported("encrypted secret size"))?;
        Ok((id, secret))
    }

    fn quote_request<'a>(
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &'a [u8],
    ) -> Result<QuoteRequest<'a>> {
        Ok(QuoteRequest {
            qualifying_data: Data::try_from(qualifying_data.to_vec())
                .map_err(|_| TpmError::Unsupported("qualifying data longer than 64 bytes"))?,
            bank,
            alg: hashing(bank)?,
            slots: pcr_slots(pcrs)?,
            pcrs,
        })
    }

    /// TPM2_ActivateCredential: recover the Verifier's secret, which the TPM releases only if
    /// `ak` is loaded in the TPM holding the EK. `id_object` and `encrypted_secret` are the
    /// TPM2B payloads of a [`attest::CredentialChallenge`]. RSA-2048 and P-256 EKs (policy A).
    pub fn activate_credential(
        &mut self,
        ak_blob: &AkBlob,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        Self::check_activation_ek(ak_blob)?;
        let act = Self::activation_payload(id_object, encrypted_secret)?;
        let (secret, _) = self.run_with_ak(ak_blob, Some(act), None)?;
        secret.ok_or(TpmError::Unsupported("no activation result"))
    }

    /// [`Tpm::activate_credential`] and then [`Tpm::quote`] with one AK load: what a license
    /// check needs, in 8 TPM commands instead of 10 for the two calls (10 PCRs, persistent EK
    /// and AK context known to this connection). The quote is only taken if the activation
    /// succeeded. The AK is flushed before this returns.
    pub fn activate_and_quote(
        &mut self,
        ak_blob: &AkBlob,
        id_object: &[u8],
        encrypted_secret: &[u8],
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, QuoteOutput)> {
        Self::check_activation_ek(ak_blob)?;
        let act = Self::activation_payload(id_object, encrypted_secret)?;
        let q = Self::quote_request(qualifying_data, bank, pcrs)?;
        self.check_pcr_bank(bank, pcrs)?;
        match self.run_with_ak(ak_blob, Some(act), Some(q))? {
            (Some(secret), Some(quote)) => Ok((secret, quote)),
            _ => Err(TpmError::Unsupported("no activation or quote result")),
        }
    }

    /// The TPM's allocated PCR banks (hash algorithms this crate knows) and the PCR indices
    /// each has, from TPM2_GetCapability(TPM_CAP_PCRS); a bank listed with an empty selection
    /// is not allocated and left out. Read once per connection (1 command), then cached.
    pub fn pcr_banks(&mut self) -> Result<Vec<(HashAlg, Vec<u8>)>> {
        if let Some(b) = &self.pcr_banks {
            return Ok(b.clone());
        }
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        self.ctx.clear_sessions();
        let r = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::AssignedPcr, 0, 1));
        self.commands += 1;
        let (data, _) = r.map_err(TpmError::cmd("get PCR banks"))?;
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(TpmError::Unsupported(
                "TPM answered GetCapability(PCRS) with other data",
            ));
        };
        let mut banks = Vec::new();
        for sel in list.get_selections() {
            let bank = match sel.hashing_algorithm() {
                HashingAlgorithm::Sha1 => HashAlg::Sha1,
                HashingAlgorithm::Sha256 => HashAlg::Sha256,
                HashingAlgorithm::Sha384 => HashAlg::Sha384,
                HashingAlgorithm::Sha512 => HashAlg::Sha512,
                _ => continue,
            };
            let pcrs: Vec<u8> = sel
                .selected()
                .into_iter()
                .map(|slot| u32::from(slot).trailing_zeros() as u8)
                .collect();
            if !pcrs.is_empty() {
                banks.push((bank, pcrs));
            }
        }
        self.pcr_banks = Some(banks.clone());
        Ok(banks)
    }

    /// Checks that `bank` is allocated and has every PCR of `pcrs` (see [`Tpm::pcr_banks`]):
    /// [`TpmError::PcrBankNotAllocated`] or [`TpmError::PcrNotPresent`] otherwise.
    pub fn check_pcr_bank(&mut self, bank: HashAlg, pcrs: &[u8]) -> Result<()> {
        let banks = self.pcr_banks()?;
        let Some((_, present)) = banks.iter().find(|(b, _)| *b == bank) else {
            return Err(TpmError::PcrBankNotAllocated {
                bank,
                available: banks.iter().map(|(b, _)| *b).collect(),
            });
        };
        if let Some(&pcr) = pcrs.iter().find(|p| !present.contains(p)) {
            return Err(TpmError::PcrNotPresent {
                bank,
                pcr,
                present: present.clone(),
            });
        }
        Ok(())
    }

    /// Read PCR values of one bank (no session). The bank and indices are checked first
    /// ([`Tpm::check_pcr_bank`]); then TPM2_PCR_Read (at most 8 digests per call) is repeated
    /// only while each call returns at least one missing PCR, and at most once per PCR, so a TPM
    /// that answers without the PCRs asked for gives [`TpmError::PcrReadIncomplete`], never a
    /// loop.
    pub fn read_pcrs(&mut self, bank: HashAlg, pcrs: &[u8]) -> Result<PcrSet> {
        let alg = hashing(bank)?;
        pcr_slots(pcrs)?;
        self.check_pcr_bank(bank, pcrs)?;
        let mut missing: Vec<u8> = pcrs.to_vec();
        missing.sort_unstable();
        missing.dedup();
        let max_calls = u32::try_from(missing.len().max(1)).unwrap_or(u32::MAX);
        let mut values = BTreeMap::new();
        let mut calls = 0u32;
        self.ctx.clear_sessions();
        while !missing.is_empty() {
            if calls >= max_calls {
                return Err(TpmError::PcrReadIncomplete {
                    bank,
                    missing,
                    calls,
                });
            }
            let sel = PcrSelectionListBuilder::new()
                .with_selection(alg, &pcr_slots(&missing)?)
                .build()
                .map_err(TpmError::cmd("PCR selection"))?;
            let r = self.ctx.execute_without_session(|c| c.pcr_read(sel));
            self.commands += 1;
            calls += 1;
            let (_, read, digests) = r.map_err(TpmError::cmd("PCR read"))?;
            let slots: Vec<u8> = read
                .get_selections()
                .iter()
                .filter(|s| s.hashing_algorithm() == alg)
                .flat_map(|s| s.selected())
                .map(|slot| u32::from(slot).trailing_zeros() as u8)
                .collect();
            // Digests come in selection order (ascending PCR index within the bank). Only one
            // bank was asked for; a response naming others is not trusted.
            if read.get_selections().len() > 1 || slots.len() != digests.len() {
                return Err(TpmError::Unsupported(
                    "TPM2_PCR_Read returned a selection that does not match its digests",
                ));
            }
            let before = missing.len();
            for (i, d) in slots.into_iter().zip(digests.value()) {
                if let Some(pos) = missing.iter().position(|&m| m == i) {
                    missing.remove(pos);
                    values.insert(i, d.value().to_vec());
                }
            }
            if missing.len() == before {
                return Err(TpmError::PcrReadIncomplete {
                    bank,
                    missing,
                    calls,
                });
            }
        }
        Ok(PcrSet { bank, values })
    }

    /// Extend a PCR of one bank with `digest` (tests and demos: simulate a measurement). The
    /// PCR's empty auth is given as a password.
    pub fn pcr_extend(&mut self, pcr: u8, bank: HashAlg, digest: &[u8]) -> Result<()> {
        let handle =
            PcrHandle::try_from(u32::from(pcr)).map_err(|_| TpmError::Unsupported("PCR index"))?;
        let mut vals = DigestValues::new();
        vals.set(
            hashing(bank)?,
            Digest::try_from(digest.to_vec()).map_err(|_| TpmError::Unsupported("digest"))?,
        );
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| c.pcr_extend(handle, vals));
        self.commands += 1;
        r.map_err(TpmError::cmd("PCR extend"))
    }

    /// Quote `pcrs` of `bank` with `qualifying_data` (at most 64 bytes) under the AK.
    ///
    /// Checks that the TPM has `bank` and `pcrs` ([`Tpm::check_pcr_bank`]: a typed
    /// [`TpmError::PcrBankNotAllocated`] before any object is loaded), reads the PCRs, quotes,
    /// and checks that the quote's PCR digest equals the hash of the values read; if a PCR moved
    /// in between, retries (at most [`QUOTE_ATTEMPTS`], then [`TpmError::PcrsUnstable`]).
    pub fn quote(
        &mut self,
        ak_blob: &AkBlob,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<QuoteOutput> {
        let q = Self::quote_request(qualifying_data, bank, pcrs)?;
        // Before anything is loaded: a missing bank is a clear error, not a TPM round trip.
        self.check_pcr_bank(bank, pcrs)?;
        let (_, quote) = self.run_with_ak(ak_blob, None, Some(q))?;
        quote.ok_or(TpmError::Unsupported("no quote result"))
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
