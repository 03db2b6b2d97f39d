//! The runtime plugin's two text parsers (root package `ovsaruntime`): a model's
//! `custom_loader_options` (`options::parse`) and the `loader_config_file`
//! (`config::LoaderConfig::parse`). The first byte selects the parser (even: options, odd:
//! config); the rest is fed as UTF-8 (invalid sequences replaced by U+FFFD).
//!
//! Oracles besides "no panic": both parsers are checked against an independent model of what
//! they document (accepted iff the model accepts, and the accepted values are the ones in the
//! JSON), accepted configs are within the documented ranges, and the intervals an accepted config
//! yields (`lease()`, `retry()`, `grace_seconds`) can be added to `Instant::now()` the way the
//! lease worker (`loader/lease.rs`) adds them, for edge and input-derived granted leases.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ovsaruntime::config::LoaderConfig;
use ovsaruntime::log::LogLevel;
use serde_json::{Map, Value};

fn as_object(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn options(text: &str) {
    let result = ovsaruntime::options::parse(text);
    // Model: a JSON object, every value a string, keystore and controlled_access_file non-empty.
    let expected = as_object(text).and_then(|m| {
        if !m.values().all(Value::is_string) {
            return None;
        }
        let get = |k: &str| {
            m.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Some((get("keystore")?, get("controlled_access_file")?))
    });
    match (&result, &expected) {
        (Ok(o), Some((keystore, caf))) => {
            assert!(!o.keystore.is_empty() && !o.controlled_access_file.is_empty());
            assert_eq!(&o.keystore, keystore);
            assert_eq!(&o.controlled_access_file, caf);
            // The accepted options, written back as a minimal object, parse to the same value.
            let again = serde_json::json!({
                "keystore": o.keystore,
                "controlled_access_file": o.controlled_access_file,
            })
            .to_string();
            assert_eq!(ovsaruntime::options::parse(&again).as_ref(), Ok(o));
        }
        (Err(e), None) => assert!(!e.to_string().is_empty(), "empty error message"),
        _ => panic!("options::parse disagrees with its documentation: {result:?} vs {expected:?}"),
    }
}

const KNOWN: [&str; 11] = [
    "tcti",
    "service_url",
    "trusted_isv_certs",
    "ak_cache_dir",
    "lease_seconds_override",
    "grace_seconds",
    "retry_seconds",
    "blacklist_recheck_seconds",
    "service_timeout_seconds",
    "decrypt_threads",
    "log_level",
];

fn config(text: &str, granted_from_input: u32) {
    let Ok(c) = LoaderConfig::parse(text) else {
        return;
    };
    // Only JSON objects with known keys are accepted, and every value is the one in the JSON.
    let m = as_object(text).expect("accepted config is a JSON object");
    for k in m.keys() {
        assert!(KNOWN.contains(&k.as_str()), "unknown key accepted: {k}");
    }
    let u64_of = |k: &str| {
        m.get(k)
            .map(|v| v.as_u64().expect("integer setting is a u64"))
    };
    let str_of = |k: &str| {
        m.get(k)
            .map(|v| v.as_str().expect("string setting").to_owned())
    };
    assert_eq!(c.grace_seconds, u64_of("grace_seconds"));
    assert_eq!(
        c.blacklist_recheck_seconds,
        u64_of("blacklist_recheck_seconds").unwrap_or(60)
    );
    assert_eq!(
        c.service_timeout_seconds,
        u64_of("service_timeout_seconds").unwrap_or(10)
    );
    assert_eq!(c.retry_seconds, u64_of("retry_seconds"));
    assert_eq!(
        c.lease_seconds_override.map(u64::from),
        u64_of("lease_seconds_override")
    );
    assert_eq!(
        c.decrypt_threads.map(|t| t as u64),
        u64_of("decrypt_threads")
    );
    assert_eq!(c.tcti, str_of("tcti"));
    assert_eq!(c.service_url, str_of("service_url"));
    assert_eq!(
        c.ak_cache_dir
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        str_of("ak_cache_dir")
    );
    assert_eq!(
        c.trusted_isv_certs.len(),
        m.get("trusted_isv_certs")
            .map_or(0, |v| v.as_array().expect("array").len())
    );
    assert!(
        c.trusted_isv_keys.is_empty(),
        "parse must not read certificates"
    );
    let level = match str_of("log_level").as_deref() {
        None | Some("info") => LogLevel::Info,
        Some("off") => LogLevel::Off,
        Some("error") => LogLevel::Error,
        Some("warning") => LogLevel::Warning,
        Some("debug") => LogLevel::Debug,
        Some(other) => panic!("log_level {other:?} accepted"),
    };
    assert_eq!(c.log_level, level);

    // Documented ranges.
    assert_ne!(c.lease_seconds_override, Some(0));
    assert_ne!(c.retry_seconds, Some(0));
    assert!(c.service_timeout_seconds >= 1);
    let max = ovsaruntime::config::MAX_SETTING_SECONDS;
    assert!(c.grace_seconds.is_none_or(|g| g <= max) && c.blacklist_recheck_seconds <= max);
    assert!(c.service_timeout_seconds <= max && c.retry_seconds.is_none_or(|r| r <= max));
    assert_ne!(c.decrypt_threads, Some(0));
    if let Some(t) = &c.tcti {
        assert!(!t.trim().is_empty(), "blank tcti accepted");
    }
    if let Some(url) = &c.service_url {
        ovsa_core::license::policy::validate_url(url).expect("accepted service_url validates");
    }

    // Parsing is deterministic.
    let again = LoaderConfig::parse(text).expect("accepted config parses again");
    assert_eq!(format!("{again:?}"), format!("{c:?}"));

    // lease() / retry() for any granted lease, and the lease worker's Instant arithmetic
    // (loader/lease.rs `run`: `valid_until = now + lease`, `next = now + config.retry(lease)`,
    // `now >= valid_until + grace`).
    // The signed terms bound both: the lease never exceeds what the license signed, and the
    // grace is the license's or a shorter configured one.
    let now = Instant::now();
    for (granted, signed) in [0, 1, 29, 30, 31, 86_400, u32::MAX, granted_from_input]
        .into_iter()
        .flat_map(|g| [1, 60, 86_400, granted_from_input.max(1)].map(|s| (g, s)))
    {
        let lease = c.lease(granted, signed);
        let want = granted
            .min(signed)
            .min(c.lease_seconds_override.unwrap_or(u32::MAX))
            .max(1);
        assert_eq!(lease, Duration::from_secs(u64::from(want)));
        assert!(lease <= Duration::from_secs(u64::from(signed.max(1))));
        let grace = c.grace(signed.min(86_400));
        assert!(grace <= Duration::from_secs(u64::from(signed.min(86_400))));
        let retry = c.retry(lease);
        assert!(
            retry >= Duration::from_secs(1),
            "retry interval {retry:?} < 1 s"
        );
        assert!(c.retry_seconds.is_some() || retry <= Duration::from_secs(30));
        let valid_until = now
            .checked_add(lease)
            .expect("lease worker: now + lease overflows Instant");
        now.checked_add(retry)
            .expect("lease worker: now + retry(lease) overflows Instant");
        valid_until
            .checked_add(grace)
            .expect("lease worker: valid_until + grace overflows Instant");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if sel % 2 == 0 {
        options(&text);
    } else {
        let mut g = [0u8; 4];
        for (i, b) in rest.iter().rev().take(4).enumerate() {
            g[i] = *b;
        }
        config(&text, u32::from_le_bytes(g));
    }
});
