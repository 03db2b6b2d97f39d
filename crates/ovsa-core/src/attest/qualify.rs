//! Qualifying data (TPM2_Quote `qualifyingData` / TPMS_ATTEST `extraData`) derivations.

use aws_lc_rs::digest;

/// Domain separation tag of the runtime quote's qualifying data.
pub const QUOTE_DOMAIN: &[u8] = b"OVSA-QUOTE-v1\0";

/// Qualifying data of the runtime's vTPM quote:
///
/// `SHA-256("OVSA-QUOTE-v1\0" || u32be(len(nonce)) || nonce || u32be(len(epk)) || epk ||
///  u8(has_exporter) [|| u32be(len(exporter)) || exporter])`
///
/// `nonce` is the license server's single-use challenge, `ephemeral_public_key` the runtime's
/// ephemeral key (the server encrypts the key share to it), `tls_exporter` an optional TLS
/// exporter value binding the quote to the TLS channel. Length prefixes make the encoding
/// injective.
pub fn quote_qualifying_data(
    nonce: &[u8],
    ephemeral_public_key: &[u8],
    tls_exporter: Option<&[u8]>,
) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(QUOTE_DOMAIN);
    for part in [nonce, ephemeral_public_key] {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    match tls_exporter {
        None => ctx.update(&[0]),
        Some(e) => {
            ctx.update(&[1]);
            ctx.update(&(e.len() as u32).to_be_bytes());
            ctx.update(e);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Qualifying data of the host TPM quote: `SHA-256(DER of the vTPM's EK certificate)`.
pub fn host_qualifying_data(vtpm_ek_cert_der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, vtpm_ek_cert_der).as_ref());
    out
}
