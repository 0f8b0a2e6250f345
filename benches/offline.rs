//! Where the time of `evaluate` and `report` over a fleet's manifests goes: reading and parsing
//! the files, the engine, and the rest (rows, sorting, rendering), each the median of a few runs
//! in one process (docs/design/performance.md):
//!
//! ```sh
//! scripts/fleet-manifests.py /tmp/fleet                 # 100,000 tenants, 200,000 subscriptions
//! cargo bench --bench offline -- /tmp/fleet
//! ```
//!
//! Under `cargo test --all-targets` (no directory given) it does nothing: it is a benchmark, not
//! a test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailsec_operator::cli::ReportFormat;
use mailsec_operator::cli::evaluate::parse_at;
use mailsec_operator::cli::report::{render, rows};
use mailsec_operator::engine::{Policy, evaluate_world_map};
use mailsec_operator::manifests::read_paths_with;

const RUNS: usize = 5;

/// The allocator of `kubectl-mailsec`, which users run these commands with.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; the directory is the one argument that is not a flag.
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with('-')) else {
        return Ok(());
    };
    let dir = PathBuf::from(dir);
    let at = parse_at("2026-11-29T12:00:00Z")?;
    let policy = Policy::default();
    let mut read = Vec::new();
    let mut engine = Vec::new();
    let mut report = Vec::new();
    let mut sizes = (0, 0);
    for _ in 0..RUNS {
        let started = Instant::now();
        let world = read_paths_with(std::slice::from_ref(&dir), false)?.world;
        read.push(started.elapsed());
        sizes = (world.tenants.len(), world.subscriptions.len());

        // The engine alone: every evaluation made and dropped.
        let started = Instant::now();
        let counts = evaluate_world_map(&world, &policy, at, |_, _| (), |_, _| ());
        engine.push(started.elapsed());
        std::hint::black_box(counts);

        // All of `report -o table` after the reading: engine, rows, sorting, rendering.
        let started = Instant::now();
        let text = render(&rows(&world, &policy, at), at, ReportFormat::Table)?;
        report.push(started.elapsed());
        std::hint::black_box(text);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    println!(
        "{} tenants, {} subscriptions, median of {RUNS} runs:",
        sizes.0, sizes.1
    );
    println!(
        "  read + parse the manifests      {:.3} s",
        median(&mut read)
    );
    println!(
        "  engine (evaluate_world_map)     {:.3} s",
        median(&mut engine)
    );
    println!(
        "  report after reading (engine, rows, sort, table) {:.3} s",
        median(&mut report)
    );
    Ok(())
}
