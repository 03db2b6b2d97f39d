//! Where passphrases come from: `--passphrase-file` or `OVSA_KEYSTORE_PASSPHRASE` (never argv,
//! which other local users can read in /proc).

use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};

/// The environment variable holding a keystore passphrase.
pub const PASSPHRASE_ENV: &str = "OVSA_KEYSTORE_PASSPHRASE";

/// Largest passphrase file read (its first line is the passphrase).
const MAX_PASSPHRASE_FILE: usize = 64 * 1024;

/// Shortest passphrase `keygen --encrypt` accepts for a new keystore.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Reads the passphrase from the file (first line) or the environment, if either is given.
pub fn passphrase(file: Option<&Path>) -> CliResult<Option<Zeroizing<String>>> {
    if let Some(path) = file {
        let bytes = Zeroizing::new(ovsa_core::fsutil::read_limited_as(
            path,
            MAX_PASSPHRASE_FILE,
            "passphrase file (--passphrase-file)",
        )?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            CliError::Usage(format!(
                "--passphrase-file {}: not UTF-8 text; the first line of the file is the passphrase",
                path.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(CliError::Usage(format!(
                "--passphrase-file {}: the passphrase file is empty",
                path.display()
            )));
        }
        return Ok(Some(Zeroizing::new(line.to_string())));
    }
    Ok(std::env::var(PASSPHRASE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(Zeroizing::new))
}

/// Warns when a keystore file can be read by other users.
pub fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            eprintln!(
                "ovsatool: warning: keystore {} has mode {mode:04o}: other users can read the private key; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

/// Loads a keystore, using a passphrase if one is configured.
pub fn load_keystore(
    path: &Path,
    passphrase_file: Option<&Path>,
) -> CliResult<ovsa_core::identity::Keystore> {
    let pass = passphrase(passphrase_file)?;
    let ks = ovsa_core::identity::Keystore::load(path, pass.as_ref().map(|p| p.as_str()))
        .map_err(|e| match e {
            ovsa_core::Error::BadPassphrase => CliError::Usage(format!(
                "{}: the passphrase does not open this keystore (check --passphrase-file or {PASSPHRASE_ENV})",
                path.display()
            )),
            other => other.into(),
        })?;
    warn_if_exposed(path);
    Ok(ks)
}
