//! `serve`: resolve the settings, load the TLS key and trust anchors, open the database, serve
//! until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use ovsa_license_server::api::{AppState, Settings};
use ovsa_license_server::config::{self, Env, FileConfig};
use ovsa_license_server::server::{self, Limits};
use ovsa_license_server::store::{OpenMode, Store};

use crate::cli::ServeArgs;
use crate::error::MainError;

/// `serve`: every check before the database is opened, so a failed start-up creates nothing.
pub async fn serve(a: ServeArgs, env: &Env, file: &FileConfig, db: &str) -> Result<(), MainError> {
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
