//! Measured boot end to end: an OVMF guest's `ovsatool attest` evidence carries the firmware
//! event log; a TCB reference that `ovsatool tcb --event-log` built from a reference boot pins
//! PCRs 4, 7 and 9 by events; the Verifier accepts the reference guest and refuses the same
//! guest booted with a changed kernel command line (`event_not_allowed`, PCR 9).
//!
//! Needs the workspace's `ovsatool` next to this test binary (`cargo build -p ovsatool`);
//! skipped with a note otherwise, like `guest.rs`'s `pvh_guest_ovsatool_attest_verifies_on_host`.

mod common;

use common::run_tool;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ovsa_core::attest::{
    self, AkBinding, AttestError, EkTrust, Evidence, Expected, HostPolicy, MeasuredBootError,
    ReferenceValues, VerifierConfig,
};
use ovsa_core::envelope::Signed;
use ovsa_core::license::TcbReference;
use swtpm_tests::names;
use vm_tests::{BootOpts, Firmware, Guest, GuestOutput, GuestParts};

fn ovsatool() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent()?.parent()?.join("ovsatool");
    p.is_file().then_some(p)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn nonce(tag: u8) -> Vec<u8> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut n = t.to_be_bytes().to_vec();
    n.push(tag);
    n
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Boots an OVMF guest that runs `ovsatool attest` into `dir` (quoting PCRs 0-7 and 9) and
/// copies the firmware event log beside it. `append` goes on the kernel command line.
fn attest_in_guest(
    parts: &GuestParts,
    tool: &Path,
    share: &Path,
    dir: &Path,
    nonce: &[u8],
    append: &str,
) -> (Evidence, GuestOutput) {
    std::fs::create_dir_all(dir).unwrap();
    let mut opts = BootOpts::new(format!(
        "set -e\n{} attest --tcti device:/dev/tpmrm0 --nonce {} --out-dir {d} --pcrs 0,1,2,3,4,5,6,7,9\n\
         cp /sys/kernel/security/tpm0/binary_bios_measurements {d}/eventlog.bin\n",
        sh_quote(&tool.display().to_string()),
        hex::encode(nonce),
        d = sh_quote(&dir.display().to_string()),
    ));
    opts.firmware = Firmware::Ovmf;
    opts.share = Some(share.to_path_buf());
    opts.extra_append = append.to_string();
    opts.timeout = Duration::from_secs(400);
    let t0 = Instant::now();
    let out = Guest::boot_with(parts, &opts)
        .and_then(|g| g.wait())
        .unwrap_or_else(|e| panic!("OVMF guest: {e}"));
    println!(
        "OVMF guest ({append:?}): {}; wall {:.2} s",
        out.timings(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        out.status, 0,
        "guest command failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let ev: Evidence =
        serde_json::from_slice(&std::fs::read(dir.join("evidence.json")).unwrap()).unwrap();
    (ev, out)
}

/// The full Verifier (`attest::verify`) on the guest's evidence, with the AK taken as enrolled
/// (the credential challenge is covered elsewhere; this test is about the event log).
fn verify(ev: &Evidence, nonce: &[u8], reference: &ReferenceValues) -> Result<(), AttestError> {
    let config = VerifierConfig {
        vtpm_ek_trust: EkTrust::from_pem(&swtpm_tests::ca(names::VTPM_CA).chain_pem()).unwrap(),
        ..VerifierConfig::default()
    };
    let ak_name = attest::wire::parse_public(&ev.ak_public)
        .unwrap()
        .name()
        .unwrap();
    let ek_hash: [u8; 32] = attest::HashAlg::Sha256
        .digest(&ev.ek_cert)
        .try_into()
        .unwrap();
    attest::verify(
        &config,
        ev,
        &Expected {
            qualifying_data: nonce,
            reference,
            binding: AkBinding::Enrolled {
                ak_name: &ak_name,
                ek_cert_sha256: &ek_hash,
            },
            host: HostPolicy::default(),
            previous_clock: None,
            now: now(),
        },
    )
    .map(|_| ())
}

#[test]
fn event_pinned_tcb_accepts_the_reference_boot_and_refuses_a_changed_command_line() {
    let t0 = Instant::now();
    let Some(tool) = ovsatool() else {
        println!("ovsatool is not built next to this test; skipped (cargo build -p ovsatool)");
        return;
    };
    let parts = GuestParts::fetch().unwrap_or_else(|e| panic!("{e}"));
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-mb-")
        .tempdir()
        .unwrap();
    let s = share.path();

    // The reference boot: its evidence carries the event log the guest exposes.
    let n1 = nonce(1);
    let (ev1, _) = attest_in_guest(&parts, &tool, s, &s.join("ref"), &n1, "");
    let copied = std::fs::read(s.join("ref/eventlog.bin")).unwrap();
    assert_eq!(
        ev1.event_log.as_deref(),
        Some(copied.as_slice()),
        "ovsatool attest did not send the firmware event log"
    );

    // The ISV's reference from that boot: PCR values from its pcrs.bin, PCRs 4, 7, 9 by events.
    run_tool(
        &tool,
        s,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=ISV"],
    );
    let said = run_tool(
        &tool,
        s,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "ref.tcb",
            "--name",
            "ovmf-guest",
            "--vtpm-pcrs-file",
            "ref/pcrs.bin",
            "--event-log",
            "ref/eventlog.bin",
        ],
    );
    assert!(said.contains("PCRs 4,7,9 are pinned by events"), "{said}");
    let tcb = Signed::<TcbReference>::load(&s.join("ref.tcb")).unwrap();
    let tcb = tcb.body();
    assert_eq!(tcb.quoted_pcrs(), vec![0, 1, 2, 3, 4, 5, 6, 7, 9]);
    assert!(tcb.vtpm.get(9).is_none());
    let pinned = tcb.reference_values();
    println!(
        "event pins: {}",
        serde_json::to_string(tcb.events.as_ref().unwrap()).unwrap()
    );

    // Accepted: the reference boot's evidence under the event-pinned reference.
    verify(&ev1, &n1, &pinned).unwrap_or_else(|e| panic!("reference boot refused: {e}"));

    // The same guest with one more word on the kernel command line.
    let n2 = nonce(2);
    let (ev2, _) = attest_in_guest(&parts, &tool, s, &s.join("changed"), &n2, "ovsa.changed=1");
    match verify(&ev2, &n2, &pinned) {
        Err(AttestError::MeasuredBoot(MeasuredBootError::EventNotAllowed {
            pcr: 9,
            ref event_type,
            ..
        })) if event_type == "EV_EVENT_TAG" => {}
        other => panic!(
            "a changed command line must be refused with event_not_allowed in PCR 9: {other:?}"
        ),
    }
    // Its log is genuine (it replays to its quote): the refusal is the pin, not the replay.
    attest::EventLog::parse(ev2.event_log.as_deref().unwrap())
        .unwrap()
        .check_quoted(&ev2.pcrs)
        .unwrap();
    // A log edited to claim the reference command line no longer replays to the quote.
    let mut forged = ev2.clone();
    forged.event_log = ev1.event_log.clone();
    match verify(&forged, &n2, &pinned) {
        Err(AttestError::MeasuredBoot(MeasuredBootError::EventLogMismatch { pcr: 9 })) => {}
        other => panic!("a substituted log must be refused with event_log_mismatch: {other:?}"),
    }
    // Without its log, the pinned reference refuses it too.
    let mut bare = ev2.clone();
    bare.event_log = None;
    assert!(matches!(
        verify(&bare, &n2, &pinned),
        Err(AttestError::MeasuredBoot(
            MeasuredBootError::EventLogMissing { .. }
        ))
    ));
    println!(
        "measured_boot test wall time: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}
