//! `keygate`: the binary. Parses the command line, dispatches to one command, reports.
//!
//! Exit codes: 0 success, 1 a refused credential or invalid token, 2 usage or
//! configuration errors. Errors go to stderr in one line.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::commands::Refused;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("keygate: {line}");
            if e.downcast_ref::<Refused>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
