//! Attestation keys: [`AkAlg`], the exportable [`AkBlob`], AK creation, and loading the AK for
//! an activation and/or a quote (with the connection's saved AK context).

use std::convert::TryFrom;

use ovsa_core::attest;
use serde::{Deserialize, Serialize};
use tss_esapi::{
    abstraction::{ak, AsymmetricAlgorithmSelection},
    handles::KeyHandle,
    interface_types::{
        algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm},
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        session_handles::AuthSession,
    },
    structures::{EncryptedSecret, IdObject, Private, Public},
    traits::{Marshall, UnMarshall},
};
use zeroize::Zeroizing;

use crate::ek::EkHandle;
use crate::quote::QuoteRequest;
use crate::{EkKind, QuoteOutput, Result, Tpm, TpmError};

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

/// A TPM2_ContextSave of a loaded AK, kept so later operations of this connection bring the AK
/// back with one TPM2_ContextLoad (no session, no policy, no ESYS crypto) instead of
/// StartAuthSession + PolicySecret + TPM2_Load under the EK. The context blob is encrypted and
/// integrity-protected by the TPM with a key derived from the hierarchy proof, usable only on
/// this TPM, and only until a TPM Reset (Startup(CLEAR) without a preceding Shutdown(STATE)),
/// disabling of the endorsement hierarchy or a change of its seed: it grants nothing the AK
/// blob (TPM-wrapped under the EK) does not. A saved *object* context holds no TPM resource
/// (the TPM tracks only saved session contexts), so the AK is still flushed before every call
/// returns and swtpm's three object slots stay free. This is what a TPM resource manager (e.g. /dev/tpmrm0) does for every object anyway.
pub(crate) struct SavedAk {
    blob: AkBlob,
    context: tss_esapi::utils::TpmsContext,
}

/// What [`Tpm::run_with_ak`] returns: the activated secret and the quote, each if asked for.
type AkRun = (Option<Zeroizing<Vec<u8>>>, Option<QuoteOutput>);

impl Tpm {
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
    pub(crate) fn run_with_ak(
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
}
