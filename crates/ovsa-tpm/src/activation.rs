//! TPM2_ActivateCredential for the Verifier's challenge, alone or followed by a quote.

use std::convert::TryFrom;

use ovsa_core::attest::HashAlg;
use tss_esapi::{
    handles::KeyHandle,
    interface_types::session_handles::AuthSession,
    structures::{EncryptedSecret, IdObject},
};
use zeroize::Zeroizing;

use crate::ek::EkHandle;
use crate::{AkBlob, EkKind, QuoteOutput, Result, Tpm, TpmError};

impl Tpm {
    /// TPM2_ActivateCredential with the loaded AK (admin role: its empty auth as a password)
    /// and the EK (user role: policy A in `session`, or in a new session if none is given).
    pub(crate) fn activate_loaded(
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

    /// TPM2_ActivateCredential: recover the Verifier's secret, which the TPM releases only if
    /// `ak` is loaded in the TPM holding the EK. `id_object` and `encrypted_secret` are the
    /// TPM2B payloads of a [`ovsa_core::attest::CredentialChallenge`]. RSA-2048 and P-256 EKs
    /// (policy A).
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
}
