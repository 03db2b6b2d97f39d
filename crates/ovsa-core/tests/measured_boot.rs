//! The Verifier's measured-boot checks on real OVMF event logs (tests/data/README.md says how
//! they were made): replay to the quoted PCRs, tampered logs, event pins in a signed TCB
//! reference, the IMA list's replay to PCR 10, and the size bounds.

use ovsa_core::attest::eventlog::{
    EventLog, EventLogBuilder, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EVENT_TAG,
};
use ovsa_core::attest::ima::ImaLogBuilder;
use ovsa_core::attest::measured_boot::{check, EventPins, MAX_EVENT_LOG_BYTES, MAX_IMA_LOG_BYTES};
use ovsa_core::attest::{Evidence, HashAlg, ImaError, MeasuredBootError, PcrSet};
use ovsa_core::license::tcb::parse_tpm2_pcrread;
use ovsa_core::license::{PcrBank, TcbReference};

const EV_EFI_ACTION: u32 = 0x8000_0007;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The reference boot: its log and the PCRs read in the same boot.
fn reference() -> (Vec<u8>, PcrSet) {
    (data("ovmf-eventlog.bin"), pcrs("ovmf-pcrs.txt"))
}

/// The same guest booted with one more word on the kernel command line.
fn changed_cmdline() -> (Vec<u8>, PcrSet) {
    (
        data("ovmf-eventlog-cmdline.bin"),
        pcrs("ovmf-pcrs-cmdline.txt"),
    )
}

fn pcrs(name: &str) -> PcrSet {
    let text = String::from_utf8(data(name)).unwrap();
    parse_tpm2_pcrread(&text).unwrap()[0].to_attest()
}

/// Rebuilds a parsed log event by event, letting `edit` change, drop (None) or keep each.
fn rebuild(
    log: &EventLog,
    edit: impl Fn(usize, u32, u32, Vec<u8>) -> Option<(u32, Vec<u8>)>,
) -> Vec<u8> {
    let mut b = EventLogBuilder::new(&[HashAlg::Sha256]);
    for (i, e) in log.events.iter().enumerate() {
        let d = e.digest(HashAlg::Sha256).unwrap().to_vec();
        if let Some((ty, d)) = edit(i, e.pcr, e.event_type, d) {
            b = b.event(e.pcr, ty, &[(HashAlg::Sha256, d)], &e.data);
        }
    }
    b.build()
}

fn pins_from(logs: &[&[u8]], pcrs: &[u8]) -> EventPins {
    let mut pins = EventPins::new(HashAlg::Sha256);
    for l in logs {
        pins.allow_log(&EventLog::parse(l).unwrap(), pcrs).unwrap();
    }
    pins.validate().unwrap();
    pins
}

#[test]
fn a_real_ovmf_log_replays_to_the_pcrs_of_its_boot() {
    let (log, quoted) = reference();
    let parsed = EventLog::parse(&log).unwrap();
    assert_eq!(parsed.events.len(), 24, "25 events with the Spec ID header");
    let report = check(&quoted, Some(&log), None, None).unwrap();
    // PCR 8 is zero and not in the log; every other quoted PCR is extended by it.
    assert_eq!(report.replayed, vec![0, 1, 2, 3, 4, 5, 6, 7, 9]);
    // The initrd event's digest is the initrd file's sha256 (the harness's deterministic image).
    let initrd = parsed
        .events_for(9)
        .find(|e| e.data.ends_with(b"Linux initrd\0"))
        .unwrap();
    assert_eq!(
        hex::encode(initrd.digest(HashAlg::Sha256).unwrap()),
        "b111a30ebfab07b0dd6266074b02abd6badcd0b99a5f4f5e13958136369e2d9d"
    );
    // The other boot's log replays to its own PCRs too.
    let (log2, quoted2) = changed_cmdline();
    check(&quoted2, Some(&log2), None, None).unwrap();
}

#[test]
fn tampered_logs_are_refused_naming_the_pcr() {
    let (log, quoted) = reference();
    let parsed = EventLog::parse(&log).unwrap();
    let kernel = parsed
        .events
        .iter()
        .position(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .unwrap();
    // Rebuilding without edits gives the same bytes (the builder writes the same format).
    assert_eq!(rebuild(&parsed, |_, _, t, d| Some((t, d))), log);
    // A changed event: the kernel's digest replaced (another kernel claimed).
    let changed = rebuild(&parsed, |i, _, t, d| {
        Some((t, if i == kernel { vec![0x42; 32] } else { d }))
    });
    assert_eq!(
        check(&quoted, Some(&changed), None, None),
        Err(MeasuredBootError::EventLogMismatch { pcr: 4 })
    );
    // A dropped event: the command line's event removed from PCR 9.
    let dropped = rebuild(&parsed, |_, pcr, t, d| {
        (!(pcr == 9 && t == EV_EVENT_TAG && d[0] == 0x7c)).then_some((t, d))
    });
    assert_eq!(EventLog::parse(&dropped).unwrap().events.len(), 23);
    assert_eq!(
        check(&quoted, Some(&dropped), None, None),
        Err(MeasuredBootError::EventLogMismatch { pcr: 9 })
    );
    // A log of another boot (other PCR values): the changed command line's log with the
    // reference boot's quote.
    let (other, _) = changed_cmdline();
    assert_eq!(
        check(&quoted, Some(&other), None, None),
        Err(MeasuredBootError::EventLogMismatch { pcr: 9 })
    );
    // A truncated log that ends inside an event does not parse.
    assert!(matches!(
        check(&quoted, Some(&log[..log.len() - 3]), None, None),
        Err(MeasuredBootError::EventLogMalformed(_))
    ));
    // A log without the quoted bank.
    let sha1 = EventLogBuilder::new(&[HashAlg::Sha1])
        .measure(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"k", b"")
        .build();
    assert_eq!(
        check(&quoted, Some(&sha1), None, None),
        Err(MeasuredBootError::EventLogBank(HashAlg::Sha256))
    );
}

#[test]
fn event_pins_allow_the_reference_events_and_refuse_anything_else() {
    let (log, quoted) = reference();
    let (log2, quoted2) = changed_cmdline();
    let pins = pins_from(&[&log], &[4, 7, 9]);
    let report = check(&quoted, Some(&log), None, Some(&pins)).unwrap();
    assert_eq!(report.pinned, vec![4, 7, 9]);

    // The changed command line: its log replays to its own quote, but the command-line event
    // is not one the reference allows.
    match check(&quoted2, Some(&log2), None, Some(&pins)) {
        Err(MeasuredBootError::EventNotAllowed {
            pcr: 9,
            event_type,
            digest,
            ..
        }) => {
            assert_eq!(event_type, "EV_EVENT_TAG");
            assert_eq!(
                digest,
                "412205e8a6fc49c903cf6a9bf8aac366b09c822d67433806942915b0101cd2d1"
            );
        }
        other => panic!("{other:?}"),
    }
    // Both boots as references (two allowed command lines): both accepted.
    let both = pins_from(&[&log, &log2], &[4, 7, 9]);
    check(&quoted, Some(&log), None, Some(&both)).unwrap();
    check(&quoted2, Some(&log2), None, Some(&both)).unwrap();

    // Another kernel (a log and quote consistent with each other): refused in PCR 4.
    let parsed = EventLog::parse(&log).unwrap();
    let other_kernel = rebuild(&parsed, |_, _, t, d| {
        Some((
            t,
            if t == EV_EFI_BOOT_SERVICES_APPLICATION {
                vec![0x42; 32]
            } else {
                d
            },
        ))
    });
    let mut q = quoted.clone();
    q.values.insert(
        4,
        EventLog::parse(&other_kernel)
            .unwrap()
            .replay(HashAlg::Sha256)
            .unwrap()[&4]
            .clone(),
    );
    assert!(matches!(
        check(&q, Some(&other_kernel), None, Some(&pins)),
        Err(MeasuredBootError::EventNotAllowed { pcr: 4, ref event_type, .. })
            if event_type == "EV_EFI_BOOT_SERVICES_APPLICATION"
    ));
    // ... allowed by adding its digest (an ISV allowing a second kernel).
    let mut two_kernels = pins.clone();
    two_kernels.allow(4, EV_EFI_BOOT_SERVICES_APPLICATION, &[0x42; 32]);
    check(&q, Some(&other_kernel), None, Some(&two_kernels)).unwrap();

    // Relabelling: the other kernel's digest logged as an event type the reference allows in
    // PCR 4 (EV_EFI_ACTION) is still refused: a pin is a (type, digest) pair.
    let relabelled = rebuild(&parsed, |_, _, t, d| {
        Some(if t == EV_EFI_BOOT_SERVICES_APPLICATION {
            (EV_EFI_ACTION, vec![0x42; 32])
        } else {
            (t, d)
        })
    });
    assert!(matches!(
        check(&q, Some(&relabelled), None, Some(&pins)),
        Err(MeasuredBootError::EventNotAllowed { pcr: 4, ref event_type, .. })
            if event_type == "EV_EFI_ACTION"
    ));

    // No log, a pinned PCR not quoted, pins of another bank.
    assert!(matches!(
        check(&quoted, None, None, Some(&pins)),
        Err(MeasuredBootError::EventLogMissing { .. })
    ));
    let mut without9 = quoted.clone();
    without9.values.remove(&9);
    assert_eq!(
        check(&without9, Some(&log), None, Some(&pins)),
        Err(MeasuredBootError::PinnedPcrNotQuoted(9))
    );
    let mut sha1_pins = pins.clone();
    sha1_pins.bank = HashAlg::Sha1;
    assert!(matches!(
        check(&quoted, Some(&log), None, Some(&sha1_pins)),
        Err(MeasuredBootError::PinBankMismatch { .. })
    ));

    // A pinned PCR the log never extends (PCR 8) must hold its reset value: extending it
    // outside the log is refused.
    let pins8 = pins_from(&[&log], &[8]);
    check(&quoted, Some(&log), None, Some(&pins8)).unwrap();
    let mut q8 = quoted.clone();
    q8.values.insert(8, vec![1; 32]);
    assert_eq!(
        check(&q8, Some(&log), None, Some(&pins8)),
        Err(MeasuredBootError::EventLogMismatch { pcr: 8 })
    );
}

#[test]
fn pins_in_a_tcb_reference_are_checked_and_round_trip() {
    let (log, quoted) = reference();
    let pins = pins_from(&[&log], &[4, 7, 9]);
    let vtpm = ovsa_core::license::PcrSet::from_attest(&PcrSet {
        bank: HashAlg::Sha256,
        values: [(0u8, quoted.values[&0].clone())].into(),
    })
    .unwrap();
    let mut tcb = TcbReference {
        name: "ovmf".into(),
        vtpm,
        host: None,
        host_max_age_seconds: None,
        vtpm_ek: None,
        events: Some(pins.clone()),
        runtime: None,
        created: "2026-01-01T00:00:00Z".into(),
    };
    use ovsa_core::envelope::Artifact;
    tcb.validate().unwrap();
    assert_eq!(tcb.quoted_pcrs(), vec![0, 4, 7, 9]);
    let json = serde_json::to_string(&tcb).unwrap();
    assert!(
        json.contains("\"EV_EFI_BOOT_SERVICES_APPLICATION\""),
        "{json}"
    );
    let back: TcbReference = serde_json::from_str(&json).unwrap();
    assert_eq!(back, tcb);
    assert_eq!(back.reference_values().events, Some(pins.clone()));

    // A PCR pinned both ways, pins of another bank, a digest of the wrong length: refused.
    let mut both = tcb.clone();
    both.events
        .as_mut()
        .unwrap()
        .allow_log(&EventLog::parse(&log).unwrap(), &[0])
        .unwrap();
    assert!(both
        .validate()
        .unwrap_err()
        .to_string()
        .contains("PCR 0 is pinned both"));
    let mut bank = tcb.clone();
    bank.vtpm.bank = PcrBank::Sha1;
    bank.vtpm.pcrs[0].value = vec![0; 20];
    assert!(bank
        .validate()
        .unwrap_err()
        .to_string()
        .contains("one bank"));
    let bad = json.replacen(
        "8537acf7b21b248c70be2890b3468cd35a964ac8428da70c4c5d4d3055ca3e26",
        "8537acf7",
        1,
    );
    let bad: TcbReference = serde_json::from_str(&bad).unwrap();
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("digest is 4 bytes"));
    // An unknown event type name is a parse error naming it.
    let e = serde_json::from_str::<TcbReference>(&json.replacen("EV_SEPARATOR", "EV_NOPE", 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("EV_NOPE"), "{e}");

    // Every vTPM PCR pinned by events: no values needed.
    tcb.vtpm.pcrs.clear();
    tcb.validate().unwrap();
    tcb.events = None;
    assert!(tcb.validate().is_err());
    // A reference without pins serialises without the field (earlier signatures still verify).
    tcb.vtpm = back.vtpm.clone();
    assert!(!serde_json::to_string(&tcb).unwrap().contains("events"));
}

#[test]
fn ima_list_replays_to_pcr_10() {
    let list = ImaLogBuilder::new()
        .entry("boot_aggregate", "sha256", &[0x11; 32], false)
        .file("/usr/bin/ovms", b"server")
        .file("/opt/ovsa/lib/libovsaruntime.so", b"plugin")
        .build();
    let parsed = ovsa_core::attest::ImaLog::parse(&list).unwrap();
    let mut quoted = PcrSet::new(HashAlg::Sha256);
    quoted
        .values
        .insert(10, parsed.replay(HashAlg::Sha256, 10).unwrap());
    let r = check(&quoted, None, Some(&list), None).unwrap();
    assert_eq!(r.ima_entries, Some(3));
    // Entries appended after the quote are not covered, and not an error.
    let longer = ImaLogBuilder::new()
        .entry("boot_aggregate", "sha256", &[0x11; 32], false)
        .file("/usr/bin/ovms", b"server")
        .file("/opt/ovsa/lib/libovsaruntime.so", b"plugin")
        .file("/usr/bin/later", b"later")
        .build();
    assert_eq!(
        check(&quoted, None, Some(&longer), None)
            .unwrap()
            .ima_entries,
        Some(3)
    );
    // A changed entry (another plugin) or a dropped one: no prefix replays to the quote.
    let changed = ImaLogBuilder::new()
        .entry("boot_aggregate", "sha256", &[0x11; 32], false)
        .file("/usr/bin/ovms", b"server")
        .file("/opt/ovsa/lib/libovsaruntime.so", b"patched plugin")
        .build();
    assert_eq!(
        check(&quoted, None, Some(&changed), None),
        Err(MeasuredBootError::ImaLogMismatch(ImaError::ReplayMismatch(
            10
        )))
    );
    let dropped = ImaLogBuilder::new()
        .entry("boot_aggregate", "sha256", &[0x11; 32], false)
        .file("/opt/ovsa/lib/libovsaruntime.so", b"plugin")
        .build();
    assert!(matches!(
        check(&quoted, None, Some(&dropped), None),
        Err(MeasuredBootError::ImaLogMismatch(_))
    ));
    // PCR 10 not quoted.
    assert_eq!(
        check(&PcrSet::new(HashAlg::Sha256), None, Some(&list), None),
        Err(MeasuredBootError::ImaLogMismatch(ImaError::PcrNotQuoted(
            10
        )))
    );
}

#[test]
fn oversized_logs_are_refused_before_parsing() {
    let quoted = PcrSet::new(HashAlg::Sha256);
    let big = vec![0u8; MAX_EVENT_LOG_BYTES + 1];
    assert!(matches!(
        check(&quoted, Some(&big), None, None),
        Err(MeasuredBootError::LogTooLarge {
            max: MAX_EVENT_LOG_BYTES,
            ..
        })
    ));
    let big = vec![0u8; MAX_IMA_LOG_BYTES + 1];
    assert!(matches!(
        check(&quoted, None, Some(&big), None),
        Err(MeasuredBootError::LogTooLarge {
            max: MAX_IMA_LOG_BYTES,
            ..
        })
    ));
    // The protocol's attest request limit holds both logs at their bounds, base64-encoded.
    let b64 = |n: usize| n.div_ceil(3) * 4;
    assert!(
        b64(MAX_EVENT_LOG_BYTES) + b64(MAX_IMA_LOG_BYTES) + (64 << 10)
            <= ovsa_core::protocol::MAX_ATTEST_REQUEST_BYTES
    );
}

#[test]
fn evidence_json_without_logs_is_unchanged() {
    let (log, quoted) = reference();
    let mut ev = Evidence {
        ek_cert: vec![1],
        ak_public: vec![2],
        quote: vec![3],
        signature: vec![4],
        pcrs: quoted,
        host_evidence: None,
        event_log: None,
        ima_log: None,
    };
    let json = serde_json::to_string(&ev).unwrap();
    assert!(
        !json.contains("event_log") && !json.contains("ima_log"),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Evidence>(&json).unwrap(), ev);
    ev.event_log = Some(log);
    let json = serde_json::to_string(&ev).unwrap();
    assert_eq!(serde_json::from_str::<Evidence>(&json).unwrap(), ev);
}

#[test]
fn the_attester_reads_only_bounded_crypto_agile_logs_of_the_kernel_device() {
    use ovsa_core::attest::measured_boot::{read_measurement_logs, tcti_is_kernel_device};
    assert!(tcti_is_kernel_device("device:/dev/tpmrm0"));
    assert!(tcti_is_kernel_device("libtss2-tcti-device.so.0:/dev/tpm0"));
    assert!(!tcti_is_kernel_device("swtpm:host=127.0.0.1,port=2321"));
    assert!(!tcti_is_kernel_device("mssim:port=2321"));
    let d = tempfile::tempdir().unwrap();
    let (log, _) = reference();
    let ev = d.path().join("binary_bios_measurements");
    let ima = d.path().join("binary_runtime_measurements");
    std::fs::write(&ev, &log).unwrap();
    let list = ImaLogBuilder::new().file("/bin/sh", b"sh").build();
    std::fs::write(&ima, &list).unwrap();
    let got = read_measurement_logs(&ev, Some(&ima)).unwrap();
    assert_eq!(got.event_log, Some(log.clone()));
    assert_eq!(got.ima_log, Some(list));
    // No IMA list unless asked; missing files are no logs, not errors.
    let got = read_measurement_logs(&d.path().join("none"), None).unwrap();
    assert_eq!((got.event_log, got.ima_log), (None, None));
    // A SHA-1-format (not crypto-agile) log is not sent.
    let mut sha1 = log.clone();
    sha1[32] = b'X';
    std::fs::write(&ev, &sha1).unwrap();
    assert_eq!(read_measurement_logs(&ev, None).unwrap().event_log, None);
    // Over the bound: an error naming the file, read no further than the bound.
    std::fs::write(&ev, vec![0u8; MAX_EVENT_LOG_BYTES + 1]).unwrap();
    let e = read_measurement_logs(&ev, None).unwrap_err().to_string();
    assert!(
        e.contains("binary_bios_measurements") && e.contains("256 KiB"),
        "{e}"
    );
}
