//! `bench`: the peers' workloads on their data files, one JSON line per run.

use anyhow::Result;

use crate::cli::args::BenchCmd;

/// Runs the workload `--reps` times, printing each run's JSON line.
pub(crate) fn run(a: BenchCmd) -> Result<()> {
    for _ in 0..a.reps.max(1) {
        for run in dnn2gp_bench::run(&a.workload, &a.baselines, a.dtype)? {
            println!("{}", serde_json::to_string(&run)?);
        }
    }
    Ok(())
}
