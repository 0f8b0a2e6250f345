//! The two entry points, `mailsec-operator` and `kubectl-mailsec`: one command line ([`Cli`]),
//! one dispatch. The plugin is the same program under another name, with the operator-only
//! subcommands (`run`, `crd`) hidden from its help.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use super::{Cli, Command, evaluate, report, run};

/// Which program is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `mailsec-operator`: the operator and every tool.
    Operator,
    /// `kubectl-mailsec`: the kubectl plugin (`kubectl mailsec ...`).
    Plugin,
}

impl Entry {
    /// The executable's name, as completion scripts complete it.
    pub fn bin_name(self) -> &'static str {
        match self {
            Self::Operator => "mailsec-operator",
            Self::Plugin => "kubectl-mailsec",
        }
    }
}

/// The clap command of `entry`.
pub fn command(entry: Entry) -> clap::Command {
    let cmd = Cli::command();
    match entry {
        Entry::Operator => cmd,
        Entry::Plugin => cmd
            .name("kubectl-mailsec")
            .bin_name("kubectl mailsec")
            .about(
                "kubectl mailsec: the licensing state of the email-security service's Tenants \
                 and Subscriptions (status, report, what-if) and a check of the operator's installation.",
            )
            .mut_subcommand("run", |c| c.hide(true))
            .mut_subcommand("crd", |c| c.hide(true)),
    }
}

/// Parses the command line (clap exits with 2 on a usage error, 0 for --help) and runs it.
pub fn main(entry: Entry) -> ExitCode {
    let matches = command(entry).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    dispatch(entry, cli.command)
}

/// Runs one command.
pub fn dispatch(entry: Entry, cmd: Command) -> ExitCode {
    let stdout = std::io::stdout();
    match cmd {
        Command::Crd => match crate::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        Command::Evaluate(args) => {
            match evaluate::run(&args, chrono::Utc::now(), &mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(2, e),
            }
        }
        Command::Report(args) => block_on(async {
            match report::run(&args, chrono::Utc::now(), &mut stdout.lock()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code(), e),
            }
        }),
        Command::Run(args) => run_on(run::runtime(args.worker_threads), async {
            match run::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }),
        Command::Status(args) => {
            init_logs();
            block_on(async {
                match super::status::run(&args, chrono::Utc::now(), &mut stdout.lock()).await {
                    Ok(verdict) => ExitCode::from(verdict.exit_code()),
                    Err(e) => fail(e.exit_code(), e),
                }
            })
        }
        Command::WhatIf(args) => {
            init_logs();
            block_on(async {
                match super::whatif::run(&args, &mut stdout.lock()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(e.exit_code(), e),
                }
            })
        }
        Command::Check(args) => {
            init_logs();
            block_on(async {
                match super::check::run(&args, &mut stdout.lock()).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::from(1),
                    Err(e) => fail(1, e),
                }
            })
        }
        Command::Version(args) => {
            init_logs();
            block_on(async {
                match super::version::run(&args, entry.bin_name(), &mut stdout.lock()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(1, e),
                }
            })
        }
        Command::Completion(args) => {
            let mut cmd = command(entry);
            let mut out = stdout.lock();
            clap_complete::generate(args.shell, &mut cmd, entry.bin_name(), &mut out);
            match out.flush() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
    }
}

/// Logs of the client-side commands go to stderr, warnings only unless `RUST_LOG` says more.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `f` on a fresh multi-threaded runtime; exit code 1 when none can be made.
fn block_on(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    run_on(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        f,
    )
}

/// Runs `f` on `runtime`; exit code 1 when it could not be made.
fn run_on(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    f: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    match runtime {
        Ok(rt) => rt.block_on(f),
        Err(e) => fail(1, e),
    }
}

fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}
