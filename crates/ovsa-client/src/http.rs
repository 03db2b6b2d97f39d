//! A deliberately small, blocking HTTP/1.1 JSON client over one TLS connection (keep-alive), so
//! the runtime needs no async runtime inside OVMS and can read the TLS exporter of the very
//! connection its quote is bound to. Responses are parsed with `httparse`; bodies must carry a
//! Content-Length and are bounded.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_core::protocol::{ErrorResponse, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClientError;
use crate::socket::NoSigpipeStream;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// One TLS connection to a license service.
pub struct Connection {
    stream: StreamOwned<ClientConnection, NoSigpipeStream>,
    url: String,
    authority: String,
    prefix: String,
    timeout: Duration,
    deadline: Option<Instant>,
    /// A response was read on this connection (an `access_denied` alert before that is the
    /// service refusing the client certificate).
    answered: bool,
}

/// Splits `https://host:port/prefix` into (host, port, prefix).
pub fn split_url(url: &str) -> Result<(String, u16, String), ClientError> {
    ovsa_core::license::policy::validate_url(url)?;
    let rest = url.trim_start_matches("https://");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = port.map(|p| p.parse().unwrap_or(443)).unwrap_or(443);
    Ok((host, port, path.to_string()))
}

impl Connection {
    /// Connects and completes the TLS handshake (server pinned, client certificate sent).
    pub fn open(
        url: &str,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::open_with_deadline(url, config, timeout, None)
    }

    /// [`Connection::open`], and every later connect, read and write of this connection waits
    /// at most until `deadline` (then fails with [`ClientError::Deadline`]).
    pub fn open_with_deadline(
        url: &str,
        config: Arc<ClientConfig>,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Self, ClientError> {
        let unreachable = |detail: String| ClientError::Unreachable {
            url: url.to_string(),
            detail,
        };
        let (host, port, prefix) = split_url(url)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| unreachable(format!("{host} has no address")))?;
        let first = budget(url, timeout, deadline, "connecting")?;
        let tcp = TcpStream::connect_timeout(&addr, first).map_err(|e| {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                over(url, "connecting")
            } else {
                unreachable(e.to_string())
            }
        })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.clone())
            .map_err(|e| unreachable(format!("invalid server name {host}: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(|e| unreachable(e.to_string()))?;
        let mut c = Connection {
            stream: StreamOwned::new(conn, NoSigpipeStream::new(tcp)),
            url: url.to_string(),
            authority: if port == 443 {
                host
            } else {
                format!("{host}:{port}")
            },
            prefix,
            timeout,
            deadline,
            answered: false,
        };
        // Drive the handshake now so pin and TLS failures are reported as such.
        while c.stream.conn.is_handshaking() {
            c.arm("the TLS handshake")?;
            if let Err(e) = c.stream.conn.complete_io(&mut c.stream.sock) {
                return Err(c.io_error("the TLS handshake", e, |e| handshake_error(url, e)));
            }
        }
        Ok(c)
    }

    /// Sets the socket timeouts for the next I/O: the per-operation timeout, cut to what is
    /// left before the deadline; fails once the deadline has passed.
    fn arm(&self, what: &str) -> Result<(), ClientError> {
        let t = budget(&self.url, self.timeout, self.deadline, what)?;
        let sock = self.stream.sock.get_ref();
        sock.set_read_timeout(Some(t))
            .and_then(|()| sock.set_write_timeout(Some(t)))
            .map_err(|e| ClientError::Unreachable {
                url: self.url.clone(),
                detail: e.to_string(),
            })
    }

    /// An I/O error of `what`: [`ClientError::Deadline`] if the deadline has passed, else
    /// `other(e)`.
    fn io_error(
        &self,
        what: &str,
        e: std::io::Error,
        other: impl FnOnce(std::io::Error) -> ClientError,
    ) -> ClientError {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            over(&self.url, what)
        } else {
            other(e)
        }
    }

    /// The TLS exporter value the quote is bound to (RFC 8446 §7.5).
    pub fn exporter(&self) -> Result<[u8; TLS_EXPORTER_LEN], ClientError> {
        let mut out = [0u8; TLS_EXPORTER_LEN];
        self.stream
            .conn
            .export_keying_material(&mut out, TLS_EXPORTER_LABEL, None)
            .map_err(|e| ClientError::Protocol(format!("TLS exporter: {e}")))?;
        Ok(out)
    }

    /// The service URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `req` as JSON to `path` and parses the JSON answer; a non-2xx answer becomes
    /// [`ClientError::Refused`] with the service's reason code.
    pub fn post_json<Q: Serialize, R: DeserializeOwned>(
        &mut self,
        path: &str,
        req: &Q,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (status, body) = self.post(path, &body)?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("invalid response to {path}: {e}")))
        } else {
            match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => Err(ClientError::Refused {
                    reason: e.error.code,
                    message: e.error.message,
                }),
                Err(_) => Err(ClientError::Protocol(format!(
                    "HTTP {status} from {path} without an OVSA error body"
                ))),
            }
        }
    }

    /// POSTs raw bytes and returns the status and body (for diagnostics and tests).
    pub fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
        let head = format!(
            "POST {}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            self.prefix,
            path,
            self.authority,
            body.len()
        );
        let url = self.url.clone();
        let io = move |e: std::io::Error| ClientError::Unreachable {
            url,
            detail: e.to_string(),
        };
        self.arm("sending a request")?;
        let sent = self
            .stream
            .write_all(head.as_bytes())
            .and_then(|()| self.stream.write_all(body))
            .and_then(|()| self.stream.flush());
        match sent {
            Ok(()) => self.read_response(),
            // The server may answer (e.g. 413) and close before reading a large body: prefer
            // its answer to the write error.
            Err(e) => {
                if let Some(refused) = self.certificate_refused(&e) {
                    return Err(refused);
                }
                let e = self.io_error("sending a request", e, io);
                match e {
                    ClientError::Deadline(_) => Err(e),
                    // A "broken pipe" right after the handshake may hide the service's
                    // `access_denied` alert: report that rather than the write error.
                    e => match self.alert_before_close() {
                        Some(refused) => Err(refused),
                        None => self.read_response().map_err(|_| e),
                    },
                }
            }
        }
    }

    /// After a failed write on a connection not answered yet: reads what the service sent
    /// before it closed (straight from the socket: the unsent request still waits in the TLS
    /// buffer) and returns [`ClientError::UnknownClientCertificate`] if that was an
    /// `access_denied` alert.
    fn alert_before_close(&mut self) -> Option<ClientError> {
        if self.answered || self.arm("reading the service's alert").is_err() {
            return None;
        }
        for _ in 0..4 {
            match self.stream.conn.read_tls(&mut self.stream.sock) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            match self.stream.conn.process_new_packets() {
                Err(rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)) => {
                    return Some(ClientError::UnknownClientCertificate {
                        url: self.url.clone(),
                    })
                }
                Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    }

    /// [`ClientError::UnknownClientCertificate`] if `e` is the service's `access_denied` alert
    /// on a connection that has not been answered yet (the handshake-time refusal of a client
    /// certificate the service does not know).
    fn certificate_refused(&self, e: &std::io::Error) -> Option<ClientError> {
        (!self.answered && is_access_denied(e)).then(|| ClientError::UnknownClientCertificate {
            url: self.url.clone(),
        })
    }

    fn read_response(&mut self) -> Result<(u16, Vec<u8>), ClientError> {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(ClientError::Protocol("response head too large".into()));
            }
            self.arm("waiting for the response")?;
            let n = self.stream.read(&mut chunk).map_err(|e| {
                if let Some(refused) = self.certificate_refused(&e) {
                    return refused;
                }
                self.io_error("waiting for the response", e, |e| {
                    ClientError::Unreachable {
                        url: self.url.clone(),
                        detail: format!("reading response: {e}"),
                    }
                })
            })?;
            if n == 0 {
                return Err(ClientError::Unreachable {
                    url: self.url.clone(),
                    detail: "connection closed before a response".into(),
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&buf[..head_end])
            .map_err(|e| ClientError::Protocol(format!("invalid response head: {e}")))?;
        let status = resp.code.unwrap_or(0);
        let mut len = None;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ClientError::Protocol(
                    "chunked responses are not supported".into(),
                ));
            }
        }
        let len =
            len.ok_or_else(|| ClientError::Protocol("response without Content-Length".into()))?;
        if len > MAX_BODY {
            return Err(ClientError::Protocol(format!(
                "response body of {len} bytes is too large"
            )));
        }
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            self.arm("reading the response body")?;
            let n = self.stream.read(&mut chunk).map_err(|e| {
                self.io_error("reading the response body", e, |e| {
                    ClientError::Unreachable {
                        url: self.url.clone(),
                        detail: format!("reading response body: {e}"),
                    }
                })
            })?;
            if n == 0 {
                return Err(ClientError::Protocol("response body truncated".into()));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
        self.answered = true;
        Ok((status, body))
    }
}

/// The time the next operation may take: `timeout`, cut to what is left before `deadline`.
fn budget(
    url: &str,
    timeout: Duration,
    deadline: Option<Instant>,
    what: &str,
) -> Result<Duration, ClientError> {
    match deadline {
        None => Ok(timeout),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(timeout.min(left)),
            _ => Err(over(url, what)),
        },
    }
}

fn over(url: &str, what: &str) -> ClientError {
    ClientError::Deadline(format!(
        "license service {url}: the check's deadline passed while {what} (the service accepted \
         the connection but did not answer in time)"
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `e` is a TLS `access_denied` alert from the peer.
fn is_access_denied(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::AccessDenied
        ))
    )
}

fn handshake_error(url: &str, e: std::io::Error) -> ClientError {
    if is_access_denied(&e) {
        return ClientError::UnknownClientCertificate {
            url: url.to_string(),
        };
    }
    let pin = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                o.0.downcast_ref::<crate::tls::PinMismatch>()
                    .map(|p| p.found)
            }
            _ => None,
        });
    match pin {
        Some(found) => ClientError::PinMismatch {
            url: url.to_string(),
            found: hex::encode(found),
        },
        None => ClientError::Unreachable {
            url: url.to_string(),
            detail: format!("TLS handshake: {e}"),
        },
    }
}
