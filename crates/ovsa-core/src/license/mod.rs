//! The license artifacts and the model-key hierarchy.
//!
//! - [`master`]: the master license (`.masterlic`): the model key wrapped to the ISV's own key.
//! - [`policy`]: the license policy config (`licgen`): limits, lease, license services and pins.
//! - [`tcb`]: the TCB reference: expected PCR values of the vTPM and the host TPM.
//! - [`runtime_policy`]: the runtime policy (IMA): file digests allowed under path patterns.
//! - [`customer`]: the customer license (`.lic`) and the license service's registration record
//!   (`.reg`), made together by [`customer::sell`].
//! - [`wrap`]: ECDH-ES + HKDF + AES-GCM key wrapping used by both licenses.

pub mod customer;
pub mod master;
pub mod policy;
pub mod runtime_policy;
pub mod tcb;
pub mod wrap;

pub use customer::{sell, CustomerLicense, KeyShare, Registration, Sale, SaleRequest, SealedShare};
pub use master::MasterLicense;
pub use policy::{LicenseConfig, Policy, ServiceEndpoint, Validity};
pub use runtime_policy::RuntimePolicy;
pub use tcb::{PcrBank, PcrSet, PcrValue, TcbReference};
pub use wrap::WrappedKey;
