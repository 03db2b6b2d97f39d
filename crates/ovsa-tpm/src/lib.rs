//! OVSA Attester: TPM 2.0 access on `tss-esapi` 7.7 (tpm2-tss 3.x).
//!
//! - [`Tpm::open`]: connect through a TCTI string (`swtpm:host=..,port=..`, `device:/dev/tpmrm0`,
//!   or the `TCTI`, else `TPM2TOOLS_TCTI` environment variable).
//! - EK certificates from NV ([`Tpm::ek_certificate`]), the EK from the default template or its
//!   persistent handle, an AK ([`Tpm::create_ak`]) exported as a reloadable [`AkBlob`] so a slow
//!   hardware TPM creates it once.
//! - [`Tpm::activate_credential`] (TPM2_ActivateCredential) for the Verifier's challenge.
//! - [`Tpm::quote`]: PCR read + TPM2_Quote with caller-given qualifying data, retried when the
//!   PCRs move in between (at most [`QUOTE_ATTEMPTS`]).
//! - PCR banks: [`Tpm::pcr_banks`] (TPM2_GetCapability, once per connection) and
//!   [`Tpm::check_pcr_bank`]; a bank the TPM lacks is [`TpmError::PcrBankNotAllocated`] before
//!   anything is loaded. Every loop over TPM commands is bounded.
//! - Host evidence in the vTPM's NV: [`host::write_host_evidence`] and
//!   [`host::read_host_evidence`].
//! - [`tools::write_tpm2_tools_files`]: `quote.msg`, `quote.sig`, `pcrs.bin` (tpm2-tools'
//!   serialized format), `ak.pub` for a plain `tpm2_checkquote`.
//!
//! swtpm holds at most three loaded objects and has no resource manager, so every object this
//! crate loads is flushed before the call that loaded it returns, on success and on error. What a
//! connection keeps between calls holds no TPM resource: the ESYS handle of a persistent EK and
//! the saved context (TPM2_ContextSave) of the last AK, which brings the AK back with one
//! TPM2_ContextLoad.
//!
//! TPM commands per operation (persistent EK already known to the connection, AK context
//! saved, 10 PCRs): [`Tpm::activate_credential`] 5, [`Tpm::quote`] 5,
//! [`Tpm::activate_and_quote`] 8. The first AK use on a connection costs 2 more (Load under
//! the EK policy, ContextSave), the first EK use 2 (ReadPublic x2) and the first PCR operation 1
//! (GetCapability of the PCR banks). The comment on
//! authorization in `session.rs` explains why most commands carry a password
//! authorization, not an HMAC session (in short: all auth values are empty and the sessions
//! were unsalted and unbound, so they protected nothing).
//!
//! Source layout, one file per domain, each with its own `impl Tpm` block (as `tss-esapi`'s
//! `context/tpm_commands/*.rs`): `tpm.rs` (the connection: [`Tpm::open`], command count),
//! `tcti.rs` (TCTI parsing), `error.rs` ([`TpmError`]), `nv.rs` (NV reads), `ek.rs` ([`EkKind`],
//! EK certificates, EK loading), `ak.rs` ([`AkAlg`], [`AkBlob`], AK creation and loading),
//! `session.rs` (policy sessions and the authorization model), `activation.rs`
//! (TPM2_ActivateCredential), `quote.rs` ([`QuoteOutput`], TPM2_Quote), `pcr.rs` (PCR banks,
//! read, extend), and the public modules [`host`] and [`tools`]. The Verifier and the evidence
//! formats are `ovsa_core::attest` (pure Rust, no TPM); this crate does not re-export them.
//!
//! No `unsafe`: `tss-esapi` owns the FFI to tpm2-tss, so this crate, like `ovsa-core` and
//! `ovsa-client`, forbids it.
#![forbid(unsafe_code)]

mod activation;
mod ak;
mod ek;
mod error;
pub mod host;
mod nv;
mod pcr;
mod quote;
mod session;
mod tcti;
pub mod tools;
mod tpm;

pub use ak::{AkAlg, AkBlob};
pub use ek::EkKind;
pub use error::{Result, TpmError};
pub use quote::{QuoteOutput, QUOTE_ATTEMPTS};
pub use tcti::{default_tcti, parse_tcti, DEFAULT_TCTI};
pub use tpm::Tpm;
