//! `keygate`: the binary. Parses the command line, dispatches to one command, reports.
//!
//! Exit codes: 0 success, 1 a refused credential, an invalid token or an untrusted TLS
//! certificate, 2 usage or configuration errors, 3 a server (keygate, or the API behind
//! `keygate call`) that failed or could not be reached. Errors go to stderr in one line.

mod cli;
mod commands;
mod log_fields;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::commands::{Refused, Unavailable};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("keygate: {line}");
            if e.downcast_ref::<Refused>().is_some() {
                ExitCode::from(1)
            } else if e.downcast_ref::<Unavailable>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
