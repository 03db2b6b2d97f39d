//! `ovsa-license-server`: run the license service, and administer its database.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ovsa_core::envelope::Signed;
use ovsa_core::identity::Certificate;
use ovsa_core::license::Registration;
use ovsa_license_server::api::{AppState, Settings};
use ovsa_license_server::config::{self, pick, pick_list, ConfigError, FileConfig};
use ovsa_license_server::server::{self, Limits};
use ovsa_license_server::store::{AuditEntry, AuditFilter, LicenseRecord, Store};
use uuid::Uuid;

/// The OVSA license service.
///
/// Verifies the customer's TPM attestation and license policy and only then releases the
/// license's key share, sealed to the runtime. Settings come from the command line, the
/// environment (OVSA_LS_*) or a TOML file (--config), in that order.
#[derive(Debug, Parser)]
#[command(name = "ovsa-license-server", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "OVSA_LS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database: sqlite:PATH (default sqlite:licenses.db) or postgres://USER@HOST:PORT/DB.
    #[arg(long, global = true, env = "OVSA_LS_DB", value_name = "URL")]
    db: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Manage licenses.
    #[command(subcommand)]
    License(LicenseCmd),
    /// Show the audit log (newest first).
    Audit {
        /// Only this license.
        #[arg(long)]
        license: Option<Uuid>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "OVSA_LS_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM); its key is what licenses pin.
    #[arg(long, env = "OVSA_LS_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) or an OVSA keystore.
    #[arg(long, env = "OVSA_LS_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that vTPM EK certificates must chain to (repeatable; in the
    /// environment a comma-separated list).
    #[arg(
        long,
        env = "OVSA_LS_TRUST_EK_CA",
        value_delimiter = ',',
        value_name = "PEM"
    )]
    trust_ek_ca: Vec<PathBuf>,
    /// TPM vendor CA certificates (PEM) for host TPM EK certificates (repeatable; in the
    /// environment a comma-separated list).
    #[arg(
        long,
        env = "OVSA_LS_TRUST_HOST_EK_CA",
        value_delimiter = ',',
        value_name = "PEM"
    )]
    trust_host_ek_ca: Vec<PathBuf>,
    /// Refuse attestations without host evidence.
    #[arg(long, env = "OVSA_LS_REQUIRE_HOST_EVIDENCE")]
    require_host_evidence: bool,
    /// Accept host evidence signed by host AKs never enrolled with `ovsatool host-enroll`
    /// (weaker: proves a restricted key signed it, not that the key lives in the host TPM).
    #[arg(long, env = "OVSA_LS_ALLOW_UNENROLLED_HOST_AK")]
    allow_unenrolled_host_ak: bool,
    /// Seconds a challenge stays valid [default: 60].
    #[arg(long, env = "OVSA_LS_SESSION_TTL", value_name = "SECONDS")]
    session_ttl: Option<u64>,
    /// Seconds one request may take, body included [default: 10].
    #[arg(long, env = "OVSA_LS_REQUEST_TIMEOUT", value_name = "SECONDS")]
    request_timeout: Option<u64>,
    /// Most connections served at once [default: 256].
    #[arg(long, env = "OVSA_LS_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum LicenseCmd {
    /// Import registration records (.reg) made by `ovsatool sale`.
    Add {
        /// The records.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Certificates of the ISVs whose registrations are accepted (repeatable; in the
        /// environment a comma-separated list).
        #[arg(
            long,
            env = "OVSA_LS_TRUST_ISV",
            value_delimiter = ',',
            value_name = "CERT"
        )]
        trust_isv: Vec<PathBuf>,
    },
    /// List licenses.
    List,
    /// Show one license with its activations (never its key share).
    Show {
        /// License GUID.
        guid: Uuid,
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

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] ovsa_license_server::store::StoreError),
    #[error(transparent)]
    Tls(#[from] ovsa_license_server::tls::TlsError),
    #[error(transparent)]
    Core(#[from] ovsa_core::Error),
    #[error("{0}")]
    Other(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVSA_LS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ovsa-license-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovsa-license-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), MainError> {
    let file = FileConfig::load(cli.config.as_deref())?;
    let db = pick(cli.db.clone(), file.db.clone()).unwrap_or_else(|| config::DEFAULT_DB.into());
    match cli.command {
        Command::Serve(a) => serve(a, file, &db).await,
        Command::License(cmd) => license(cmd, file, &db).await,
        Command::Audit { license, limit } => {
            let store = Store::open(&db).await?;
            for e in store
                .audit(&AuditFilter {
                    license_guid: license,
                    limit,
                })
                .await?
            {
                println!("{}", audit_line(&e));
            }
            Ok(())
        }
    }
}

async fn serve(a: ServeArgs, file: FileConfig, db: &str) -> Result<(), MainError> {
    let listen = match pick(a.listen, file.listen) {
        Some(l) => l,
        None => config::DEFAULT_LISTEN
            .parse()
            .map_err(|e| MainError::Other(format!("default listen address: {e}")))?,
    };
    let cert = pick(a.tls_cert, file.tls_cert.clone()).ok_or(ConfigError::Missing(
        "the TLS certificate",
        "tls-cert",
        "OVSA_LS_TLS_CERT",
        "tls_cert",
    ))?;
    let key = pick(a.tls_key, file.tls_key.clone()).ok_or(ConfigError::Missing(
        "the TLS key",
        "tls-key",
        "OVSA_LS_TLS_KEY",
        "tls_key",
    ))?;
    let ek_cas = pick_list(&a.trust_ek_ca, &file.trust_ek_ca);
    if ek_cas.is_empty() {
        return Err(ConfigError::Missing(
            "at least one vTPM EK CA",
            "trust-ek-ca",
            "OVSA_LS_TRUST_EK_CA",
            "trust_ek_ca",
        )
        .into());
    }
    let verifier = ovsa_core::attest::VerifierConfig {
        vtpm_ek_trust: config::load_ek_trust(&ek_cas)?,
        host_ek_trust: config::load_ek_trust(&pick_list(
            &a.trust_host_ek_ca,
            &file.trust_host_ek_ca,
        ))?,
        ..Default::default()
    };
    let tls = ovsa_license_server::tls::server_config(&cert, &key)?;
    let store = Store::open(db).await?;
    let state = Arc::new(AppState {
        store,
        verifier,
        settings: Settings {
            session_ttl: Duration::from_secs(
                pick(a.session_ttl, file.session_ttl_seconds).unwrap_or(60),
            ),
            require_host_evidence: a.require_host_evidence
                || file.require_host_evidence.unwrap_or(false),
            request_timeout: Duration::from_secs(
                pick(a.request_timeout, file.request_timeout_seconds).unwrap_or(10),
            ),
            allow_unenrolled_host_ak: a.allow_unenrolled_host_ak
                || file.allow_unenrolled_host_ak.unwrap_or(false),
        },
        metrics: Default::default(),
    });
    let limits = Limits {
        max_connections: pick(a.max_connections, file.max_connections).unwrap_or(256),
        ..Limits::default()
    };
    let running = server::start(listen, tls, state.clone(), limits)
        .await
        .map_err(|e| MainError::Other(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(
        "listening on https://{} (TLS 1.3, client certificates required), storage {}",
        running.addr,
        state.store.backend()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn license(cmd: LicenseCmd, file: FileConfig, db: &str) -> Result<(), MainError> {
    let store = Store::open(db).await?;
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        LicenseCmd::Add { files, trust_isv } => {
            let isv_paths = pick_list(&trust_isv, &file.trust_isv);
            if isv_paths.is_empty() {
                return Err(ConfigError::Missing(
                    "the ISV certificate that signs registrations",
                    "trust-isv",
                    "OVSA_LS_TRUST_ISV",
                    "trust_isv",
                )
                .into());
            }
            let isvs = isv_paths
                .iter()
                .map(|p| Certificate::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            for f in &files {
                let reg = Signed::<Registration>::load(f)?;
                let signer_key = reg.signer().public_key()?;
                let trusted = isvs
                    .iter()
                    .any(|c| c.public_key().map(|k| k == signer_key).unwrap_or(false));
                if !trusted {
                    return Err(MainError::Other(format!(
                        "{}: signed by '{}', which is not a trusted ISV (--trust-isv)",
                        f.display(),
                        reg.signer().subject()
                    )));
                }
                let rec =
                    LicenseRecord::from_registration(reg.body(), reg.signer().fingerprint(), now);
                store.add_license(&rec).await?;
                store
                    .append_audit(&AuditEntry {
                        at: now,
                        license_guid: Some(rec.license_guid),
                        client: "admin".into(),
                        action: "add".into(),
                        purpose: None,
                        result: "ok".into(),
                        reason: None,
                        message: format!("registered from {}", f.display()),
                        instance_id: None,
                    })
                    .await?;
                println!(
                    "added license {} for '{}' version {} ({})",
                    rec.license_guid,
                    rec.model_name,
                    rec.model_version,
                    customer_subject(&rec)
                );
            }
            Ok(())
        }
        LicenseCmd::List => {
            println!(
                "{:<36}  {:<20}  {:>6}  {:<8}  customer",
                "license", "model", "uses", "state"
            );
            for r in store.list_licenses().await? {
                println!(
                    "{:<36}  {:<20}  {:>6}  {:<8}  {}",
                    r.license_guid,
                    format!("{} v{}", r.model_name, r.model_version),
                    r.uses,
                    if r.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    customer_subject(&r)
                );
            }
            Ok(())
        }
        LicenseCmd::Show { guid } => {
            let r = store
                .license(guid)
                .await?
                .ok_or_else(|| MainError::Other(format!("license {guid} is not registered")))?;
            let acts = store.activations(guid).await?;
            let fmt = ovsa_core::encoding::format_rfc3339;
            let out = serde_json::json!({
                "license_guid": r.license_guid,
                "model": {"guid": r.model_guid, "name": r.model_name, "version": r.model_version,
                          "header_hash": hex::encode(r.header_hash)},
                "customer": customer_subject(&r),
                "policy": r.policy,
                "lease_seconds": r.lease_seconds,
                "tcb": r.tcb.name,
                "issued": r.issued,
                "registered": fmt(r.registered_at),
                "revoked": r.revoked_at.map(fmt),
                "first_use": r.first_use.map(fmt),
                "uses": r.uses,
                "activations": acts.iter().map(|a| serde_json::json!({
                    "instance": hex::encode(a.instance_id),
                    "first_seen": fmt(a.first_seen),
                    "last_seen": fmt(a.last_seen),
                    "checks": a.checks,
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            Ok(())
        }
        LicenseCmd::Revoke { guid } => {
            if !store.revoke(guid, now).await? {
                return Err(MainError::Other(format!(
                    "license {guid} is not registered"
                )));
            }
            store
                .append_audit(&AuditEntry {
                    at: now,
                    license_guid: Some(guid),
                    client: "admin".into(),
                    action: "revoke".into(),
                    purpose: None,
                    result: "ok".into(),
                    reason: None,
                    message: "revoked".into(),
                    instance_id: None,
                })
                .await?;
            println!("revoked license {guid}: the next check of any runtime using it is refused");
            Ok(())
        }
        LicenseCmd::Reinstate { guid } => {
            if !store.reinstate(guid).await? {
                return Err(MainError::Other(format!(
                    "license {guid} is not registered"
                )));
            }
            store
                .append_audit(&AuditEntry {
                    at: now,
                    license_guid: Some(guid),
                    client: "admin".into(),
                    action: "reinstate".into(),
                    purpose: None,
                    result: "ok".into(),
                    reason: None,
                    message: "revocation lifted".into(),
                    instance_id: None,
                })
                .await?;
            println!("reinstated license {guid}: checks are granted again under its policy");
            Ok(())
        }
    }
}

fn customer_subject(r: &LicenseRecord) -> String {
    Certificate::from_der(&r.customer_cert)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|_| "<invalid certificate>".into())
}

fn audit_line(e: &AuditEntry) -> String {
    format!(
        "{}  {:<9} {:<8} {:<7} {:<24} {}  {}  {}",
        ovsa_core::encoding::format_rfc3339(e.at),
        e.action,
        e.result,
        e.purpose
            .map(|p| format!("{p:?}").to_lowercase())
            .unwrap_or_default(),
        e.reason.map(|r| r.as_str()).unwrap_or(""),
        e.license_guid.map(|g| g.to_string()).unwrap_or_default(),
        e.client,
        e.message
    )
}
