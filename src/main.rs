use std::process::ExitCode;

use clap::Parser;
use mailsec_operator::cli::{Cli, Command, evaluate, report, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match mailsec_operator::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        Command::Evaluate(args) => {
            let stdout = std::io::stdout();
            match evaluate::run(&args, chrono::Utc::now(), &mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(2, e),
            }
        }
        Command::Report(args) => {
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(1, e),
            };
            let stdout = std::io::stdout();
            match runtime.block_on(report::run(&args, chrono::Utc::now(), &mut stdout.lock())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code(), e),
            }
        }
        Command::Run(args) => {
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(1, e),
            };
            match runtime.block_on(run::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}
