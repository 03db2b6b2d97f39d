//! The Attester seen by the client flow: the few TPM operations one attestation needs, behind a
//! trait so tests can exercise the protocol with fakes, and a real implementation on `ovsa-tpm`.

use std::path::{Path, PathBuf};

use ovsa_core::attest::measured_boot::{self, MeasurementLogs};
use ovsa_core::attest::{CredentialChallenge, HashAlg, PcrSet};
use ovsa_tpm::{AkAlg, AkBlob, EkKind, Tpm};
use zeroize::Zeroizing;

use crate::error::ClientError;

/// A quote and the PCR values it covers.
pub struct Quote {
    /// Marshalled TPMS_ATTEST.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The quoted PCR values.
    pub pcrs: PcrSet,
}

/// What the license flow needs from a TPM.
pub trait Attester {
    /// The EK certificate (DER) of the EK the AK was made under.
    fn ek_certificate(&mut self) -> Result<Vec<u8>, ClientError>;
    /// The AK public area (marshalled TPMT_PUBLIC).
    fn ak_public(&mut self) -> Result<Vec<u8>, ClientError>;
    /// TPM2_ActivateCredential on the service's challenge.
    fn activate_credential(
        &mut self,
        c: &CredentialChallenge,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError>;
    /// Quotes `pcrs` of `bank` with `qualifying_data`.
    fn quote(
        &mut self,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<Quote, ClientError>;
    /// The host evidence blob from NV, if the host provisioned one.
    fn host_evidence(&mut self) -> Result<Option<Vec<u8>>, ClientError>;
    /// TPM commands issued so far (for load-time reports).
    fn command_count(&self) -> u64 {
        0
    }
    /// The logs sent with the quote (call after quoting): the firmware event log of this TPM's
    /// platform and, when `with_ima`, the IMA measurement list. Default: none (fakes, and TPMs
    /// that are not the kernel's device).
    fn measurement_logs(&mut self, with_ima: bool) -> Result<MeasurementLogs, ClientError> {
        let _ = with_ima;
        Ok(MeasurementLogs::default())
    }
}

/// The real attester: a TPM (the vTPM inside the VM) with an RSA-2048 EK and a cached AK.
pub struct TpmAttester {
    tpm: Tpm,
    ek_cert: Vec<u8>,
    ak: AkBlob,
}

impl TpmAttester {
    /// Opens the TPM at `tcti` (`None`: env `TCTI`, else `device:/dev/tpmrm0`), reads the EK
    /// certificate, and loads the AK cached in `ak_cache_dir` for this TPM's EK if there is one,
    /// else creates one (and caches it there). Real TPMs take ~1 s to create an AK: cache it.
    /// The cache file is named after the EK certificate's hash, so TPMs never share an AK.
    pub fn open(tcti: Option<&str>, ak_cache_dir: Option<&Path>) -> Result<Self, ClientError> {
        let mut tpm = Tpm::open(tcti)?;
        let ek_cert = tpm.ek_certificate(EkKind::Rsa2048)?;
        let cache_file = ak_cache_dir.map(|d| {
            let h = ovsa_core::crypto::hash::sha256(&ek_cert);
            d.join(format!("ak-{}.json", hex::encode(&h[..12])))
        });
        let ak_cache = cache_file.as_deref();
        let cached = ak_cache
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| AkBlob::from_json(&s).ok())
            .filter(|b| b.ek == EkKind::Rsa2048);
        let ak = match cached {
            Some(ak) => ak,
            None => {
                let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256)?;
                if let Some(path) = ak_cache {
                    store_ak(path, &ak);
                }
                ak
            }
        };
        Ok(TpmAttester { tpm, ek_cert, ak })
    }

    /// The underlying TPM.
    pub fn tpm(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// The AK (the cached one, or the one just created and cached).
    pub fn ak(&self) -> &AkBlob {
        &self.ak
    }
}

fn store_ak(path: &Path, ak: &AkBlob) {
    // The blob is TPM-wrapped (useless elsewhere); a failure to cache only costs speed.
    let tmp: PathBuf = path.with_extension("tmp");
    if std::fs::write(&tmp, ak.to_json()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

impl Attester for TpmAttester {
    fn ek_certificate(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(self.ek_cert.clone())
    }

    fn ak_public(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(self.ak.public.clone())
    }

    fn activate_credential(
        &mut self,
        c: &CredentialChallenge,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        Ok(self
            .tpm
            .activate_credential(&self.ak, &c.id_object, &c.encrypted_secret)?)
    }

    fn quote(
        &mut self,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<Quote, ClientError> {
        let q = self.tpm.quote(&self.ak, qualifying_data, bank, pcrs)?;
        Ok(Quote {
            attest: q.attest,
            signature: q.signature,
            pcrs: q.pcrs,
        })
    }

    fn host_evidence(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(ovsa_tpm::host::read_host_evidence_blob_if_present(
            &mut self.tpm,
        )?)
    }

    fn command_count(&self) -> u64 {
        self.tpm.command_count()
    }

    /// Reads the securityfs logs only when the TPM is the kernel's device (`device:/dev/tpm*`):
    /// for any other TCTI (swtpm, mssim) the platform's log belongs to another TPM.
    fn measurement_logs(&mut self, with_ima: bool) -> Result<MeasurementLogs, ClientError> {
        if !measured_boot::tcti_is_kernel_device(self.tpm.tcti()) {
            return Ok(MeasurementLogs::default());
        }
        Ok(measured_boot::read_measurement_logs(
            Path::new(measured_boot::EVENT_LOG_PATH),
            with_ima.then_some(Path::new(measured_boot::IMA_LOG_PATH)),
        )?)
    }
}
