//! `ovsa-vm-attest TCTI NONCE_HEX PCRS OUT.json`: in the guest, what `ovsatool attest` does
//! through `ovsa-tpm` (RSA EK certificate, a fresh ECDSA P-256 AK under the EK, a SHA-256 quote
//! of PCRS, e.g. `0,1,2,3,4,5,7,9`), written as `ovsa_core::attest::Evidence` JSON for the host
//! to verify.

use ovsa_core::attest::{Evidence, HashAlg};
use ovsa_tpm::{AkAlg, EkKind, Tpm};

fn main() {
    if let Err(e) = run() {
        eprintln!("ovsa-vm-attest: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [tcti, nonce, pcrs, out] = a.as_slice() else {
        return Err("usage: ovsa-vm-attest TCTI NONCE_HEX PCRS OUT.json".into());
    };
    let nonce = hex::decode(nonce).map_err(|e| format!("NONCE_HEX is not hex: {e}"))?;
    let pcrs = pcrs
        .split(',')
        .map(|p| p.parse::<u8>().map_err(|_| format!("bad PCR index {p:?}")))
        .collect::<Result<Vec<u8>, _>>()?;
    let mut tpm = Tpm::open(Some(tcti)).map_err(|e| format!("open {tcti}: {e}"))?;
    let ek_cert = tpm
        .ek_certificate(EkKind::Rsa2048)
        .map_err(|e| format!("EK certificate: {e}"))?;
    let ak = tpm
        .create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256)
        .map_err(|e| format!("create AK: {e}"))?;
    let q = tpm
        .quote(&ak, &nonce, HashAlg::Sha256, &pcrs)
        .map_err(|e| format!("quote: {e}"))?;
    let ev = Evidence {
        ek_cert,
        ak_public: ak.public.clone(),
        quote: q.attest,
        signature: q.signature,
        pcrs: q.pcrs,
        host_evidence: None,
        event_log: None,
        ima_log: None,
    };
    let json = serde_json::to_vec_pretty(&ev).map_err(|e| e.to_string())?;
    std::fs::write(out, json).map_err(|e| format!("write {out}: {e}"))?;
    println!("evidence written to {out}");
    Ok(())
}
