//! One module per command.

mod check;
mod decrypt;
mod inspect;
mod keygen;
mod licgen;
mod protect;
mod reprotect;
mod runtime_policy;
mod sale;
mod tcb;
mod tpm;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::error::CliResult;

/// Runs the parsed command.
pub fn run(cli: Cli) -> CliResult<ExitCode> {
    match cli.command {
        Command::Keygen(a) => keygen::run(&a),
        Command::Protect(a) => protect::run(&a),
        Command::Reprotect(a) => reprotect::run(&a),
        Command::Licgen(a) => licgen::run(&a),
        Command::Tcb(a) => tcb::run(&a),
        Command::RuntimePolicy(a) => runtime_policy::run(&a),
        Command::Sale(a) => sale::run(&a),
        Command::Inspect(a) => return inspect::run(&a),
        Command::Decrypt(a) => decrypt::run(&a),
        Command::HostEnroll(a) => tpm::host_enroll(&a),
        Command::HostQuote(a) => tpm::host_quote(&a),
        Command::Attest(a) => tpm::attest(&a),
        Command::Check(a) => return check::run(&a),
    }
    .map(|()| ExitCode::SUCCESS)
}

/// Appends an extension to a path (`ks` -> `ks.csr`).
fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}
