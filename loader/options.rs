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

/// Why the options (or a path in them) were refused. The messages name the option and say what
/// to change; a cause is part of the message and not also the [`std::error::Error::source`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The options are not JSON.
    #[error("custom_loader_options is not valid JSON: {detail}")]
    Json {
        /// The JSON parser's message.
        detail: String,
    },
    /// The options are JSON, but not an object.
    #[error("custom_loader_options must be a JSON object, got {got}")]
    NotObject {
        /// What they are instead ("an array", ...).
        got: &'static str,
    },
    /// A value is not a string.
    #[error("custom_loader_options value of '{key}' must be a string, got {got}")]
    NotString {
        /// The option.
        key: String,
        /// What its value is instead.
        got: &'static str,
    },
    /// A required option is empty.
    #[error("custom_loader_options '{key}' is empty")]
    Empty {
        /// The option.
        key: &'static str,
    },
    /// A required option is missing.
    #[error("custom_loader_options lacks '{key}' (required: keystore, controlled_access_file)")]
    Missing {
        /// The option.
        key: &'static str,
    },
    /// A relative path in an option leaves the version directory.
    #[error(
        "custom_loader_options '{key}' ('{given}') leaves the version directory '{}': \
         relative names resolve inside base_path/<version>/ only; use a plain name there, \
         or an absolute path for a file elsewhere",
        .version_dir.display()
    )]
    LeavesVersionDir {
        /// The option.
        key: String,
        /// Its value.
        given: String,
        /// The version directory.
        version_dir: PathBuf,
    },
}

/// Parses the options JSON: an object whose values are all strings, with `keystore` and
/// `controlled_access_file` present and non-empty. Other keys (`loader_name`, ...) are ignored.
pub fn parse(json: &str) -> Result<LoadOptions, OptionsError> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| OptionsError::Json {
        detail: e.to_string(),
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| OptionsError::NotObject { got: kind(&value) })?;
    let mut strings = BTreeMap::new();
    for (key, v) in object {
        match v.as_str() {
            Some(s) => {
                strings.insert(key.as_str(), s);
            }
            None => {
                return Err(OptionsError::NotString {
                    key: key.clone(),
                    got: kind(v),
                })
            }
        }
    }
    let required = |key: &'static str| -> Result<String, OptionsError> {
        match strings.get(key) {
            Some(s) if !s.is_empty() => Ok((*s).to_string()),
            Some(_) => Err(OptionsError::Empty { key }),
            None => Err(OptionsError::Missing { key }),
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
pub fn resolve(version_dir: &Path, key: &str, given: &str) -> Result<PathBuf, OptionsError> {
    let p = Path::new(given);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(OptionsError::LeavesVersionDir {
            key: key.to_string(),
            given: given.to_string(),
            version_dir: version_dir.to_path_buf(),
        });
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
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_are_typed() {
        use std::error::Error as _;
        let e = parse(r#"{"keystore":"k"}"#).unwrap_err();
        assert_eq!(
            e,
            OptionsError::Missing {
                key: "controlled_access_file"
            }
        );
        let e = parse("{").unwrap_err();
        assert!(matches!(e, OptionsError::Json { .. }), "{e:?}");
        assert!(e.source().is_none());
        let e = resolve(Path::new("/m/1"), "keystore", "../k.ks").unwrap_err();
        assert_eq!(
            e.to_string(),
            "custom_loader_options 'keystore' ('../k.ks') leaves the version directory '/m/1': \
             relative names resolve inside base_path/<version>/ only; use a plain name there, \
             or an absolute path for a file elsewhere"
        );
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
            let e = resolve(d, "controlled_access_file", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("'controlled_access_file'")
                    && e.contains("leaves the version directory"),
                "{bad}: {e}"
            );
        }
    }
}
