//! `ovsa-license-server`: run the license service, and administer its database.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ovsa_core::envelope::Signed;
use ovsa_core::identity::Certificate;
use ovsa_core::license::Registration;
use ovsa_license_server::api::{AppState, Settings};
use ovsa_license_server::config::{
    self, pick, pick_list, read_input, ConfigError, FileConfig, MAX_CONNECTIONS, MAX_INPUT_FILE,
    REQUEST_TIMEOUT, SESSION_TTL,
};
use ovsa_license_server::server::{self, Limits};
use ovsa_license_server::store::{
    Activation, AuditEntry, AuditFilter, LicenseRecord, OpenMode, Store,
};
use ovsa_license_server::text::{escape_controls, table, to_json_text};
use uuid::Uuid;

/// The OVSA license service.
///
/// Verifies the customer's TPM attestation and license policy and only then releases the
/// license's key share, sealed to the runtime. Settings come from the command line, the
/// environment (OVSA_LS_*) or a TOML file (--config), in that order; docs/SERVICE.md lists them.
#[derive(Debug, Parser)]
#[command(name = "ovsa-license-server", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "OVSA_LS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database: sqlite:PATH or postgres://USER@HOST:PORT/DB. Only `serve` and `license add`
    /// create a missing database [default: sqlite:licenses.db]
    #[arg(long, global = true, env = "OVSA_LS_DB", value_name = "URL")]
    db: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on, HOST:PORT (a host name such as localhost:8443 is resolved)
    /// [default: 127.0.0.1:8443]
    #[arg(long, env = "OVSA_LS_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// TLS certificate chain (PEM); its key is what licenses pin.
    #[arg(long, env = "OVSA_LS_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) or an OVSA keystore.
    #[arg(long, env = "OVSA_LS_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// File whose first line is the passphrase of a protected keystore given as --tls-key
    /// [default: the OVSA_KEYSTORE_PASSPHRASE variable]
    #[arg(long, env = "OVSA_LS_PASSPHRASE_FILE", value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// CA certificates (PEM) that vTPM EK certificates must chain to, self-signed roots
    /// included (repeatable; in the environment a comma-separated list).
    #[arg(
        long,
        env = "OVSA_LS_TRUST_EK_CA",
        value_delimiter = ',',
        value_name = "PEM"
    )]
    trust_ek_ca: Vec<PathBuf>,
    /// TPM vendor CA certificates (PEM) for host TPM EK certificates, self-signed roots
    /// included (repeatable; in the environment a comma-separated list).
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
    /// Seconds a challenge stays valid, 1 to 86400 [default: 60]
    #[arg(long, env = "OVSA_LS_SESSION_TTL", value_name = "SECONDS")]
    session_ttl: Option<u64>,
    /// Seconds one request may take, body included, 1 to 3600 [default: 10]
    #[arg(long, env = "OVSA_LS_REQUEST_TIMEOUT", value_name = "SECONDS")]
    request_timeout: Option<u64>,
    /// Most connections served at once, 1 to 65536 [default: 256]
    #[arg(long, env = "OVSA_LS_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum LicenseCmd {
    /// Import registration records (.reg) made by `ovsatool sale` (creates the database if it
    /// is missing). All are checked first: if one is unusable, none is imported.
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
    /// List licenses (read-only).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one license with its activations, never its key share (read-only).
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

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] ovsa_license_server::store::StoreError),
    #[error(transparent)]
    Tls(#[from] ovsa_license_server::tls::TlsError),
    #[error("{0}")]
    Other(String),
}

/// Colours in the log only on a terminal, and never with `NO_COLOR` set.
fn log_colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVSA_LS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(log_colours())
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
        Command::Audit {
            license,
            limit,
            json,
        } => {
            let store = Store::open_with(&db, OpenMode::ReadOnly).await?;
            let entries = store
                .audit(&AuditFilter {
                    license_guid: license,
                    limit,
                })
                .await?;
            if json {
                let v: Vec<_> = entries.iter().map(audit_json).collect();
                println!("{}", to_json_text(&serde_json::Value::Array(v)));
            } else {
                print!("{}", audit_table(&entries));
            }
            Ok(())
        }
    }
}

async fn serve(a: ServeArgs, file: FileConfig, db: &str) -> Result<(), MainError> {
    let listen_text = pick(a.listen, file.listen).unwrap_or_else(|| config::DEFAULT_LISTEN.into());
    let listen = config::resolve_listen(&listen_text).await?;
    let session_ttl = SESSION_TTL.check(pick(a.session_ttl, file.session_ttl_seconds))?;
    let request_timeout =
        REQUEST_TIMEOUT.check(pick(a.request_timeout, file.request_timeout_seconds))?;
    let max_connections = MAX_CONNECTIONS.check(pick(a.max_connections, file.max_connections))?;
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
        vtpm_ek_trust: config::load_ek_trust(&ek_cas, "--trust-ek-ca")?,
        host_ek_trust: config::load_ek_trust(
            &pick_list(&a.trust_host_ek_ca, &file.trust_host_ek_ca),
            "--trust-host-ek-ca",
        )?,
        ..Default::default()
    };
    let passphrase = match pick(a.passphrase_file, file.passphrase_file.clone()) {
        Some(p) => Some(config::read_passphrase(&p)?),
        None => std::env::var("OVSA_KEYSTORE_PASSPHRASE")
            .ok()
            .filter(|p| !p.is_empty())
            .map(zeroize::Zeroizing::new),
    };
    let tls = ovsa_license_server::tls::server_config_with_passphrase(
        &cert,
        &key,
        passphrase.as_ref().map(|p| p.as_str()),
    )?;
    drop(passphrase);
    let store = Store::open_with(db, OpenMode::Create).await?;
    let state = Arc::new(AppState {
        store,
        verifier,
        settings: Settings {
            session_ttl: Duration::from_secs(session_ttl),
            require_host_evidence: a.require_host_evidence
                || file.require_host_evidence.unwrap_or(false),
            request_timeout: Duration::from_secs(request_timeout),
            allow_unenrolled_host_ak: a.allow_unenrolled_host_ak
                || file.allow_unenrolled_host_ak.unwrap_or(false),
        },
        metrics: Default::default(),
    });
    let limits = Limits {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
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

/// A registration file checked against the trusted ISVs.
fn load_registration(path: &Path, isvs: &[Certificate]) -> Result<Signed<Registration>, String> {
    let bytes = read_input(path, "registration", MAX_INPUT_FILE).map_err(|e| e.to_string())?;
    let reg = Signed::<Registration>::from_bytes(&bytes)
        .map_err(|e| format!("registration {}: {e}", path.display()))?;
    let signer_key = reg
        .signer()
        .public_key()
        .map_err(|e| format!("registration {}: {e}", path.display()))?;
    let trusted = isvs
        .iter()
        .any(|c| c.public_key().map(|k| k == signer_key).unwrap_or(false));
    if !trusted {
        return Err(format!(
            "registration {}: signed by '{}', which is not a trusted ISV (--trust-isv)",
            path.display(),
            escape_controls(reg.signer().subject())
        ));
    }
    Ok(reg)
}

fn nothing_imported(problems: &[String], total: usize) -> MainError {
    MainError::Other(format!(
        "nothing imported: {} of {total} registration(s) cannot be imported:\n  {}",
        problems.len(),
        problems.join("\n  ")
    ))
}

async fn license(cmd: LicenseCmd, file: FileConfig, db: &str) -> Result<(), MainError> {
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
                .map(|p| {
                    let bytes = read_input(p, "--trust-isv", MAX_INPUT_FILE)?;
                    Certificate::from_pem_or_der(&bytes).map_err(|e| ConfigError::Input {
                        setting: "--trust-isv".into(),
                        path: p.display().to_string(),
                        detail: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Check every file before importing any.
            let mut problems = Vec::new();
            let mut regs: Vec<(&PathBuf, Signed<Registration>)> = Vec::new();
            for f in &files {
                match load_registration(f, &isvs) {
                    Ok(reg) => {
                        let guid = reg.body().license_guid;
                        if let Some((other, _)) =
                            regs.iter().find(|(_, r)| r.body().license_guid == guid)
                        {
                            problems.push(format!(
                                "registration {}: license {guid} is also in {}",
                                f.display(),
                                other.display()
                            ));
                        } else {
                            regs.push((f, reg));
                        }
                    }
                    Err(e) => problems.push(e),
                }
            }
            if !problems.is_empty() {
                return Err(nothing_imported(&problems, files.len()));
            }
            let store = Store::open_with(db, OpenMode::Create).await?;
            for (f, reg) in &regs {
                let guid = reg.body().license_guid;
                if store.license(guid).await?.is_some() {
                    problems.push(format!(
                        "registration {}: license {guid} is already registered",
                        f.display()
                    ));
                }
            }
            if !problems.is_empty() {
                return Err(nothing_imported(&problems, files.len()));
            }
            for (f, reg) in &regs {
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
                    escape_controls(&rec.model_name),
                    escape_controls(&rec.model_version),
                    escape_controls(&customer_subject(&rec))
                );
            }
            Ok(())
        }
        LicenseCmd::List { json } => {
            let store = Store::open_with(db, OpenMode::ReadOnly).await?;
            let licenses = store.list_licenses().await?;
            if json {
                let v: Vec<_> = licenses.iter().map(|r| license_json(r, None)).collect();
                println!("{}", to_json_text(&serde_json::Value::Array(v)));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = licenses
                .iter()
                .map(|r| {
                    vec![
                        r.license_guid.to_string(),
                        format!("{} v{}", r.model_name, r.model_version),
                        r.uses.to_string(),
                        state(r).into(),
                        customer_subject(r),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["license", "model", "uses", "state", "customer"], &rows)
            );
            Ok(())
        }
        LicenseCmd::Show { guid, json } => {
            let store = Store::open_with(db, OpenMode::ReadOnly).await?;
            let r = store
                .license(guid)
                .await?
                .ok_or_else(|| MainError::Other(format!("license {guid} is not registered")))?;
            let acts = store.activations(guid).await?;
            if json {
                println!("{}", to_json_text(&license_json(&r, Some(&acts))));
            } else {
                print!("{}", license_text(&r, &acts));
            }
            Ok(())
        }
        LicenseCmd::Revoke { guid } => {
            let store = Store::open_with(db, OpenMode::Existing).await?;
            let r = store
                .license(guid)
                .await?
                .ok_or_else(|| MainError::Other(format!("license {guid} is not registered")))?;
            if let Some(at) = r.revoked_at {
                println!(
                    "license {guid} is already revoked (since {}); nothing changed",
                    ovsa_core::encoding::format_rfc3339(at)
                );
                return Ok(());
            }
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
            let store = Store::open_with(db, OpenMode::Existing).await?;
            let r = store
                .license(guid)
                .await?
                .ok_or_else(|| MainError::Other(format!("license {guid} is not registered")))?;
            if r.revoked_at.is_none() {
                println!("license {guid} is not revoked; nothing changed");
                return Ok(());
            }
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

/// The customer certificate's subject, exactly as stored (escape it before printing as text).
fn customer_subject(r: &LicenseRecord) -> String {
    Certificate::from_der(&r.customer_cert)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|_| "<invalid certificate>".into())
}

fn state(r: &LicenseRecord) -> &'static str {
    if r.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    }
}

/// The serde (snake_case) name of a unit enum value.
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}

/// A license as JSON (`license list --json`, and with its activations `license show --json`).
fn license_json(r: &LicenseRecord, acts: Option<&[Activation]>) -> serde_json::Value {
    let fmt = ovsa_core::encoding::format_rfc3339;
    let mut v = serde_json::json!({
        "license_guid": r.license_guid,
        "model": {"guid": r.model_guid, "name": r.model_name, "version": r.model_version,
                  "header_hash": hex::encode(r.header_hash)},
        "customer": customer_subject(r),
        "state": state(r),
        "policy": r.policy,
        "lease_seconds": r.lease_seconds,
        "tcb": r.tcb.name,
        "issued": r.issued,
        "registered": fmt(r.registered_at),
        "revoked": r.revoked_at.map(fmt),
        "first_use": r.first_use.map(fmt),
        "uses": r.uses,
    });
    if let Some(acts) = acts {
        v["activations"] = acts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "instance": hex::encode(a.instance_id),
                    "first_seen": fmt(a.first_seen),
                    "last_seen": fmt(a.last_seen),
                    "checks": a.checks,
                })
            })
            .collect();
    }
    v
}

/// `license show` as text: one field a line, then the activations as a table.
fn license_text(r: &LicenseRecord, acts: &[Activation]) -> String {
    let fmt = ovsa_core::encoding::format_rfc3339;
    let opt = |t: Option<time::OffsetDateTime>| t.map(fmt).unwrap_or_else(|| "-".into());
    let fields = vec![
        vec!["license".into(), r.license_guid.to_string()],
        vec![
            "model".into(),
            format!("{} v{} ({})", r.model_name, r.model_version, r.model_guid),
        ],
        vec!["header hash".into(), hex::encode(r.header_hash)],
        vec!["customer".into(), customer_subject(r)],
        vec!["state".into(), state(r).into()],
        vec![
            "policy".into(),
            serde_json::to_string(&r.policy).unwrap_or_default(),
        ],
        vec!["lease".into(), format!("{} s", r.lease_seconds)],
        vec!["tcb".into(), r.tcb.name.clone()],
        vec!["issued".into(), r.issued.clone()],
        vec!["registered".into(), fmt(r.registered_at)],
        vec!["revoked".into(), opt(r.revoked_at)],
        vec!["first use".into(), opt(r.first_use)],
        vec!["uses".into(), r.uses.to_string()],
        vec!["activations".into(), acts.len().to_string()],
    ];
    let mut out = table(&[], &fields);
    if !acts.is_empty() {
        let rows: Vec<Vec<String>> = acts
            .iter()
            .map(|a| {
                vec![
                    hex::encode(a.instance_id),
                    fmt(a.first_seen),
                    fmt(a.last_seen),
                    a.checks.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["instance", "first seen", "last seen", "checks"],
            &rows,
        ));
    }
    out
}

fn audit_json(e: &AuditEntry) -> serde_json::Value {
    serde_json::json!({
        "at": ovsa_core::encoding::format_rfc3339(e.at),
        "action": e.action,
        "result": e.result,
        "purpose": e.purpose.as_ref().map(name),
        "reason": e.reason.map(|r| r.as_str()),
        "license_guid": e.license_guid,
        "client": e.client,
        "message": e.message,
        "instance": e.instance_id.map(hex::encode),
    })
}

/// The audit log as an aligned table ("-" for an empty cell).
fn audit_table(entries: &[AuditEntry]) -> String {
    let dash = |s: String| if s.is_empty() { "-".into() } else { s };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                ovsa_core::encoding::format_rfc3339(e.at),
                dash(e.action.clone()),
                dash(e.result.clone()),
                dash(e.purpose.as_ref().map(name).unwrap_or_default()),
                dash(e.reason.map(|r| r.as_str().to_string()).unwrap_or_default()),
                dash(e.license_guid.map(|g| g.to_string()).unwrap_or_default()),
                dash(e.client.clone()),
                e.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "time", "action", "result", "purpose", "reason", "license", "client", "message",
        ],
        &rows,
    )
}
