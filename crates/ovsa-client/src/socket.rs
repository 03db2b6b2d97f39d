//! A TCP stream that never raises `SIGPIPE`.
//!
//! The client runs inside the model server (the plugin is a shared library in a C++ process),
//! and such hosts usually leave `SIGPIPE` at its default action: terminate the process. A write
//! to a connection the peer has closed or reset raises `SIGPIPE` unless the write is a
//! `send(..., MSG_NOSIGNAL)`. `std`'s `TcpStream::write` is exactly that on Linux, but its
//! `write_vectored` is a plain `writev(2)`, and rustls writes its TLS records with
//! `write_vectored`. So a license service that went away in the middle of an exchange killed
//! the whole model server (seen in the C++ driver test as a silent death during the
//! service-outage step). A library must not change the host's signal dispositions, so the fix
//! is on our side of the socket: [`NoSigpipeStream`] only ever writes through
//! `TcpStream::write`. A peer that went away is then an ordinary `BrokenPipe` error.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A [`TcpStream`] whose writes never raise `SIGPIPE` (see the module documentation).
#[derive(Debug)]
pub struct NoSigpipeStream(TcpStream);

impl NoSigpipeStream {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        NoSigpipeStream(stream)
    }

    /// The wrapped stream (for timeouts and socket options; write through `self`).
    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }
}

impl Read for NoSigpipeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for NoSigpipeStream {
    /// `send(2)` with `MSG_NOSIGNAL` (what `std` does for `TcpStream::write` on Linux).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    // `write_vectored` is deliberately NOT forwarded: `TcpStream::write_vectored` is a plain
    // `writev(2)`, which raises SIGPIPE. The trait's default writes the first non-empty slice
    // through `write` above; rustls loops until everything is written.

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
