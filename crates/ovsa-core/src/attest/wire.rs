//! Small, bounds-checked parsers for the TPM 2.0 structures the Verifier needs
//! (TPM 2.0 Library Part 2: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC). Big-endian, no panics:
//! every read is checked and malformed input becomes [`AttestError::Malformed`].

use serde::{Deserialize, Serialize};

use super::error::AttestError;

/// `TPM_GENERATED_VALUE`: first field of every TPM-made attestation structure.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

pub(crate) const ALG_RSA: u16 = 0x0001;
pub(crate) const ALG_SHA1: u16 = 0x0004;
pub(crate) const ALG_SHA256: u16 = 0x000B;
pub(crate) const ALG_SHA384: u16 = 0x000C;
pub(crate) const ALG_SHA512: u16 = 0x000D;
pub(crate) const ALG_NULL: u16 = 0x0010;
pub(crate) const ALG_RSASSA: u16 = 0x0014;
pub(crate) const ALG_RSAPSS: u16 = 0x0016;
pub(crate) const ALG_ECDSA: u16 = 0x0018;
pub(crate) const ALG_ECDAA: u16 = 0x001A;
pub(crate) const ALG_ECC: u16 = 0x0023;
pub(crate) const ECC_NIST_P256: u16 = 0x0003;
pub(crate) const ECC_NIST_P384: u16 = 0x0004;

/// TPMA_OBJECT bits the Verifier requires of an attestation key.
pub(crate) const TPMA_FIXED_TPM: u32 = 1 << 1;
pub(crate) const TPMA_FIXED_PARENT: u32 = 1 << 4;
pub(crate) const TPMA_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
pub(crate) const TPMA_RESTRICTED: u32 = 1 << 16;
pub(crate) const TPMA_DECRYPT: u32 = 1 << 17;
pub(crate) const TPMA_SIGN: u32 = 1 << 18;

/// A TPM hash algorithm (also names a PCR bank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HashAlg {
    /// SHA-1 (PCR bank only; never accepted for signatures).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// The TPM_ALG_ID.
    pub fn tpm_alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => ALG_SHA1,
            HashAlg::Sha256 => ALG_SHA256,
            HashAlg::Sha384 => ALG_SHA384,
            HashAlg::Sha512 => ALG_SHA512,
        }
    }

    /// From a TPM_ALG_ID.
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            ALG_SHA1 => Some(HashAlg::Sha1),
            ALG_SHA256 => Some(HashAlg::Sha256),
            ALG_SHA384 => Some(HashAlg::Sha384),
            ALG_SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    fn aws(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            HashAlg::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &aws_lc_rs::digest::SHA256,
            HashAlg::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlg::Sha512 => &aws_lc_rs::digest::SHA512,
        }
    }

    /// Hash `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(self.aws(), data)
            .as_ref()
            .to_vec()
    }

    /// Hash the concatenation of `parts`.
    pub fn digest_parts<'a>(self, parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut ctx = aws_lc_rs::digest::Context::new(self.aws());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// Lower-case name (`sha256`), as used by tpm2-tools and in serialized reference values.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bounds-checked big-endian reader.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn err(&self, reason: &'static str) -> AttestError {
        AttestError::Malformed {
            what: self.what,
            reason,
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], AttestError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("truncated"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, AttestError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, AttestError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, AttestError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, AttestError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A TPM2B: u16 size then that many bytes.
    pub(crate) fn tpm2b(&mut self) -> Result<&'a [u8], AttestError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    pub(crate) fn finish(&self) -> Result<(), AttestError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered (monotonic unless `safe` is false).
    pub clock: u64,
    /// TPM resets (power cycles / TPM2_Startup(CLEAR)).
    pub reset_count: u32,
    /// TPM restarts (resume from hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether the clock value is safe (has not been rolled back).
    pub safe: bool,
}

/// One TPMS_PCR_SELECTION: a bank and the PCR indices it selects, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// Bank (hash algorithm); `None` if the TPM_ALG_ID is not a known hash.
    pub bank: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// A parsed TPMS_ATTEST of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// qualifiedSigner (TPM2B_NAME content).
    pub qualified_signer: Vec<u8>,
    /// extraData: the qualifying data given to TPM2_Quote.
    pub extra_data: Vec<u8>,
    /// clockInfo.
    pub clock: ClockInfo,
    /// firmwareVersion.
    pub firmware_version: u64,
    /// The PCR selection the quote covers (in order).
    pub pcr_select: Vec<PcrSelection>,
    /// pcrDigest.
    pub pcr_digest: Vec<u8>,
}

/// Parse a TPMS_ATTEST that must be a quote.
pub fn parse_quote(attest: &[u8]) -> Result<QuoteInfo, AttestError> {
    let mut r = Reader::new(attest, "TPMS_ATTEST");
    let magic = r.u32()?;
    if magic != TPM_GENERATED_VALUE {
        return Err(AttestError::NotTpmGenerated(magic));
    }
    let ty = r.u16()?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(AttestError::NotAQuote(ty));
    }
    let qualified_signer = r.tpm2b()?.to_vec();
    let extra_data = r.tpm2b()?.to_vec();
    let clock = ClockInfo {
        clock: r.u64()?,
        reset_count: r.u32()?,
        restart_count: r.u32()?,
        safe: match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.err("clockInfo.safe is not a TPMI_YES_NO")),
        },
    };
    let firmware_version = r.u64()?;
    let count = r.u32()?;
    if count > 16 {
        return Err(r.err("too many PCR selections"));
    }
    let mut pcr_select = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let bank = r.u16()?;
        let size = r.u8()? as usize;
        if size > 32 {
            return Err(r.err("sizeofSelect too large"));
        }
        let bits = r.bytes(size)?;
        let mut pcrs = Vec::new();
        for (byte_i, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    // byte_i < 32 so the index fits in u8.
                    pcrs.push((byte_i * 8 + bit) as u8);
                }
            }
        }
        pcr_select.push(PcrSelection { bank, pcrs });
    }
    let pcr_digest = r.tpm2b()?.to_vec();
    r.finish()?;
    Ok(QuoteInfo {
        qualified_signer,
        extra_data,
        clock,
        firmware_version,
        pcr_select,
        pcr_digest,
    })
}

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TpmSignature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Hash algorithm id.
        hash: u16,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// Hash algorithm id.
        hash: u16,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// Hash algorithm id.
        hash: u16,
        /// r.
        r: Vec<u8>,
        /// s.
        s: Vec<u8>,
    },
}

impl TpmSignature {
    /// (scheme alg id, hash alg id).
    pub fn scheme(&self) -> (u16, u16) {
        match self {
            TpmSignature::RsaSsa { hash, .. } => (ALG_RSASSA, *hash),
            TpmSignature::RsaPss { hash, .. } => (ALG_RSAPSS, *hash),
            TpmSignature::Ecdsa { hash, .. } => (ALG_ECDSA, *hash),
        }
    }
}

/// Parse a TPMT_SIGNATURE.
pub fn parse_signature(sig: &[u8]) -> Result<TpmSignature, AttestError> {
    let mut r = Reader::new(sig, "TPMT_SIGNATURE");
    let alg = r.u16()?;
    let out = match alg {
        ALG_RSASSA | ALG_RSAPSS => {
            let hash = r.u16()?;
            let s = r.tpm2b()?.to_vec();
            if alg == ALG_RSASSA {
                TpmSignature::RsaSsa { hash, sig: s }
            } else {
                TpmSignature::RsaPss { hash, sig: s }
            }
        }
        ALG_ECDSA => {
            let hash = r.u16()?;
            let rr = r.tpm2b()?.to_vec();
            let ss = r.tpm2b()?.to_vec();
            TpmSignature::Ecdsa { hash, r: rr, s: ss }
        }
        other => {
            return Err(AttestError::UnsupportedAlgorithm {
                what: "signature",
                alg: other,
            })
        }
    };
    r.finish()?;
    Ok(out)
}

/// The public key inside a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    /// RSA.
    Rsa {
        /// Modulus, big-endian.
        n: Vec<u8>,
        /// Public exponent (0 in TPMT_PUBLIC means 65537).
        e: u32,
    },
    /// ECC.
    Ecc {
        /// TPM_ECC_CURVE.
        curve: u16,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC (only what the Verifier needs), with its raw bytes for the Name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// nameAlg.
    pub name_alg: u16,
    /// objectAttributes (TPMA_OBJECT).
    pub attributes: u32,
    /// Signing scheme (alg id, hash id), or `None` for TPM_ALG_NULL.
    pub scheme: Option<(u16, u16)>,
    /// The key.
    pub key: PublicKey,
    raw: Vec<u8>,
}

impl TpmPublic {
    /// The marshalled TPMT_PUBLIC this was parsed from.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The TPM Name: nameAlg (u16 BE) || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Result<Vec<u8>, AttestError> {
        let h =
            HashAlg::from_tpm_alg_id(self.name_alg).ok_or(AttestError::UnsupportedAlgorithm {
                what: "nameAlg",
                alg: self.name_alg,
            })?;
        let mut out = self.name_alg.to_be_bytes().to_vec();
        out.extend_from_slice(&h.digest(&self.raw));
        Ok(out)
    }
}

fn skip_sym_def_object(r: &mut Reader<'_>) -> Result<(), AttestError> {
    let alg = r.u16()?;
    if alg != ALG_NULL {
        r.u16()?; // keyBits
        r.u16()?; // mode
    }
    Ok(())
}

/// Parse a marshalled TPMT_PUBLIC. Also accepts a TPM2B_PUBLIC (u16 size prefix, as written by
/// tpm2-tools) when the prefix equals the remaining length.
pub fn parse_public(bytes: &[u8]) -> Result<TpmPublic, AttestError> {
    let body = if bytes.len() >= 2
        && u16::from_be_bytes([bytes[0], bytes[1]]) as usize == bytes.len() - 2
    {
        &bytes[2..]
    } else {
        bytes
    };
    let mut r = Reader::new(body, "TPMT_PUBLIC");
    let ty = r.u16()?;
    let name_alg = r.u16()?;
    let attributes = r.u32()?;
    let _auth_policy = r.tpm2b()?;
    let (scheme, key) = match ty {
        ALG_RSA => {
            skip_sym_def_object(&mut r)?;
            let s = r.u16()?;
            let scheme = if s == ALG_NULL {
                None
            } else {
                Some((s, r.u16()?))
            };
            let _bits = r.u16()?;
            let e = r.u32()?;
            let n = r.tpm2b()?.to_vec();
            (scheme, PublicKey::Rsa { n, e })
        }
        ALG_ECC => {
            skip_sym_def_object(&mut r)?;
            let s = r.u16()?;
            let scheme = if s == ALG_NULL {
                None
            } else {
                let h = r.u16()?;
                if s == ALG_ECDAA {
                    r.u16()?; // count
                }
                Some((s, h))
            };
            let curve = r.u16()?;
            let kdf = r.u16()?;
            if kdf != ALG_NULL {
                r.u16()?;
            }
            let x = r.tpm2b()?.to_vec();
            let y = r.tpm2b()?.to_vec();
            (scheme, PublicKey::Ecc { curve, x, y })
        }
        other => {
            return Err(AttestError::UnsupportedAlgorithm {
                what: "public key type",
                alg: other,
            })
        }
    };
    r.finish()?;
    Ok(TpmPublic {
        name_alg,
        attributes,
        scheme,
        key,
        raw: body.to_vec(),
    })
}

fn fixed_width(v: &[u8], width: usize) -> Option<Vec<u8>> {
    let first_nz = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = &v[first_nz..];
    if v.len() > width {
        return None;
    }
    let mut out = vec![0u8; width - v.len()];
    out.extend_from_slice(v);
    Some(out)
}

/// Check that `public` is a restricted fixedTPM signing key (a genuine AK).
pub fn check_ak_attributes(public: &TpmPublic) -> Result<(), AttestError> {
    let need = TPMA_FIXED_TPM
        | TPMA_FIXED_PARENT
        | TPMA_SENSITIVE_DATA_ORIGIN
        | TPMA_RESTRICTED
        | TPMA_SIGN;
    if public.attributes & need != need || public.attributes & TPMA_DECRYPT != 0 {
        return Err(AttestError::AkNotRestrictedSigningKey(public.attributes));
    }
    Ok(())
}

/// Verify `sig` over `message` under `public`. Accepts ECDSA P-256/SHA-256, ECDSA P-384/SHA-384,
/// RSASSA and RSA-PSS with SHA-256 (RSA 2048..8192).
pub fn verify_signature(
    public: &TpmPublic,
    message: &[u8],
    sig: &TpmSignature,
) -> Result<(), AttestError> {
    use aws_lc_rs::signature as s;
    if let Some(fixed) = public.scheme {
        if fixed != sig.scheme() {
            return Err(AttestError::SignatureSchemeMismatch);
        }
    }
    match (&public.key, sig) {
        (PublicKey::Ecc { curve, x, y }, TpmSignature::Ecdsa { hash, r, s: ss }) => {
            let (alg, width): (&s::EcdsaVerificationAlgorithm, usize) = match (*curve, *hash) {
                (ECC_NIST_P256, ALG_SHA256) => (&s::ECDSA_P256_SHA256_FIXED, 32),
                (ECC_NIST_P384, ALG_SHA384) => (&s::ECDSA_P384_SHA384_FIXED, 48),
                (ECC_NIST_P256 | ECC_NIST_P384, h) => {
                    return Err(AttestError::UnsupportedAlgorithm {
                        what: "signature hash",
                        alg: h,
                    })
                }
                (c, _) => {
                    return Err(AttestError::UnsupportedAlgorithm {
                        what: "ECC curve",
                        alg: c,
                    })
                }
            };
            let mut point = vec![0x04];
            point.extend(fixed_width(x, width).ok_or(AttestError::Malformed {
                what: "TPMT_PUBLIC",
                reason: "ECC x too long",
            })?);
            point.extend(fixed_width(y, width).ok_or(AttestError::Malformed {
                what: "TPMT_PUBLIC",
                reason: "ECC y too long",
            })?);
            let mut rs = fixed_width(r, width).ok_or(AttestError::QuoteSignatureInvalid)?;
            rs.extend(fixed_width(ss, width).ok_or(AttestError::QuoteSignatureInvalid)?);
            s::UnparsedPublicKey::new(alg, &point)
                .verify(message, &rs)
                .map_err(|_| AttestError::QuoteSignatureInvalid)
        }
        (PublicKey::Rsa { n, e }, TpmSignature::RsaSsa { hash, sig: bytes })
        | (PublicKey::Rsa { n, e }, TpmSignature::RsaPss { hash, sig: bytes }) => {
            if *hash != ALG_SHA256 {
                return Err(AttestError::UnsupportedAlgorithm {
                    what: "signature hash",
                    alg: *hash,
                });
            }
            let params: &s::RsaParameters = if matches!(sig, TpmSignature::RsaPss { .. }) {
                &s::RSA_PSS_2048_8192_SHA256
            } else {
                &s::RSA_PKCS1_2048_8192_SHA256
            };
            let e = if *e == 0 { 65537 } else { *e };
            let e_bytes = e.to_be_bytes();
            let e_start = e_bytes.iter().position(|&b| b != 0).unwrap_or(3);
            let n_start = n.iter().position(|&b| b != 0).unwrap_or(0);
            let comps = aws_lc_rs::rsa::PublicKeyComponents {
                n: &n[n_start..],
                e: &e_bytes[e_start..],
            };
            comps
                .verify(params, message, bytes)
                .map_err(|_| AttestError::QuoteSignatureInvalid)
        }
        _ => Err(AttestError::SignatureSchemeMismatch),
    }
}
