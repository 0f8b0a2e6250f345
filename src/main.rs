use std::process::ExitCode;

use clap::Parser;
use mailsec_operator::cli::{Cli, Command, evaluate, run};

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
        Command::Run(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
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

fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}
