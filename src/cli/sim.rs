//! `rliv sim`: arguments and the printed report.

use std::path::PathBuf;

use anyhow::Result;
use rliv::config::Config;

#[derive(clap::Args)]
pub(crate) struct SimArgs {
    /// The simulated world (default: the embedded configs/sim.toml).
    #[arg(long)]
    pub(crate) sim_config: Option<PathBuf>,
    /// Comma-separated policies: rliv, rliv_gamma0 (the same model, myopic),
    /// the ablations rliv_wo_mt, rliv_wo_mt_sl, rliv_wo_al_sl, rliv_wo_sl,
    /// rliv_wo_al; random, item_ctr, item_watch, pair_history, oracle
    /// (myopic oracle); the paper's baselines deepfm, dqn, cql, td3, rlur.
    #[arg(
        long,
        default_value = "rliv,rliv_gamma0,pair_history,item_watch,random,oracle"
    )]
    pub(crate) policies: String,
    /// Number of seeds (worlds); seed i is `seed + i`.
    #[arg(long, default_value_t = 3)]
    pub(crate) seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Simulated days of random-policy logs every method starts from.
    #[arg(long, default_value_t = 3)]
    pub(crate) warmup_rounds: u32,
    /// Simulated days ranked by the policy (the ones measured).
    #[arg(long, default_value_t = 6)]
    pub(crate) rounds: u32,
    /// Output directory (events, states, checkpoints, summary.json, runs.json).
    #[arg(long, default_value = "sim-out")]
    pub(crate) out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// No per-round lines.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

pub(crate) fn sim(cfg: &Config, args: SimArgs) -> Result<()> {
    let world = match &args.sim_config {
        Some(p) => rliv_sim::SimConfig::load(p)
            .map_err(|e| rliv::train::UsageError(format!("{}: {e}", p.display())))?,
        None => rliv_sim::SimConfig::from_toml_str(rliv::sim::DEFAULT_SIM_TOML)
            .map_err(|e| anyhow::anyhow!("the embedded configs/sim.toml: {e}"))?,
    };
    let policies: Vec<String> = args
        .policies
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let opts = rliv::sim::SimOptions {
        sim: world,
        policies,
        seeds: (0..args.seeds).map(|i| args.seed + i).collect(),
        warmup_rounds: args.warmup_rounds,
        rounds: args.rounds,
        out: args.out.clone(),
        quiet: args.quiet,
        baselines: Default::default(),
    };
    let (summaries, pairs) = rliv::sim::run(cfg, &opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"summary": summaries, "paired": pairs})
            )?
        );
    } else {
        println!(
            "rliv sim: {} seed(s), {} warm-up day(s) of random-policy logs, {} measured day(s); mean ± 95% CI over seeds",
            opts.seeds.len(),
            opts.warmup_rounds,
            opts.rounds
        );
        print!("{}", rliv::sim::table(&summaries));
        print!("{}", rliv::sim::paired_table(&pairs));
        println!(
            "(summary.json, paired.json, runs.json and the learning curves, {}, in {})",
            rliv::sim::CURVE_PNG,
            args.out.display()
        );
    }
    Ok(())
}
