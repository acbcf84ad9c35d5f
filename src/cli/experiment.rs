//! `rliv experiment`: arguments, presets and the printed tables.

use std::path::PathBuf;

use anyhow::Result;
use rliv::config::Config;
use rliv::experiment::{run, ExperimentConfig};

/// `rliv experiment`.
#[derive(clap::Args, Debug)]
pub(crate) struct ExperimentArgs {
    /// The experiment (default: the embedded configs/experiment.toml).
    #[arg(long = "experiment-config", value_name = "FILE")]
    pub(crate) experiment_config: Option<PathBuf>,
    /// Number of seeds (worlds), instead of the file's.
    #[arg(long)]
    pub(crate) seeds: Option<u64>,
    /// Output directory.
    #[arg(long, default_value = "experiment-out")]
    pub(crate) out: PathBuf,
    /// The smoke preset of the file's [quick] table (a few minutes).
    #[arg(long)]
    pub(crate) quick: bool,
    /// No progress bars.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// Runs `rliv experiment` and prints the tables.
pub(crate) fn command(base: &Config, args: ExperimentArgs) -> Result<()> {
    let mut cfg = ExperimentConfig::load(args.experiment_config.as_deref())
        .map_err(|e| rliv::train::UsageError(format!("{e:#}")))?;
    if args.quick {
        cfg.quick();
    }
    if let Some(n) = args.seeds {
        if n == 0 {
            return Err(rliv::train::UsageError("--seeds must be at least 1".into()).into());
        }
        cfg.seeds = n;
    }
    let started = std::time::Instant::now();
    let w = run(base, &cfg, &args.out, args.quiet)?;
    println!(
        "{}
{}",
        w.table2, w.table3
    );
    println!(
        "({} seed(s), {} warm-up and {} measured day(s), {:.0} s; written: {})",
        cfg.seeds,
        cfg.warmup_rounds,
        cfg.rounds,
        started.elapsed().as_secs_f64(),
        w.files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
