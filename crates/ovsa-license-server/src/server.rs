//! The network side: TLS 1.3 accept loop, per-connection identity (client certificate, TLS
//! exporter) handed to the API, bounded concurrency, timeouts and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use ovsa_core::crypto::hash::sha256;
use ovsa_core::protocol::{TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{router, AppState, ConnInfo};

/// Network limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections served at once; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open (keep-alive included).
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(120),
        }
    }
}

/// A running service.
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (up to 10 s), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds `listen` and serves until [`RunningServer::shutdown`].
pub async fn start(
    listen: SocketAddr,
    tls: rustls::ServerConfig,
    state: Arc<AppState>,
    limits: Limits,
) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve(listener, Arc::new(tls), state, limits, rx));
    Ok(RunningServer {
        addr,
        shutdown: tx,
        task,
    })
}

async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    limits: Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let purger = tokio::spawn(purge_sessions(state));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let Some(info) = conn_info(&stream, peer) else {
                tracing::info!(%peer, "connection without a usable client certificate");
                return;
            };
            let info = Arc::new(info);
            let svc = app.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                req
            });
            let svc = TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let conn = watcher.watch(conn);
            match tokio::time::timeout(limits.connection_timeout, conn).await {
                Ok(Err(e)) if !e.is_incomplete_message() => {
                    tracing::debug!(%peer, "connection: {e}")
                }
                _ => {}
            }
        });
    }
    drop(listener);
    purger.abort();
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after 10 s; closing them");
    }
}

fn conn_info(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
) -> Option<ConnInfo> {
    let (_, conn) = stream.get_ref();
    let cert = conn.peer_certificates()?.first()?.to_vec();
    let mut exporter = [0u8; TLS_EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, TLS_EXPORTER_LABEL, None)
        .ok()?;
    let subject = ovsa_core::identity::Certificate::from_der(&cert)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|_| "<unparsable certificate>".into());
    Some(ConnInfo {
        client_cert_sha256: sha256(&cert),
        client_cert: cert,
        client_subject: subject,
        exporter,
        peer,
    })
}

async fn purge_sessions(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        match state
            .store
            .purge_sessions(time::OffsetDateTime::now_utc())
            .await
        {
            Ok(n) if n > 0 => tracing::debug!("purged {n} expired sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!("purging sessions: {e}"),
        }
    }
}
