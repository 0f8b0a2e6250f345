use std::process::ExitCode;

use mailsec_operator::cli::entry::{Entry, main as cli_main};

fn main() -> ExitCode {
    cli_main(Entry::Operator)
}
