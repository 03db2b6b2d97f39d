//! Event-pinned TCB references through the real service: a vTPM (swtpm) whose PCRs 4 and 9 were
//! extended as a firmware would, an Attester that sends the matching event log, the real client
//! and server over TLS. Accepted with the reference log; refused with `event_not_allowed` for
//! another command line, `event_log_mismatch` without a log or with a log that does not replay;
//! the attest body limit carries a log far over the other endpoints' 64 KiB.

mod common;
use ovsa_test_support::world;

use ovsa_client::attester::Quote;
use ovsa_client::{check_license, Attester, ClientError, ClientOptions, TpmAttester};
use ovsa_core::attest::eventlog::{
    EventLog, EventLogBuilder, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EVENT_TAG,
};
use ovsa_core::attest::measured_boot::MeasurementLogs;
use ovsa_core::attest::{CredentialChallenge, EventPins, HashAlg};
use ovsa_core::envelope::Signed;
use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use swtpm_tests::{names, Swtpm};
use world::{refused, World};
use zeroize::Zeroizing;

/// A TPM attester that sends `log` as the platform's event log.
struct WithLog {
    inner: TpmAttester,
    log: Option<Vec<u8>>,
    /// The IMA list it sends (when asked for one).
    ima: Option<Vec<u8>>,
}

impl Attester for WithLog {
    fn ek_certificate(&mut self) -> Result<Vec<u8>, ClientError> {
        self.inner.ek_certificate()
    }
    fn ak_public(&mut self) -> Result<Vec<u8>, ClientError> {
        self.inner.ak_public()
    }
    fn activate_credential(
        &mut self,
        c: &CredentialChallenge,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        self.inner.activate_credential(c)
    }
    fn quote(&mut self, q: &[u8], bank: HashAlg, pcrs: &[u8]) -> Result<Quote, ClientError> {
        self.inner.quote(q, bank, pcrs)
    }
    fn host_evidence(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        self.inner.host_evidence()
    }
    fn measurement_logs(&mut self, ima: bool) -> Result<MeasurementLogs, ClientError> {
        Ok(MeasurementLogs {
            event_log: self.log.clone(),
            ima_log: self.ima.clone().filter(|_| ima),
        })
    }
}

/// A boot log: the kernel into PCR 4 (with 150 KiB of event data, so the attest body is far over
/// 64 KiB) and the command line into PCR 9.
fn boot_log(cmdline: &[u8]) -> Vec<u8> {
    EventLogBuilder::new(&[HashAlg::Sha256])
        .measure(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            b"the kernel",
            &vec![0x5a; 150 << 10],
        )
        .measure(9, EV_EVENT_TAG, cmdline, b"LOADED_IMAGE::LoadOptions")
        .build()
}

/// A vTPM of the world's template booted as `log` says: its PCRs extended by the log's events.
fn booted(log: &[u8]) -> Swtpm {
    let vtpm = Swtpm::start(names::VTPM);
    let mut t = vtpm.open();
    for e in EventLog::parse(log).unwrap().events {
        t.pcr_extend(
            e.pcr as u8,
            HashAlg::Sha256,
            e.digest(HashAlg::Sha256).unwrap(),
        )
        .unwrap();
    }
    vtpm
}

fn check(
    w: &World,
    lic: &Signed<ovsa_core::license::CustomerLicense>,
    vtpm: &Swtpm,
    log: Option<Vec<u8>>,
) -> Result<(), ClientError> {
    let mut att = WithLog {
        inner: TpmAttester::open(Some(&vtpm.tcti()), None)?,
        log,
        ima: None,
    };
    check_license(
        lic.body(),
        &w.customer,
        &mut att,
        Purpose::Load,
        &ClientOptions::default(),
        &mut |_| {},
    )
    .map(|released| w.assert_model_decrypts(lic, released.share.as_ref().unwrap()))
}

#[test]
fn event_pinned_license_is_checked_by_the_service() {
    let w = World::sqlite();
    let reference = boot_log(b"console=ttyS0");
    // The ISV's reference: the world's PCR values for 0-3, 5-7 and events for 4 and 9.
    let mut tcb = w.tcb.body().clone();
    let mut pins = EventPins::new(HashAlg::Sha256);
    pins.allow_log(&EventLog::parse(&reference).unwrap(), &[4, 9])
        .unwrap();
    tcb.vtpm.pcrs.retain(|p| p.index != 4);
    tcb.events = Some(pins);
    let tcb = Signed::sign(tcb, &w.isv).unwrap();
    let lic = w.sell_with_tcb(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: None,
        },
        &w.customer,
        None,
        &tcb,
    );
    assert!(
        reference.len() > ovsa_core::protocol::MAX_REQUEST_BYTES,
        "the log must exceed the 64 KiB limit of the other endpoints"
    );

    // The reference boot with its log: the model key is released.
    let vtpm = booted(&reference);
    check(&w, &lic, &vtpm, Some(reference.clone())).unwrap();
    // Without the log: refused, the reference pins events.
    assert_eq!(
        refused(check(&w, &lic, &vtpm, None)),
        Reason::EventLogMismatch
    );
    // A log that does not replay to the quote (another boot's log).
    assert_eq!(
        refused(check(
            &w,
            &lic,
            &vtpm,
            Some(boot_log(b"console=ttyS0 single"))
        )),
        Reason::EventLogMismatch
    );
    // Another command line, its genuine log: the event is not allowed.
    let changed = boot_log(b"console=ttyS0 init=/bin/sh");
    let other = booted(&changed);
    match check(&w, &lic, &other, Some(changed)) {
        Err(ClientError::Refused {
            reason: Reason::EventNotAllowed,
            message,
        }) => assert!(
            message.contains("PCR 9") && message.contains("EV_EVENT_TAG"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

/// A vTPM whose PCR 10 holds the replay of `ima` (as the kernel extends it).
fn ima_booted(ima: &[u8]) -> Swtpm {
    let vtpm = Swtpm::start(names::VTPM);
    let mut t = vtpm.open();
    for e in ovsa_core::attest::ImaLog::parse(ima).unwrap().entries {
        t.pcr_extend(
            10,
            HashAlg::Sha256,
            &HashAlg::Sha256.digest(&e.template_data),
        )
        .unwrap();
    }
    vtpm
}

fn check_ima(
    w: &World,
    lic: &Signed<ovsa_core::license::CustomerLicense>,
    vtpm: &Swtpm,
    ima: Option<Vec<u8>>,
) -> Result<(), ClientError> {
    let mut att = WithLog {
        inner: TpmAttester::open(Some(&vtpm.tcti()), None)?,
        log: None,
        ima,
    };
    check_license(
        lic.body(),
        &w.customer,
        &mut att,
        Purpose::Load,
        &ClientOptions::default(),
        &mut |_| {},
    )
    .map(|released| w.assert_model_decrypts(lic, released.share.as_ref().unwrap()))
}

/// A license sold with a runtime policy through the real service: the challenge asks for PCR
/// 10, the stock runtime's IMA list is accepted, a list recording a patched plugin is refused
/// with `runtime_not_allowed` naming it (and audited), a missing list with `ima_log_mismatch`.
#[test]
fn runtime_policy_license_is_checked_by_the_service() {
    use ovsa_core::attest::ima::ImaLogBuilder;
    use ovsa_core::license::{RuntimePolicy, TcbReference};
    const PLUGIN: &str = "/opt/ovsa/lib/libovsaruntime.so";
    let w = World::sqlite();
    let mut policy = RuntimePolicy::new("rt", "2026-01-01T00:00:00Z");
    let d = |b: &[u8]| -> [u8; 32] { HashAlg::Sha256.digest(b).try_into().unwrap() };
    policy.allow(PLUGIN, Some(d(b"plugin"))).unwrap();
    policy.allow("/usr/bin/ovms", Some(d(b"server"))).unwrap();
    let policy = Signed::sign(policy, &w.isv).unwrap();
    let tcb = TcbReference::bind_runtime_policy(&w.tcb, &policy, &w.isv).unwrap();
    assert!(tcb.body().quoted_pcrs().contains(&10));
    let lic = w.sell_with_tcb(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: None,
        },
        &w.customer,
        None,
        &tcb,
    );
    let stock = ImaLogBuilder::new()
        .entry("boot_aggregate", "sha256", &[0x11; 32], false)
        .file("/usr/bin/ovms", b"server")
        .file("/usr/bin/python3", b"not under any pattern")
        .file(PLUGIN, b"plugin")
        .build();
    let vtpm = ima_booted(&stock);
    check_ima(&w, &lic, &vtpm, Some(stock.clone())).unwrap();
    assert_eq!(
        refused(check_ima(&w, &lic, &vtpm, None)),
        Reason::ImaLogMismatch
    );
    // Root in the guest mapped a patched plugin before the check.
    let patched = ImaLogBuilder::new()
        .entry("boot_aggregate", "sha256", &[0x11; 32], false)
        .file("/usr/bin/ovms", b"server")
        .file(PLUGIN, b"patched plugin")
        .build();
    let other = ima_booted(&patched);
    match check_ima(&w, &lic, &other, Some(patched.clone())) {
        Err(ClientError::Refused {
            reason: Reason::RuntimeNotAllowed,
            message,
        }) => assert!(
            message.contains(PLUGIN) && message.contains(&hex::encode(d(b"patched plugin"))),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // Sending the stock list instead does not replay to the quoted PCR 10.
    assert_eq!(
        refused(check_ima(&w, &lic, &other, Some(stock))),
        Reason::ImaLogMismatch
    );
    let audit = w.audit(lic.body().license_guid);
    assert!(
        audit.iter().any(|e| e.result == "refused"
            && e.reason == Some(Reason::RuntimeNotAllowed)
            && e.message.contains(PLUGIN)),
        "{audit:?}"
    );
}

#[test]
fn only_the_attest_endpoint_takes_large_bodies() {
    let w = World::sqlite();
    // A registered customer: only those get past the TLS handshake (tests/handshake_auth.rs).
    w.sell(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: None,
        },
        &w.customer,
        None,
    );
    let (status, body) = w.announce_body("/v1/challenge", 100 * 1024);
    assert_eq!(status, 413, "{body}");
    let (status, body) = w.announce_body(
        "/v1/attest",
        ovsa_core::protocol::MAX_ATTEST_REQUEST_BYTES + 1,
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");
}
