//! Command-line definitions. Defaults, ranges and environment variables in the help come from the
//! setting tables in `ovsa_license_server::config`, where each is written once; the environment
//! itself is applied by `config::resolve_*`, not by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ovsa_license_server::config::{
    self, Bounded, ServeFlags, Setting, HANDSHAKE_TIMEOUT, KEYSTORE_PASSPHRASE_ENV,
    MAX_CONNECTIONS, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, REQUEST_TIMEOUT, SESSION_TTL,
};
use uuid::Uuid;

/// `text [env: VAR]`.
fn with_env(text: &str, s: &Setting) -> String {
    format!("{text} [env: {}]", s.env)
}

/// `text [default: DEFAULT] [env: VAR]`.
fn with_default(text: &str, s: &Setting) -> String {
    match s.default {
        Some(d) => format!("{text} [default: {d}] [env: {}]", s.env),
        None => with_env(text, s),
    }
}

/// `text, MIN to MAX [default: DEFAULT] [env: VAR]`.
fn bounded(text: &str, b: &Bounded) -> String {
    format!(
        "{text}, {} to {} [default: {}] [env: {}]",
        b.min, b.max, b.default, b.env
    )
}

/// The OVSA license service.
///
/// Verifies the customer's TPM attestation and license policy and only then releases the
/// license's key share, sealed to the runtime. Settings come from the command line, the
/// environment (OVSA_LS_*) or a TOML file (--config), in that order; docs/SERVICE.md lists them.
#[derive(Debug, Parser)]
#[command(name = "ovsa-license-server", version)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE",
          help = with_env("TOML configuration file", &config::CONFIG))]
    pub config: Option<PathBuf>,
    /// Database URL.
    #[arg(long, global = true, value_name = "URL", help = with_default(
        "Database: sqlite:PATH or postgres://USER@HOST:PORT/DB. Only `serve` and `license add` \
         create a missing database",
        &config::DB,
    ))]
    pub db: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (creates the database if it is missing).
    Serve(ServeArgs),
    /// Manage licenses.
    #[command(subcommand)]
    License(LicenseCmd),
    /// Show the audit log, newest first (read-only).
    Audit {
        /// Only this license.
        #[arg(long)]
        license: Option<Uuid>,
        /// At most this many entries; 0 shows them all.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, value_name = "ADDR", help = with_default(
        "Address to listen on, HOST:PORT (a host name such as localhost:8443 is resolved)",
        &config::LISTEN,
    ))]
    pub listen: Option<String>,
    /// TLS certificate chain.
    #[arg(long, value_name = "PEM", help = with_env(
        "TLS certificate chain (PEM); its key is what licenses pin",
        &config::TLS_CERT,
    ))]
    pub tls_cert: Option<PathBuf>,
    /// TLS key.
    #[arg(long, value_name = "FILE", help = with_env(
        "TLS private key (PEM) or an OVSA keystore",
        &config::TLS_KEY,
    ))]
    pub tls_key: Option<PathBuf>,
    /// Passphrase file.
    #[arg(long, value_name = "FILE", help = with_env(
        &format!(
            "File whose first line is the passphrase of a protected keystore given as --tls-key \
             [default: the {KEYSTORE_PASSPHRASE_ENV} variable]"
        ),
        &config::PASSPHRASE_FILE,
    ))]
    pub passphrase_file: Option<PathBuf>,
    /// vTPM EK CAs.
    #[arg(long, value_name = "PEM", help = with_env(
        "CA certificates (PEM) that vTPM EK certificates must chain to, self-signed roots \
         included (repeatable; in the environment a comma-separated list)",
        &config::TRUST_EK_CA,
    ))]
    pub trust_ek_ca: Vec<PathBuf>,
    /// Host TPM vendor CAs.
    #[arg(long, value_name = "PEM", help = with_env(
        "TPM vendor CA certificates (PEM) for host TPM EK certificates, self-signed roots \
         included (repeatable; in the environment a comma-separated list)",
        &config::TRUST_HOST_EK_CA,
    ))]
    pub trust_host_ek_ca: Vec<PathBuf>,
    /// Operator certificates.
    #[arg(long, value_name = "PEM", help = with_env(
        "Operator client certificates (PEM): admitted at the TLS handshake besides registered \
         customers, and the only clients that may GET /metrics (repeatable; in the environment \
         a comma-separated list)",
        &config::METRICS_CLIENT_CERT,
    ))]
    pub metrics_client_cert: Vec<PathBuf>,
    /// Require host evidence.
    #[arg(long, help = with_env(
        "Refuse attestations without host evidence",
        &config::REQUIRE_HOST_EVIDENCE,
    ))]
    pub require_host_evidence: bool,
    /// Accept unenrolled host AKs.
    #[arg(long, help = with_env(
        "Accept host evidence signed by host AKs never enrolled with `ovsatool host-enroll` \
         (weaker: proves a restricted key signed it, not that the key lives in the host TPM)",
        &config::ALLOW_UNENROLLED_HOST_AK,
    ))]
    pub allow_unenrolled_host_ak: bool,
    /// Challenge validity.
    #[arg(long, value_name = "SECONDS",
          help = bounded("Seconds a challenge stays valid", &SESSION_TTL))]
    pub session_ttl: Option<u64>,
    /// Request time limit.
    #[arg(long, value_name = "SECONDS",
          help = bounded("Seconds one request may take, body included", &REQUEST_TIMEOUT))]
    pub request_timeout: Option<u64>,
    /// Request slots.
    #[arg(long, value_name = "N", help = bounded(
        "Request slots: most connections past their TLS handshake served at once",
        &MAX_CONNECTIONS,
    ))]
    pub max_connections: Option<u64>,
    /// Handshake budget.
    #[arg(long, value_name = "N", help = bounded(
        "Most connections in their TLS handshake at once, all sources; more are closed at once",
        &MAX_HANDSHAKES,
    ))]
    pub max_handshakes: Option<u64>,
    /// Per-source handshake cap.
    #[arg(long, value_name = "N", help = bounded(
        "Most connections in their TLS handshake at once from one IPv4 address or IPv6 /64; \
         more are closed at once",
        &MAX_HANDSHAKES_PER_SOURCE,
    ))]
    pub max_handshakes_per_source: Option<u64>,
    /// Handshake time limit.
    #[arg(long, value_name = "SECONDS", help = bounded(
        "Seconds from accepting a connection to the end of its TLS handshake",
        &HANDSHAKE_TIMEOUT,
    ))]
    pub handshake_timeout: Option<u64>,
}

impl ServeArgs {
    /// What the command line set, for `config::resolve_serve`.
    pub fn into_flags(self) -> ServeFlags {
        ServeFlags {
            listen: self.listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            passphrase_file: self.passphrase_file,
            trust_ek_ca: self.trust_ek_ca,
            trust_host_ek_ca: self.trust_host_ek_ca,
            metrics_client_cert: self.metrics_client_cert,
            require_host_evidence: self.require_host_evidence,
            allow_unenrolled_host_ak: self.allow_unenrolled_host_ak,
            session_ttl: self.session_ttl,
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_source: self.max_handshakes_per_source,
            handshake_timeout: self.handshake_timeout,
        }
    }
}

/// `license`.
#[derive(Debug, Subcommand)]
pub enum LicenseCmd {
    /// Import registration records (.reg) made by `ovsatool sale` (creates the database if it
    /// is missing). All are checked first: if one is unusable, none is imported.
    Add {
        /// The records.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// ISV certificates.
        #[arg(long, value_name = "CERT", help = with_env(
            "Certificates of the ISVs whose registrations are accepted (repeatable; in the \
             environment a comma-separated list)",
            &config::TRUST_ISV,
        ))]
        trust_isv: Vec<PathBuf>,
        /// The registration keystore.
        #[arg(long, value_name = "KEYSTORE", help = with_env(
            "The service's registration keystore: each registration's key share is sealed to its \
             key (its certificate is what the ISV gives to `ovsatool sale --registration-cert`). \
             A passphrase-protected one takes its passphrase like the TLS keystore \
             (OVSA_LS_PASSPHRASE_FILE or OVSA_KEYSTORE_PASSPHRASE)",
            &config::REGISTRATION_KEY,
        ))]
        registration_key: Option<PathBuf>,
        /// Refuse unbound licenses.
        #[arg(long, help = with_env(
            "Refuse registrations whose license is not bound to EK CAs or enrolled EKs \
             (`ovsatool sale --ek-ca/--ek-cert`); without it they are imported with a warning",
            &config::REQUIRE_EK_BINDING,
        ))]
        require_ek_binding: bool,
    },
    /// List licenses (read-only).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one license with its EK binding, live seats and activations, never its key share
    /// (read-only).
    Show {
        /// License GUID.
        guid: Uuid,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a license: every later check is refused.
    Revoke {
        /// License GUID.
        guid: Uuid,
    },
    /// Lift a revocation: the license checks again from the next request.
    Reinstate {
        /// License GUID.
        guid: Uuid,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
