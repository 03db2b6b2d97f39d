//! The network side: TLS 1.3 accept loop, client certificates admitted only when registered
//! ([`crate::tls::ClientRegistry`], kept up to date from the store here), per-connection identity
//! (client certificate, TLS exporter) handed to the API, bounded concurrency, timeouts and
//! graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
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
use crate::metrics::{RefusedConnection, RefusedHandshake};
use crate::tls::{ClientKind, ClientRegistry, ServerTls};

/// Network limits. A TCP connection first takes a *handshake slot* (a global budget and a
/// per-source cap, both checked at accept: when either is full the connection is closed at once,
/// never queued) and keeps it until its TLS handshake ends, at most `handshake_timeout`. Only a
/// connection whose handshake completed with a client certificate takes one of the
/// `max_connections` *request slots*, so idle or slow TCP connections cannot occupy the slots
/// that checks need.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request slots: most connections past their handshake served at once. A connection that
    /// finds none free waits up to `handshake_timeout` for one, then is closed.
    pub max_connections: usize,
    /// Most connections in their TLS handshake at once (all sources together).
    pub max_handshakes: usize,
    /// Most connections in their TLS handshake at once from one source: one IPv4 address, or one
    /// IPv6 /64 (what one IPv6 host is usually given).
    pub max_handshakes_per_source: usize,
    /// Time allowed from accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open (keep-alive included).
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_handshakes: 4096,
            max_handshakes_per_source: 64,
            handshake_timeout: Duration::from_secs(3),
            connection_timeout: Duration::from_secs(120),
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (every connection, idle or
/// not, holds a file descriptor; the common soft limit of 1,024 is less than the default
/// handshake budget). Returns the new soft limit (`None`: unlimited). Uses `rustix`'s safe
/// `getrlimit`/`setrlimit` wrappers, so no `unsafe` here.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        setrlimit(Resource::Nofile, lim)?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// Not Unix: nothing to raise.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<Option<u64>> {
    Ok(None)
}

/// The key a per-source cap counts under: an IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 prefix of an IPv6 address.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The handshake budget: a global count and a count per source.
struct HandshakeGate {
    max: usize,
    per_source: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
    state: Arc<AppState>,
}

/// One connection's handshake slot; released on drop.
struct HandshakeSlot {
    gate: Arc<HandshakeGate>,
    source: IpAddr,
}

impl HandshakeGate {
    /// A slot for a connection from `ip`, or the reason there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<HandshakeSlot, RefusedConnection> {
        let source = source_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.0 >= self.max {
            return Err(RefusedConnection::HandshakeBudget);
        }
        let n = c.1.entry(source).or_insert(0);
        if *n >= self.per_source {
            return Err(RefusedConnection::PerSource);
        }
        *n += 1;
        c.0 += 1;
        self.state.metrics.set_handshakes_in_progress(c.0);
        Ok(HandshakeSlot {
            gate: self.clone(),
            source,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut c = self.gate.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.0 = c.0.saturating_sub(1);
        if let Some(n) = c.1.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.source);
            }
        }
        self.gate.state.metrics.set_handshakes_in_progress(c.0);
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

/// Loads the registered client certificates from the store, binds `listen` and serves until
/// [`RunningServer::shutdown`]. If the first load fails it is logged and the service starts
/// admitting no customer until a reload succeeds (every [`crate::tls::REFRESH_INTERVAL`], or an
/// unknown certificate's).
pub async fn start(
    listen: SocketAddr,
    tls: ServerTls,
    state: Arc<AppState>,
    limits: Limits,
) -> std::io::Result<RunningServer> {
    let ServerTls { config, clients } = tls;
    match clients.reload(&state.store).await {
        Ok(n) => tracing::debug!("{n} registered client certificates"),
        Err(e) => tracing::warn!(
            "loading the registered client certificates: {}; retrying every {} s",
            crate::text::escape_controls(&e.to_string()),
            crate::tls::REFRESH_INTERVAL.as_secs()
        ),
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve(
        listener,
        Arc::new(config),
        clients,
        state,
        limits,
        rx,
    ));
    Ok(RunningServer {
        addr,
        shutdown: tx,
        task,
    })
}

async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    clients: Arc<ClientRegistry>,
    state: Arc<AppState>,
    limits: Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let gate = Arc::new(HandshakeGate {
        max: limits.max_handshakes.max(1),
        per_source: limits.max_handshakes_per_source.max(1),
        counts: Mutex::new((0, HashMap::new())),
        state: state.clone(),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let purger = tokio::spawn(purge_sessions(state.clone()));
    let refresher = tokio::spawn(refresh_clients(clients.clone(), state.clone()));
    let refusal_log = Arc::new(RefusalLog::default());
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let handshake_slot = match gate.admit(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                // Closed at once (dropping the socket): queueing would let the flood hold it.
                state.metrics.connection_refused(why);
                tracing::debug!(%peer, "connection closed before TLS: {}", why.describe());
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        let slots = slots.clone();
        let state = state.clone();
        let clients = clients.clone();
        let refusal_log = refusal_log.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
            let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) if is_unregistered_client(&e) => {
                    state
                        .metrics
                        .handshake_refused(RefusedHandshake::UnregisteredClientCertificate);
                    refusal_log.unregistered(peer, None);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    state
                        .metrics
                        .connection_refused(RefusedConnection::HandshakeTimeout);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let Some(mut info) = conn_info(&stream, peer) else {
                tracing::info!(%peer, "connection without a usable client certificate");
                return;
            };
            // Before any request is read: a provisionally admitted certificate is looked up
            // again after a reload from the store (bounded by the handshake deadline).
            let kind = tokio::time::timeout_at(
                deadline,
                clients.confirm(&state.store, &info.client_cert_sha256),
            )
            .await
            .unwrap_or(ClientKind::Unregistered);
            if kind == ClientKind::Unregistered {
                state
                    .metrics
                    .handshake_refused(RefusedHandshake::UnregisteredClientCertificate);
                refusal_log.unregistered(peer, Some(&info.client_subject));
                return;
            }
            info.operator = kind == ClientKind::Operator;
            // Only now a request slot; the handshake slot is held while waiting for it.
            let _permit = match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    state
                        .metrics
                        .connection_refused(RefusedConnection::RequestSlots);
                    tracing::warn!(
                        %peer,
                        "no request slot free within the handshake timeout (--max-connections \
                         {}); connection closed",
                        limits.max_connections
                    );
                    return;
                }
            };
            drop(handshake_slot);
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
    refresher.abort();
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
        operator: false,
        client_cert_sha256: sha256(&cert),
        client_cert: cert,
        client_subject: subject,
        exporter,
        peer,
    })
}

/// Whether a failed handshake is the verifier's refusal of an unregistered client certificate
/// (rustls' error comes back inside the I/O error).
fn is_unregistered_client(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure
        ))
    )
}

/// Logs refusals of unregistered client certificates at most once per [`RefusalLog::EVERY`],
/// with the number refused since the last line, so a flood of them cannot flood the log. The
/// certificate subject (customer-controlled) is escaped.
#[derive(Default)]
struct RefusalLog(Mutex<(Option<std::time::Instant>, u64)>);

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn unregistered(&self, peer: SocketAddr, subject: Option<&str>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let now = std::time::Instant::now();
        if g.0.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return;
        }
        let n = std::mem::take(&mut g.1);
        g.0 = Some(now);
        drop(g);
        tracing::info!(
            %peer,
            subject = %subject.map(crate::text::escape_controls).unwrap_or_else(|| "(not kept)".into()),
            "refused {n} TLS client(s) whose certificate belongs to no registered license or \
             operator since the last such line (latest shown; at most one line per {} s; \
             counted in ovsa_license_handshakes_refused_total)",
            Self::EVERY.as_secs()
        );
    }
}

/// Reloads the registered client certificates every [`crate::tls::REFRESH_INTERVAL`].
async fn refresh_clients(clients: Arc<ClientRegistry>, state: Arc<AppState>) {
    let mut tick = tokio::time::interval(crate::tls::REFRESH_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = clients.reload(&state.store).await {
            tracing::warn!(
                "reloading the registered client certificates: {}",
                crate::text::escape_controls(&e.to_string())
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn raise_fd_limit_sets_the_soft_limit_to_the_hard_limit() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let lim = getrlimit(Resource::Nofile);
        if let Some(hard) = lim.maximum {
            // Lower the soft limit (a few hundred fds are plenty for this test binary).
            let mut low = lim;
            low.current = Some((hard / 2).max(256).min(hard));
            setrlimit(Resource::Nofile, low).unwrap();
        }
        assert_eq!(raise_fd_limit().unwrap(), lim.maximum);
        assert_eq!(getrlimit(Resource::Nofile).current, lim.maximum);
    }

    #[test]
    fn sources_are_ipv4_addresses_or_ipv6_slash_64s() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source_key(v4), v4);
        assert_eq!(source_key("::ffff:192.0.2.7".parse().unwrap()), v4);
        assert_eq!(
            source_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            source_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            source_key("2001:db8:1:2::1".parse().unwrap()),
            source_key("2001:db8:1:3::1".parse().unwrap())
        );
    }
}
