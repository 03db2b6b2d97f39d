//! # ovsa-client
//!
//! The customer side of a license check, shared by the runtime plugin and `ovsatool check`:
//! attest with the vTPM ([`attester`]), talk to the license service over pinned mutual TLS 1.3
//! ([`tls`], [`http`]), receive the key share sealed to an ephemeral key bound into the quote
//! ([`flow`]). With the share, [`ovsa_core::license::CustomerLicense::unwrap_model_key`] yields
//! the model key. [`bundle`] opens and cross-checks the customer's package, license and keystore
//! the same way for both.
#![forbid(unsafe_code)]

pub mod attester;
pub mod bundle;
pub mod error;
pub mod flow;
pub mod http;
pub mod socket;
pub mod tls;

pub use attester::{Attester, TpmAttester};
pub use bundle::{BundleError, BundleFiles, BundleStep, CustomerBundle};
pub use error::ClientError;
pub use flow::{
    check_license, check_license_lease, enroll_host_ak, release_lease, ClientOptions,
    HostAkEnrolled, Released, Step, Timings,
};
