//! `ovsatool host-quote` and `ovsatool attest`: the TPM-facing commands.

use ovsa_core::attest::HashAlg;
use ovsa_core::license::PcrBank;
use ovsa_tpm::host::{write_host_evidence, HostQuoteOptions};
use ovsa_tpm::{AkAlg, EkKind, Tpm};

use std::path::Path;

use ovsa_client::{enroll_host_ak, ClientOptions, TpmAttester};
use ovsa_core::envelope::Signed;
use ovsa_core::license::CustomerLicense;

use crate::cli::{AttestArgs, HostEnrollArgs, HostQuoteArgs};
use crate::error::{CliError, CliResult};
use crate::secrets::load_keystore;

fn bank(s: &str) -> CliResult<HashAlg> {
    Ok(s.parse::<PcrBank>()?.to_attest())
}

/// Opens the host TPM with its AK cached in `dir` (created, and the AK made, if missing).
fn host_attester(tcti: &str, dir: &Path) -> CliResult<TpmAttester> {
    std::fs::create_dir_all(dir).map_err(|e| ovsa_core::Error::io(dir, e))?;
    Ok(TpmAttester::open(Some(tcti), Some(dir))?)
}

pub fn host_enroll(a: &HostEnrollArgs) -> CliResult<()> {
    let license = Signed::<CustomerLicense>::load(&a.license)?;
    let customer = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let mut host = host_attester(&a.host_tcti, &a.ak_cache_dir)?;
    let enrolled = enroll_host_ak(
        license.body(),
        &customer,
        &mut host,
        &ClientOptions::default(),
        &mut |_| {},
    )?;
    say!(
        "host AK {} enrolled with {} for host EK {} (kept in {}; pass --ak-cache-dir {} to host-quote)",
        enrolled.response.ak_name,
        enrolled.service_url,
        enrolled.response.host_ek_sha256,
        a.ak_cache_dir.display(),
        a.ak_cache_dir.display()
    );
    Ok(())
}

pub fn host_quote(a: &HostQuoteArgs) -> CliResult<()> {
    let mut host = match &a.ak_cache_dir {
        Some(dir) => host_attester(&a.host_tcti, dir)?,
        None => {
            say!("note: no --ak-cache-dir: a fresh host AK signs this evidence; license services accept only AKs enrolled with `ovsatool host-enroll` unless configured otherwise");
            TpmAttester::open(Some(&a.host_tcti), None)?
        }
    };
    let mut vtpm = Tpm::open(Some(&a.vtpm_tcti))?;
    let opts = HostQuoteOptions {
        bank: bank(&a.bank)?,
        pcrs: a.pcrs.clone(),
        host_ak: Some(host.ak().clone()),
        ..HostQuoteOptions::default()
    };
    let ev = write_host_evidence(host.tpm(), &mut vtpm, &opts)?;
    let host_ek = ovsa_core::identity::Certificate::from_der(&ev.ek_cert)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|_| "<unparsed>".into());
    say!(
        "host evidence written to the vTPM's NV (host EK '{}', {} PCRs of {:?}, quote bound to the vTPM's EK certificate)",
        host_ek,
        ev.pcrs.values.len(),
        ev.pcrs.bank
    );
    Ok(())
}

pub fn attest(a: &AttestArgs) -> CliResult<()> {
    let nonce = hex::decode(a.nonce.trim_start_matches("0x"))
        .map_err(|e| CliError::Usage(format!("--nonce is not hex: {e}")))?;
    if nonce.len() > 64 {
        return Err(CliError::Usage("--nonce is longer than 64 bytes".into()));
    }
    let mut tpm = Tpm::open(Some(&a.tcti))?;
    let ek_cert = tpm.ek_certificate(EkKind::Rsa2048)?;
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256)?;
    let q = tpm.quote(&ak, &nonce, bank(&a.bank)?, &a.pcrs)?;
    ovsa_tpm::tools::write_tpm2_tools_files(&a.out, &q, &ak.public)?;
    let evidence = ovsa_core::attest::Evidence {
        ek_cert,
        ak_public: ak.public.clone(),
        quote: q.attest.clone(),
        signature: q.signature.clone(),
        pcrs: q.pcrs.clone(),
        host_evidence: ovsa_tpm::host::read_host_evidence_blob_if_present(&mut tpm)?,
    };
    let path = a.out.join("evidence.json");
    let json = serde_json::to_vec_pretty(&evidence).map_err(|e| CliError::Usage(e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| ovsa_core::Error::io(&path, e))?;
    say!(
        "wrote {} and {}",
        path.display(),
        ovsa_tpm::tools::FILES.join(", ")
    );
    say!(
        "verify with: tpm2_checkquote -u {0}/ak.pub -m {0}/quote.msg -s {0}/quote.sig -f {0}/pcrs.bin -l {1}:{3} -g sha256 -q {2}",
        a.out.display(),
        a.bank,
        hex::encode(&nonce),
        a.pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    );
    Ok(())
}
