//! The deadline on the whole load (`load_timeout_seconds`): a TPM that accepts the connection but
//! never answers, and a license service that accepts TCP but never answers TLS, each end the load
//! with `MODEL_LOAD_ERROR` within the configured time, with the host's buffers untouched, the
//! version not blacklisted, and no check thread left behind once the peer goes away (one test
//! per binary, so that the process's thread list is this test's own).

mod common_lib;
mod plugin;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovsa_test_support::runtime_fixture::{eventually, Fixture, OPTIONS};
use plugin::{Plugin, MODEL_LOAD_ERROR, MODEL_TYPE_IR, OK};

/// A loopback listener that accepts every connection, reads whatever comes and never answers.
/// Dropping it closes every accepted connection.
struct Silent {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Silent {
    fn on(listener: TcpListener) -> Silent {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (held.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let reader = stream.try_clone().unwrap();
                        h.lock().unwrap().push(stream);
                        std::thread::spawn(move || {
                            let mut reader = reader;
                            let mut buf = [0u8; 4096];
                            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Silent { port, held, stop }
    }

    fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Two silent listeners on consecutive ports (a swtpm TCTI uses PORT and PORT+1).
fn silent_tpm() -> (Silent, Silent) {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.1", port.wrapping_add(1))) {
            return (Silent::on(a), Silent::on(b));
        }
    }
    panic!("no two consecutive free loopback ports");
}

/// Threads of this process named `ovsa-check` (the loader's check threads).
fn check_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "ovsa-check")
        })
        .count()
}

fn assert_deadline(l: &plugin::Loaded, took: Duration, needle: &str) {
    assert_eq!(l.status, MODEL_LOAD_ERROR, "{}", l.error);
    assert!(
        l.error
            .contains("not finished within load_timeout_seconds (2 s)")
            && l.error.contains(needle),
        "{}",
        l.error
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(l.requests.is_empty(), "no buffer handed out");
}

#[test]
fn a_tpm_or_service_that_never_answers_ends_the_load_at_the_deadline() {
    let f = Fixture::new();
    let (base, _) = f.good_model("models/m", 1);

    // A TPM endpoint that accepts and never answers.
    let (tpm, tpm_ctl) = silent_tpm();
    let config = f.path("silent-tpm.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"tcti":"swtpm:host=127.0.0.1,port={}","load_timeout_seconds":2,"log_level":"error"}}"#,
            tpm.port
        ),
    )
    .unwrap();
    let plugin = Plugin::new(Some(config.to_str().unwrap())).unwrap();
    let t = Instant::now();
    let l = plugin.load("m", &base, 1, OPTIONS);
    assert_deadline(&l, t.elapsed(), "the TPM 'swtpm:host=127.0.0.1");
    assert!(
        tpm.connections() + tpm_ctl.connections() > 0,
        "the TPM was reached"
    );
    // Not a license refusal: not blacklisted; a second load ends at its deadline as well (the
    // first check still waits for the TPM, and holds it).
    assert_eq!(plugin.status("m", 1), OK);
    let t = Instant::now();
    let l = plugin.load("m", &base, 1, OPTIONS);
    assert_deadline(&l, t.elapsed(), "TPM");
    // The TPM goes away: the stuck checks end, nothing is left behind.
    drop((tpm, tpm_ctl));
    assert!(
        eventually(10, || check_threads() == 0),
        "{} check threads left",
        check_threads()
    );
    drop(plugin);

    // A license service that accepts TCP and never answers the TLS handshake (the per-operation
    // service timeout is longer than the deadline: the deadline wins).
    let service = Silent::on(TcpListener::bind("127.0.0.1:0").unwrap());
    let plugin = Plugin::new(Some(&f.config(
        "silent-service.json",
        &format!(
            r#""service_url":"https://127.0.0.1:{}","service_timeout_seconds":60,"load_timeout_seconds":2"#,
            service.port
        ),
    )))
    .unwrap();
    let t = Instant::now();
    let l = plugin.load("m", &base, 1, OPTIONS);
    assert_deadline(&l, t.elapsed(), "the license service");
    assert_eq!(plugin.status("m", 1), OK);
    // The check gave up by itself (its socket waits were cut to the deadline).
    assert!(
        eventually(3, || check_threads() == 0),
        "{} check threads left",
        check_threads()
    );
    drop(service);

    // The same loader settings with the real service: loads.
    let plugin = Plugin::new(Some(&f.config("ok.json", r#""load_timeout_seconds":2"#))).unwrap();
    let l = plugin.load("m", &base, 1, OPTIONS);
    assert_eq!(l.status, MODEL_TYPE_IR, "{}", l.error);
}
