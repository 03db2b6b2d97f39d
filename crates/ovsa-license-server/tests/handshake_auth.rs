//! Client authentication at the TLS handshake (issue 10, item 4): a client certificate that
//! belongs to no registered license (nor to an operator) is refused before any request is read,
//! so it writes no audit row; it is counted in `ovsa_license_handshakes_refused_total`; a
//! license added while the service runs (through another replica's store) is accepted on its
//! first connection; `/metrics` is served only to operator certificates. Real TLS 1.3 on
//! loopback, real swtpm vTPMs, SQLite and PostgreSQL.

mod common;
use ovsa_test_support::world;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_core::identity::Keystore;
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::Purpose;
use ovsa_license_server::metrics::RefusedHandshake;
use ovsa_license_server::tls::MISS_RELOAD_BURST;
use swtpm_tests::{names, Swtpm};
use world::World;

const UNREGISTERED: RefusedHandshake = RefusedHandshake::UnregisteredClientCertificate;

fn perpetual() -> Policy {
    Policy {
        validity: Validity::Perpetual,
        usage_limit: None,
        instance_limit: None,
    }
}

/// How one connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// An HTTP response (its status line and the rest).
    Served(String),
    /// The service sent the `access_denied` alert: refused in the TLS handshake.
    AccessDenied,
    /// Closed without an HTTP response, or another TLS error (the text).
    Closed(String),
}

/// Opens a TLS 1.3 connection with `config`, sends `request` and reads the answer.
fn attempt(w: &World, config: rustls::ClientConfig, request: &str) -> Outcome {
    let addr = w.server.as_ref().unwrap().addr;
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let classify =
        |e: std::io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)) => {
                Outcome::AccessDenied
            }
            _ => Outcome::Closed(e.to_string()),
        };
    if let Err(e) = s.write_all(request.as_bytes()).and_then(|_| s.flush()) {
        return classify(e);
    }
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        _ if out.starts_with(b"HTTP/1.1") => {
            Outcome::Served(String::from_utf8_lossy(&out).into_owned())
        }
        Ok(_) => Outcome::Closed("closed without a response".into()),
        Err(e) => classify(e),
    }
}

fn client_config(w: &World, client: &Keystore) -> rustls::ClientConfig {
    ovsa_client::tls::client_config(client, &[w.server_pin()]).unwrap()
}

/// A challenge request naming `license` (what the red team sent, with any EK).
fn challenge_request(license: uuid::Uuid) -> String {
    let body = format!(
        r#"{{"license_guid":"{license}","purpose":"load","ek_certificate":"AA==","ak_public":"AA=="}}"#
    );
    format!(
        "POST /v1/challenge HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Waits (bounded) until the service has counted `n` refused handshakes.
fn wait_for_refusals(w: &World, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.state.metrics.handshakes_refused(UNREGISTERED) < n {
        assert!(
            Instant::now() < deadline,
            "counted {} refusals, expected {n}",
            w.state.metrics.handshakes_refused(UNREGISTERED)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The red team's attack: a self-signed certificate with the customer's subject
/// (`CN=Customer One`) sends challenges naming the customer's license, again and again.
fn spoofed_customer_is_refused_at_the_handshake(w: &World) {
    let vtpm = Swtpm::start(names::VTPM);
    let lic = w.sell(perpetual(), &w.customer, None);
    w.check(&lic, &w.customer, &vtpm, Purpose::Load).unwrap();
    let guid = lic.body().license_guid;
    let audit_before = w.audit_all();
    let counted_before = w.state.metrics.handshakes_refused(UNREGISTERED);

    let spoof = World::keystore("CN=Customer One");
    assert_eq!(
        spoof.certificate().subject(),
        w.customer.certificate().subject()
    );
    const N: u64 = 40;
    let start = Instant::now();
    let outcomes: Vec<Outcome> = (0..N)
        .map(|_| attempt(w, client_config(w, &spoof), &challenge_request(guid)))
        .collect();
    let took = start.elapsed();
    // No attempt got an HTTP response.
    for o in &outcomes {
        assert!(!matches!(o, Outcome::Served(_)), "{o:?}");
    }
    // All but the few admitted provisionally (a reload from the store, at most
    // MISS_RELOAD_BURST at once, then one per second) are refused inside the handshake.
    let denied = outcomes
        .iter()
        .filter(|o| **o == Outcome::AccessDenied)
        .count() as u64;
    let provisional = u64::from(MISS_RELOAD_BURST) + took.as_secs() + 1;
    eprintln!("{N} spoofed attempts in {took:?}: {denied} refused in the handshake");
    assert!(denied + provisional >= N, "{outcomes:?}");
    // Each one counted, none audited.
    wait_for_refusals(w, counted_before + N);
    assert_eq!(
        w.state.metrics.handshakes_refused(UNREGISTERED),
        counted_before + N
    );
    assert_eq!(
        w.audit_all(),
        audit_before,
        "a refused handshake was audited"
    );
    assert!(w.metrics().contains(&format!(
        "ovsa_license_handshakes_refused_total{{reason=\"unregistered_client_certificate\"}} {}",
        counted_before + N
    )));
    // The real client with the spoofed keystore fails too, with no audit row.
    let e = w
        .check(&lic, &spoof, &vtpm, Purpose::Load)
        .expect_err("spoofed certificate served");
    eprintln!("the client with the spoofed certificate: {e}");
    assert!(
        !matches!(e, ovsa_client::ClientError::Refused { .. }),
        "{e}"
    );
    assert_eq!(w.audit_all(), audit_before);
    // The registered customer still attests.
    let r = w.check(&lic, &w.customer, &vtpm, Purpose::Renew).unwrap();
    assert_eq!(r.response.uses, 1);
    assert_eq!(w.audit(guid).len(), audit_before.len() + 2);
}

#[test]
fn spoofed_customer_certificate_is_refused_at_the_handshake_sqlite() {
    spoofed_customer_is_refused_at_the_handshake(&World::sqlite());
}

#[test]
fn spoofed_customer_certificate_is_refused_at_the_handshake_postgres() {
    let db = common::TestDb::postgres();
    let w = World::with_db(tempfile::tempdir().unwrap(), &db.url);
    spoofed_customer_is_refused_at_the_handshake(&w);
}

/// A license registered through another store handle (here: sold through the primary, checked
/// on a replica whose snapshot was loaded before the sale) works on its very first connection,
/// well before the periodic refresh.
fn added_license_works_on_its_first_connection(db_url: &str) {
    let mut w = World::with_db(tempfile::tempdir().unwrap(), db_url);
    let replica = w.replica(db_url);
    let vtpm = Swtpm::start(names::VTPM);
    let newcomer = World::keystore("CN=Newcomer");
    let lic = w.sell(perpetual(), &newcomer, None);
    let mut via_replica = lic.body().clone();
    via_replica.services[0].url = replica;
    let t = Instant::now();
    let r = w
        .check_body(&via_replica, &newcomer, &vtpm, Purpose::Load)
        .expect("first connection of a newly added license");
    assert_eq!(r.response.uses, 1);
    assert!(
        t.elapsed() < ovsa_license_server::tls::REFRESH_INTERVAL,
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_license_added_while_the_service_runs_is_accepted_on_its_first_connection_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("shared.db").display());
    added_license_works_on_its_first_connection(&url);
}

#[test]
fn a_license_added_while_the_service_runs_is_accepted_on_its_first_connection_postgres() {
    let db = common::TestDb::postgres();
    added_license_works_on_its_first_connection(&db.url);
}

/// A client that presents no certificate.
#[derive(Debug)]
struct NoCertificate;

impl rustls::client::ResolvesClientCert for NoCertificate {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

#[test]
fn metrics_are_served_only_to_operator_certificates() {
    let w = World::sqlite();
    w.sell(perpetual(), &w.customer, None);
    let get = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Anonymous: no client certificate, no handshake.
    let mut anonymous = client_config(&w, &w.customer);
    anonymous.client_auth_cert_resolver = Arc::new(NoCertificate);
    let o = attempt(&w, anonymous, get);
    assert!(!matches!(o, Outcome::Served(_)), "{o:?}");
    // An unregistered certificate: no handshake either.
    let o = attempt(&w, client_config(&w, &World::keystore("CN=Operator")), get);
    assert!(!matches!(o, Outcome::Served(_)), "{o:?}");
    // A registered customer: authenticated, but not an operator.
    let (status, body) = w.get_as(&w.customer, "/metrics");
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("client_certificate_mismatch") && body.contains("--metrics-client-cert"),
        "{body}"
    );
    assert!(!body.contains("ovsa_license_decisions"), "{body}");
    // The operator.
    let (status, body) = w.get_as(&w.operator, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("ovsa_license_handshakes_refused_total"),
        "{body}"
    );
    let (status, _) = w.get_as(&w.operator, "/healthz");
    assert_eq!(status, 200);
}
