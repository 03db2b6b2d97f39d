//! Where passphrases come from: `--passphrase-file` or `OVSA_KEYSTORE_PASSPHRASE` (never argv,
//! which other local users can read in /proc).

use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};

/// The environment variable holding a keystore passphrase.
pub const PASSPHRASE_ENV: &str = "OVSA_KEYSTORE_PASSPHRASE";

/// Reads the passphrase from the file (first line) or the environment, if either is given.
pub fn passphrase(file: Option<&Path>) -> CliResult<Option<Zeroizing<String>>> {
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| ovsa_core::Error::io(path, e))?,
        );
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(CliError::Usage(format!(
                "{}: the passphrase file is empty",
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

/// Loads a keystore, using a passphrase if one is configured.
pub fn load_keystore(
    path: &Path,
    passphrase_file: Option<&Path>,
) -> CliResult<ovsa_core::identity::Keystore> {
    let pass = passphrase(passphrase_file)?;
    Ok(ovsa_core::identity::Keystore::load(
        path,
        pass.as_ref().map(|p| p.as_str()),
    )?)
}
