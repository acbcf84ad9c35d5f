//! `rliv sim`: the closed loop. A [`rliv_sim::Simulator`] world serves
//! sessions to a ranking policy; after every round (a simulated day) its
//! events go through the real pipeline, exactly as a continuous deployment
//! runs it: contract JSONL files -> `rliv replay --train --resume` (label
//! join, pair state, ASA transitions, learner) -> a checkpoint, loaded the
//! way `rliv serve` loads it, and the pair state as the service would read
//! it. The next round ranks with both. Baselines learn from the same events.
//!
//! A run is `warmup_rounds` of the random policy (the logged history every
//! method starts from), then `rounds` of the policy under test; metrics are
//! those of the evaluated rounds. Each policy and seed runs in its own world
//! (same seed: same users, items and session schedule), so methods are
//! compared on equal terms.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rliv_learner::LearnerConfig;
use rliv_sim::policies::RandomPolicy;
use rliv_sim::{Metrics, Policy, SimConfig, Simulator};
use serde::Serialize;

use crate::config::Config;

mod pipeline;
mod report;

use pipeline::Pipeline;
pub use pipeline::RlivPolicy;

pub use report::{
    mean_ci, mean_sd, paired, paired_table, summarize, table, Paired, PolicySummary, METRICS,
};

/// The simulator's world when no `--sim-config` is given.
pub const DEFAULT_SIM_TOML: &str = include_str!("../../configs/sim.toml");

/// What `rliv sim` runs.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub sim: SimConfig,
    /// Policy names: a baseline of `rliv_sim::policies::by_name`, `rliv`
    /// (the learned LIV with the `[learner]` configuration) or `rliv_gamma0`
    /// (the same model with gamma = 0: myopic).
    pub policies: Vec<String>,
    pub seeds: Vec<u64>,
    pub warmup_rounds: u32,
    pub rounds: u32,
    pub out: PathBuf,
    pub quiet: bool,
    /// Hyperparameters of the paper's baselines (`rliv_baselines`).
    pub baselines: rliv_baselines::BaselineConfig,
}

/// One policy in one world.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub policy: String,
    pub seed: u64,
    /// Per evaluated round.
    pub rounds: Vec<Metrics>,
    /// Over the evaluated rounds.
    pub total: Metrics,
    /// TD updates the learner did (rliv policies).
    pub updates: u64,
    pub seconds: f64,
    /// Ranking requests per second of the policy (rank calls only).
    pub requests_per_s: f64,
}

/// A policy under test, with the learning pipeline behind it when it has one.
enum Method {
    Baseline(Box<dyn Policy>),
    Rliv(RlivPolicy, Pipeline),
}

/// The learned-LIV variants `rliv sim` knows (their `[learner]` switches
/// are in [`rliv_variant`]): the full model, the myopic one and the paper's
/// ablations (Section 4.3). `wo_mt`: one tower (`target_label`); `sl`: the
/// supervised reward head; `al`: the assistance gift network.
pub const RLIV_VARIANTS: [&str; 7] = [
    "rliv",
    "rliv_gamma0",
    "rliv_wo_mt",
    "rliv_wo_mt_sl",
    "rliv_wo_al_sl",
    "rliv_wo_sl",
    "rliv_wo_al",
];

/// The learner configuration of an rliv variant, or `None` for another name.
pub fn rliv_variant(cfg: &LearnerConfig, name: &str) -> Option<LearnerConfig> {
    let mut l = cfg.clone();
    match name {
        "rliv" => {}
        "rliv_gamma0" => l.gamma = 0.0,
        "rliv_wo_mt" => l.multi_task = false,
        "rliv_wo_mt_sl" => {
            l.multi_task = false;
            l.supervised_head = false;
        }
        "rliv_wo_al_sl" => {
            l.assist_gift = false;
            l.supervised_head = false;
        }
        "rliv_wo_sl" => l.supervised_head = false,
        "rliv_wo_al" => l.assist_gift = false,
        _ => return None,
    }
    Some(l)
}

/// Every policy name `rliv sim` accepts, for error messages.
pub fn policy_names() -> String {
    let mut names: Vec<&str> = RLIV_VARIANTS.to_vec();
    names.extend(["random", "item_ctr", "item_watch", "pair_history", "oracle"]);
    names.extend(rliv_baselines::NAMES);
    names.join(", ")
}

/// Fails, naming every known policy, when `name` is not one.
pub fn check_policy(name: &str) -> Result<()> {
    let known = RLIV_VARIANTS.contains(&name)
        || rliv_sim::policies::by_name(name, 0).is_some()
        || rliv_baselines::NAMES.contains(&name);
    if known {
        Ok(())
    } else {
        bail!("unknown policy {name:?} (known: {})", policy_names())
    }
}

fn method(
    cfg: &Config,
    opts: &SimOptions,
    name: &str,
    seed: u64,
    dir: &Path,
    quiet: bool,
) -> Result<Method> {
    if let Some(learner) = rliv_variant(&cfg.learner, name) {
        let mut cfg = cfg.clone();
        cfg.learner = learner;
        cfg.learner.seed ^= seed;
        return Ok(Method::Rliv(
            RlivPolicy::new(name)?,
            Pipeline::new(cfg, dir, quiet)?,
        ));
    }
    if let Some(p) = rliv_sim::policies::by_name(name, seed ^ 0xBA5E) {
        return Ok(Method::Baseline(p));
    }
    match rliv_baselines::by_name(name, &opts.baselines, seed ^ 0xBA5E) {
        Some(p) => Ok(Method::Baseline(
            p.map_err(|e| anyhow!("creating {name}: {e}"))?,
        )),
        None => bail!("unknown policy {name:?} (known: {})", policy_names()),
    }
}

/// Runs one policy in the world of `seed`.
pub fn run_one(cfg: &Config, opts: &SimOptions, name: &str, seed: u64) -> Result<RunResult> {
    run_one_with(cfg, opts, name, seed, &indicatif::ProgressBar::hidden())
}

/// A bar over every simulated day of every policy and seed, on a terminal
/// only (hidden with `--quiet` or when stderr is a file).
fn progress_bar(days: u64, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(days);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} simulated days  {elapsed_precise} (eta {eta})  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// A line above the bar (or on stderr when there is no bar).
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(crate) fn run_one_with(
    cfg: &Config,
    opts: &SimOptions,
    name: &str,
    seed: u64,
    bar: &indicatif::ProgressBar,
) -> Result<RunResult> {
    let started = std::time::Instant::now();
    let dir = opts.out.join(name).join(format!("seed-{seed}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let mut sim = Simulator::new(opts.sim.clone(), seed)?;
    bar.set_message(format!("{name}, seed {seed}"));
    // With a bar, the pipeline's per-day lines would break it up.
    let mut m = method(cfg, opts, name, seed, &dir, opts.quiet || !bar.is_hidden())?;
    // The logged history: the random policy's sessions.
    let mut logger = RandomPolicy::new(seed ^ 0x1066);
    for _ in 0..opts.warmup_rounds {
        let report = sim.run_round(&mut logger);
        match &mut m {
            Method::Baseline(p) => p.end_round(&report.events),
            Method::Rliv(_, pipe) => pipe.ingest(&report.events)?,
        }
        bar.inc(1);
    }
    if let Method::Rliv(p, pipe) = &mut m {
        if opts.warmup_rounds > 0 {
            p.refresh(&pipe.checkpoints, &pipe.state)?;
        }
    }
    let mut rounds = Vec::new();
    let mut rank_secs = 0.0;
    for _ in 0..opts.rounds {
        let t = std::time::Instant::now();
        let report = match &mut m {
            Method::Baseline(p) => sim.run_round(p.as_mut()),
            Method::Rliv(p, _) => sim.run_round(p),
        };
        rank_secs += t.elapsed().as_secs_f64();
        if let Method::Rliv(p, pipe) = &mut m {
            pipe.ingest(&report.events)?;
            p.refresh(&pipe.checkpoints, &pipe.state)?;
        }
        bar.inc(1);
        if !opts.quiet {
            say(
                bar,
                format!(
                    "{name} seed {seed} round {}: session length {:.2}, watch/session {:.0} s, CTR {:.3}",
                    report.round,
                    report.metrics.session_length,
                    report.metrics.watch_time_per_session,
                    report.metrics.ctr
                ),
            );
        }
        rounds.push(report.metrics);
    }
    let mut total = Metrics::default();
    for r in &rounds {
        total.merge(r);
    }
    total.finish();
    let requests = total.requests as f64;
    Ok(RunResult {
        policy: name.to_string(),
        seed,
        rounds,
        total,
        updates: match &m {
            Method::Rliv(_, pipe) => pipe.updates,
            Method::Baseline(_) => 0,
        },
        seconds: started.elapsed().as_secs_f64(),
        requests_per_s: requests / rank_secs.max(1e-9),
    })
}

/// The learning-curve picture `rliv sim` writes into its `--out`.
pub const CURVE_PNG: &str = "learning_curve.png";

/// Runs every policy on every seed and writes `summary.json`, `runs.json`,
/// `paired.json` and the learning curves (`learning_curve.png`) into `opts.out`.
pub fn run(cfg: &Config, opts: &SimOptions) -> Result<(Vec<PolicySummary>, Vec<Paired>)> {
    if opts.policies.is_empty() || opts.seeds.is_empty() || opts.rounds == 0 {
        bail!("rliv sim needs at least one policy, one seed and one round");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let days = (opts.policies.len() * opts.seeds.len()) as u64
        * u64::from(opts.warmup_rounds + opts.rounds);
    let bar = progress_bar(days, opts.quiet);
    let mut runs = Vec::new();
    for name in &opts.policies {
        for &seed in &opts.seeds {
            let r = run_one_with(cfg, opts, name, seed, &bar)
                .with_context(|| format!("policy {name}, seed {seed}"))?;
            if !opts.quiet {
                say(
                    &bar,
                    format!(
                        "{name} seed {seed}: session length {:.3}, watch/session {:.0} s ({:.0} s, {:.0} requests/s)",
                        r.total.session_length,
                        r.total.watch_time_per_session,
                        r.seconds,
                        r.requests_per_s
                    ),
                );
            }
            runs.push(r);
        }
    }
    bar.finish_and_clear();
    let summaries: Vec<PolicySummary> = opts
        .policies
        .iter()
        .map(|p| {
            let mine: Vec<&RunResult> = runs.iter().filter(|r| &r.policy == p).collect();
            summarize(p, &mine)
        })
        .collect();
    let write = |name: &str, v: &dyn erased::Json| -> Result<()> {
        let p = opts.out.join(name);
        std::fs::write(&p, v.json()?).with_context(|| format!("writing {}", p.display()))
    };
    let pairs = paired(&runs, &opts.policies);
    write("runs.json", &runs)?;
    write("summary.json", &summaries)?;
    write("paired.json", &pairs)?;
    let curves: Vec<crate::plot::Curve> = summaries
        .iter()
        .map(|p| crate::plot::Curve {
            policy: p.policy.clone(),
            session_length: p.curve_session_length.clone(),
            watch_time: p.curve_watch_time.clone(),
            ctr: Vec::new(),
        })
        .collect();
    let title = format!(
        "rliv sim: {} seed(s) after {} warm-up day(s); mean and 95% CI over seeds",
        opts.seeds.len(),
        opts.warmup_rounds
    );
    crate::plot::learning_curves(&curves, &opts.out.join(CURVE_PNG), &title)?;
    Ok((summaries, pairs))
}

mod erased {
    /// Serialize behind a reference without generics in the caller's closure.
    pub trait Json {
        fn json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Result<String> {
            serde_json::to_string_pretty(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_variant_has_learner_switches_and_is_a_known_policy() {
        let base = LearnerConfig::default();
        for name in RLIV_VARIANTS {
            assert!(rliv_variant(&base, name).is_some(), "{name}");
            check_policy(name).expect("known");
        }
        for name in rliv_baselines::NAMES {
            check_policy(name).expect("known");
        }
        assert!(rliv_variant(&base, "pair_history").is_none());
        assert!(check_policy("no_such_policy").is_err());
    }
}
