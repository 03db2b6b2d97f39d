//! Unit tests: parsers never panic on malformed input, formats round-trip.

use std::collections::BTreeMap;

use super::host_blob::{HostBlobError, HostEvidence};
use super::wire::{parse_public, parse_quote, parse_signature, verify_signature, HashAlg};
use super::*;

// A real quote made by swtpm (ECDSA P-256 AK, PCRs 0,1,2,16 of sha256).
const ATTEST: &str = "ff54434780180022000b2b4c688b445bf1ec7223c7702332521ae3f3ab03e5fba8328343b8399d2be51b002030313233343536373839616263646566303132333435363738396162636465660000000000000340000000020000000001201910230016363600000001000b03070001002038723a2e5e8a17aa7950dc008209944e898f69a7bd10a23c839d341e935fd5ca";
const SIG: &str = "0018000b0020dd7c9e0eea722889013e5e0942582d606901cb2deedccbdeab908bde3d083caf0020cc416158e761d2b3a695bf3ca56eefec4edb52cdb9724cf72d37abc4454b80e3";
const AK: &str = "0023000b00050072000000100018000b000300100020b1a8de3cab4f54289f616cbef8e03842dcd1e270b1cdbc17280928a0388bf6b80020f022accee3e6ec4cff65a762494ebfa1de73781f5c88abfa1889822265569cf5";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn real_quote_parses_and_verifies() {
    let q = parse_quote(&h(ATTEST)).unwrap();
    assert_eq!(q.extra_data, b"0123456789abcdef0123456789abcdef");
    assert_eq!(q.pcr_select.len(), 1);
    assert_eq!(q.pcr_select[0].pcrs, vec![0, 1, 2, 16]);
    assert!(q.clock.safe);
    let ak = parse_public(&h(AK)).unwrap();
    wire::check_ak_attributes(&ak).unwrap();
    verify_signature(&ak, &h(ATTEST), &parse_signature(&h(SIG)).unwrap()).unwrap();
    // TPM2B_PUBLIC (size-prefixed, as tpm2-tools writes it) parses to the same key and name.
    let mut tpm2b = (h(AK).len() as u16).to_be_bytes().to_vec();
    tpm2b.extend(h(AK));
    assert_eq!(parse_public(&tpm2b).unwrap().name(), ak.name());
}

/// Every truncation and every single-bit flip of real structures: an error or a value, never a
/// panic; and no flipped quote verifies.
#[test]
fn parsers_never_panic_and_flips_never_verify() {
    let (a, s, p) = (h(ATTEST), h(SIG), h(AK));
    for (buf, which) in [(&a, 0), (&s, 1), (&p, 2)] {
        for n in 0..buf.len() {
            let t = &buf[..n];
            let _ = parse_quote(t);
            let _ = parse_signature(t);
            let _ = parse_public(t);
        }
        for i in 0..buf.len() * 8 {
            let mut m = buf.clone();
            m[i / 8] ^= 1 << (i % 8);
            let (qa, qs, qp) = match which {
                0 => (m.clone(), s.clone(), p.clone()),
                1 => (a.clone(), m.clone(), p.clone()),
                _ => (a.clone(), s.clone(), m.clone()),
            };
            let ok = parse_public(&qp).and_then(|k| {
                let sig = parse_signature(&qs)?;
                verify_signature(&k, &qa, &sig)?;
                k.name()
            });
            // A flip in the AK public area outside the key (nameAlg, attributes, policy) may
            // leave the signature valid, but then the AK Name changes, so the credential binding
            // (which is over the Name) fails.
            let original = parse_public(&p).and_then(|k| k.name()).ok();
            assert!(
                ok.is_err() || ok.ok() != original,
                "bit {i} of structure {which} flipped and still verifies under the same AK Name"
            );
        }
    }
}

fn sample_evidence() -> HostEvidence {
    let mut values = BTreeMap::new();
    for i in 0..8u8 {
        values.insert(i, vec![i; 32]);
    }
    HostEvidence {
        ek_cert: vec![0x30; 900],
        ak_public: h(AK),
        quote: h(ATTEST),
        signature: h(SIG),
        pcrs: PcrSet {
            bank: HashAlg::Sha256,
            values,
        },
    }
}

#[test]
fn host_blob_roundtrip_and_errors() {
    let ev = sample_evidence();
    let blob = ev.encode().unwrap();
    assert_eq!(HostEvidence::decode(&blob).unwrap(), ev);
    // Padding after the announced length (a larger NV index) is ignored.
    let mut padded = blob.clone();
    padded.extend([0xff; 64]);
    assert_eq!(HostEvidence::decode(&padded).unwrap(), ev);
    for n in 0..blob.len() {
        assert!(HostEvidence::decode(&blob[..n]).is_err());
    }
    for i in 0..blob.len() {
        let mut m = blob.clone();
        m[i] ^= 0x01;
        assert!(HostEvidence::decode(&m).is_err(), "flip at {i} accepted");
    }
    assert_eq!(HostEvidence::decode(&[]), Err(HostBlobError::Missing));
    assert_eq!(
        HostEvidence::decode(&[0xff; 2048]),
        Err(HostBlobError::Missing)
    );
    let mut v2 = blob.clone();
    v2[5] = 2;
    assert_eq!(
        HostEvidence::decode(&v2),
        Err(HostBlobError::UnsupportedVersion(2))
    );
    assert_eq!(
        HostEvidence::decode(&blob[..blob.len() - 1]),
        Err(HostBlobError::Truncated {
            have: blob.len() - 1,
            need: blob.len()
        })
    );
}

#[test]
fn qualifying_data_is_domain_separated_and_injective() {
    let a = quote_qualifying_data(b"ab", b"c", None);
    assert_ne!(a, quote_qualifying_data(b"a", b"bc", None));
    assert_ne!(a, quote_qualifying_data(b"ab", b"c", Some(b"")));
    assert_ne!(a.to_vec(), HashAlg::Sha256.digest(b"abc"));
    assert_eq!(
        host_qualifying_data(b"x").to_vec(),
        HashAlg::Sha256.digest(b"x")
    );
}

#[test]
fn pcr_set_json_shape() {
    let ev = sample_evidence();
    let j = serde_json::to_value(&ev.pcrs).unwrap();
    assert_eq!(j["bank"], "sha256");
    assert_eq!(j["values"]["3"], hex::encode([3u8; 32]));
    let back: PcrSet = serde_json::from_value(j).unwrap();
    assert_eq!(back, ev.pcrs);
}

/// Host evidence freshness: a reset count below the highest seen is a replay; a quote first seen
/// more than the maximum age ago is stale; no maximum age means no age limit.
#[test]
fn host_freshness_refuses_replayed_and_stale_evidence() {
    let host = |reset_count| HostResult {
        ek_cert_sha256: [7; 32],
        ak_name: vec![1, 2],
        clock: ClockInfo {
            clock: 5_000,
            reset_count,
            restart_count: 0,
            safe: true,
        },
        pcrs: PcrSet::new(HashAlg::Sha256),
    };
    let seen = |highest, first_seen| HostSighting {
        highest_reset_count: highest,
        first_seen,
    };
    // First sighting, same reset, later reset: accepted.
    check_host_freshness(&host(3), &seen(None, 1000), Some(60), 1000).unwrap();
    check_host_freshness(&host(3), &seen(Some(3), 1000), Some(60), 1060).unwrap();
    check_host_freshness(&host(4), &seen(Some(3), 1000), Some(60), 1000).unwrap();
    // Before a reset already seen: replayed, whatever the age limit.
    let e = check_host_freshness(&host(2), &seen(Some(3), 1000), None, 1000).unwrap_err();
    assert_eq!(
        e,
        AttestError::HostEvidenceReplayed {
            reset_count: 2,
            highest: 3
        }
    );
    assert!(e.to_string().contains("replayed"), "{e}");
    // Older than the maximum age: stale; without one, accepted forever.
    let e = check_host_freshness(&host(3), &seen(Some(3), 1000), Some(60), 1061).unwrap_err();
    assert_eq!(
        e,
        AttestError::HostEvidenceStale {
            age: 61,
            max_age: 60
        }
    );
    assert!(e.to_string().contains("ovsatool host-quote"), "{e}");
    check_host_freshness(&host(3), &seen(Some(3), 0), None, u64::MAX).unwrap();
    // A service clock behind the first sighting is age 0, not an overflow.
    check_host_freshness(&host(3), &seen(Some(3), 2000), Some(0), 1000).unwrap();
}
