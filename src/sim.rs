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
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rliv_dataflows::{run_replay, ReplayRequest};
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::trainer::{self, TrainOptions, TrainProgress};
use rliv_learner::{checkpoint, Learner, LearnerConfig, Model};
use rliv_sim::policies::RandomPolicy;
use rliv_sim::policy::top_k_by;
use rliv_sim::{Metrics, Policy, Request, RoundEvents, SimConfig, Simulator, WorldPeek};
use rliv_state::{FastMap, PairSnapshot, Store};
use serde::Serialize;

use crate::config::Config;

/// The simulator's world when no `--sim-config` is given.
pub const DEFAULT_SIM_TOML: &str = include_str!("../configs/sim.toml");

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

/// The learned LIV as a policy: the newest checkpoint scored through
/// `Model::score` (the service's path) on the pair state as committed.
pub struct RlivPolicy {
    name: String,
    model: Option<Model>,
    engine: Engine,
    pairs: FastMap<(u64, u64), PairSnapshot>,
    tie: u64,
    inputs_time: f64,
    requests: u64,
}

impl RlivPolicy {
    pub fn new(name: &str) -> Result<RlivPolicy> {
        Ok(RlivPolicy {
            name: name.to_string(),
            model: None,
            engine: Engine::new("auto", "cpu", 1).map_err(anyhow::Error::msg)?,
            pairs: FastMap::default(),
            tie: 0x5EED,
            inputs_time: 0.0,
            requests: 0,
        })
    }

    /// Loads the newest checkpoint in `checkpoints` and the pair state in
    /// `state` (the whole pair table: what a service reading the committed
    /// state sees until the next round is replayed).
    pub fn refresh(&mut self, checkpoints: &Path, state: &Path) -> Result<()> {
        let (model, _, _) = checkpoint::load_newest_model(checkpoints)?
            .ok_or_else(|| anyhow!("no usable checkpoint in {}", checkpoints.display()))?;
        self.model = Some(model);
        let store = Store::open_read_only(state)?;
        self.pairs.clear();
        for item in store.scan_pairs(None)? {
            let (k, c) = item?;
            self.pairs
                .insert((k.user_id, k.author_id), PairSnapshot::from(&c));
        }
        Ok(())
    }
}

impl Policy for RlivPolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rank(&mut self, req: &Request, k: usize, _: &dyn WorldPeek) -> Vec<usize> {
        let started = std::time::Instant::now();
        self.tie = rliv_state::mix64(self.tie ^ req.request_id);
        let ties: Vec<u64> = (0..req.candidates.len() as u64)
            .map(|i| rliv_state::mix64(self.tie ^ i))
            .collect();
        let Some(model) = &self.model else {
            return top_k_by(&vec![0.0; req.candidates.len()], &ties, k);
        };
        let inputs: Vec<PairInput<'_>> = req
            .candidates
            .iter()
            .map(|c| PairInput {
                user_id: req.user_id,
                author_id: c.author_id,
                item_id: c.item_id,
                user_feats: &req.user_feats,
                item_feats: &c.item_feats,
                state: self
                    .pairs
                    .get(&(req.user_id, c.author_id))
                    .copied()
                    .unwrap_or_default(),
                ts_ms: req.ts_ms,
            })
            .collect();
        let scores: Vec<f64> = match model.score(&mut self.engine, &inputs) {
            Ok(l) => l.iter().map(|x| f64::from(x.score)).collect(),
            Err(e) => {
                tracing::warn!("sim: scoring failed ({e}); ranking at random");
                vec![0.0; req.candidates.len()]
            }
        };
        self.inputs_time += started.elapsed().as_secs_f64();
        self.requests += 1;
        top_k_by(&scores, &ties, k)
    }
}

/// The learner's side of one policy run: a state directory and checkpoints
/// that every round's events are replayed into, as `rliv replay --train
/// --resume` would.
struct Pipeline {
    cfg: Config,
    state: PathBuf,
    checkpoints: PathBuf,
    events: PathBuf,
    updates: u64,
    quiet: bool,
}

impl Pipeline {
    fn new(cfg: Config, dir: &Path, quiet: bool) -> Result<Pipeline> {
        let p = Pipeline {
            cfg,
            state: dir.join("state"),
            checkpoints: dir.join("checkpoints"),
            events: dir.join("events"),
            updates: 0,
            quiet,
        };
        for d in [&p.checkpoints, &p.events] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(p)
    }

    /// Replays one round's events into the state and trains on their
    /// transitions (resuming the learner from its newest checkpoint).
    fn ingest(&mut self, events: &RoundEvents) -> Result<()> {
        let dir = self.events.join(format!("round_{:04}", events.round));
        events
            .write_dir(&dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        let lcfg: &LearnerConfig = &self.cfg.learner;
        let (learner, consumed) = match checkpoint::resume(&self.checkpoints, lcfg)? {
            Some((l, m, _)) => (l, m.input.get("log_position").and_then(|p| p.as_u64())),
            None => (Learner::new(lcfg).map_err(anyhow::Error::msg)?, None),
        };
        let (tx, rx) =
            crossbeam_channel::bounded(self.cfg.replay.transitions_channel_capacity.max(1));
        // Each round resumes the learner: the transition log refills its
        // buffer, as in a continuous deployment that restarts daily.
        let checkpointed = Arc::new(std::sync::atomic::AtomicU64::new(consumed.unwrap_or(0)));
        let opts = TrainOptions {
            checkpoints: Some(self.checkpoints.clone()),
            extra_updates: 0,
            input_position: Box::new(
                |received, log| serde_json::json!({"kind": "sim", "transitions": received, "log_position": log}),
            ),
            log_position: consumed,
            checkpointed: Some(checkpointed.clone()),
            log: false,
        };
        let handle = trainer::spawn(learner, rx, opts, Arc::new(TrainProgress::default()))?;
        let mut req = ReplayRequest::new(
            vec![dir.join("exposures.jsonl")],
            vec![dir.join("actions.jsonl")],
            self.state.clone(),
        );
        req.join = self.cfg.join.clone();
        req.replay = self.cfg.replay.clone();
        req.store = self.cfg.state.clone();
        req.learner = Some(rliv_dataflows::feed::LearnerFeed {
            tx,
            consumed,
            refill: lcfg.buffer_capacity as u64,
            checkpointed,
        });
        let replayed = run_replay(req);
        let trained = handle
            .join()
            .map_err(|_| anyhow!("the learner thread panicked"))?;
        replayed.with_context(|| format!("replaying {}", dir.display()))?;
        let (_, summary) = trained.context("training")?;
        self.updates += summary.updates;
        if !self.quiet {
            eprintln!(
                "  round {}: {} transitions, {} updates",
                events.round, summary.received, summary.updates
            );
        }
        Ok(())
    }
}

/// A policy under test, with the learning pipeline behind it when it has one.
enum Method {
    Baseline(Box<dyn Policy>),
    Rliv(RlivPolicy, Pipeline),
}

/// The learned-LIV variants `rliv sim` knows: the full model, the myopic
/// one and the paper's ablations (Section 4.3), with the `[learner]`
/// switches each sets. `w/o MT` is one tower (`target_label`), `SL` the
/// supervised reward head, `AL` the assistance gift network.
pub const RLIV_VARIANTS: [(&str, &str); 7] = [
    ("rliv", "RLIV-UA"),
    ("rliv_gamma0", "RLIV-UA (gamma = 0, myopic)"),
    ("rliv_wo_mt", "RLIV-UA (w/o MT)"),
    ("rliv_wo_mt_sl", "RLIV-UA (w/o MT & SL)"),
    ("rliv_wo_al_sl", "RLIV-UA (w/o AL & SL)"),
    ("rliv_wo_sl", "RLIV-UA (w/o SL)"),
    ("rliv_wo_al", "RLIV-UA (w/o AL)"),
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
    let mut names: Vec<&str> = RLIV_VARIANTS.iter().map(|(n, _)| *n).collect();
    names.extend(["random", "item_ctr", "item_watch", "pair_history", "oracle"]);
    names.extend(rliv_baselines::NAMES);
    names.join(", ")
}

/// Fails, naming every known policy, when `name` is not one.
pub fn check_policy(name: &str) -> Result<()> {
    let known = RLIV_VARIANTS.iter().any(|(n, _)| *n == name)
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

/// Mean and the half-width of its 95% confidence interval (Student t over
/// the seeds; 0 for one seed).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.saturating_sub(1)).copied().unwrap_or(1.960)
}

/// The metrics a report shows, with how to read them off a run.
pub const METRICS: [(&str, fn(&Metrics) -> f64); 7] = [
    ("session_length", |m| m.session_length),
    ("watch_time_per_session", |m| m.watch_time_per_session),
    ("ctr", |m| m.ctr),
    ("diversity", |m| m.diversity),
    ("new_fans", |m| m.new_fans as f64),
    ("deep_pairs", |m| m.deep_pairs as f64),
    ("gift_total", |m| m.gift_total),
];

/// One policy over the seeds: per metric (mean, 95% CI half-width).
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub seeds: usize,
    pub metrics: Vec<(String, f64, f64)>,
    /// Per evaluated round: mean session length and watch time over seeds.
    pub curve_session_length: Vec<(f64, f64)>,
    pub curve_watch_time: Vec<(f64, f64)>,
    pub requests_per_s: f64,
    pub updates: f64,
}

pub fn summarize(policy: &str, runs: &[&RunResult]) -> PolicySummary {
    let metrics = METRICS
        .iter()
        .map(|(name, f)| {
            let xs: Vec<f64> = runs.iter().map(|r| f(&r.total)).collect();
            let (m, ci) = mean_ci(&xs);
            (name.to_string(), m, ci)
        })
        .collect();
    let rounds = runs.iter().map(|r| r.rounds.len()).min().unwrap_or(0);
    let curve = |f: fn(&Metrics) -> f64| {
        (0..rounds)
            .map(|i| mean_ci(&runs.iter().map(|r| f(&r.rounds[i])).collect::<Vec<_>>()))
            .collect()
    };
    PolicySummary {
        policy: policy.to_string(),
        seeds: runs.len(),
        metrics,
        curve_session_length: curve(|m| m.session_length),
        curve_watch_time: curve(|m| m.watch_time_per_session),
        requests_per_s: runs.iter().map(|r| r.requests_per_s).sum::<f64>() / runs.len() as f64,
        updates: runs.iter().map(|r| r.updates as f64).sum::<f64>() / runs.len() as f64,
    }
}

/// The terminal table: one row per policy, mean ± 95% CI per metric.
pub fn table(summaries: &[PolicySummary]) -> String {
    let mut out = format!("{:<14}", "policy");
    for (name, _) in METRICS {
        out += &format!(" {name:>24}");
    }
    out += "\n";
    for s in summaries {
        out += &format!("{:<14}", s.policy);
        for (_, m, ci) in &s.metrics {
            let cell = if m.abs() >= 100.0 {
                format!("{m:.0} ± {ci:.0}")
            } else {
                format!("{m:.3} ± {ci:.3}")
            };
            out += &format!(" {cell:>24}");
        }
        out += "\n";
    }
    out
}

/// A paired comparison on the same worlds: per seed, `policy`'s metric over
/// `baseline`'s, minus 1 (mean and 95% CI over the seeds, in percent).
#[derive(Clone, Debug, Serialize)]
pub struct Paired {
    pub policy: String,
    pub baseline: String,
    pub metric: String,
    pub seeds: usize,
    pub mean_pct: f64,
    pub ci_pct: f64,
}

/// Every policy against every other, on session length and watch time.
pub fn paired(runs: &[RunResult], policies: &[String]) -> Vec<Paired> {
    let mut out = Vec::new();
    for p in policies {
        for b in policies.iter().filter(|b| *b != p) {
            for (metric, f) in METRICS.iter().take(2) {
                let diffs: Vec<f64> = runs
                    .iter()
                    .filter(|r| &r.policy == p)
                    .filter_map(|r| {
                        let base = runs.iter().find(|x| &x.policy == b && x.seed == r.seed)?;
                        let (x, y) = (f(&r.total), f(&base.total));
                        (y > 0.0).then(|| 100.0 * (x / y - 1.0))
                    })
                    .collect();
                if diffs.is_empty() {
                    continue;
                }
                let (m, ci) = mean_ci(&diffs);
                out.push(Paired {
                    policy: p.clone(),
                    baseline: b.clone(),
                    metric: metric.to_string(),
                    seeds: diffs.len(),
                    mean_pct: m,
                    ci_pct: ci,
                });
            }
        }
    }
    out
}

/// The paired comparisons of the first policy with every other.
pub fn paired_table(p: &[Paired]) -> String {
    let Some(first) = p.first().map(|x| x.policy.clone()) else {
        return String::new();
    };
    let mut out = format!("{first} vs (same worlds, per-seed % difference, mean ± 95% CI):\n");
    for x in p.iter().filter(|x| x.policy == first) {
        out += &format!(
            "  vs {:<14} {:<24} {:+7.1}% ± {:.1}% ({} seeds)\n",
            x.baseline, x.metric, x.mean_pct, x.ci_pct, x.seeds
        );
    }
    out
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
    fn confidence_intervals_use_student_t() {
        let (m, ci) = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!((m - 3.0).abs() < 1e-12);
        // sd = sqrt(2.5), se = sqrt(2.5 / 5) = sqrt(0.5), t(4) = 2.776.
        assert!((ci - 2.776 * 0.5f64.sqrt()).abs() < 1e-9, "{ci}");
        assert_eq!(mean_ci(&[7.0]), (7.0, 0.0));
    }
}
