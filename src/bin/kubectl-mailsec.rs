//! `kubectl-mailsec`: the kubectl plugin. Put it on PATH and run `kubectl mailsec ...`.
//! The same command line as `mailsec-operator` (see `mailsec_operator::cli`).

use std::process::ExitCode;

use mailsec_operator::cli::entry::{Entry, main as cli_main};

/// The plugin's heavy work is batch work over a fleet's manifests (`evaluate`, `report`):
/// hundreds of thousands of short-lived allocations on every core, which took about two thirds of
/// the time with jemalloc that they take with glibc's malloc, in no more memory
/// (docs/design/performance.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli_main(Entry::Plugin)
}
