//! The admin commands: `license add|list|show|revoke|reinstate` and `audit`.

use std::path::{Path, PathBuf};

use ovsa_core::attest::{subject_of, EkBinding};
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Certificate, Keystore};
use ovsa_core::license::{KeyShare, Registration};
use ovsa_license_server::config::{self, read_input, ConfigError, Env, FileConfig, MAX_INPUT_FILE};
use ovsa_license_server::store::{
    Activation, AuditEntry, AuditFilter, Lease, LicenseRecord, OpenMode, Store,
};
use ovsa_license_server::text::{escape_controls, table, to_json_text};
use uuid::Uuid;

use crate::cli::LicenseCmd;
use crate::error::MainError;

/// `audit`: the audit log, newest first, as a table or JSON.
pub async fn audit(
    db: &str,
    license: Option<Uuid>,
    limit: u32,
    json: bool,
) -> Result<(), MainError> {
    let store = Store::open_with(db, OpenMode::ReadOnly).await?;
    let entries = store
        .audit(&AuditFilter {
            license_guid: license,
            limit,
        })
        .await?;
    if json {
        let v: Vec<_> = entries.iter().map(audit_json).collect();
        println!("{}", to_json_text(&serde_json::Value::Array(v)));
    } else {
        print!("{}", audit_table(&entries));
    }
    Ok(())
}

/// A registration file checked against the trusted ISVs.
fn load_registration(path: &Path, isvs: &[Certificate]) -> Result<Signed<Registration>, String> {
    let bytes = read_input(path, "registration", MAX_INPUT_FILE).map_err(|e| e.to_string())?;
    let reg = Signed::<Registration>::from_bytes(&bytes)
        .map_err(|e| format!("registration {}: {e}", path.display()))?;
    let signer_key = reg
        .signer()
        .public_key()
        .map_err(|e| format!("registration {}: {e}", path.display()))?;
    let trusted = isvs
        .iter()
        .any(|c| c.public_key().map(|k| k == signer_key).unwrap_or(false));
    if !trusted {
        return Err(format!(
            "registration {}: signed by '{}', which is not a trusted ISV (--trust-isv)",
            path.display(),
            escape_controls(reg.signer().subject())
        ));
    }
    Ok(reg)
}

/// Opens the registration keystore (bounded read; passphrase from the usual sources).
fn load_registration_key(
    path: &Path,
    passphrase: &config::KeyPassphrase,
) -> Result<Keystore, ConfigError> {
    let setting = config::REGISTRATION_KEY.flag;
    let bytes = read_input(path, setting, MAX_INPUT_FILE)?;
    let pass = passphrase.load()?;
    Keystore::from_bytes(&bytes, pass.as_ref().map(|p| p.as_str())).map_err(|e| {
        ConfigError::Input {
            setting: setting.into(),
            path: path.display().to_string(),
            detail: e.to_string(),
        }
    })
}

fn nothing_imported(problems: Vec<String>, total: usize) -> MainError {
    MainError::NothingImported { problems, total }
}

/// `license ...`: `env` and `file` for `license add`'s `--trust-isv`.
pub async fn license(
    cmd: LicenseCmd,
    env: &Env,
    file: &FileConfig,
    db: &str,
) -> Result<(), MainError> {
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        LicenseCmd::Add {
            files,
            trust_isv,
            registration_key,
            require_ek_binding,
        } => {
            let isv_paths = config::resolve_trust_isv(&trust_isv, env, file)?;
            let require_ek_binding =
                config::resolve_require_ek_binding(require_ek_binding, env, file)?;
            let service = load_registration_key(
                &config::resolve_registration_key(registration_key, env, file)?,
                &config::resolve_passphrase(None, env, file)?,
            )?;
            let isvs = isv_paths
                .iter()
                .map(|p| {
                    let bytes = read_input(p, "--trust-isv", MAX_INPUT_FILE)?;
                    Certificate::from_pem_or_der(&bytes).map_err(|e| ConfigError::Input {
                        setting: "--trust-isv".into(),
                        path: p.display().to_string(),
                        detail: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Check every file before importing any (signature, ISV, and that the service's key
            // opens its share).
            let mut problems = Vec::new();
            let mut regs: Vec<(&PathBuf, Signed<Registration>, KeyShare)> = Vec::new();
            for f in &files {
                let opened = load_registration(f, &isvs).and_then(|reg| {
                    reg.body()
                        .open_share(&service)
                        .map(|share| (reg, share))
                        .map_err(|e| format!("registration {}: {e}", f.display()))
                });
                match opened {
                    Ok((reg, share)) => {
                        let guid = reg.body().license_guid;
                        if reg.body().tcb.vtpm_ek.is_none() && require_ek_binding {
                            problems.push(format!(
                                "registration {}: license {guid} {UNBOUND}, and \
                                 require_ek_binding is set ({}, {} or `{}` in the config \
                                 file): ask the ISV to sell it again bound to the customer's \
                                 vTPMs (`ovsatool sale --ek-ca <EK CA certificate>` or \
                                 `--ek-cert <EK certificate>`), or turn require_ek_binding off \
                                 to accept it",
                                f.display(),
                                config::REQUIRE_EK_BINDING.flag,
                                config::REQUIRE_EK_BINDING.env,
                                config::REQUIRE_EK_BINDING.key,
                            ));
                        } else if let Some((other, _, _)) =
                            regs.iter().find(|(_, r, _)| r.body().license_guid == guid)
                        {
                            problems.push(format!(
                                "registration {}: license {guid} is also in {}",
                                f.display(),
                                other.display()
                            ));
                        } else {
                            regs.push((f, reg, share));
                        }
                    }
                    Err(e) => problems.push(e),
                }
            }
            if !problems.is_empty() {
                return Err(nothing_imported(problems, files.len()));
            }
            let store = Store::open_with(db, OpenMode::Create).await?;
            for (f, reg, _) in &regs {
                let guid = reg.body().license_guid;
                if store.license(guid).await?.is_some() {
                    problems.push(format!(
                        "registration {}: license {guid} is already registered",
                        f.display()
                    ));
                }
            }
            if !problems.is_empty() {
                return Err(nothing_imported(problems, files.len()));
            }
            for (f, reg, _) in &regs {
                if reg.body().tcb.vtpm_ek.is_none() {
                    eprintln!(
                        "ovsa-license-server: warning: registration {}: license {} {UNBOUND}: \
                         any vTPM whose EK chains to a CA this service trusts can attest for \
                         it with the customer's files; ask the ISV to sell it bound to the \
                         customer's vTPMs (`ovsatool sale --ek-ca/--ek-cert`), or set \
                         require_ek_binding ({}) to refuse such registrations",
                        escape_controls(&f.display().to_string()),
                        reg.body().license_guid,
                        config::REQUIRE_EK_BINDING.flag,
                    );
                }
            }
            for (f, reg, share) in &regs {
                let rec = LicenseRecord::from_registration(
                    reg.body(),
                    share,
                    reg.signer().fingerprint(),
                    now,
                );
                store.add_license(&rec).await?;
                store
                    .append_audit(&AuditEntry {
                        at: now,
                        license_guid: Some(rec.license_guid),
                        client: "admin".into(),
                        action: "add".into(),
                        purpose: None,
                        result: "ok".into(),
                        reason: None,
                        message: format!("registered from {}", f.display()),
                        instance_id: None,
                    })
                    .await?;
                println!(
                    "added license {} for '{}' version {} ({})",
                    rec.license_guid,
                    escape_controls(&rec.model_name),
                    escape_controls(&rec.model_version),
                    escape_controls(&customer_subject(&rec))
                );
            }
            Ok(())
        }
        LicenseCmd::List { json } => {
            let store = Store::open_with(db, OpenMode::ReadOnly).await?;
            let licenses = store.list_licenses().await?;
            if json {
                let v: Vec<_> = licenses.iter().map(|r| license_json(r, None)).collect();
                println!("{}", to_json_text(&serde_json::Value::Array(v)));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = licenses
                .iter()
                .map(|r| {
                    vec![
                        r.license_guid.to_string(),
                        format!("{} v{}", r.model_name, r.model_version),
                        r.uses.to_string(),
                        state(r).into(),
                        binding_summary(r.tcb.vtpm_ek.as_ref()),
                        customer_subject(r),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["license", "model", "uses", "state", "vtpms", "customer"],
                    &rows
                )
            );
            Ok(())
        }
        LicenseCmd::Show { guid, json } => {
            let store = Store::open_with(db, OpenMode::ReadOnly).await?;
            let r = store
                .license(guid)
                .await?
                .ok_or(MainError::NotRegistered { guid })?;
            let acts = store.activations(guid).await?;
            let leases = store.leases(guid, now).await?;
            let seats = Seats {
                at: now,
                leases: &leases,
            };
            if json {
                let mut v = license_json(&r, Some(&acts));
                v["live_seats"] = seats.json(&acts);
                println!("{}", to_json_text(&v));
            } else {
                print!("{}", license_text(&r, &acts, &seats));
            }
            Ok(())
        }
        LicenseCmd::Revoke { guid } => {
            let store = Store::open_with(db, OpenMode::Existing).await?;
            let r = store
                .license(guid)
                .await?
                .ok_or(MainError::NotRegistered { guid })?;
            if let Some(at) = r.revoked_at {
                println!(
                    "license {guid} is already revoked (since {}); nothing changed",
                    ovsa_core::encoding::format_rfc3339(at)
                );
                return Ok(());
            }
            if !store.revoke(guid, now).await? {
                return Err(MainError::NotRegistered { guid });
            }
            store
                .append_audit(&AuditEntry {
                    at: now,
                    license_guid: Some(guid),
                    client: "admin".into(),
                    action: "revoke".into(),
                    purpose: None,
                    result: "ok".into(),
                    reason: None,
                    message: "revoked".into(),
                    instance_id: None,
                })
                .await?;
            println!("revoked license {guid}: the next check of any runtime using it is refused");
            Ok(())
        }
        LicenseCmd::Reinstate { guid } => {
            let store = Store::open_with(db, OpenMode::Existing).await?;
            let r = store
                .license(guid)
                .await?
                .ok_or(MainError::NotRegistered { guid })?;
            if r.revoked_at.is_none() {
                println!("license {guid} is not revoked; nothing changed");
                return Ok(());
            }
            if !store.reinstate(guid).await? {
                return Err(MainError::NotRegistered { guid });
            }
            store
                .append_audit(&AuditEntry {
                    at: now,
                    license_guid: Some(guid),
                    client: "admin".into(),
                    action: "reinstate".into(),
                    purpose: None,
                    result: "ok".into(),
                    reason: None,
                    message: "revocation lifted".into(),
                    instance_id: None,
                })
                .await?;
            println!("reinstated license {guid}: checks are granted again under its policy");
            Ok(())
        }
    }
}

/// The customer certificate's subject, exactly as stored (escape it before printing as text).
fn customer_subject(r: &LicenseRecord) -> String {
    Certificate::from_der(&r.customer_cert)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|_| "<invalid certificate>".into())
}

/// How the admin output says a license is not bound (`license add`'s warning and refusal).
const UNBOUND: &str = "is not bound to EK CAs or enrolled EKs";

/// One cell: which vTPMs may attest for a license (`license list`).
fn binding_summary(b: Option<&EkBinding>) -> String {
    let Some(b) = b else {
        return "any trusted vTPM".into();
    };
    let count = |n: usize, one: &str, many: &str| match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    };
    let parts: Vec<String> = [
        count(b.cas.len(), "EK CA", "EK CAs"),
        count(b.eks.len(), "EK", "EKs"),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!("bound: {}", parts.join(", "))
}

/// The EK binding as JSON, in the shape `ovsatool inspect` shows it (`vtpm_ek_binding`).
fn binding_json(b: Option<&EkBinding>) -> serde_json::Value {
    match b {
        None => serde_json::json!({
            "bound": false,
            "allows": "any trusted vTPM",
        }),
        Some(b) => serde_json::json!({
            "bound": true,
            "ek_cas": b.cas.iter().map(|der| serde_json::json!({
                "subject": subject_of(der),
                "fingerprint_sha256": hex::encode(ovsa_core::crypto::hash::sha256(der)),
            })).collect::<Vec<_>>(),
            "enrolled_ek_certificates_sha256":
                b.eks.iter().map(|d| hex::encode(d.0)).collect::<Vec<_>>(),
        }),
    }
}

/// The EK binding as text lines (`license show`).
fn binding_lines(b: Option<&EkBinding>) -> Vec<String> {
    match b {
        None => vec![
            "any trusted vTPM (not bound to EK CAs or EKs; sell with `ovsatool sale \
                      --ek-ca/--ek-cert` to bind)"
                .into(),
        ],
        Some(b) => b.describe(),
    }
}

/// The live seats of a license at `at` (service clock): its live leases, one seat per machine.
struct Seats<'a> {
    at: time::OffsetDateTime,
    leases: &'a [Lease],
}

impl Seats<'_> {
    /// The machines holding a seat, in the order their first lease was taken.
    fn machines(&self) -> Vec<[u8; 32]> {
        let mut out: Vec<[u8; 32]> = Vec::new();
        for l in self.leases {
            if !out.contains(&l.instance_id) {
                out.push(l.instance_id);
            }
        }
        out
    }

    /// The machine's last successful check, from its activation.
    fn last_check(acts: &[Activation], machine: &[u8; 32]) -> Option<time::OffsetDateTime> {
        acts.iter()
            .find(|a| &a.instance_id == machine)
            .map(|a| a.last_seen)
    }

    fn json(&self, acts: &[Activation]) -> serde_json::Value {
        let fmt = ovsa_core::encoding::format_rfc3339;
        let machines: Vec<_> = self
            .machines()
            .iter()
            .map(|m| {
                serde_json::json!({
                    "machine": hex::encode(m),
                    "last_check": Self::last_check(acts, m).map(fmt),
                    "leases": self.leases.iter().filter(|l| &l.instance_id == m).map(|l| {
                        serde_json::json!({
                            "lease_id": l.lease_id,
                            "tpm_reset_count": l.reset_count,
                            "expires": fmt(l.expires_at),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "at": fmt(self.at),
            "count": machines.len(),
            "seats": machines,
        })
    }
}

fn state(r: &LicenseRecord) -> &'static str {
    if r.revoked_at.is_some() {
        "revoked"
    } else {
        "active"
    }
}

/// The serde (snake_case) name of a unit enum value.
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}

/// A license as JSON (`license list --json`, and with its activations `license show --json`).
fn license_json(r: &LicenseRecord, acts: Option<&[Activation]>) -> serde_json::Value {
    let fmt = ovsa_core::encoding::format_rfc3339;
    let mut v = serde_json::json!({
        "license_guid": r.license_guid,
        "model": {"guid": r.model_guid, "name": r.model_name, "version": r.model_version,
                  "header_hash": hex::encode(r.header_hash)},
        "customer": customer_subject(r),
        "state": state(r),
        "policy": r.policy,
        "lease_seconds": r.lease_seconds,
        "tcb": r.tcb.name,
        "vtpm_ek_binding": binding_json(r.tcb.vtpm_ek.as_ref()),
        "issued": r.issued,
        "registered": fmt(r.registered_at),
        "revoked": r.revoked_at.map(fmt),
        "first_use": r.first_use.map(fmt),
        "uses": r.uses,
    });
    if let Some(acts) = acts {
        v["activations"] = acts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "instance": hex::encode(a.instance_id),
                    "first_seen": fmt(a.first_seen),
                    "last_seen": fmt(a.last_seen),
                    "checks": a.checks,
                })
            })
            .collect();
    }
    v
}

/// `license show` as text: one field a line, then the live seats and the activations as tables.
fn license_text(r: &LicenseRecord, acts: &[Activation], seats: &Seats<'_>) -> String {
    let fmt = ovsa_core::encoding::format_rfc3339;
    let opt = |t: Option<time::OffsetDateTime>| t.map(fmt).unwrap_or_else(|| "-".into());
    let machines = seats.machines();
    let mut fields = vec![
        vec!["license".into(), r.license_guid.to_string()],
        vec![
            "model".into(),
            format!("{} v{} ({})", r.model_name, r.model_version, r.model_guid),
        ],
        vec!["header hash".into(), hex::encode(r.header_hash)],
        vec!["customer".into(), customer_subject(r)],
        vec!["state".into(), state(r).into()],
        vec![
            "policy".into(),
            serde_json::to_string(&r.policy).unwrap_or_default(),
        ],
        vec!["lease".into(), format!("{} s", r.lease_seconds)],
        vec!["tcb".into(), r.tcb.name.clone()],
    ];
    for (i, line) in binding_lines(r.tcb.vtpm_ek.as_ref())
        .into_iter()
        .enumerate()
    {
        let key = if i == 0 { "vtpms allowed" } else { "" };
        fields.push(vec![key.into(), line]);
    }
    fields.extend([
        vec!["issued".into(), r.issued.clone()],
        vec!["registered".into(), fmt(r.registered_at)],
        vec!["revoked".into(), opt(r.revoked_at)],
        vec!["first use".into(), opt(r.first_use)],
        vec!["uses".into(), r.uses.to_string()],
        vec![
            "live seats".into(),
            format!(
                "{}{} at {} (service clock)",
                machines.len(),
                r.policy
                    .instance_limit
                    .map(|n| format!(" of {n}"))
                    .unwrap_or_default(),
                fmt(seats.at)
            ),
        ],
        vec!["activations".into(), acts.len().to_string()],
    ]);
    let mut out = table(&[], &fields);
    if !seats.leases.is_empty() {
        let rows: Vec<Vec<String>> = machines
            .iter()
            .flat_map(|m| {
                let last = opt(Seats::last_check(acts, m));
                seats
                    .leases
                    .iter()
                    .filter(move |l| &l.instance_id == m)
                    .map(move |l| {
                        vec![
                            hex::encode(m),
                            l.lease_id.to_string(),
                            last.clone(),
                            fmt(l.expires_at),
                        ]
                    })
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "seat (machine: EK sha256)",
                "lease",
                "last check",
                "expires (service clock)",
            ],
            &rows,
        ));
    }
    if !acts.is_empty() {
        let rows: Vec<Vec<String>> = acts
            .iter()
            .map(|a| {
                vec![
                    hex::encode(a.instance_id),
                    fmt(a.first_seen),
                    fmt(a.last_seen),
                    a.checks.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["instance", "first seen", "last seen", "checks"],
            &rows,
        ));
    }
    out
}

fn audit_json(e: &AuditEntry) -> serde_json::Value {
    serde_json::json!({
        "at": ovsa_core::encoding::format_rfc3339(e.at),
        "action": e.action,
        "result": e.result,
        "purpose": e.purpose.as_ref().map(name),
        "reason": e.reason.map(|r| r.as_str()),
        "license_guid": e.license_guid,
        "client": e.client,
        "message": e.message,
        "instance": e.instance_id.map(hex::encode),
    })
}

/// The audit log as an aligned table ("-" for an empty cell).
fn audit_table(entries: &[AuditEntry]) -> String {
    let dash = |s: String| if s.is_empty() { "-".into() } else { s };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                ovsa_core::encoding::format_rfc3339(e.at),
                dash(e.action.clone()),
                dash(e.result.clone()),
                dash(e.purpose.as_ref().map(name).unwrap_or_default()),
                dash(e.reason.map(|r| r.as_str().to_string()).unwrap_or_default()),
                dash(e.license_guid.map(|g| g.to_string()).unwrap_or_default()),
                dash(e.client.clone()),
                e.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "time", "action", "result", "purpose", "reason", "license", "client", "message",
        ],
        &rows,
    )
}
