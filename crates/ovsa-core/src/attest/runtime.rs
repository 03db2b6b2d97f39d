//! Runtime integrity: the ISV's runtime policy checked against the IMA measurement list.
//!
//! A [`RuntimePolicy`] lists, for the files that matter (the plugin library, the serving
//! process, the OpenVINO libraries it loads), path patterns and the SHA-256 file digests allowed
//! under each. [`check`] runs after the quote verified: it requires the IMA list, replays it to
//! the quoted PCR 10 (the covered prefix, [`super::measured_boot`]), then checks every covered
//! entry with [`check_entries`]:
//!
//! - an entry whose path matches no pattern is allowed (IMA measures everything root runs; the
//!   policy constrains only the files it names);
//! - an entry whose path matches one or more patterns must carry a `sha256` file digest listed
//!   by at least one of them, else [`MeasuredBootError::RuntimeNotAllowed`] naming the file and
//!   the digest (a violation entry, digest all zero, is therefore refused under a pattern).
//!
//! Patterns (docs/ATTESTATION.md §11), matched against the path IMA recorded, byte for byte:
//! `DIR NAME`, where `DIR` is an absolute directory ending in `/` (`/opt/ovsa/lib/`: exactly
//! that directory), such a directory followed by `**/` (`/opt/intel/**/`: it or any directory
//! below it) or `**/` alone (any directory); `NAME` is one path component in which `*` matches
//! any run of bytes other than `/` (`libopenvino*.so*`). Matching is linear in the path length.

use serde::{Deserialize, Serialize};

use super::ima::{ImaEntry, ImaLog};
use super::measured_boot::{MeasuredBootError, MAX_IMA_LOG_BYTES};
use super::pcr::PcrSet;

/// Most patterns in one policy.
pub const MAX_RULES: usize = 256;
/// Most digests in one policy (all patterns together).
pub const MAX_DIGESTS: usize = 4096;
/// Longest pattern, bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Most `*` in a pattern's file-name part.
pub const MAX_STARS: usize = 4;

/// One pattern and the file digests allowed under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// The path pattern (see the module documentation).
    pub pattern: String,
    /// Allowed SHA-256 file digests, lower-case hex, sorted, unique. Empty: nothing may be
    /// measured under the pattern.
    #[serde(with = "hex32_list")]
    pub sha256: Vec<[u8; 32]>,
}

/// The runtime policy: the body of the ISV-signed `runtime-policy` artifact (FORMATS.md), and
/// what a TCB reference carries once `ovsatool sale --runtime-policy` bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePolicy {
    /// Name of the policy (e.g. "ovms-2025.1-plugin-1.4").
    pub name: String,
    /// The patterns, in any order (each pattern at most once).
    pub files: Vec<FileRule>,
    /// Creation time, RFC 3339.
    pub created: String,
}

/// What [`check`] established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeReport {
    /// Entries covered by the quote (the replayed prefix).
    pub covered: usize,
    /// Covered entries under some pattern, all allowed.
    pub checked: usize,
}

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern<'a> {
    /// `None`: any directory (`**/`).
    dir: Option<&'a str>,
    /// Whether directories below `dir` match too (`DIR**/`).
    below: bool,
    name: &'a str,
}

fn parse_pattern(p: &str) -> Result<Pattern<'_>, String> {
    if p.is_empty() || p.len() > MAX_PATTERN_LEN {
        return Err(format!("a pattern is 1..={MAX_PATTERN_LEN} bytes"));
    }
    if p.chars().any(crate::text::is_unsafe) {
        return Err("a pattern must not contain control characters".into());
    }
    let slash = p
        .rfind('/')
        .ok_or_else(|| "a pattern is DIR/NAME: an absolute directory or **/, then a file name (example: /opt/ovsa/lib/libovsaruntime.so)".to_string())?;
    let (dir, name) = (&p[..=slash], &p[slash + 1..]);
    if name.is_empty() || name.contains("**") {
        return Err("the file-name part must be a non-empty name (`*` matches any run of characters except `/`; `**` only as a directory)".into());
    }
    if name.matches('*').count() > MAX_STARS {
        return Err(format!("at most {MAX_STARS} `*` in the file-name part"));
    }
    if dir == "**/" {
        return Ok(Pattern {
            dir: None,
            below: true,
            name,
        });
    }
    let (d, below) = match dir.strip_suffix("**/") {
        Some(d) => (d, true),
        None => (dir, false),
    };
    if !d.starts_with('/') || d.contains('*') || d.contains("//") {
        return Err("the directory part must be an absolute path without `*` (or `**/`, or an absolute directory followed by `**/`)".into());
    }
    if d.split('/').any(|c| c == "." || c == "..") {
        return Err("the directory part must not contain `.` or `..` components".into());
    }
    Ok(Pattern {
        dir: Some(d),
        below,
        name,
    })
}

/// Glob match of one component: `*` matches any run of bytes (the caller ensures no `/`).
/// Greedy with single backtrack point: O(len(name) * len(pattern)) at worst, with at most
/// [`MAX_STARS`] stars.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

impl Pattern<'_> {
    fn matches(&self, path: &str) -> bool {
        let Some(slash) = path.rfind('/') else {
            return false;
        };
        let (dir, name) = (&path[..=slash], &path[slash + 1..]);
        let dir_ok = match (self.dir, self.below) {
            (None, _) => true,
            (Some(d), false) => dir == d,
            (Some(d), true) => dir.starts_with(d),
        };
        dir_ok && glob(self.name.as_bytes(), name.as_bytes())
    }
}

/// Checks a pattern's syntax (the message says what is wrong).
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    parse_pattern(pattern).map(|_| ())
}

/// Whether `path` (as IMA recorded it) matches `pattern`; an invalid pattern matches nothing.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    parse_pattern(pattern).is_ok_and(|p| p.matches(path))
}

impl RuntimePolicy {
    /// An empty policy named `name`.
    pub fn new(name: impl Into<String>, created: impl Into<String>) -> Self {
        RuntimePolicy {
            name: name.into(),
            files: Vec::new(),
            created: created.into(),
        }
    }

    /// Allows `digest` under `pattern` (adds the pattern if new; idempotent; keeps lists
    /// sorted). Fails on an invalid pattern.
    pub fn allow(&mut self, pattern: &str, digest: Option<[u8; 32]>) -> Result<(), String> {
        validate_pattern(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
        let i = match self.files.iter().position(|r| r.pattern == pattern) {
            Some(i) => i,
            None => {
                self.files.push(FileRule {
                    pattern: pattern.to_string(),
                    sha256: Vec::new(),
                });
                self.files.len() - 1
            }
        };
        if let Some(d) = digest {
            let list = &mut self.files[i].sha256;
            if let Err(at) = list.binary_search(&d) {
                list.insert(at, d);
            }
        }
        Ok(())
    }

    /// Checks the policy: a name, 1..=[`MAX_RULES`] valid, distinct patterns, digest lists
    /// sorted and unique, at most [`MAX_DIGESTS`] digests in all.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err("name must be 1..=256 bytes".into());
        }
        if self.files.is_empty() || self.files.len() > MAX_RULES {
            return Err(format!(
                "{} patterns; a runtime policy has 1..={MAX_RULES}",
                self.files.len()
            ));
        }
        let mut total = 0usize;
        for (i, r) in self.files.iter().enumerate() {
            validate_pattern(&r.pattern).map_err(|e| {
                format!(
                    "pattern {:?}: {e}",
                    crate::text::escape_controls(&r.pattern)
                )
            })?;
            if self.files[..i].iter().any(|o| o.pattern == r.pattern) {
                return Err(format!("pattern {:?} listed twice", r.pattern));
            }
            if r.sha256.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "pattern {:?}: digests listed twice or out of order",
                    r.pattern
                ));
            }
            total += r.sha256.len();
        }
        if total > MAX_DIGESTS {
            return Err(format!("{total} digests; at most {MAX_DIGESTS}"));
        }
        Ok(())
    }
}

/// Checks `entries` (the covered prefix of a replayed IMA list) against `policy`; the first
/// entry (in list order) under a pattern whose digest no matching pattern lists is refused.
pub fn check_entries(
    entries: &[ImaEntry],
    policy: &RuntimePolicy,
) -> Result<usize, MeasuredBootError> {
    let rules: Vec<(Pattern<'_>, &FileRule)> = policy
        .files
        .iter()
        .filter_map(|r| parse_pattern(&r.pattern).ok().map(|p| (p, r)))
        .collect();
    let mut checked = 0usize;
    for (i, e) in entries.iter().enumerate() {
        let mut matched = false;
        let mut allowed = false;
        for (p, r) in &rules {
            if p.matches(&e.path) {
                matched = true;
                if e.file_alg == "sha256"
                    && !e.is_violation()
                    && r.sha256
                        .iter()
                        .any(|d| d.as_slice() == e.file_digest.as_slice())
                {
                    allowed = true;
                    break;
                }
            }
        }
        if !matched {
            continue;
        }
        if !allowed {
            return Err(MeasuredBootError::RuntimeNotAllowed {
                entry: i,
                path: e.path.clone(),
                alg: e.file_alg.clone(),
                digest: hex::encode(&e.file_digest),
                violation: e.is_violation(),
            });
        }
        checked += 1;
    }
    Ok(checked)
}

/// The runtime-policy check of verified evidence: the IMA list is required
/// ([`MeasuredBootError::ImaLogMissing`]), at most [`MAX_IMA_LOG_BYTES`], must parse and have
/// a prefix replaying to the quoted PCR 10 ([`MeasuredBootError::ImaLogMismatch`]); then every
/// entry of that prefix is checked by [`check_entries`]. Entries after the prefix (appended
/// after the quote) are not covered by the quote and are ignored until the next check.
pub fn check(
    pcrs: &PcrSet,
    ima_log: Option<&[u8]>,
    policy: &RuntimePolicy,
) -> Result<RuntimeReport, MeasuredBootError> {
    let bytes = ima_log.ok_or(MeasuredBootError::ImaLogMissing)?;
    if bytes.len() > MAX_IMA_LOG_BYTES {
        return Err(MeasuredBootError::LogTooLarge {
            what: "IMA measurement list",
            size: bytes.len(),
            max: MAX_IMA_LOG_BYTES,
        });
    }
    let ima = ImaLog::parse(bytes).map_err(MeasuredBootError::ImaLogMalformed)?;
    let covered = super::measured_boot::covered_prefix(pcrs, &ima)?;
    let checked = check_entries(&ima.entries[..covered], policy)?;
    Ok(RuntimeReport { covered, checked })
}

/// Parses the text list (`ascii_runtime_measurements`): `PCR TEMPLATE-HASH TEMPLATE
/// ALG:HEX PATH[ SIGNATURE]` per line; yields (path, alg, digest). Only file measurements are
/// read (for building a policy, not for verifying: a text list proves nothing).
pub fn parse_ascii_list(text: &str) -> Result<Vec<(String, String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", n + 1);
        let mut it = line.splitn(5, ' ');
        let (_pcr, _th, template, d, rest) = (
            it.next(),
            it.next(),
            it.next().ok_or_else(|| bad("no template name"))?,
            it.next().ok_or_else(|| bad("no file digest"))?,
            it.next().ok_or_else(|| bad("no path"))?,
        );
        if template != "ima-ng" && template != "ima-sig" {
            return Err(bad(&format!(
                "template {template:?}; boot the guest with ima_template=ima-ng"
            )));
        }
        let (alg, hexd) = d
            .split_once(':')
            .ok_or_else(|| bad("file digest is not ALG:HEX"))?;
        let digest = hex::decode(hexd).map_err(|e| bad(&format!("file digest: {e}")))?;
        let mut path = rest;
        if template == "ima-sig" {
            // The signature (hex) follows the path when the file carries one.
            if let Some((p, sig)) = rest.rsplit_once(' ') {
                if !sig.is_empty() && sig.bytes().all(|b| b.is_ascii_hexdigit()) {
                    path = p;
                }
            }
        }
        out.push((path.to_string(), alg.to_string(), digest));
    }
    Ok(out)
}

/// SHA-256 of a file's contents, streamed (what IMA records as an `ima-ng` `sha256:` digest):
/// for `ovsatool runtime-policy --file`, whose files (OpenVINO libraries) can be large.
pub fn file_sha256(path: &std::path::Path) -> crate::Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    if f.metadata()
        .map_err(|e| crate::Error::io(path, e))?
        .is_dir()
    {
        return Err(crate::Error::InvalidInput(format!(
            "{} is a directory; give the file IMA measures",
            path.display()
        )));
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| crate::Error::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

mod hex32_list {
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(hex::encode).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|h| {
                let b = hex::decode(&h).map_err(D::Error::custom)?;
                <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                    D::Error::custom(format!(
                        "a sha256 digest is 32 bytes (64 hex digits), got {} bytes",
                        b.len()
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::ima::ImaLogBuilder;
    use crate::attest::HashAlg;

    const PLUGIN: &str = "/opt/ovsa/lib/libovsaruntime.so";

    fn sha(b: &[u8]) -> [u8; 32] {
        HashAlg::Sha256.digest(b).try_into().unwrap()
    }

    fn policy() -> RuntimePolicy {
        let mut p = RuntimePolicy::new("test", "2026-01-01T00:00:00Z");
        p.allow(PLUGIN, Some(sha(b"plugin"))).unwrap();
        p.allow("/usr/bin/ovms", Some(sha(b"server"))).unwrap();
        p.allow("/usr/lib/**/libopenvino*.so*", Some(sha(b"ov-core")))
            .unwrap();
        p.allow("/usr/lib/**/libopenvino*.so*", Some(sha(b"ov-cpu")))
            .unwrap();
        p.validate().unwrap();
        p
    }

    fn quoted(log: &[u8], upto: usize) -> PcrSet {
        let ima = ImaLog::parse(log).unwrap();
        let prefix = ImaLog {
            entries: ima.entries[..upto].to_vec(),
        };
        let mut q = PcrSet::new(HashAlg::Sha256);
        q.values
            .insert(10, prefix.replay(HashAlg::Sha256, 10).unwrap());
        q
    }

    fn run(log: Vec<u8>) -> Result<RuntimeReport, MeasuredBootError> {
        let n = ImaLog::parse(&log).unwrap().entries.len();
        check(&quoted(&log, n), Some(&log), &policy())
    }

    fn stock() -> ImaLogBuilder {
        ImaLogBuilder::new()
            .entry("boot_aggregate", "sha256", &[0x11; 32], false)
            .file("/usr/bin/ovms", b"server")
            .file(
                "/usr/lib/x86_64-linux-gnu/libopenvino.so.2025.1.0",
                b"ov-core",
            )
            .file(
                "/usr/lib/x86_64-linux-gnu/openvino/libopenvino_intel_cpu_plugin.so",
                b"ov-cpu",
            )
            .file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"libc")
            .file(PLUGIN, b"plugin")
    }

    #[test]
    fn patterns() {
        let m = pattern_matches;
        assert!(m(PLUGIN, PLUGIN));
        assert!(!m(PLUGIN, "/opt/ovsa/lib/libovsaruntime.so.1"));
        assert!(!m(PLUGIN, "/opt/ovsa/lib/x/libovsaruntime.so"));
        assert!(m("**/libovsaruntime.so", "/tmp/x/libovsaruntime.so"));
        assert!(m("/usr/lib/**/libopenvino*.so*", "/usr/lib/libopenvino.so"));
        assert!(m(
            "/usr/lib/**/libopenvino*.so*",
            "/usr/lib/a/b/libopenvino_c.so.2"
        ));
        assert!(!m(
            "/usr/lib/**/libopenvino*.so*",
            "/usr/lib64/libopenvino.so"
        ));
        assert!(m("/bin/*", "/bin/sh"));
        assert!(!m("/bin/*", "/bin/x/sh"));
        assert!(m("/a/*b*c", "/a/xbbbyc"));
        assert!(!m("/a/*b*c", "/a/xbbbycd"));
        assert!(!m("/opt/*/lib.so", "/opt/x/lib.so"), "invalid: * in dir");
        for bad in [
            "",
            "lib.so",
            "/opt/",
            "/opt/**",
            "/o*t/a.so",
            "/a/../b.so",
            "/a/b\n.so",
            "/a/*a*b*c*d*e",
            "rel/**/a.so",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
        // Long hostile names are linear work, not a hang.
        let long = format!("/a/{}", "a".repeat(60_000));
        assert!(!m("/a/*a*a*a*b", &long));
    }

    #[test]
    fn stock_runtime_is_allowed_and_files_outside_patterns_too() {
        let r = run(stock().file("/usr/bin/python3", b"anything").build()).unwrap();
        assert_eq!(r.covered, 7);
        // boot_aggregate, libc and python3 are outside every pattern.
        assert_eq!(r.checked, 4);
    }

    #[test]
    fn a_changed_plugin_is_refused_naming_it() {
        let e = run(stock().file(PLUGIN, b"patched").build()).unwrap_err();
        match &e {
            MeasuredBootError::RuntimeNotAllowed {
                entry: 6,
                path,
                alg,
                digest,
                violation: false,
            } => {
                assert_eq!(path, PLUGIN);
                assert_eq!(alg, "sha256");
                assert_eq!(*digest, hex::encode(sha(b"patched")));
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains(PLUGIN) && msg.contains(&hex::encode(sha(b"patched"))),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_file_under_a_pattern_is_refused() {
        let e = run(stock()
            .file("/usr/lib/x86_64-linux-gnu/libopenvino_evil.so", b"evil")
            .build())
        .unwrap_err();
        assert!(
            matches!(e, MeasuredBootError::RuntimeNotAllowed { ref path, .. } if path.ends_with("libopenvino_evil.so"))
        );
        // Another digest algorithm under a pattern is refused too (the policy lists sha256).
        let e = run(stock()
            .entry(PLUGIN, "sha1", &HashAlg::Sha1.digest(b"plugin"), false)
            .build())
        .unwrap_err();
        assert!(matches!(e, MeasuredBootError::RuntimeNotAllowed { ref alg, .. } if alg == "sha1"));
        // A violation (zero digest) under a pattern is refused.
        let e = run(stock().entry(PLUGIN, "sha256", &[0; 32], true).build()).unwrap_err();
        assert!(matches!(
            e,
            MeasuredBootError::RuntimeNotAllowed {
                violation: true,
                ..
            }
        ));
    }

    #[test]
    fn control_characters_in_a_path_are_escaped_in_the_message() {
        let evil = "/opt/ovsa/lib/\x1b[2J\nOK accepted/../libovsaruntime.so";
        let mut p = policy();
        p.allow("**/libovsaruntime.so", Some(sha(b"plugin")))
            .unwrap();
        let log = stock().file(evil, b"patched").build();
        let n = ImaLog::parse(&log).unwrap().entries.len();
        let e = check(&quoted(&log, n), Some(&log), &p).unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.contains('\x1b'), "{msg:?}");
        assert!(msg.contains("\\x1b[2J\\nOK accepted"), "{msg}");
    }

    #[test]
    fn ima_sig_entries_are_checked_like_ima_ng() {
        // An ima-sig entry: d-ng, n-ng, sig fields.
        let mut dng = b"sha256:\0".to_vec();
        dng.extend_from_slice(&sha(b"patched"));
        let nng = format!("{PLUGIN}\0").into_bytes();
        let sig = vec![3u8, 2, 1];
        let mut data = Vec::new();
        for f in [&dng, &nng, &sig] {
            data.extend_from_slice(&(f.len() as u32).to_le_bytes());
            data.extend_from_slice(f);
        }
        let mut log = stock().build();
        log.extend_from_slice(&10u32.to_le_bytes());
        log.extend_from_slice(&HashAlg::Sha1.digest(&data));
        log.extend_from_slice(&7u32.to_le_bytes());
        log.extend_from_slice(b"ima-sig");
        log.extend_from_slice(&(data.len() as u32).to_le_bytes());
        log.extend_from_slice(&data);
        let e = run(log).unwrap_err();
        assert!(matches!(
            e,
            MeasuredBootError::RuntimeNotAllowed { entry: 6, .. }
        ));
    }

    #[test]
    fn the_list_is_required_replayed_and_bounded() {
        let log = stock().file(PLUGIN, b"patched").build();
        let q = quoted(&log, 6);
        assert_eq!(
            check(&q, None, &policy()),
            Err(MeasuredBootError::ImaLogMissing)
        );
        // Entries after the quoted prefix are not covered and not checked (next renewal).
        let r = check(&q, Some(&log), &policy()).unwrap();
        assert_eq!((r.covered, r.checked), (6, 4));
        // A list that does not replay to the quote.
        let mut other = q.clone();
        other.values.insert(10, vec![7; 32]);
        assert!(matches!(
            check(&other, Some(&log), &policy()),
            Err(MeasuredBootError::ImaLogMismatch(_))
        ));
        // Oversized.
        let big = vec![0u8; MAX_IMA_LOG_BYTES + 1];
        assert!(matches!(
            check(&q, Some(&big), &policy()),
            Err(MeasuredBootError::LogTooLarge { .. })
        ));
    }

    #[test]
    fn policies_are_validated() {
        let mut p = policy();
        p.files[0].sha256.push([0; 32]); // out of order
        assert!(p.validate().is_err());
        let mut p = policy();
        p.files.push(p.files[0].clone());
        assert!(p.validate().unwrap_err().contains("twice"));
        let mut p = policy();
        p.files.clear();
        assert!(p.validate().is_err());
        let mut p = RuntimePolicy::new("big", "x");
        for i in 0..=MAX_RULES {
            p.allow(&format!("/a/{i}"), None).unwrap();
        }
        assert!(p.validate().is_err());
        let json = serde_json::to_string(&policy()).unwrap();
        let back: RuntimePolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy());
        assert!(serde_json::from_str::<RuntimePolicy>(
            &json.replace(&hex::encode(sha(b"plugin")), "abcd")
        )
        .is_err());
    }

    #[test]
    fn ascii_lists_parse() {
        let t = format!(
            "10 {} ima-ng sha256:{} boot_aggregate\n10 {} ima-ng sha256:{} /opt/my dir/lib.so\n10 {} ima-sig sha256:{} /usr/bin/x 030204\n",
            "0".repeat(40),
            "1".repeat(64),
            "0".repeat(40),
            "2".repeat(64),
            "0".repeat(40),
            "3".repeat(64)
        );
        let l = parse_ascii_list(&t).unwrap();
        assert_eq!(l[1].0, "/opt/my dir/lib.so");
        assert_eq!(l[2].0, "/usr/bin/x");
        assert!(parse_ascii_list("10 00 ima sha1:00 x").is_err());
    }
}
