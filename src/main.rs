use std::process::ExitCode;

use mailsec_operator::cli::entry::{Entry, main as cli_main};

fn main() -> ExitCode {
    limit_malloc_arenas();
    cli_main(Entry::Operator)
}

/// The operator is a long-running server whose allocations come in bursts on every worker thread
/// (a warm restart reconciles every object within seconds). glibc gives each such thread an arena
/// of its own, up to eight per core, and keeps what a burst freed in each of them; two arenas
/// lowered the peak of a warm restart at 30,000 objects by 4–8 %, at no cost in time
/// (docs/design/performance.md). `MALLOC_ARENA_MAX` in the environment still decides when set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: no other thread exists yet, and M_ARENA_MAX only bounds how many arenas
        // glibc's malloc creates from now on.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
