//! Deterministic malformed-input tests for every parser of ovsa-core: empty input, truncation at
//! every length, single-bit flips, wrong JSON types in validly re-signed bodies, huge length
//! fields, non-UTF-8 bytes. Each must be refused with a specific error, never a panic, never a
//! huge allocation. (The coverage-guided counterpart is `fuzz/`; see fuzz/README.md.)
//!
//! Kept fast (a few seconds in a debug build): long inputs are sampled with a stride.

use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::{canonical_json, now_rfc3339};
use ovsa_core::envelope::{Artifact, Signed};
use ovsa_core::identity::{cert, Certificate, Keystore, KeystoreProtection};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::tcb::{parse_pcr_arg, parse_tpm2_pcrread};
use ovsa_core::license::{
    sell, CustomerLicense, LicenseConfig, MasterLicense, PcrBank, PcrSet, PcrValue, Policy,
    Registration, ServiceEndpoint, TcbReference, Validity,
};
use ovsa_core::package::format::{encode_prefix, parse_prefix, FileKind, PackageHeader};
use ovsa_core::package::format::{MAX_HEADER_LEN, PREFIX_LEN};
use ovsa_core::package::{protect, ModelInput, ModelKey, Package, ProtectOptions};
use ovsa_core::Error;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Fixture: one of every artifact, made once with the real API.

struct Fixture {
    isv: Keystore,
    ca_cert: Certificate,
    customer_cert: Certificate,
    /// (artifact type tag, pretty JSON bytes) for every signed artifact kind.
    artifacts: Vec<(&'static str, Vec<u8>)>,
    package: Vec<u8>,
    model_key: ModelKey,
    keystore_clear: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let (isv, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=Malformed ISV", 30).unwrap();
        let (_customer, csr) =
            Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=Malformed Customer", 30).unwrap();
        let ca_key = ovsa_core::crypto::SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ca_cert = cert::self_signed_ca(&ca_key, "CN=Malformed CA", 30).unwrap();
        let customer_cert = cert::sign_csr(&csr, &ca_key, &ca_cert, 30).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("m.xml");
        let bin = dir.path().join("m.bin");
        std::fs::write(&xml, b"<net name=\"m\"/>").unwrap();
        std::fs::write(
            &bin,
            (0..9000u32).map(|i| (i * 31) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let out = dir.path().join("m.dat");
        let protected = protect(
            &[
                ModelInput {
                    path: xml,
                    kind: FileKind::IrXml,
                },
                ModelInput {
                    path: bin,
                    kind: FileKind::IrBin,
                },
            ],
            &ProtectOptions {
                model_name: "m".into(),
                model_version: "1".into(),
                description: "malformed-input fixture".into(),
                chunk_size: 4096,
                overwrite: false,
            },
            &isv,
            &out,
            &mut |_| {},
        )
        .unwrap();
        let package = std::fs::read(&out).unwrap();
        let master = MasterLicense::create(&protected, &isv).unwrap();
        let config = Signed::sign(
            LicenseConfig {
                name: "trial".into(),
                policy: Policy {
                    validity: Validity::Window {
                        not_before: Some("2026-01-01T00:00:00Z".into()),
                        not_after: "2099-01-01T00:00:00Z".into(),
                    },
                    usage_limit: Some(10),
                    instance_limit: Some(2),
                },
                lease_seconds: 3600,
                grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
                services: vec![ServiceEndpoint {
                    url: "https://lic.example:8443".into(),
                    pins: vec![Pin([0x11; 32])],
                }],
                created: now_rfc3339(),
            },
            &isv,
        )
        .unwrap();
        let pcrs = |bank: PcrBank, idx: &[u8]| {
            PcrSet::new(
                bank,
                idx.iter()
                    .map(|i| PcrValue {
                        index: *i,
                        value: vec![*i; bank.digest_len()],
                    })
                    .collect(),
            )
            .unwrap()
        };
        let tcb = Signed::sign(
            TcbReference {
                name: "vm".into(),
                vtpm: pcrs(PcrBank::Sha256, &[0, 7]),
                host: Some(pcrs(PcrBank::Sha384, &[0])),
                host_max_age_seconds: None,
                vtpm_ek: None,
                events: None,
                runtime: None,
                created: now_rfc3339(),
            },
            &isv,
        )
        .unwrap();
        let service = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=registration", 30)
            .unwrap()
            .0;
        let sale = sell(&SaleRequest {
            isv: &isv,
            master: &master,
            config: &config,
            tcb: &tcb,
            customer: &customer_cert,
            service: service.certificate(),
        })
        .unwrap();
        let header_len = u32::from_be_bytes(package[12..16].try_into().unwrap()) as usize;
        let artifacts = vec![
            (
                PackageHeader::TYPE,
                package[PREFIX_LEN..PREFIX_LEN + header_len].to_vec(),
            ),
            (MasterLicense::TYPE, master.to_bytes().unwrap()),
            (LicenseConfig::TYPE, config.to_bytes().unwrap()),
            (TcbReference::TYPE, tcb.to_bytes().unwrap()),
            (CustomerLicense::TYPE, sale.license.to_bytes().unwrap()),
            (Registration::TYPE, sale.registration.to_bytes().unwrap()),
        ];
        let keystore_clear = isv.to_bytes(&KeystoreProtection::None).unwrap().to_vec();
        Fixture {
            model_key: protected.model_key,
            isv,
            ca_cert,
            customer_cert,
            artifacts,
            package,
            keystore_clear,
        }
    })
}

/// Parses `bytes` as the artifact type `ty` (signature checked, signer validity ignored).
fn parse_as(ty: &str, bytes: &[u8]) -> Result<(), Error> {
    fn p<T: Artifact>(b: &[u8]) -> Result<(), Error> {
        Signed::<T>::from_bytes_ignoring_time(b).map(|_| ())
    }
    match ty {
        t if t == PackageHeader::TYPE => p::<PackageHeader>(bytes),
        t if t == MasterLicense::TYPE => p::<MasterLicense>(bytes),
        t if t == LicenseConfig::TYPE => p::<LicenseConfig>(bytes),
        t if t == TcbReference::TYPE => p::<TcbReference>(bytes),
        t if t == CustomerLicense::TYPE => p::<CustomerLicense>(bytes),
        t if t == Registration::TYPE => p::<Registration>(bytes),
        other => panic!("unknown artifact type {other}"),
    }
}

/// A test-only artifact carrying any JSON body under the type tag of `T`, so that a body with
/// wrong field types can be *validly signed* and reach `T`'s body parser (past the signature).
struct Raw<T>(Value, PhantomData<T>);
impl<T> serde::Serialize for Raw<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}
impl<'de, T> serde::Deserialize<'de> for Raw<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Raw(v, PhantomData))
    }
}
impl<T: Artifact> Artifact for Raw<T> {
    const TYPE: &'static str = T::TYPE;
    const VERSION: u64 = T::VERSION;
}

fn resign(ty: &str, body: Value, isv: &Keystore) -> Vec<u8> {
    fn s<T: Artifact>(body: Value, isv: &Keystore) -> Vec<u8> {
        Signed::sign(Raw::<T>(body, PhantomData), isv)
            .unwrap()
            .to_bytes()
            .unwrap()
    }
    match ty {
        t if t == PackageHeader::TYPE => s::<PackageHeader>(body, isv),
        t if t == MasterLicense::TYPE => s::<MasterLicense>(body, isv),
        t if t == LicenseConfig::TYPE => s::<LicenseConfig>(body, isv),
        t if t == TcbReference::TYPE => s::<TcbReference>(body, isv),
        t if t == CustomerLicense::TYPE => s::<CustomerLicense>(body, isv),
        t if t == Registration::TYPE => s::<Registration>(body, isv),
        other => panic!("unknown artifact type {other}"),
    }
}

fn body_of(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes).unwrap()["body"].clone()
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b.len()
        - b.iter()
            .rev()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
    &b[..n]
}

/// Byte range of the value of top-level member `key` in pretty-printed envelope JSON.
fn member_range(bytes: &[u8], key: &str) -> std::ops::Range<usize> {
    let text = std::str::from_utf8(bytes).unwrap();
    let start = text.find(&format!("\n  \"{key}\": ")).unwrap() + key.len() + 6;
    let end = text[start..]
        .find("\n  \"")
        .map(|e| start + e)
        .unwrap_or_else(|| text.trim_end().len() - 1);
    start..end
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_fixture_artifact_parses() {
    let fx = fixture();
    for (ty, bytes) in &fx.artifacts {
        parse_as(ty, bytes).unwrap_or_else(|e| panic!("{ty}: {e}"));
        // Compact re-formatting verifies too (canonical encoding).
        let compact = serde_json::to_vec(&serde_json::from_slice::<Value>(bytes).unwrap()).unwrap();
        parse_as(ty, &compact).unwrap_or_else(|e| panic!("{ty} (compact): {e}"));
    }
    Package::from_source(fx.package.clone())
        .unwrap()
        .decrypt_model(&fx.model_key, 2)
        .unwrap();
    Keystore::from_bytes(&fx.keystore_clear, None).unwrap();
}

#[test]
fn empty_input() {
    let fx = fixture();
    for (ty, _) in &fx.artifacts {
        assert!(
            matches!(parse_as(ty, b""), Err(Error::Malformed { .. })),
            "{ty}"
        );
        assert!(
            matches!(parse_as(ty, b"   \n"), Err(Error::Malformed { .. })),
            "{ty}"
        );
        assert!(
            matches!(parse_as(ty, b"{}"), Err(Error::Malformed { .. })),
            "{ty}"
        );
        assert!(
            matches!(parse_as(ty, b"null"), Err(Error::Malformed { .. })),
            "{ty}"
        );
    }
    assert!(matches!(
        Keystore::from_bytes(b"", Some("pw")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        Certificate::chain_from_pem_or_der(b""),
        Err(Error::BadCertificate(_))
    ));
    assert!(matches!(
        Certificate::from_pem_or_der(b""),
        Err(Error::BadCertificate(_))
    ));
    assert!(matches!(
        Package::from_source(Vec::new()),
        Err(Error::Truncated(_))
    ));
    assert!(matches!(parse_prefix(b""), Err(Error::Truncated(_))));
    assert!(matches!(parse_pcr_arg(""), Err(Error::InvalidInput(_))));
    // No bank at all: no sets (the caller decides whether that is enough).
    assert!(parse_tpm2_pcrread("").unwrap().is_empty());
    // A bank with no values is refused.
    assert!(matches!(
        parse_tpm2_pcrread("sha256:\n"),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn json_artifacts_truncated_at_every_length() {
    let fx = fixture();
    for (ty, bytes) in &fx.artifacts {
        let whole = trim_end(bytes).len();
        for len in 0..whole {
            match parse_as(ty, &bytes[..len]) {
                Err(Error::Malformed { .. }) => {}
                other => panic!("{ty} truncated to {len}/{whole}: {other:?}"),
            }
        }
        for len in whole..=bytes.len() {
            parse_as(ty, &bytes[..len]).unwrap();
        }
    }
}

#[test]
fn keystore_truncated_at_every_length() {
    let fx = fixture();
    let ks = &fx.keystore_clear;
    let whole = trim_end(ks).len();
    for len in 0..whole {
        match Keystore::from_bytes(&ks[..len], Some("pw")) {
            Err(Error::Malformed { .. }) => {}
            other => panic!("keystore truncated to {len}/{whole}: {other:?}"),
        }
    }
}

#[test]
fn certificates_truncated_at_every_length() {
    let fx = fixture();
    for c in [fx.isv.certificate(), &fx.customer_cert, &fx.ca_cert] {
        let der = c.der();
        for len in 0..der.len() {
            assert!(
                matches!(
                    Certificate::from_der(&der[..len]),
                    Err(Error::BadCertificate(_))
                ),
                "DER truncated to {len}"
            );
            assert!(matches!(
                Certificate::chain_from_pem_or_der(&der[..len]),
                Err(Error::BadCertificate(_))
            ));
        }
        // Extra bytes after the DER certificate are refused as well.
        let mut longer = der.to_vec();
        longer.push(0);
        assert!(matches!(
            Certificate::from_der(&longer),
            Err(Error::BadCertificate(_))
        ));
        let pem = c.to_pem();
        let whole = pem.trim_end().len();
        for len in 0..whole {
            // A cut PEM block never yields a certificate, and never a panic.
            assert!(
                matches!(
                    Certificate::from_pem_or_der(&pem.as_bytes()[..len]),
                    Err(Error::BadCertificate(_))
                ),
                "PEM truncated to {len}/{whole}"
            );
        }
        assert_eq!(&Certificate::from_pem_or_der(pem.as_bytes()).unwrap(), c);
    }
}

#[test]
fn package_truncated_and_extended() {
    let fx = fixture();
    let pkg = &fx.package;
    let header_end = PREFIX_LEN + u32::from_be_bytes(pkg[12..16].try_into().unwrap()) as usize;
    // Every length through the prefix and header, then a stride through the payload.
    let lens = (0..header_end + 64).chain((header_end + 64..pkg.len()).step_by(37));
    for len in lens.chain([pkg.len() - 1]) {
        match Package::from_source(pkg[..len].to_vec()) {
            Err(Error::Truncated(_)) => {}
            other => panic!(
                "package truncated to {len}/{}: {:?}",
                pkg.len(),
                other.err()
            ),
        }
    }
    for extra in [1usize, 16, 4096] {
        let mut longer = pkg.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        assert!(matches!(
            Package::from_source(longer),
            Err(Error::TrailingData(n)) if n == extra as u64
        ));
    }
}

#[test]
fn single_bit_flips_in_json_artifacts() {
    let fx = fixture();
    let mut bad_signature = 0usize;
    for (ty, bytes) in &fx.artifacts {
        let body = member_range(bytes, "body");
        let signer = member_range(bytes, "signer");
        let signature = member_range(bytes, "signature");
        let whole = trim_end(bytes).len();
        // Every third byte, one bit each (rotating through all 8), keeps this fast (an ECDSA
        // verification per flip) while touching every field.
        for i in (0..whole).step_by(3) {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            let r = parse_as(ty, &b);
            let ok = if body.contains(&i) || signature.contains(&i) {
                matches!(r, Err(Error::Malformed { .. } | Error::BadSignature { .. }))
            } else if signer.contains(&i) {
                matches!(
                    r,
                    Err(Error::Malformed { .. }
                        | Error::BadSignature { .. }
                        | Error::BadCertificate(_))
                )
            } else {
                // Envelope structure, type tag, version.
                matches!(
                    r,
                    Err(Error::Malformed { .. }
                        | Error::WrongArtifactType { .. }
                        | Error::UnsupportedVersion { .. })
                )
            };
            assert!(
                ok,
                "{ty}: bit {} of byte {i} ({:?}) gave {r:?}",
                i % 8,
                bytes[i] as char
            );
            bad_signature += usize::from(matches!(r, Err(Error::BadSignature { .. })));
        }
    }
    // Most flips inside strings keep the JSON valid: the signature is what catches them.
    assert!(
        bad_signature > 300,
        "only {bad_signature} flips reached the signature check"
    );
}

#[test]
fn single_bit_flips_in_keystore() {
    let fx = fixture();
    let ks = &fx.keystore_clear;
    for i in 0..trim_end(ks).len() {
        let mut b = ks.clone();
        b[i] ^= 1 << (i % 8);
        match Keystore::from_bytes(&b, Some("pw")) {
            Err(
                Error::Malformed { .. }
                | Error::WrongArtifactType { .. }
                | Error::UnsupportedVersion { .. }
                | Error::Keystore(_)
                | Error::BadCertificate(_)
                | Error::InvalidInput(_),
            ) => {}
            // The keystore is not signed: a flip inside the certificate's own signature or
            // serial can leave a parseable certificate. It must still certify this key.
            Ok(k) => assert_eq!(
                k.certificate().public_key().unwrap(),
                fx.isv.key().public_key(),
                "byte {i}"
            ),
            other => panic!("keystore byte {i}: {other:?}"),
        }
    }
}

#[test]
fn package_bit_flips_never_release_plaintext() {
    let fx = fixture();
    let pkg = &fx.package;
    let header_end = PREFIX_LEN + u32::from_be_bytes(pkg[12..16].try_into().unwrap()) as usize;
    for i in (0..pkg.len())
        .step_by(53)
        .chain([header_end, pkg.len() - 1])
    {
        let mut b = pkg.clone();
        b[i] ^= 1 << (i % 8);
        let r = Package::from_source(b).and_then(|p| p.decrypt_model(&fx.model_key, 2).map(|_| ()));
        let ok = if i < PREFIX_LEN {
            matches!(
                r,
                Err(Error::Malformed { .. }
                    | Error::UnsupportedVersion { .. }
                    | Error::Truncated(_))
            )
        } else if i < header_end {
            matches!(
                r,
                Err(Error::Malformed { .. }
                    | Error::BadSignature { .. }
                    | Error::BadCertificate(_)
                    | Error::WrongArtifactType { .. }
                    | Error::UnsupportedVersion { .. })
            )
        } else {
            matches!(r, Err(Error::ChunkAuthentication { .. }))
        };
        assert!(ok, "package byte {i}: {r:?}");
    }
}

#[test]
fn wrong_json_types_in_signed_bodies() {
    let fx = fixture();
    let replacements = [
        json!(null),
        json!(true),
        json!("x"),
        json!(12345),
        json!(-1),
        json!([]),
        json!({}),
    ];
    let kind = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::String(_) => 2,
        Value::Number(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    // Every path to every value in the body (objects and arrays included).
    fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    out.push(prefix.clone());
                    paths(c, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    prefix.push(i.to_string());
                    out.push(prefix.clone());
                    paths(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }
    let mut refused = 0;
    for (ty, bytes) in &fx.artifacts {
        let body = body_of(bytes);
        let mut all = Vec::new();
        paths(&body, &mut Vec::new(), &mut all);
        for path in all {
            let pointer = format!("/{}", path.join("/"));
            let original = body.pointer(&pointer).unwrap().clone();
            for r in &replacements {
                if kind(r) == kind(&original) {
                    continue;
                }
                let mut b = body.clone();
                *b.pointer_mut(&pointer).unwrap() = r.clone();
                let signed = resign(ty, b, &fx.isv);
                let res = parse_as(ty, &signed);
                if r.is_null() {
                    // Optional fields accept null; everything else is refused. Never a panic.
                    continue;
                }
                match res {
                    Err(Error::Malformed { detail, .. }) => {
                        assert!(detail.starts_with("body:") || !detail.is_empty());
                        refused += 1;
                    }
                    // A leaf inside a structure whose replacement is still well-typed for the
                    // parent cannot happen here (the kind differs), except array elements of a
                    // `Vec<u8>`-like field, which we do not have; so any other result is a bug.
                    other => panic!("{ty} {pointer} = {r}: {other:?}"),
                }
            }
        }
        // A body that is not an object at all.
        for r in &replacements {
            assert!(matches!(
                parse_as(ty, &resign(ty, r.clone(), &fx.isv)),
                Err(Error::Malformed { .. })
            ));
        }
    }
    assert!(refused > 200, "{refused}");
}

#[test]
fn wrong_json_types_in_envelope_fields() {
    let fx = fixture();
    let (ty, bytes) = &fx.artifacts[1];
    let env: Value = serde_json::from_slice(bytes).unwrap();
    for field in ["ovsa", "version", "body", "signer", "signature"] {
        for r in [
            json!(null),
            json!(7),
            json!("1"),
            json!([]),
            json!(-3),
            json!(1u64 << 63),
        ] {
            let mut e = env.clone();
            e[field] = r.clone();
            let res = parse_as(ty, &serde_json::to_vec(&e).unwrap());
            assert!(
                matches!(
                    res,
                    Err(Error::Malformed { .. }
                        | Error::UnsupportedVersion { .. }
                        | Error::BadSignature { .. }
                        | Error::WrongArtifactType { .. }
                        | Error::BadCertificate(_))
                ),
                "{field} = {r}: {res:?}"
            );
        }
    }
    // Unknown members and a wrong algorithm name.
    let mut e = env.clone();
    e["extra"] = json!(1);
    assert!(matches!(
        parse_as(ty, &serde_json::to_vec(&e).unwrap()),
        Err(Error::Malformed { .. })
    ));
    let mut e = env.clone();
    e["signature"]["alg"] = json!("ECDSA-P384-SHA384");
    assert!(matches!(
        parse_as(ty, &serde_json::to_vec(&e).unwrap()),
        Err(Error::Malformed { .. })
    ));
    let mut e = env.clone();
    e["signature"]["alg"] = json!("RSA");
    assert!(matches!(
        parse_as(ty, &serde_json::to_vec(&e).unwrap()),
        Err(Error::Malformed { .. })
    ));
    // A float anywhere in the body: not canonical.
    let mut e = env.clone();
    e["body"]["extra_float"] = json!(1.5);
    assert!(matches!(
        parse_as(ty, &serde_json::to_vec(&e).unwrap()),
        Err(Error::Malformed { .. })
    ));
    // Deep nesting is refused by the JSON parser's recursion limit, not by a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        parse_as(ty, deep.as_bytes()),
        Err(Error::Malformed { .. })
    ));
    let deep_body = format!(
        r#"{{"ovsa":"{ty}","version":1,"body":{}1{},"signer":"","signature":{{"alg":"ECDSA-P256-SHA256","value":""}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(matches!(
        parse_as(ty, deep_body.as_bytes()),
        Err(Error::Malformed { .. })
    ));
    // Oversized input is refused before parsing.
    let big = vec![b' '; (1 << 20) + 1];
    assert!(matches!(parse_as(ty, &big), Err(Error::Malformed { .. })));
    // canonical_json refuses non-integers but handles the integer extremes.
    let v: Value = serde_json::from_str("[18446744073709551615,-9223372036854775808]").unwrap();
    assert_eq!(
        canonical_json(&v).unwrap(),
        b"[18446744073709551615,-9223372036854775808]"
    );
    let v: Value = serde_json::from_str("[18446744073709551616]").unwrap();
    assert!(matches!(canonical_json(&v), Err(Error::Malformed { .. })));
}

#[test]
fn reformatting_with_json_escapes_still_verifies() {
    // JSON allows "/" to be written "\/" (PHP's json_encode and others do so by default) and
    // any character as "\uXXXX". Such a re-formatted artifact means the same JSON, so its
    // canonical encoding and signature are unchanged and it must verify.
    let fx = fixture();
    for (ty, bytes) in &fx.artifacts {
        let text = std::str::from_utf8(bytes).unwrap();
        let escaped = text.replace('/', "\\/");
        parse_as(ty, escaped.as_bytes()).unwrap_or_else(|e| panic!("{ty} with \\/: {e}"));
    }
}

#[test]
fn huge_lengths_in_package_prefix_and_header() {
    let fx = fixture();
    // Header length beyond the limit, and zero.
    for len in [0, MAX_HEADER_LEN + 1, u32::MAX] {
        let p = encode_prefix(len);
        assert!(
            matches!(parse_prefix(&p), Err(Error::Malformed { .. })),
            "{len}"
        );
        assert!(matches!(
            Package::from_source(p.to_vec()),
            Err(Error::Malformed { .. })
        ));
    }
    // The largest allowed header length with a short file: refused before allocating it.
    let mut p = encode_prefix(MAX_HEADER_LEN).to_vec();
    p.extend_from_slice(b"{}");
    assert!(matches!(Package::from_source(p), Err(Error::Truncated(_))));
    // Wrong magic / container version.
    let mut p = fx.package.clone();
    p[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Package::from_source(p),
        Err(Error::UnsupportedVersion { .. })
    ));

    // A validly signed header claiming huge file sizes: refused by validation or as truncated,
    // without allocating the claimed size.
    let header_len = u32::from_be_bytes(fx.package[12..16].try_into().unwrap()) as usize;
    let header = &fx.package[PREFIX_LEN..PREFIX_LEN + header_len];
    let body = body_of(header);
    for (size, expect_truncated) in [
        (u64::MAX, false),
        (u64::MAX - 15, false),
        (u64::MAX / 2, false), // two files overflow the total
        (1u64 << 40, true),
        (1u64 << 62, true),
    ] {
        let mut b = body.clone();
        b["files"][0]["size"] = json!(size);
        b["files"][1]["size"] = json!(size);
        let h = resign(PackageHeader::TYPE, b, &fx.isv);
        let mut pkg = encode_prefix(h.len() as u32).to_vec();
        pkg.extend_from_slice(&h);
        pkg.extend_from_slice(&[0u8; 64]);
        let r = Package::from_source(pkg);
        if expect_truncated {
            assert!(
                matches!(r, Err(Error::Truncated(_))),
                "{size}: {:?}",
                r.err()
            );
        } else {
            assert!(
                matches!(r, Err(Error::Malformed { .. })),
                "{size}: {:?}",
                r.err()
            );
        }
    }
    // Chunk sizes out of range or not a power of two.
    for cs in [0u64, 1, 4095, 4097, 1 << 27, u32::MAX as u64] {
        let mut b = body.clone();
        b["chunk_size"] = json!(cs);
        assert!(matches!(
            parse_as(
                PackageHeader::TYPE,
                &resign(PackageHeader::TYPE, b, &fx.isv)
            ),
            Err(Error::Malformed { .. })
        ));
    }
    // Too many files, duplicate names, path-like names.
    let mut b = body.clone();
    let f0 = b["files"][0].clone();
    b["files"] = Value::Array(
        (0..17)
            .map(|i| {
                let mut f = f0.clone();
                f["name"] = json!(format!("f{i}.xml"));
                f
            })
            .collect(),
    );
    assert!(matches!(
        parse_as(
            PackageHeader::TYPE,
            &resign(PackageHeader::TYPE, b, &fx.isv)
        ),
        Err(Error::Malformed { .. })
    ));
    for name in [
        "../evil.bin",
        "/etc/passwd",
        ".hidden",
        "a\\b",
        "nul\u{0}",
        "m.xml",
    ] {
        let mut b = body.clone();
        b["files"][1]["name"] = json!(name);
        assert!(
            matches!(
                parse_as(
                    PackageHeader::TYPE,
                    &resign(PackageHeader::TYPE, b, &fx.isv)
                ),
                Err(Error::Malformed { .. })
            ),
            "{name:?}"
        );
    }
}

#[test]
fn non_utf8_bytes() {
    let fx = fixture();
    for (ty, bytes) in &fx.artifacts {
        // Inside a string value of the body, and at the start.
        let text = std::str::from_utf8(bytes).unwrap();
        let at = text
            .find("\"created\": \"")
            .or_else(|| text.find("\"issued\": \""))
            .unwrap_or(20)
            + 12;
        for bad in [&[0xffu8][..], &[0xc3], &[0xed, 0xa0, 0x80], &[0x80]] {
            let mut b = bytes[..at].to_vec();
            b.extend_from_slice(bad);
            b.extend_from_slice(&bytes[at..]);
            assert!(
                matches!(parse_as(ty, &b), Err(Error::Malformed { .. })),
                "{ty}"
            );
            let mut b = bad.to_vec();
            b.extend_from_slice(bytes);
            assert!(
                matches!(parse_as(ty, &b), Err(Error::Malformed { .. })),
                "{ty}"
            );
        }
    }
    let mut ks = fx.keystore_clear.clone();
    ks.insert(20, 0xff);
    assert!(matches!(
        Keystore::from_bytes(&ks, None),
        Err(Error::Malformed { .. })
    ));
    let mut pem = fx.isv.certificate().to_pem().into_bytes();
    pem.insert(40, 0xff);
    assert!(matches!(
        Certificate::from_pem_or_der(&pem),
        Err(Error::BadCertificate(_))
    ));
    assert!(matches!(
        Certificate::from_pem_or_der(&[0xff; 300]),
        Err(Error::BadCertificate(_))
    ));
}

#[test]
fn keystore_field_errors() {
    let fx = fixture();
    let v: Value = serde_json::from_slice(&fx.keystore_clear).unwrap();
    let mk = |f: &dyn Fn(&mut Value)| {
        let mut v = v.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let bad = |b: Vec<u8>| Keystore::from_bytes(&b, Some("pw"));
    assert!(matches!(
        bad(mk(&|v| v["ovsa"] = json!("license"))),
        Err(Error::WrongArtifactType { .. })
    ));
    assert!(matches!(
        bad(mk(&|v| v["version"] = json!(2))),
        Err(Error::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        bad(mk(&|v| v["algorithm"] = json!("RSA"))),
        Err(Error::Malformed { .. })
    ));
    // Algorithm that does not match the key.
    assert!(matches!(
        bad(mk(&|v| v["algorithm"] = json!("ECDSA-P384-SHA384"))),
        Err(Error::Keystore(_))
    ));
    assert!(matches!(
        bad(mk(&|v| v["private_key"]["pkcs8"] = json!("AAAA"))),
        Err(Error::Keystore(_))
    ));
    assert!(matches!(
        bad(mk(&|v| v["private_key"]["pkcs8"] = json!("!!"))),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        bad(mk(&|v| v["private_key"]["protection"] = json!("rot13"))),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        bad(mk(&|v| v["certificate"] = json!("AAAA"))),
        Err(Error::BadCertificate(_))
    ));
    assert!(matches!(
        bad(mk(&|v| v["chain"] = json!(["AAAA"]))),
        Err(Error::BadCertificate(_))
    ));
    assert!(matches!(
        bad(mk(&|v| v["chain"] = json!(7))),
        Err(Error::Malformed { .. })
    ));
    // Another identity's certificate with this key.
    let other = fx.customer_cert.der();
    assert!(bad(mk(
        &|v| v["certificate"] = json!(ovsa_core::encoding::b64::encode(other))
    ))
    .is_err());
    // Passphrase variant: fields and iteration bounds (all refused before any PBKDF2 work).
    let pw = |iterations: Value, nonce: &str| {
        mk(&|v| {
            v["private_key"] = json!({
                "protection": "pbkdf2-sha256+aes-256-gcm",
                "iterations": iterations,
                "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
                "nonce": nonce,
                "ciphertext": "AAAA",
            })
        })
    };
    let t = Instant::now();
    assert!(matches!(
        bad(pw(json!(0), "AAAAAAAAAAAAAAAA")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        bad(pw(json!(99_999), "AAAAAAAAAAAAAAAA")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        bad(pw(json!(-1), "AAAAAAAAAAAAAAAA")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        bad(pw(json!(1u64 << 32), "AAAAAAAAAAAAAAAA")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        bad(pw(json!(100_000), "AAAA")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        Keystore::from_bytes(&pw(json!(100_000), "AAAAAAAAAAAAAAAA"), None),
        Err(Error::Keystore(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    // At the minimum count a wrong ciphertext is a wrong passphrase (one 100k PBKDF2).
    assert!(matches!(
        bad(pw(json!(100_000), "AAAAAAAAAAAAAAAA")),
        Err(Error::BadPassphrase)
    ));
}

#[test]
fn pcr_text_errors() {
    for arg in [
        "", "=", "7", "7=", "24=00", "-1=00", "256=00", "x=00", "7=0xZZ", "7=abc", "7=0x", "٣=00",
    ] {
        let r = parse_pcr_arg(arg);
        // "7=" and "7=0x" parse to an empty value: the set validation refuses the length later.
        if matches!(arg, "7=" | "7=0x") {
            assert!(r.unwrap().value.is_empty());
            continue;
        }
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{arg:?}: {r:?}");
    }
    let v32 = "00".repeat(32);
    for text in [
        format!("  0 : 0x{v32}\n"),          // value before any bank
        format!("sha512:\n  0 : 0x{v32}\n"), // unknown bank
        format!("sha256:\n  0 : 0x{v32}\n  0 : 0x{v32}\n"), // duplicate index
        "sha256:\n  0 : 0x00\n".to_string(), // wrong length
        format!("sha256:\n  24 : 0x{v32}\n"), // index out of range
        format!("sha256:\n  0 = 0x{v32}\n"), // no colon
        format!("sha256:\n  0 : 0x{v32}\nsha1:\n"), // empty bank
    ] {
        assert!(parse_tpm2_pcrread(&text).is_err(), "{text:?}");
    }
}

/// FOUND BY FUZZING-ADJACENT REVIEW: the PBKDF2 iteration count of a passphrase-protected
/// keystore has a lower bound (100 000) but no upper bound, so a keystore file with
/// `"iterations": 4294967295` makes `Keystore::from_bytes` run ~7 000 times longer than a normal
/// (600 000) one: hours of CPU before answering. The fix (in `identity/keystore.rs`): a
/// `MAX_PBKDF2_ITERATIONS` (e.g. 10 000 000) checked next to the minimum, returning
/// `Error::Malformed`.
#[test]
fn keystore_iteration_count_is_bounded() {
    let fx = fixture();
    let mut v: Value = serde_json::from_slice(&fx.keystore_clear).unwrap();
    v["private_key"] = json!({
        "protection": "pbkdf2-sha256+aes-256-gcm",
        "iterations": u32::MAX,
        "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
        "nonce": "AAAAAAAAAAAAAAAA",
        "ciphertext": "AAAA",
    });
    let bytes = serde_json::to_vec(&v).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(matches!(
            Keystore::from_bytes(&bytes, Some("pw")),
            Err(Error::Malformed { .. })
        ));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(malformed) => assert!(malformed, "refused, but not as Malformed"),
        Err(_) => panic!("Keystore::from_bytes still deriving after 5 s for iterations = u32::MAX"),
    }
}

/// Minor (see fuzz/README.md, finding 4): `validate_url` accepts junk after a bracketed IPv6
/// host and a `:` inside a plain host name.
#[test]
fn service_url_rejects_junk_after_host() {
    use ovsa_core::license::policy::validate_url;
    for bad in ["https://[::1]junk", "https://[::1]x:443", "https://h:1:2"] {
        assert!(validate_url(bad).is_err(), "{bad} accepted");
    }
}
