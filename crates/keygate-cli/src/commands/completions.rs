//! `keygate completions SHELL`: the completion script, generated from the same clap
//! definition as `--help`, so it never lags behind the commands.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub(crate) fn run(shell: Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "keygate",
        &mut std::io::stdout(),
    );
}
