//! `ClientOptions::deadline` / `Connection::open_with_deadline`: a service that accepts TCP and
//! never answers the TLS handshake fails the connection at the deadline, although the
//! per-operation timeout is far longer.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_client::http::Connection;
use ovsa_client::tls::client_config;
use ovsa_client::ClientError;
use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::identity::Keystore;
use ovsa_core::license::policy::Pin;

#[test]
fn a_silent_service_fails_the_handshake_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let (customer, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=customer", 10).unwrap();
    let config = Arc::new(client_config(&customer, &[Pin([7; 32])]).unwrap());
    let url = format!("https://127.0.0.1:{port}");
    let t = Instant::now();
    let e = Connection::open_with_deadline(
        &url,
        config,
        Duration::from_secs(60),
        Some(t + Duration::from_millis(700)),
    )
    .err()
    .expect("no TLS answer: no connection");
    let took = t.elapsed();
    assert!(
        matches!(&e, ClientError::Deadline(m) if m.contains("TLS handshake") && m.contains(&url)),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A deadline already passed fails before connecting.
    let config = Arc::new(client_config(&customer, &[Pin([7; 32])]).unwrap());
    let e = Connection::open_with_deadline(&url, config, Duration::from_secs(60), Some(t))
        .err()
        .unwrap();
    assert!(
        matches!(&e, ClientError::Deadline(m) if m.contains("connecting")),
        "{e}"
    );
}
