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
    tls.clients.set_operators(&config::load_client_certs(
        &cfg.metrics_client_cert,
        config::METRICS_CLIENT_CERT.flag,
    )?);
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
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let limits = Limits {
        max_connections: size(cfg.max_connections),
        max_handshakes: size(cfg.max_handshakes),
        max_handshakes_per_source: size(cfg.max_handshakes_per_source),
        handshake_timeout: Duration::from_secs(cfg.handshake_timeout),
        ..Limits::default()
    };
    fd_limit(&limits);
    let running = server::start(listen, tls, state.clone(), limits)
        .await
        .map_err(|source| MainError::Listen {
            addr: listen,
            source,
        })?;
    tracing::info!(
        "listening on https://{} (TLS 1.3, client certificates of registered licenses{} \
         required), storage {}",
        running.addr,
        if cfg.metrics_client_cert.is_empty() {
            ""
        } else {
            " or --metrics-client-cert"
        },
        state.store.backend()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Raises the open-file limit to the hard limit (each connection, idle or not, holds a file
/// descriptor) and warns when even that is below what the connection limits allow.
fn fd_limit(limits: &Limits) {
    let needed = limits
        .max_handshakes
        .saturating_add(limits.max_connections)
        .saturating_add(64);
    match server::raise_fd_limit() {
        Ok(Some(n)) if n < u64::try_from(needed).unwrap_or(u64::MAX) => tracing::warn!(
            "the open-file limit is {n} (hard limit), below --max-handshakes + \
             --max-connections + 64 = {needed}: past it new connections fail at accept; raise \
             the hard limit (LimitNOFILE= in systemd, ulimit -Hn) or lower those settings"
        ),
        Ok(n) => tracing::debug!(
            "open-file limit: {}",
            n.map_or("unlimited".into(), |n| n.to_string())
        ),
        Err(e) => tracing::warn!("cannot raise the open-file limit to the hard limit: {e}"),
    }
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
