//! `ovsa-license-server`: run the license service, and administer its database.
//!
//! The command line is in `cli.rs`, settings are resolved by `ovsa_license_server::config`
//! (command line > environment > TOML file > defaults), the admin commands are in `admin.rs`.
//! This file reads the process environment (the only place that does), sets up logging and
//! runs `serve`.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod error;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ovsa_license_server::api::{AppState, Settings};
use ovsa_license_server::config::{self, Env, FileConfig};
use ovsa_license_server::server::{self, Limits};
use ovsa_license_server::store::{OpenMode, Store};

use cli::{Cli, Command, ServeArgs};
use error::MainError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colours in the log only on a terminal, and never with `NO_COLOR` set.
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVSA_LS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(colours)
        .with_writer(std::io::stderr)
        .init();
    let env = Env::from_vars(
        std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("OVSA_"))),
    );
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
    match runtime.block_on(run(cli, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovsa-license-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, env: Env) -> Result<(), MainError> {
    let file =
        FileConfig::load(config::resolve_config_path(cli.config.as_deref(), &env)?.as_deref())?;
    let db = config::resolve_db(cli.db.as_deref(), &env, &file)?;
    match cli.command {
        Command::Serve(a) => serve(a, &env, &file, &db).await,
        Command::License(cmd) => admin::license(cmd, &env, &file, &db).await,
        Command::Audit {
            license,
            limit,
            json,
        } => admin::audit(&db, license, limit, json).await,
    }
}

/// `serve`: every check before the database is opened, so a failed start-up creates nothing.
async fn serve(a: ServeArgs, env: &Env, file: &FileConfig, db: &str) -> Result<(), MainError> {
    let cfg = config::resolve_serve(&a.into_flags(), env, file)?;
    let listen = config::resolve_listen(&cfg.listen).await?;
    let verifier = ovsa_core::attest::VerifierConfig {
        vtpm_ek_trust: config::load_ek_trust(&cfg.trust_ek_ca, config::TRUST_EK_CA.flag)?,
        host_ek_trust: config::load_ek_trust(&cfg.trust_host_ek_ca, config::TRUST_HOST_EK_CA.flag)?,
        ..Default::default()
    };
    let passphrase = cfg.passphrase.load()?;
    let tls = ovsa_license_server::tls::server_config_with_passphrase(
        &cfg.tls_cert,
        &cfg.tls_key,
        passphrase.as_ref().map(|p| p.as_str()),
    )?;
    drop(passphrase);
    let store = Store::open_with(db, OpenMode::Create).await?;
    let state = Arc::new(AppState {
        store,
        verifier,
        settings: Settings {
            session_ttl: Duration::from_secs(cfg.session_ttl),
            require_host_evidence: cfg.require_host_evidence,
            request_timeout: Duration::from_secs(cfg.request_timeout),
            allow_unenrolled_host_ak: cfg.allow_unenrolled_host_ak,
        },
        metrics: Default::default(),
    });
    let limits = Limits {
        max_connections: usize::try_from(cfg.max_connections).unwrap_or(usize::MAX),
        ..Limits::default()
    };
    let running = server::start(listen, tls, state.clone(), limits)
        .await
        .map_err(|source| MainError::Listen {
            addr: listen,
            source,
        })?;
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

/// Ctrl-C or (on Unix) SIGTERM.
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
