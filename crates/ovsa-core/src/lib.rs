//! # ovsa-core
//!
//! The pure-Rust heart of the OpenVINO Security Add-on rewrite: artifact formats, the key
//! hierarchy and all verification that needs no TPM. Used by `ovsatool` (the model owner's CLI),
//! the license service and the runtime plugin.
//!
//! Module map:
//! - [`artifact`]: what kind of file is this (for inspect and "wrong file" errors).
//! - [`crypto`]: the primitives, on one provider (aws-lc-rs).
//! - [`encoding`]: canonical JSON for signatures and field encodings.
//! - [`identity`]: keystores, X.509 certificates, chain validation.
//! - [`envelope`]: signed-artifact envelope shared by every JSON artifact.
//! - [`package`]: the protected model (`.dat`): signed header + AES-256-GCM chunk stream.
//! - [`text`]: customer-controlled text made safe to print (control characters escaped).
//! - [`license`]: master license, license policy config, TCB reference, customer license,
//!   service registration record, and the model-key wrapping that ties them together.
//!
//! `docs/FORMATS.md` specifies every byte.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod attest;
pub mod crypto;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod license;
pub mod package;
pub mod protocol;
pub mod text;

pub use error::{Error, Result};
