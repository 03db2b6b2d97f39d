//! # ovsa-license-server
//!
//! The license service: TLS 1.3 with client certificates ([`tls`], [`server`]), attestation
//! verification (the Verifier, [`verifier`] over [`ovsa_core::attest`]), license policy (the
//! Relying Party, [`relying_party`]), storage (SQLite or PostgreSQL, [`store`]) and release of the
//! key share sealed to the runtime. `docs/PROTOCOL.md` specifies the API.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod metrics;
pub mod relying_party;
pub mod server;
pub mod store;
pub mod text;
pub mod tls;
pub mod tpm_clock;
pub mod verifier;
