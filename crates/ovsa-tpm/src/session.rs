//! Policy sessions for the EK's policy A, and the authorization model of this crate.

use std::convert::TryFrom;

use tss_esapi::{
    attributes::SessionAttributesBuilder,
    constants::SessionType,
    handles::{AuthHandle, ObjectHandle},
    interface_types::{
        algorithm::HashingAlgorithm,
        session_handles::{AuthSession, PolicySession},
    },
    structures::SymmetricDefinition,
};

use crate::{Result, Tpm, TpmError};

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

impl Tpm {
    /// Start a policy session (SHA-256, unsalted, unbound, no parameter encryption) and satisfy
    /// policy A in it. 2 commands.
    pub(crate) fn ek_policy_session(&mut self) -> Result<AuthSession> {
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
    pub(crate) fn policy_secret(&mut self, s: AuthSession) -> Result<()> {
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

    pub(crate) fn set_continue(&mut self, s: AuthSession, keep: bool) -> Result<()> {
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(keep)
            .build();
        self.ctx
            .tr_sess_set_attributes(s, attrs, mask)
            .map_err(TpmError::cmd("session attributes"))
    }

    pub(crate) fn flush_session(&mut self, s: AuthSession) {
        let _ = self
            .ctx
            .flush_context(tss_esapi::handles::SessionHandle::from(s).into());
        self.commands += 1;
    }

    /// Close the ESYS handle of a session the TPM flushed itself (continueSession clear), so
    /// neither ESYS nor `tss-esapi` keeps it. No TPM command.
    pub(crate) fn forget_session(&mut self, s: AuthSession) {
        let mut obj: ObjectHandle = tss_esapi::handles::SessionHandle::from(s).into();
        let _ = self.ctx.tr_close(&mut obj);
    }
}
