//! A model's `custom_loader_options` (compact JSON, every value a string).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The options the loader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The customer keystore (private key + certificate).
    pub keystore: String,
    /// Base name of the `.dat` (package) and `.lic` (license) files.
    pub controlled_access_file: String,
}

/// Parses the options JSON: an object whose values are all strings, with `keystore` and
/// `controlled_access_file` present and non-empty. Other keys (`loader_name`, ...) are ignored.
pub fn parse(json: &str) -> Result<LoadOptions, String> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("custom_loader_options is not valid JSON: {e}"))?;
    let object = value.as_object().ok_or_else(|| {
        format!(
            "custom_loader_options must be a JSON object, got {}",
            kind(&value)
        )
    })?;
    let mut strings = BTreeMap::new();
    for (key, v) in object {
        match v.as_str() {
            Some(s) => {
                strings.insert(key.as_str(), s);
            }
            None => {
                return Err(format!(
                    "custom_loader_options value of '{key}' must be a string, got {}",
                    kind(v)
                ))
            }
        }
    }
    let required = |key: &str| -> Result<String, String> {
        match strings.get(key) {
            Some(s) if !s.is_empty() => Ok((*s).to_string()),
            Some(_) => Err(format!("custom_loader_options '{key}' is empty")),
            None => Err(format!(
                "custom_loader_options lacks '{key}' (required: keystore, controlled_access_file)"
            )),
        }
    };
    Ok(LoadOptions {
        keystore: required("keystore")?,
        controlled_access_file: required("controlled_access_file")?,
    })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Resolves the option `key`'s path `given`: absolute paths are used as given; relative ones
/// resolve inside the version directory only (never against the working directory), and may not
/// leave it (`..` is refused). The file's existence is checked by the caller.
pub fn resolve(version_dir: &Path, key: &str, given: &str) -> Result<PathBuf, String> {
    let p = Path::new(given);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "custom_loader_options '{key}' ('{given}') leaves the version directory '{}': \
             relative names resolve inside base_path/<version>/ only; use a plain name there, \
             or an absolute path for a file elsewhere",
            version_dir.display()
        ));
    }
    Ok(version_dir.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let o = parse(r#"{"loader_name":"ovsa","keystore":"k.ks","controlled_access_file":"m"}"#)
            .unwrap();
        assert_eq!(o.keystore, "k.ks");
        assert_eq!(o.controlled_access_file, "m");
        for (bad, needle) in [
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (
                r#"{"keystore":1,"controlled_access_file":"m"}"#,
                "'keystore' must be a string, got a number",
            ),
            (r#"{"keystore":"k"}"#, "lacks 'controlled_access_file'"),
            (
                r#"{"keystore":"","controlled_access_file":"m"}"#,
                "'keystore' is empty",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn resolves_inside_the_version_dir_only() {
        let d = Path::new("/models/m/1");
        assert_eq!(resolve(d, "k", "a.dat").unwrap(), d.join("a.dat"));
        // A file that does not exist there is not looked for anywhere else.
        assert_eq!(
            resolve(d, "k", "keys/c.ks").unwrap(),
            PathBuf::from("/models/m/1/keys/c.ks")
        );
        assert_eq!(resolve(d, "k", "/x/y").unwrap(), PathBuf::from("/x/y"));
        for bad in ["../../../fd", "..", "sub/../../x", "./../x"] {
            let e = resolve(d, "controlled_access_file", bad).unwrap_err();
            assert!(
                e.contains("'controlled_access_file'")
                    && e.contains("leaves the version directory"),
                "{bad}: {e}"
            );
        }
    }
}
