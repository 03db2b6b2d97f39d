//! The admin commands: `license add|list|show|revoke|reinstate` and `audit`.

use std::path::{Path, PathBuf};

use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Certificate, Keystore};
use ovsa_core::license::{KeyShare, Registration};
use ovsa_license_server::config::{self, read_input, ConfigError, Env, FileConfig, MAX_INPUT_FILE};
use ovsa_license_server::store::{
    Activation, AuditEntry, AuditFilter, LicenseRecord, OpenMode, Store,
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
        } => {
            let isv_paths = config::resolve_trust_isv(&trust_isv, env, file)?;
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
                        if let Some((other, _, _)) =
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
                        customer_subject(r),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["license", "model", "uses", "state", "customer"], &rows)
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
            if json {
                println!("{}", to_json_text(&license_json(&r, Some(&acts))));
            } else {
                print!("{}", license_text(&r, &acts));
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

/// `license show` as text: one field a line, then the activations as a table.
fn license_text(r: &LicenseRecord, acts: &[Activation]) -> String {
    let fmt = ovsa_core::encoding::format_rfc3339;
    let opt = |t: Option<time::OffsetDateTime>| t.map(fmt).unwrap_or_else(|| "-".into());
    let fields = vec![
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
        vec!["issued".into(), r.issued.clone()],
        vec!["registered".into(), fmt(r.registered_at)],
        vec!["revoked".into(), opt(r.revoked_at)],
        vec!["first use".into(), opt(r.first_use)],
        vec!["uses".into(), r.uses.to_string()],
        vec!["activations".into(), acts.len().to_string()],
    ];
    let mut out = table(&[], &fields);
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
