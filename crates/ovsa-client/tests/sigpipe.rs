//! The client must survive a license service that closes the connection under it while
//! `SIGPIPE` has its default action, as it does in a C++ model server that loads the plugin.
//!
//! Rust programs (this test binary too) ignore `SIGPIPE` at start-up, so each test first
//! restores the default action, as a C++ host has it. This binary holds only these tests.

use std::io::{IoSlice, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use ovsa_client::socket::NoSigpipeStream;

/// Gives `SIGPIPE` its default action (terminate), as in a C++ host process.
fn default_sigpipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` only changes this process's
    // disposition of SIGPIPE; no handler code is installed.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR, "signal(SIGPIPE, SIG_DFL) failed");
}

/// A connection whose peer has closed it: the first write is answered with a reset, every
/// later write fails with EPIPE (and, unless suppressed, raises SIGPIPE).
fn closed_by_peer() -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    drop(listener.accept().unwrap());
    std::thread::sleep(Duration::from_millis(50));
    client
}

/// What rustls does to send TLS records: vectored writes, several times.
fn write_records(w: &mut dyn Write) -> std::io::Result<()> {
    let mut last = Ok(0);
    for _ in 0..5 {
        last = w.write_vectored(&[IoSlice::new(b"record header"), IoSlice::new(b"payload")]);
        std::thread::sleep(Duration::from_millis(20));
    }
    last.map(|_| ())
}

const CONTROL: &str = "OVSA_SIGPIPE_CONTROL";

#[test]
fn writes_to_a_closed_connection_fail_without_killing_the_host() {
    if std::env::var_os(CONTROL).is_some() {
        // Child of `a_plain_tcp_stream_would_have_killed_the_host`: the unwrapped stream.
        default_sigpipe();
        let mut raw = closed_by_peer();
        let _ = write_records(&mut raw);
        // Only reached if no SIGPIPE was raised.
        std::process::exit(0);
    }
    default_sigpipe();
    let mut stream = NoSigpipeStream::new(closed_by_peer());
    let e = write_records(&mut stream).expect_err("the peer is gone: the writes must fail");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    // Still alive: the error is an ordinary one.
}

/// The control: the same writes on a plain `TcpStream` kill the process with SIGPIPE, which
/// is what happened to the model server before the client wrapped its socket.
#[test]
fn a_plain_tcp_stream_would_have_killed_the_host() {
    if std::env::var_os(CONTROL).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writes_to_a_closed_connection_fail_without_killing_the_host",
            "--test-threads=1",
        ])
        .env(CONTROL, "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "the unwrapped stream should have raised SIGPIPE: {:?}",
        out.status
    );
}
