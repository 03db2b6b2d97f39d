//! The Attester's TPM traffic, seen on the wire: a proxy between tpm2-tss and swtpm counts
//! every command (and its command code), so these tests check that `Tpm::command_count` is
//! exact, that a license check needs few commands, that no HMAC session is started any more
//! (only the EK's policy session), that the AK comes back from its saved context (and from its
//! blob once the TPM refuses that context), that the combined `activate_and_quote` works, and
//! that no object or session is left loaded (swtpm: 3 object slots, no resource manager).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use ovsa_core::attest::{self, HashAlg};
use ovsa_tpm::{AkAlg, EkKind, Tpm};
use swtpm_tests::{names, PortPair, Swtpm};

const TPM_CC_START_AUTH_SESSION: u32 = 0x0176;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0165;
const TPM_CC_LOAD: u32 = 0x0157;
const TPM_CC_POLICY_SECRET: u32 = 0x0151;
const TPM_CC_ACTIVATE_CREDENTIAL: u32 = 0x0147;
const TPM_CC_QUOTE: u32 = 0x0158;
const TPM_CC_PCR_READ: u32 = 0x017e;
const TPM_CC_READ_PUBLIC: u32 = 0x0173;
const TPM_CC_GET_CAPABILITY: u32 = 0x017a;
const TPM_CC_CONTEXT_SAVE: u32 = 0x0162;
const TPM_CC_CONTEXT_LOAD: u32 = 0x0161;

/// Forwards the swtpm server port (counting commands) and the control port (plain).
struct Proxy {
    port: u16,
    commands: Arc<Mutex<Vec<u32>>>,
    responses: Arc<Mutex<Vec<u32>>>,
}

/// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: tpm2-tss resubmits the same command itself
/// (swtpm answers an occasional ActivateCredential or Quote with TPM_RC_RETRY).
fn resubmitted(rc: u32) -> bool {
    matches!(rc, 0x922 | 0x908 | 0x90a)
}

/// Forwards responses, recording their response codes before the client sees them.
fn pump_responses(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u32>>>) {
    loop {
        let mut hdr = [0u8; 10];
        if from.read_exact(&mut hdr).is_err() {
            break;
        }
        let size = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]) as usize;
        let rc = u32::from_be_bytes([hdr[6], hdr[7], hdr[8], hdr[9]]);
        let mut rsp = vec![0u8; size.max(10)];
        rsp[..10].copy_from_slice(&hdr);
        if from.read_exact(&mut rsp[10..]).is_err() {
            break;
        }
        log.lock().unwrap().push(rc);
        if to.write_all(&rsp).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn pump_commands(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u32>>>) {
    loop {
        let mut hdr = [0u8; 10];
        if from.read_exact(&mut hdr).is_err() {
            break;
        }
        let size = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]) as usize;
        let cc = u32::from_be_bytes([hdr[6], hdr[7], hdr[8], hdr[9]]);
        let mut cmd = vec![0u8; size.max(10)];
        cmd[..10].copy_from_slice(&hdr);
        if from.read_exact(&mut cmd[10..]).is_err() {
            break;
        }
        log.lock().unwrap().push(cc);
        // One write: swtpm takes a command from a single read.
        if to.write_all(&cmd).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

type Logs = (Arc<Mutex<Vec<u32>>>, Arc<Mutex<Vec<u32>>>);

fn serve(listener: TcpListener, target: u16, logs: Option<Logs>) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            match logs.clone() {
                Some((commands, responses)) => {
                    std::thread::spawn(move || pump_responses(s2, c2, responses));
                    std::thread::spawn(move || pump_commands(client, server, commands));
                }
                None => {
                    std::thread::spawn(move || pump(s2, c2));
                    std::thread::spawn(move || pump(client, server));
                }
            }
        }
    });
}

impl Proxy {
    fn start(tpm: &Swtpm) -> Proxy {
        // The swtpm TCTI needs a consecutive pair (P, P+1); the harness reserves one below the
        // ephemeral range, where a busy machine's TIME_WAIT sockets cannot collide with it.
        let PortPair { data, ctrl } = PortPair::reserve();
        let port = data.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(Mutex::new(Vec::new()));
        serve(
            data,
            tpm.port(),
            Some((commands.clone(), responses.clone())),
        );
        serve(ctrl, tpm.port() + 1, None);
        Proxy {
            port,
            commands,
            responses,
        }
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Commands answered so far, without those the TSS had to resubmit.
    fn answered(&self) -> Vec<u32> {
        let commands = self.commands.lock().unwrap();
        let responses = self.responses.lock().unwrap();
        commands
            .iter()
            .zip(responses.iter())
            .filter(|(_, &rc)| !resubmitted(rc))
            .map(|(&cc, _)| cc)
            .collect()
    }

    fn count(&self) -> usize {
        self.answered().len()
    }

    fn since(&self, from: usize) -> Vec<u32> {
        self.answered()[from..].to_vec()
    }
}

/// Runs `f` and returns the commands it sent, checking `command_count` against the wire.
fn measured<T>(proxy: &Proxy, tpm: &mut Tpm, f: impl FnOnce(&mut Tpm) -> T) -> (T, Vec<u32>) {
    let (w0, c0) = (proxy.count(), tpm.command_count());
    let out = f(tpm);
    let sent = proxy.since(w0);
    assert_eq!(
        tpm.command_count() - c0,
        sent.len() as u64,
        "command_count disagrees with the wire: {sent:x?}"
    );
    (out, sent)
}

fn count(cmds: &[u32], cc: u32) -> usize {
    cmds.iter().filter(|&&c| c == cc).count()
}

/// No transient object and no session left in the TPM.
fn assert_nothing_loaded(tcti: &str) {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::structures::CapabilityData;
    let mut ctx = tss_esapi::Context::new(ovsa_tpm::parse_tcti(Some(tcti)).unwrap().1).unwrap();
    for (first, what) in [
        (0x8000_0000u32, "transient objects"),
        (0x0200_0000, "loaded sessions"),
        (0x0300_0000, "saved sessions"),
    ] {
        let (data, _) = ctx
            .get_capability(CapabilityType::Handles, first, 64)
            .unwrap();
        match data {
            CapabilityData::Handles(h) => assert!(h.is_empty(), "{what} left: {h:?}"),
            other => panic!("{other:?}"),
        }
    }
}

const PCRS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

#[test]
fn license_check_commands_on_the_wire() {
    let s = Swtpm::start(names::VTPM);
    let proxy = Proxy::start(&s);
    let mut tpm = Tpm::open(Some(&proxy.tcti())).unwrap();
    assert_eq!(proxy.count() as u64, tpm.command_count(), "open");

    let (ek, sent) = measured(&proxy, &mut tpm, |t| {
        t.ek_certificate(EkKind::Rsa2048).unwrap()
    });
    // NV_ReadPublic x2, GetCapability (NV buffer size, once), NV_Read per 1024 bytes.
    assert_eq!(sent.len(), 3 + ek.len().div_ceil(1024), "{sent:x?}");
    assert_eq!(count(&sent, TPM_CC_START_AUTH_SESSION), 0, "{sent:x?}");
    let (_, sent) = measured(&proxy, &mut tpm, |t| {
        t.ek_certificate(EkKind::Rsa2048).unwrap()
    });
    assert_eq!(sent.len(), 2 + ek.len().div_ceil(1024), "{sent:x?}");

    let (ak, _) = measured(&proxy, &mut tpm, |t| {
        t.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256).unwrap()
    });
    let spki = attest::ek_spki(&ek).unwrap();

    for round in 0..3u8 {
        // The separate calls (what the client flow makes today).
        let secret = [round; 32];
        let ch = attest::make_credential_rsa(&spki, &ak.name().unwrap(), &secret).unwrap();
        let (got, act) = measured(&proxy, &mut tpm, |t| {
            t.activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
                .unwrap()
        });
        assert_eq!(&got[..], &secret[..]);
        let qd = [round ^ 0x55; 32];
        let (q, quote) = measured(&proxy, &mut tpm, |t| {
            t.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap()
        });
        attest::verify_quote_only(&ak.public, &q.attest, &q.signature, &q.pcrs, &qd).unwrap();
        // Persistent EK known to the connection after create_ak: no ReadPublic any more. The
        // first operation loads the AK from its blob under the EK policy and saves its
        // context; later ones bring it back with one ContextLoad. Every operation flushes it.
        let first_activation = [
            TPM_CC_START_AUTH_SESSION,
            TPM_CC_POLICY_SECRET,
            TPM_CC_LOAD,
            TPM_CC_CONTEXT_SAVE,
            TPM_CC_POLICY_SECRET,
            TPM_CC_ACTIVATE_CREDENTIAL,
            TPM_CC_FLUSH_CONTEXT,
        ];
        let activation = [
            TPM_CC_CONTEXT_LOAD,
            TPM_CC_START_AUTH_SESSION,
            TPM_CC_POLICY_SECRET,
            TPM_CC_ACTIVATE_CREDENTIAL,
            TPM_CC_FLUSH_CONTEXT,
        ];
        if round == 0 {
            assert_eq!(act, first_activation, "activate: {act:x?}");
        } else {
            assert_eq!(act, activation, "activate: {act:x?}");
        }
        // The first PCR operation of a connection asks the TPM for its PCR banks (once), so a
        // missing bank is a clear error before anything is loaded.
        let quote_cmds = [
            TPM_CC_CONTEXT_LOAD,
            TPM_CC_PCR_READ,
            TPM_CC_PCR_READ,
            TPM_CC_QUOTE,
            TPM_CC_FLUSH_CONTEXT,
        ];
        if round == 0 {
            assert_eq!(quote[0], TPM_CC_GET_CAPABILITY, "quote: {quote:x?}");
            assert_eq!(quote[1..], quote_cmds, "quote: {quote:x?}");
        } else {
            assert_eq!(quote, quote_cmds, "quote: {quote:x?}");
        }

        // The combined call: one AK load for both.
        let secret = [round ^ 0xaa; 32];
        let ch = attest::make_credential_rsa(&spki, &ak.name().unwrap(), &secret).unwrap();
        let ((got, q), both) = measured(&proxy, &mut tpm, |t| {
            t.activate_and_quote(
                &ak,
                &ch.id_object,
                &ch.encrypted_secret,
                &qd,
                HashAlg::Sha256,
                &PCRS,
            )
            .unwrap()
        });
        assert_eq!(&got[..], &secret[..]);
        attest::verify_quote_only(&ak.public, &q.attest, &q.signature, &q.pcrs, &qd).unwrap();
        assert_eq!(
            both,
            [
                TPM_CC_CONTEXT_LOAD,
                TPM_CC_START_AUTH_SESSION,
                TPM_CC_POLICY_SECRET,
                TPM_CC_ACTIVATE_CREDENTIAL,
                TPM_CC_PCR_READ,
                TPM_CC_PCR_READ,
                TPM_CC_QUOTE,
                TPM_CC_FLUSH_CONTEXT
            ],
            "activate_and_quote: {both:x?}"
        );
        assert_eq!(count(&both, TPM_CC_READ_PUBLIC), 0, "{both:x?}");
        assert_eq!(count(&both, TPM_CC_GET_CAPABILITY), 0, "{both:x?}");
    }

    // Host-evidence style NV reads and PCR operations without sessions.
    let (_, sent) = measured(&proxy, &mut tpm, |t| {
        t.read_pcrs(HashAlg::Sha256, &[16]).unwrap();
        t.pcr_extend(16, HashAlg::Sha256, &[7; 32]).unwrap();
    });
    assert_eq!(sent.len(), 2, "{sent:x?}");
    drop(tpm);
    assert_nothing_loaded(&s.tcti());
}

#[test]
fn failures_flush_everything_and_count_exactly() {
    let s = Swtpm::start(names::VTPM);
    let proxy = Proxy::start(&s);
    let mut tpm = Tpm::open(Some(&proxy.tcti())).unwrap();
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::Rsa2048).unwrap();
    let spki = attest::ek_spki(&ek).unwrap();
    for _ in 0..5 {
        // A credential made for another AK Name: ActivateCredential fails; the policy session
        // and the AK are flushed anyway.
        let ch = attest::make_credential_rsa(&spki, &[0, 0x0b, 1, 2, 3], &[1; 32]).unwrap();
        let (r, sent) = measured(&proxy, &mut tpm, |t| {
            t.activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
        });
        assert!(r.is_err());
        assert_eq!(count(&sent, TPM_CC_FLUSH_CONTEXT), 2, "{sent:x?}");
        let (r, sent) = measured(&proxy, &mut tpm, |t| {
            t.activate_and_quote(
                &ak,
                &ch.id_object,
                &ch.encrypted_secret,
                &[0; 32],
                HashAlg::Sha256,
                &PCRS,
            )
        });
        assert!(r.is_err());
        assert_eq!(
            count(&sent, TPM_CC_QUOTE),
            0,
            "no quote after a failed activation"
        );
        // A corrupted AK blob: the Load fails, the policy session is flushed.
        let mut bad = ak.clone();
        let n = bad.private.len();
        bad.private[n - 1] ^= 1;
        let (r, _) = measured(&proxy, &mut tpm, |t| {
            t.quote(&bad, &[0; 32], HashAlg::Sha256, &PCRS)
        });
        assert!(r.is_err());
    }
    // Still works afterwards, on the same connection.
    let ch = attest::make_credential_rsa(&spki, &ak.name().unwrap(), &[9; 32]).unwrap();
    let (got, _) = measured(&proxy, &mut tpm, |t| {
        t.activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
            .unwrap()
    });
    assert_eq!(&got[..], &[9; 32]);
    drop(tpm);
    assert_nothing_loaded(&s.tcti());
}

#[test]
fn many_checks_on_one_connection_leave_nothing_loaded() {
    // 3 object slots in swtpm: a leaked AK or session would fail within a few rounds.
    let s = Swtpm::start(names::VTPM);
    let mut tpm = s.open();
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256).unwrap();
    let spki = attest::ek_spki(&ek).unwrap();
    for i in 0..40u8 {
        let ch = attest::make_credential_rsa(&spki, &ak.name().unwrap(), &[i; 32]).unwrap();
        if i % 2 == 0 {
            let got = tpm
                .activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
                .unwrap();
            assert_eq!(&got[..], &[i; 32]);
            tpm.quote(&ak, &[i; 32], HashAlg::Sha256, &PCRS).unwrap();
        } else {
            let (got, _) = tpm
                .activate_and_quote(
                    &ak,
                    &ch.id_object,
                    &ch.encrypted_secret,
                    &[i; 32],
                    HashAlg::Sha256,
                    &PCRS,
                )
                .unwrap();
            assert_eq!(&got[..], &[i; 32]);
        }
    }
    drop(tpm);
    assert_nothing_loaded(&s.tcti());
}

#[test]
fn saved_ak_context_refused_after_tpm_reset_falls_back_to_load() {
    use tss_esapi::constants::StartupType;
    let s = Swtpm::start(names::VTPM);
    let proxy = Proxy::start(&s);
    let mut tpm = Tpm::open(Some(&proxy.tcti())).unwrap();
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256).unwrap();
    let spki = attest::ek_spki(&ek).unwrap();
    let qd = [3u8; 32];
    let (_, sent) = measured(&proxy, &mut tpm, |t| {
        t.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap()
    });
    assert_eq!(count(&sent, TPM_CC_CONTEXT_SAVE), 1, "{sent:x?}");
    let (_, sent) = measured(&proxy, &mut tpm, |t| {
        t.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap()
    });
    assert_eq!(count(&sent, TPM_CC_LOAD), 0, "{sent:x?}");
    // Power-cycle the TPM (swtpm CMD_INIT) and start it with CLEAR: a TPM Reset.
    let ok = std::process::Command::new("swtpm_ioctl")
        .args(["--tcp", &format!("127.0.0.1:{}", s.port() + 1), "-i"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "swtpm_ioctl -i");
    tpm.context().startup(StartupType::Clear).unwrap();
    // The saved context is refused; the AK is loaded from its blob again (and saved anew).
    let (q, sent) = measured(&proxy, &mut tpm, |t| {
        t.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap()
    });
    attest::verify_quote_only(&ak.public, &q.attest, &q.signature, &q.pcrs, &qd).unwrap();
    assert_eq!(count(&sent, TPM_CC_CONTEXT_LOAD), 1, "{sent:x?}");
    assert_eq!(count(&sent, TPM_CC_LOAD), 1, "{sent:x?}");
    assert_eq!(count(&sent, TPM_CC_CONTEXT_SAVE), 1, "{sent:x?}");
    let ch = attest::make_credential_rsa(&spki, &ak.name().unwrap(), &[5; 32]).unwrap();
    let (got, sent) = measured(&proxy, &mut tpm, |t| {
        t.activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
            .unwrap()
    });
    assert_eq!(&got[..], &[5; 32]);
    assert_eq!(count(&sent, TPM_CC_LOAD), 0, "{sent:x?}");
    // Another AK on the same connection replaces the saved context; both keep working.
    let ak2 = tpm.create_ak(EkKind::Rsa2048, AkAlg::Rsa2048).unwrap();
    for a in [&ak2, &ak, &ak2] {
        let q = tpm.quote(a, &qd, HashAlg::Sha256, &PCRS).unwrap();
        attest::verify_quote_only(&a.public, &q.attest, &q.signature, &q.pcrs, &qd).unwrap();
    }
    drop(tpm);
    assert_nothing_loaded(&s.tcti());
}

/// The swtpm templates have only a sha256 bank (swtpm_setup `active_pcr_banks = sha256`). A
/// quote, PCR read or host quote of the sha1 bank used to make tss-esapi's PCR read loop spin
/// forever (TPM2_PCR_Read answered with an empty selection, asked again, ...). Now: a typed
/// error naming the bank and the TPM's banks, before any object is loaded, in a few commands.
#[test]
fn missing_pcr_bank_is_a_typed_error_and_leaves_nothing_loaded() {
    use ovsa_tpm::TpmError;
    use std::time::{Duration, Instant};

    let s = Swtpm::start(names::VTPM);
    let proxy = Proxy::start(&s);
    let mut tpm = Tpm::open(Some(&proxy.tcti())).unwrap();
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256).unwrap();
    let spki = attest::ek_spki(&ek).unwrap();
    let banks = tpm.pcr_banks().unwrap();
    assert_eq!(banks, [(HashAlg::Sha256, (0..24).collect::<Vec<u8>>())]);

    let is_missing_sha1 = |e: &TpmError| {
        let msg = e.to_string();
        assert!(
            msg.contains("sha1") && msg.contains("sha256"),
            "the message names the bank and the TPM's banks: {msg}"
        );
        matches!(e, TpmError::PcrBankNotAllocated { bank: HashAlg::Sha1, available }
            if available == &[HashAlg::Sha256])
    };
    let t0 = Instant::now();
    let (r, sent) = measured(&proxy, &mut tpm, |t| {
        t.quote(&ak, &[1; 32], HashAlg::Sha1, &PCRS)
    });
    assert!(is_missing_sha1(&r.unwrap_err()));
    assert!(sent.is_empty(), "banks known: no command at all: {sent:x?}");

    let ch = attest::make_credential_rsa(&spki, &ak.name().unwrap(), &[3; 32]).unwrap();
    let (r, sent) = measured(&proxy, &mut tpm, |t| {
        t.activate_and_quote(
            &ak,
            &ch.id_object,
            &ch.encrypted_secret,
            &[1; 32],
            HashAlg::Sha1,
            &PCRS,
        )
    });
    assert!(is_missing_sha1(&r.unwrap_err()));
    assert!(sent.is_empty(), "{sent:x?}");

    // A fresh connection asks the TPM once (GetCapability), then reads nothing.
    let mut fresh = Tpm::open(Some(&proxy.tcti())).unwrap();
    let (r, sent) = measured(&proxy, &mut fresh, |t| t.read_pcrs(HashAlg::Sha1, &PCRS));
    assert!(is_missing_sha1(&r.unwrap_err()));
    assert_eq!(sent, [TPM_CC_GET_CAPABILITY], "{sent:x?}");
    // A PCR the bank does not have (PCR_Read is not even tried).
    let r = fresh.read_pcrs(HashAlg::Sha384, &[0]);
    assert!(matches!(
        r,
        Err(TpmError::PcrBankNotAllocated {
            bank: HashAlg::Sha384,
            ..
        })
    ));

    // The host quote path (a host TPM without the bank).
    let opts = ovsa_tpm::host::HostQuoteOptions {
        bank: HashAlg::Sha1,
        host_ak: Some(ak.clone()),
        ..Default::default()
    };
    let r = ovsa_tpm::host::host_quote(&mut tpm, &ek, &opts);
    assert!(is_missing_sha1(&r.unwrap_err()));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );

    // The sha256 bank still works on the same connections.
    tpm.quote(&ak, &[1; 32], HashAlg::Sha256, &PCRS).unwrap();
    fresh.read_pcrs(HashAlg::Sha256, &PCRS).unwrap();
    drop((tpm, fresh));
    assert_nothing_loaded(&s.tcti());
}

/// A TPM that answers TPM2_PCR_Read without the PCRs asked for (an empty selection, what a
/// missing bank looks like on the wire) must not make the read loop spin: a proxy rewrites
/// every PCR_Read response so; the read stops after a bounded number of calls with a typed
/// error, and the quote that needed it flushes the AK.
#[test]
fn pcr_read_without_progress_is_bounded() {
    use ovsa_tpm::TpmError;
    use std::time::{Duration, Instant};

    let s = Swtpm::start(names::VTPM);
    let (port, pcr_reads) = empty_pcr_read_proxy(&s);
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let mut tpm = Tpm::open(Some(&tcti)).unwrap();
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256).unwrap();
    let t0 = Instant::now();
    match tpm.read_pcrs(HashAlg::Sha256, &PCRS) {
        Err(TpmError::PcrReadIncomplete {
            bank: HashAlg::Sha256,
            missing,
            calls: 1,
        }) => assert_eq!(missing, PCRS),
        other => panic!("{other:?}"),
    }
    let err = tpm
        .quote(&ak, &[0; 32], HashAlg::Sha256, &PCRS)
        .unwrap_err();
    assert!(matches!(err, TpmError::PcrReadIncomplete { .. }), "{err:?}");
    assert!(
        err.to_string().contains("PCR(s) 0-9 of its sha256 bank"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(*pcr_reads.lock().unwrap(), 2, "one PCR_Read per operation");
    drop(tpm);
    assert_nothing_loaded(&s.tcti());
}

/// A proxy in front of `tpm` that answers every TPM2_PCR_Read itself with an empty selection
/// and no digests (and counts them); everything else is forwarded.
fn empty_pcr_read_proxy(tpm: &Swtpm) -> (u16, Arc<Mutex<u32>>) {
    let reads = Arc::new(Mutex::new(0u32));
    for _ in 0..200 {
        let data = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = data.local_addr().unwrap().port();
        let Some(ctrl_port) = port.checked_add(1) else {
            continue;
        };
        let Ok(ctrl) = TcpListener::bind(("127.0.0.1", ctrl_port)) else {
            continue;
        };
        serve(ctrl, tpm.port() + 1, None);
        let (target, counter) = (tpm.port(), reads.clone());
        std::thread::spawn(move || {
            for client in data.incoming() {
                let Ok(mut client) = client else { break };
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let counter = counter.clone();
                std::thread::spawn(move || loop {
                    let mut hdr = [0u8; 10];
                    if client.read_exact(&mut hdr).is_err() {
                        break;
                    }
                    let size = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]) as usize;
                    let cc = u32::from_be_bytes([hdr[6], hdr[7], hdr[8], hdr[9]]);
                    let mut cmd = vec![0u8; size.max(10)];
                    cmd[..10].copy_from_slice(&hdr);
                    if client.read_exact(&mut cmd[10..]).is_err() {
                        break;
                    }
                    if cc == TPM_CC_PCR_READ {
                        *counter.lock().unwrap() += 1;
                        // TPM_ST_NO_SESSIONS, size 22, TPM_RC_SUCCESS, pcrUpdateCounter,
                        // TPML_PCR_SELECTION{count 0}, TPML_DIGEST{count 0}.
                        let mut rsp = vec![0x80, 0x01, 0, 0, 0, 22, 0, 0, 0, 0];
                        rsp.extend_from_slice(&[0; 12]);
                        if client.write_all(&rsp).is_err() {
                            break;
                        }
                        continue;
                    }
                    let mut rh = [0u8; 10];
                    if server.write_all(&cmd).is_err() || server.read_exact(&mut rh).is_err() {
                        break;
                    }
                    let size = u32::from_be_bytes([rh[2], rh[3], rh[4], rh[5]]) as usize;
                    let mut rsp = vec![0u8; size.max(10)];
                    rsp[..10].copy_from_slice(&rh);
                    if server.read_exact(&mut rsp[10..]).is_err() || client.write_all(&rsp).is_err()
                    {
                        break;
                    }
                });
            }
        });
        return (port, reads);
    }
    panic!("no free port pair for the proxy");
}
