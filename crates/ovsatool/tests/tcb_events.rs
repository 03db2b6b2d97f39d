//! `ovsatool tcb --event-log / --pin-pcrs / --allow-event` through the real binary, with the
//! real OVMF logs of `crates/ovsa-core/tests/data`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ovsa_core::envelope::Signed;
use ovsa_core::license::TcbReference;

fn tool(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovsatool"))
        .current_dir(dir)
        .args(args)
        .env_remove("OVSA_KEYSTORE_PASSPHRASE")
        .output()
        .expect("run ovsatool")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ovsa-core/tests/data")
        .join(name)
}

#[test]
fn tcb_pins_events_from_reference_logs() {
    let d = tempfile::tempdir().unwrap();
    let o = tool(
        d.path(),
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=ISV"],
    );
    assert!(o.status.success());
    let log1 = data("ovmf-eventlog.bin");
    let log2 = data("ovmf-eventlog-cmdline.bin");
    let pcrs = data("ovmf-pcrs.txt");
    let kernel2 = format!("4:EV_EFI_BOOT_SERVICES_APPLICATION:{}", "ab".repeat(32));
    let o = tool(
        d.path(),
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "vm.tcb",
            "--vtpm-pcrs-file",
            pcrs.to_str().unwrap(),
            "--event-log",
            log1.to_str().unwrap(),
            "--event-log",
            log2.to_str().unwrap(),
            "--allow-event",
            &kernel2,
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("PCRs 4,7,9 are pinned by events"), "{out}");
    let tcb = Signed::<TcbReference>::load(&d.path().join("vm.tcb")).unwrap();
    let tcb = tcb.body();
    assert_eq!(tcb.quoted_pcrs(), (0..=9).collect::<Vec<u8>>());
    let pins = tcb.events.as_ref().unwrap();
    let pcr9 = &pins.pcrs[&9];
    assert_eq!(pcr9.len(), 1);
    assert_eq!(pcr9[0].digests.len(), 3, "initrd + two command lines");
    let kernels = pins.pcrs[&4]
        .iter()
        .find(|k| k.event_type == 0x8000_0003)
        .unwrap();
    assert_eq!(
        kernels.digests.len(),
        2,
        "the reference kernel + --allow-event"
    );

    // Bad input: clear errors naming the flag.
    for (args, want) in [
        (vec!["--event-log", pcrs.to_str().unwrap()], "--event-log"),
        (vec!["--allow-event", "4:EV_NOPE:00"], "unknown event type"),
        (vec!["--allow-event", "4:EV_IPL:00"], "64 hex digits"),
        (vec!["--allow-event", "30:EV_IPL:00"], "is not 0..=23"),
        (
            vec!["--event-log", log1.to_str().unwrap(), "--pin-pcrs", "24"],
            "--pin-pcrs",
        ),
    ] {
        let mut a = vec!["tcb", "--keystore", "isv.ks", "--out", "bad.tcb", "--force"];
        a.extend(args.iter().copied());
        let o = tool(d.path(), &a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{a:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Only events: a reference without value PCRs.
    let o = tool(
        d.path(),
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "ev.tcb",
            "--event-log",
            log1.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tcb = Signed::<TcbReference>::load(&d.path().join("ev.tcb")).unwrap();
    assert!(tcb.body().vtpm.pcrs.is_empty());
    assert_eq!(tcb.body().quoted_pcrs(), vec![4, 7, 9]);
}
