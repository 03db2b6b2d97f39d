//! `ovsatool`: the model owner's command line.
//!
//! The ISV makes keystores, protects models, defines license policies and TCB references, and
//! sells customer licenses; `inspect` shows and verifies any artifact. Run `ovsatool --help` or
//! `ovsatool <command> --help` for the details of each command.
#![forbid(unsafe_code)]

/// Prints a line to stdout, returning an error instead of panicking (e.g. on a closed pipe).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*).map_err($crate::error::CliError::Output)?
    }};
}

mod cli;
mod commands;
mod error;
mod paths;
mod progress;
mod secrets;
mod signals;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    signals::install();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error::CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "ovsatool: error: {}",
                ovsa_core::text::escape_controls(&e.to_string())
            );
            std::process::ExitCode::FAILURE
        }
    }
}
