//! `kubectl-mailsec`: the kubectl plugin. Put it on PATH and run `kubectl mailsec ...`.
//! The same command line as `mailsec-operator` (see `mailsec_operator::cli`).

use std::process::ExitCode;

use mailsec_operator::cli::entry::{Entry, main as cli_main};

fn main() -> ExitCode {
    cli_main(Entry::Plugin)
}
