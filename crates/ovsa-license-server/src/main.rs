//! `ovsa-license-server`: run the license service, and administer its database.
//!
//! The command line is in `cli.rs`, settings are resolved by `ovsa_license_server::config`
//! (command line > environment > TOML file > defaults), `serve` is in `serve.rs` and the admin
//! commands in `admin.rs`. This file reads the process environment (the only place that does),
//! sets up logging and dispatches.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod error;
mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ovsa_license_server::config::{self, Env, FileConfig};

use cli::{Cli, Command};
use error::MainError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colours in the log only on a terminal, and never with `NO_COLOR` set.
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVSA_LS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(colours)
        .with_writer(std::io::stderr)
        .init();
    let env = Env::from_vars(
        std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with("OVSA_"))),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ovsa-license-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovsa-license-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, env: Env) -> Result<(), MainError> {
    let file =
        FileConfig::load(config::resolve_config_path(cli.config.as_deref(), &env)?.as_deref())?;
    let db = config::resolve_db(cli.db.as_deref(), &env, &file)?;
    match cli.command {
        Command::Serve(a) => serve::serve(a, &env, &file, &db).await,
        Command::License(cmd) => admin::license(cmd, &env, &file, &db).await,
        Command::Audit {
            license,
            limit,
            json,
        } => admin::audit(&db, license, limit, json).await,
    }
}
