//! Identities: X.509 certificates and the keystores that hold an identity's private key.

pub mod cert;
pub mod keystore;

pub use cert::{Certificate, CertificateUsage};
pub use keystore::{Keystore, KeystoreProtection};
