//! A model's `custom_loader_options` (compact JSON, every value a string).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Resolves an option path: absolute paths as given; relative ones against the version
/// directory if the file exists there, else as given (relative to the working directory).
pub fn resolve(version_dir: &Path, given: &str) -> PathBuf {
    let p = Path::new(given);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let in_version = version_dir.join(p);
    if in_version.exists() {
        in_version
    } else {
        p.to_path_buf()
    }
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
    fn resolves_relative_to_version_dir_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.dat"), b"x").unwrap();
        assert_eq!(resolve(d.path(), "a.dat"), d.path().join("a.dat"));
        assert_eq!(resolve(d.path(), "b.dat"), PathBuf::from("b.dat"));
        assert_eq!(resolve(d.path(), "/x/y"), PathBuf::from("/x/y"));
    }
}
