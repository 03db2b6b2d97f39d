//! `ovsatool inspect`: any artifact as readable JSON, verified.

use std::path::Path;
use std::process::ExitCode;

use ovsa_core::attest::{subject_of, EkBinding};
use ovsa_core::encoding::{format_rfc3339, MAX_JSON_ARTIFACT};
use ovsa_core::envelope::{peek_type, Artifact, Signed};
use ovsa_core::identity::{Certificate, CertificateUsage, Keystore};
use ovsa_core::license::{
    CustomerLicense, LicenseConfig, MasterLicense, Registration, TcbReference,
};
use ovsa_core::package::format::MAGIC;
use ovsa_core::package::{Package, PackageHeader};
use ovsa_core::text::escape_controls;
use serde_json::{json, Value};

use crate::cli::InspectArgs;
use crate::error::CliResult;
use crate::secrets::passphrase;

struct Report {
    artifact: String,
    problems: Vec<String>,
    details: Value,
}

pub fn run(a: &InspectArgs) -> CliResult<ExitCode> {
    let anchors = match &a.trust_ca {
        Some(p) => Certificate::load_all(p)?,
        None => Vec::new(),
    };
    let report = inspect_file(&a.file, &anchors)?;
    let verified = report.problems.is_empty();
    let out = json!({
        "file": a.file.display().to_string(),
        "artifact": report.artifact,
        "verified": verified,
        "problems": report.problems,
        "details": report.details,
    });
    // The JSON keeps every character of what the artifact says, with control characters and
    // bidirectional overrides as \u escapes (safe on a terminal).
    say!("{}", ovsa_core::text::to_json_text(&out));
    if !verified {
        for p in &report.problems {
            eprintln!(
                "ovsatool: {}: {}",
                escape_controls(&a.file.display().to_string()),
                escape_controls(p)
            );
        }
    }
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn inspect_file(path: &Path, anchors: &[Certificate]) -> CliResult<Report> {
    let mut head = [0u8; 8];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| ovsa_core::Error::io(path, e))?;
        let n = f
            .read(&mut head)
            .map_err(|e| ovsa_core::Error::io(path, e))?;
        if n == MAGIC.len() && head == MAGIC {
            return Ok(inspect_package(path, anchors));
        }
    }
    let bytes = ovsa_core::fsutil::read_limited(path, MAX_JSON_ARTIFACT)?;
    let kind = peek_type(&bytes);
    Ok(match kind.as_deref() {
        Some(MasterLicense::TYPE) => inspect_signed::<MasterLicense>(&bytes, anchors),
        Some(LicenseConfig::TYPE) => inspect_signed::<LicenseConfig>(&bytes, anchors),
        Some(<ovsa_core::license::RuntimePolicy as ovsa_core::envelope::Artifact>::TYPE) => {
            inspect_signed::<ovsa_core::license::RuntimePolicy>(&bytes, anchors)
        }
        Some(TcbReference::TYPE) => {
            let mut r = inspect_signed::<TcbReference>(&bytes, anchors);
            show_ek_binding(&mut r.details, "");
            r
        }
        Some(CustomerLicense::TYPE) => {
            let mut r = inspect_signed::<CustomerLicense>(&bytes, anchors);
            show_customer(&mut r.details);
            show_ek_binding(&mut r.details, "/tcb");
            r
        }
        Some(Registration::TYPE) => {
            let mut r = inspect_signed::<Registration>(&bytes, anchors);
            // Version 1 carried the share in clear: never print it, even from such a file.
            redact(&mut r.details, "key_share");
            show_sealed(&mut r.details);
            show_ek_binding(&mut r.details, "/tcb");
            r
        }
        Some(PackageHeader::TYPE) => inspect_signed::<PackageHeader>(&bytes, anchors),
        Some("keystore") => inspect_keystore(&bytes),
        Some(other) => Report {
            artifact: other.to_string(),
            problems: vec![format!("unknown OVSA artifact type '{other}'")],
            details: Value::Null,
        },
        None => inspect_certificate(&bytes, anchors),
    })
}

/// The problem reported for a file that is no OVSA artifact: what it is, by the same detector
/// that names wrong files everywhere else.
fn not_an_artifact(bytes: &[u8]) -> String {
    format!(
        "this is {}: not an OVSA artifact, package or certificate (no 'ovsa' type, no package magic, no PEM/DER certificate)",
        ovsa_core::artifact::detect(bytes).describe()
    )
}

fn cert_json(c: &Certificate) -> Value {
    json!({
        "subject": c.subject(),
        "issuer": c.issuer(),
        "not_before": format_rfc3339(c.not_before()),
        "not_after": format_rfc3339(c.not_after()),
        "fingerprint_sha256": hex::encode(c.fingerprint()),
        "spki_pin_sha256": hex::encode(c.spki_pin()),
    })
}

fn check_trust(
    c: &Certificate,
    anchors: &[Certificate],
    usage: CertificateUsage,
    problems: &mut Vec<String>,
) {
    let now = time::OffsetDateTime::now_utc();
    let result = if anchors.is_empty() {
        c.check_validity_at(now)
    } else {
        c.verify_chain(&[], anchors, usage, now)
    };
    if let Err(e) = result {
        problems.push(e.to_string());
    }
}

fn inspect_signed<T: Artifact>(bytes: &[u8], anchors: &[Certificate]) -> Report {
    match Signed::<T>::from_bytes_ignoring_time(bytes) {
        Ok(s) => {
            let mut problems = Vec::new();
            check_trust(s.signer(), anchors, CertificateUsage::Isv, &mut problems);
            Report {
                artifact: T::TYPE.into(),
                problems,
                details: json!({
                    "signature": "valid",
                    "signer": cert_json(s.signer()),
                    "digest_sha256": hex::encode(s.digest()),
                    "body": s.body_json(),
                }),
            }
        }
        Err(e) => {
            // Show what the file claims, clearly marked as unverified.
            let raw: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            Report {
                artifact: T::TYPE.into(),
                problems: vec![e.to_string()],
                details: json!({ "signature": "INVALID", "unverified_body": raw.get("body") }),
            }
        }
    }
}

fn inspect_package(path: &Path, anchors: &[Certificate]) -> Report {
    match Package::open(path) {
        Ok(p) => {
            let mut problems = Vec::new();
            check_trust(
                p.header().signer(),
                anchors,
                CertificateUsage::Isv,
                &mut problems,
            );
            let h = p.header().body();
            Report {
                artifact: "package".into(),
                problems,
                details: json!({
                    "signature": "valid",
                    "length": "matches the header",
                    "payload": "chunks are authenticated on decryption (needs the model key)",
                    "header_hash": hex::encode(p.header_hash()),
                    "payload_bytes": h.payload_len(),
                    "signer": cert_json(p.header().signer()),
                    "header": p.header().body_json(),
                }),
            }
        }
        Err(e) => Report {
            artifact: "package".into(),
            problems: vec![e.to_string()],
            details: Value::Null,
        },
    }
}

fn inspect_keystore(bytes: &[u8]) -> Report {
    let raw: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let protection = raw
        .pointer("/private_key/protection")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let pass = passphrase(None).ok().flatten();
    let encrypted = protection != "none";
    let mut problems = Vec::new();
    let mut details = json!({
        "algorithm": raw.get("algorithm"),
        "private_key": { "protection": protection },
    });
    if encrypted && pass.is_none() {
        details["private_key"]["checked"] =
            json!("not decrypted (set OVSA_KEYSTORE_PASSPHRASE to check it)");
    }
    let opened = if encrypted && pass.is_none() {
        None
    } else {
        match Keystore::from_bytes(bytes, pass.as_ref().map(|p| p.as_str())) {
            Ok(ks) => Some(ks),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        }
    };
    if let Some(ks) = &opened {
        details["private_key"]["checked"] = json!("matches the certificate");
        details["certificate"] = cert_json(ks.certificate());
        details["chain"] = Value::Array(ks.chain().iter().map(cert_json).collect());
        if let Err(e) = ks.certificate().check_validity_now() {
            problems.push(e.to_string());
        }
    } else if let Some(der) = raw
        .get("certificate")
        .and_then(Value::as_str)
        .and_then(|s| ovsa_core::encoding::b64::decode(s).ok())
    {
        match Certificate::from_der(&der) {
            Ok(c) => details["certificate"] = cert_json(&c),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Report {
        artifact: "keystore".into(),
        problems,
        details,
    }
}

fn inspect_certificate(bytes: &[u8], anchors: &[Certificate]) -> Report {
    match Certificate::from_pem_or_der(bytes) {
        Ok(c) => {
            let mut problems = Vec::new();
            if let Err(e) = c.require_v3("this certificate") {
                problems.push(e.to_string());
            }
            check_trust(&c, anchors, CertificateUsage::Customer, &mut problems);
            Report {
                artifact: "certificate".into(),
                problems,
                details: cert_json(&c),
            }
        }
        Err(e) => Report {
            artifact: "unknown".into(),
            problems: vec![if ovsa_core::artifact::detect(bytes)
                == ovsa_core::artifact::ArtifactKind::Certificate
            {
                e.to_string()
            } else {
                not_an_artifact(bytes)
            }],
            details: Value::Null,
        },
    }
}

/// Shows who a customer license was sold to: its `customer_certificate` decoded (subject,
/// issuer, validity, fingerprint) beside the base64, as `customer` in the details.
fn show_customer(v: &mut Value) {
    let cert = [
        "/body/customer_certificate",
        "/unverified_body/customer_certificate",
    ]
    .iter()
    .find_map(|at| v.pointer(at).and_then(Value::as_str))
    .and_then(|s| ovsa_core::encoding::b64::decode(s).ok())
    .and_then(|der| Certificate::from_der(&der).ok());
    if let (Some(c), Some(obj)) = (cert, v.as_object_mut()) {
        obj.insert("customer".into(), cert_json(&c));
    }
}

/// Shows which vTPMs may attest for a license (the `vtpm_ek` of the TCB reference at `tcb`
/// inside the body) as `vtpm_ek_binding`: each bound EK CA's subject and SHA-256 and each
/// enrolled EK's SHA-256, or, when there is none, a warning that any vTPM from a CA the license
/// service trusts can attest for it.
fn show_ek_binding(v: &mut Value, tcb: &str) {
    let Some(tcb_value) = ["/body", "/unverified_body"]
        .iter()
        .find_map(|at| v.pointer(&format!("{at}{tcb}")))
    else {
        return;
    };
    let shown = match tcb_value.get("vtpm_ek") {
        None | Some(Value::Null) => json!({
            "bound": false,
            "warning": "not bound to EK CAs or EKs: any vTPM whose EK chains to a CA the license service trusts can attest for this license (with the customer's files); sell with `ovsatool sale --ek-ca/--ek-cert` to bind it",
        }),
        Some(b) => match serde_json::from_value::<EkBinding>(b.clone()) {
            Ok(b) => json!({
                "bound": true,
                "ek_cas": b.cas.iter().map(|der| json!({
                    "subject": subject_of(der),
                    "fingerprint_sha256": hex::encode(ovsa_core::crypto::hash::sha256(der)),
                })).collect::<Vec<_>>(),
                "enrolled_ek_certificates_sha256": b.eks.iter().map(|d| hex::encode(d.0)).collect::<Vec<_>>(),
                "note": "the license service refuses any other vTPM for this license (ek_not_allowed_for_license)",
            }),
            Err(e) => json!({ "bound": "unreadable", "error": e.to_string() }),
        },
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("vtpm_ek_binding".into(), shown);
    }
}

/// Shows a registration's sealed share as what it is: sealed, to which registration key.
fn show_sealed(v: &mut Value) {
    for at in ["/body", "/unverified_body"] {
        if let Some(obj) = v.pointer_mut(at).and_then(Value::as_object_mut) {
            if let Some(sealed) = obj.get("sealed_share").cloned() {
                let alg = sealed
                    .pointer("/wrapped/alg")
                    .cloned()
                    .unwrap_or(Value::Null);
                obj.insert(
                    "sealed_share".into(),
                    json!({
                        "sealed": true,
                        "to_registration_certificate_sha256": sealed.get("recipient"),
                        "alg": alg,
                        "note": "only the license service holding that registration key can open it (license add --registration-key)",
                    }),
                );
            }
        }
    }
}

/// Replaces `key` in the verified `body` or the `unverified_body` (a registration whose
/// signature fails still carries the real share).
fn redact(v: &mut Value, key: &str) {
    for at in ["/body", "/unverified_body"] {
        if let Some(obj) = v.pointer_mut(at).and_then(Value::as_object_mut) {
            if obj.contains_key(key) {
                obj.insert(key.into(), json!("<redacted: secret>"));
            }
        }
    }
}
