//! The runtime policy artifact (`.rtp`): the ISV-signed list of path patterns and the file
//! digests allowed under them, checked against the guest's IMA measurement list
//! (`docs/ATTESTATION.md` §11, `docs/FORMATS.md`). `ovsatool runtime-policy` writes it;
//! `ovsatool sale --runtime-policy` binds it to a license by copying its body into the license's
//! TCB reference ([`TcbReference::bind_runtime_policy`]), signed again by the ISV.

use crate::envelope::{Artifact, Signed};
use crate::error::{Error, Result};
use crate::identity::Keystore;

pub use crate::attest::runtime::{FileRule, RuntimePolicy};

use super::tcb::TcbReference;

impl Artifact for RuntimePolicy {
    const TYPE: &'static str = "runtime-policy";
    const VERSION: u64 = 1;

    fn validate(&self) -> Result<()> {
        RuntimePolicy::validate(self).map_err(|e| Error::malformed("runtime policy", e))
    }
}

impl TcbReference {
    /// The license's copy of `tcb` with `policy`'s body as its runtime policy (replacing any
    /// the reference already carries), signed again by `isv`, which must be the key that signed
    /// both: `ovsatool sale --runtime-policy`. The challenge then asks for PCR 10 in the quote
    /// ([`TcbReference::quoted_pcrs`]) and the Verifier requires and checks the IMA list.
    pub fn bind_runtime_policy(
        tcb: &Signed<TcbReference>,
        policy: &Signed<RuntimePolicy>,
        isv: &Keystore,
    ) -> Result<Signed<TcbReference>> {
        super::master::require_same_key("TCB reference", tcb.signer(), isv)?;
        super::master::require_same_key("runtime policy", policy.signer(), isv)?;
        let mut body = tcb.body().clone();
        body.runtime = Some(policy.body().clone());
        Signed::sign(body, isv)
    }
}
