//! Endorsement keys: [`EkKind`], EK certificates from NV, and loading the EK (persistent
//! handle, else the default template).

use serde::{Deserialize, Serialize};
use tss_esapi::{
    abstraction::{ek, AsymmetricAlgorithmSelection},
    handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle},
    interface_types::{algorithm::HashingAlgorithm, ecc::EccCurve, key_bits::RsaKeyBits},
};

use crate::{Result, Tpm, TpmError};

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

/// TCG EK Credential Profile, policy A for SHA-256 (PolicySecret(TPM_RH_ENDORSEMENT)): the
/// authPolicy of the default (low-range) RSA-2048 and P-256 EK templates.
const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// Per-connection facts about an EK, learned once: whether its authPolicy is policy A with
/// SHA-256 (then this crate satisfies it itself with one PolicySecret; otherwise it defers to
/// `tss-esapi`'s generic `load_ak`), and, for a persistent EK, its ESYS handle. That handle is
/// ESYS metadata only (handle number and Name), holds no TPM object slot and needs no flush;
/// keeping it saves the TPM2_ReadPublic (and the Name hash) each operation would repeat. If an
/// operation using it fails, it is dropped and read again next time (the persistent handle may
/// have been evicted or replaced: the TPM then refuses the command, nothing worse).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EkInfo {
    pub(crate) persistent: Option<KeyHandle>,
    pub(crate) policy_a_sha256: bool,
}

/// A transient or persistent EK handle to release after use.
pub(crate) struct EkHandle {
    pub(crate) kind: EkKind,
    pub(crate) handle: KeyHandle,
    pub(crate) persistent: bool,
    pub(crate) policy_a_sha256: bool,
}

impl Tpm {
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
    pub(crate) fn load_ek(&mut self, kind: EkKind) -> Result<EkHandle> {
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
    pub(crate) fn release_ek(&mut self, ek: EkHandle) {
        if !ek.persistent {
            let _ = self.ctx.flush_context(ek.handle.into());
            self.commands += 1;
        }
    }

    /// Drop what this connection knows about the EK of `kind` (after a failure that may come
    /// from a stale persistent handle).
    pub(crate) fn forget_ek(&mut self, kind: EkKind) {
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
