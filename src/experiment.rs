//! `rliv experiment`: the paper's offline evaluation (Sections 4.1-4.3) on
//! the closed-loop simulator. Every method (the baselines of Table 2,
//! RLIV-UA and its ablations of Table 3, and the strong simple rankers this
//! project compares against) runs in the same worlds (one per seed), from
//! the same random-policy logs, through [`crate::sim`]. Written into the
//! output directory: `table2.md`/`.csv`, `table3.md`/`.csv` (mean and 95%
//! confidence interval, Student t over seeds), `figure5.png` (per-round
//! curves, mean and a band of one standard deviation over seeds) and
//! `runs.json` (every run, every round).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rliv_baselines::BaselineConfig;
use rliv_sim::{Metrics, SimConfig};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::sim::{mean_ci, mean_sd, RunResult, SimOptions, METRICS};

/// The default experiment (`configs/experiment.toml`).
pub const DEFAULT_EXPERIMENT_TOML: &str = include_str!("../configs/experiment.toml");

/// One row of a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodRow {
    /// The row's name in the tables and the figure.
    pub label: String,
    /// The `rliv sim` policy that implements it.
    pub policy: String,
}

/// The `--quick` preset: a smaller world and budget for smoke tests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quick {
    pub seeds: u64,
    pub warmup_rounds: u32,
    pub rounds: u32,
    pub n_users: usize,
    pub updates_per_round: usize,
    pub learner_epochs: f64,
}

impl Default for Quick {
    fn default() -> Self {
        Quick {
            seeds: 2,
            warmup_rounds: 1,
            rounds: 2,
            n_users: 150,
            updates_per_round: 10,
            learner_epochs: 1.0,
        }
    }
}

/// `configs/experiment.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub seeds: u64,
    pub first_seed: u64,
    pub warmup_rounds: u32,
    pub rounds: u32,
    /// The world: the embedded `configs/sim.toml` with these keys changed.
    #[serde(default)]
    pub sim: SimConfig,
    pub table2: Vec<MethodRow>,
    pub table3: Vec<MethodRow>,
    /// Labels (of either table) drawn in `figure5.png`.
    pub figure5: Vec<String>,
    #[serde(default)]
    pub baselines: BaselineConfig,
    /// Keys of the main configuration's `[learner]` changed for every rliv
    /// method of the experiment.
    #[serde(default)]
    pub learner: toml::Table,
    #[serde(default)]
    pub quick: Quick,
}

impl ExperimentConfig {
    /// The embedded default, or a file; the file's `[sim]` table changes the
    /// embedded world's keys (a missing key keeps the default).
    pub fn load(path: Option<&Path>) -> Result<ExperimentConfig> {
        let text = match path {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
            None => DEFAULT_EXPERIMENT_TOML.to_string(),
        };
        let what = path.map_or("the embedded configs/experiment.toml".to_string(), |p| {
            p.display().to_string()
        });
        let mut doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("{what}: not valid TOML"))?;
        // The world: the default sim.toml, overlaid with the [sim] table.
        let mut world: toml::Table = toml::from_str(crate::sim::DEFAULT_SIM_TOML)
            .context("the embedded configs/sim.toml")?;
        if let Some(toml::Value::Table(over)) = doc.remove("sim") {
            overlay(&mut world, over);
        }
        doc.insert("sim".into(), toml::Value::Table(world));
        let cfg: ExperimentConfig = toml::Value::Table(doc)
            .try_into()
            .with_context(|| format!("{what}: invalid experiment"))?;
        cfg.sim
            .validate()
            .map_err(|e| anyhow::anyhow!("{what}: [sim]: {e}"))?;
        if cfg.seeds == 0 || cfg.rounds == 0 {
            bail!("{what}: seeds and rounds must be at least 1");
        }
        for p in cfg.policies() {
            crate::sim::check_policy(&p).with_context(|| what.clone())?;
        }
        for l in &cfg.figure5 {
            if !cfg.rows().any(|r| &r.label == l) {
                bail!("{what}: figure5 names {l:?}, which is in neither table");
            }
        }
        cfg.learner_config(&Config::load(None).context("the embedded configuration")?)
            .with_context(|| format!("{what}: [learner]"))?;
        Ok(cfg)
    }

    /// `base` with the experiment's `[learner]` keys changed.
    pub fn learner_config(&self, base: &Config) -> Result<Config> {
        let mut table: toml::Table = toml::Value::try_from(&base.learner)?
            .try_into()
            .context("the [learner] section")?;
        overlay(&mut table, self.learner.clone());
        let mut cfg = base.clone();
        cfg.learner = toml::Value::Table(table).try_into()?;
        cfg.learner.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// Applies the `--quick` preset.
    pub fn quick(&mut self) {
        let q = self.quick.clone();
        self.seeds = q.seeds.max(1);
        self.warmup_rounds = q.warmup_rounds;
        self.rounds = q.rounds.max(1);
        self.sim.world.n_users = q.n_users.max(1);
        self.baselines.updates_per_round = q.updates_per_round;
        self.baselines.epochs = 0.0;
        self.learner
            .insert("epochs".into(), toml::Value::Float(q.learner_epochs));
    }

    fn rows(&self) -> impl Iterator<Item = &MethodRow> {
        self.table2.iter().chain(&self.table3)
    }

    /// Distinct policies, in table order.
    pub fn policies(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.rows() {
            if !out.contains(&r.policy) {
                out.push(r.policy.clone());
            }
        }
        out
    }
}

fn overlay(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => overlay(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Column names of the tables, one per [`METRICS`] entry (the paper's
/// four, then this project's).
const COLUMNS: [&str; 7] = [
    "Session Length",
    "Watch Time",
    "CTR",
    "Diversity",
    "New fans",
    "Deep pairs",
    "Gift total",
];

/// The paper's Table 2 and Table 3 (KuaiRand-based simulator), by label.
const PAPER: [(&str, [f64; 4]); 8] = [
    ("RankingModel", [2.0132, 59.4812, 0.5948, 0.0629]),
    ("CQL", [2.2660, 58.0753, 0.5125, 0.1727]),
    ("DQN", [4.0610, 49.5454, 0.2247, 0.7477]),
    ("TD3", [4.7820, 52.7157, 0.2228, 0.8500]),
    ("RLUR", [6.6810, 151.0550, 0.4519, 0.7206]),
    ("RLIV-UA", [12.8860, 377.4867, 0.5015, 0.8827]),
    ("RLIV-UA (w/o MT & SL)", [7.2940, 188.0499, 0.5229, 0.7994]),
    ("RLIV-UA (w/o MT)", [9.2800, 248.1804, 0.5340, 0.8746]),
];

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

/// A table of `rows` as Markdown and CSV.
pub fn render_table(title: &str, rows: &[MethodRow], runs: &[RunResult]) -> (String, String) {
    let mut md = format!("{title}\n\n| Models |");
    let mut csv = String::from("model,policy,seeds");
    for c in COLUMNS {
        let _ = write!(md, " {c} |");
        let key = c.to_lowercase().replace(' ', "_");
        let _ = write!(csv, ",{key}_mean,{key}_ci95");
    }
    md += "\n|---|";
    md += &"---:|".repeat(COLUMNS.len());
    md += "\n";
    csv += "\n";
    for r in rows {
        let mine: Vec<&RunResult> = runs.iter().filter(|x| x.policy == r.policy).collect();
        let _ = write!(md, "| {} |", r.label);
        let _ = write!(csv, "\"{}\",{},{}", r.label, r.policy, mine.len());
        for (_, f) in METRICS {
            let xs: Vec<f64> = mine.iter().map(|x| f(&x.total)).collect();
            let (m, ci) = mean_ci(&xs);
            let _ = write!(md, " {} ± {} |", fmt(m), fmt(ci));
            let _ = write!(csv, ",{m},{ci}");
        }
        md += "\n";
        csv += "\n";
    }
    let paper: Vec<&(&str, [f64; 4])> = rows
        .iter()
        .filter_map(|r| PAPER.iter().find(|(l, _)| *l == r.label))
        .collect();
    if !paper.is_empty() {
        md += "\nThe paper's figures for the same rows (its KuaiRand-based simulator):\n\n";
        md += "| Models | Session Length | Watch Time | CTR | Diversity |\n|---|---:|---:|---:|---:|\n";
        for (l, v) in paper {
            let _ = writeln!(md, "| {l} | {} | {} | {} | {} |", v[0], v[1], v[2], v[3]);
        }
    }
    (md, csv)
}

/// Figure 5's curves: per evaluated round, mean and standard deviation
/// over seeds of session length, watch time and CTR.
pub fn figure5_curves(cfg: &ExperimentConfig, runs: &[RunResult]) -> Vec<crate::plot::Curve> {
    cfg.figure5
        .iter()
        .filter_map(|label| {
            let row = cfg.rows().find(|r| &r.label == label)?;
            let mine: Vec<&RunResult> = runs.iter().filter(|x| x.policy == row.policy).collect();
            let rounds = mine.iter().map(|r| r.rounds.len()).min()?;
            let curve = |f: fn(&Metrics) -> f64| -> Vec<(f64, f64)> {
                (0..rounds)
                    .map(|i| mean_sd(&mine.iter().map(|r| f(&r.rounds[i])).collect::<Vec<_>>()))
                    .collect()
            };
            Some(crate::plot::Curve {
                policy: label.clone(),
                session_length: curve(|m| m.session_length),
                watch_time: curve(|m| m.watch_time_per_session),
                ctr: curve(|m| m.ctr),
            })
        })
        .collect()
}

/// What `rliv experiment` wrote.
#[derive(Debug)]
pub struct Written {
    pub table2: String,
    pub table3: String,
    pub files: Vec<PathBuf>,
}

/// Runs every method on every seed and writes the tables and the figure.
pub fn run(base: &Config, cfg: &ExperimentConfig, out: &Path, quiet: bool) -> Result<Written> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let base = &cfg.learner_config(base)?;
    let opts = SimOptions {
        sim: cfg.sim.clone(),
        policies: cfg.policies(),
        seeds: (0..cfg.seeds).map(|i| cfg.first_seed + i).collect(),
        warmup_rounds: cfg.warmup_rounds,
        rounds: cfg.rounds,
        out: out.join("runs"),
        quiet: true,
        baselines: cfg.baselines.clone(),
    };
    // Unknown policy names fail here, before hours of running (and in
    // `ExperimentConfig::load`, as a usage error).
    for p in &opts.policies {
        crate::sim::check_policy(p)?;
    }
    let days = opts.seeds.len() as u64 * u64::from(cfg.warmup_rounds + cfg.rounds);
    let mut runs: Vec<RunResult> = Vec::new();
    for (i, p) in opts.policies.iter().enumerate() {
        let bar = method_bar(
            days,
            quiet,
            &format!("[{}/{}] {p}", i + 1, opts.policies.len()),
        );
        let t = std::time::Instant::now();
        for &seed in &opts.seeds {
            let r = crate::sim::run_one_with(base, &opts, p, seed, &bar)
                .with_context(|| format!("method {p}, seed {seed}"))?;
            runs.push(r);
        }
        bar.finish();
        if !quiet && bar.is_hidden() {
            eprintln!(
                "[{}/{}] {p}: {} seed(s) in {:.0} s",
                i + 1,
                opts.policies.len(),
                opts.seeds.len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    let (t2, c2) = render_table(
        "Table 2: overall performance (mean ± 95% CI over seeds)",
        &cfg.table2,
        &runs,
    );
    let (t3, c3) = render_table(
        "Table 3: RLIV-UA variations (mean ± 95% CI over seeds)",
        &cfg.table3,
        &runs,
    );
    let mut files = Vec::new();
    let mut write = |name: &str, text: &str| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        files.push(p);
        Ok(())
    };
    write("table2.md", &t2)?;
    write("table2.csv", &c2)?;
    write("table3.md", &t3)?;
    write("table3.csv", &c3)?;
    write("runs.json", &serde_json::to_string_pretty(&runs)?)?;
    let curves = figure5_curves(cfg, &runs);
    if !curves.is_empty() {
        let p = out.join("figure5.png");
        let title = format!(
            "Learning process over {} round(s): mean and ± 1 sd over {} seed(s)",
            cfg.rounds, cfg.seeds
        );
        crate::plot::learning_curves(&curves, &p, &title)?;
        files.push(p);
    }
    Ok(Written {
        table2: t2,
        table3: t3,
        files,
    })
}

/// A bar per method over its simulated days, with an ETA (terminal only).
fn method_bar(days: u64, quiet: bool, name: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(days);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:<22} {bar:30} {pos}/{len} days  {elapsed_precise} (eta {eta})  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(name.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_experiment_parses_and_names_known_policies() {
        let cfg = ExperimentConfig::load(None).expect("default");
        assert!(!cfg.table2.is_empty() && !cfg.table3.is_empty());
        for p in cfg.policies() {
            crate::sim::check_policy(&p).expect("known policy");
        }
        let mut q = cfg.clone();
        q.quick();
        assert!(q.seeds <= cfg.seeds && q.sim.world.n_users <= cfg.sim.world.n_users);
    }

    #[test]
    fn a_sim_key_overrides_only_itself() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("e.toml");
        let text = DEFAULT_EXPERIMENT_TOML.to_string() + "\n";
        let text = if text.contains("[sim.world]") {
            text.replace("[sim.world]", "[sim.world]\nn_authors = 77")
        } else {
            text + "[sim.world]\nn_authors = 77\n"
        };
        std::fs::write(&p, text).expect("write");
        let cfg = ExperimentConfig::load(Some(&p)).expect("load");
        let default_world = SimConfig::from_toml_str(crate::sim::DEFAULT_SIM_TOML).expect("sim");
        assert_eq!(cfg.sim.world.n_authors, 77);
        assert_eq!(cfg.sim.items, default_world.items);
    }

    fn run_with(policy: &str, seed: u64, sl: f64) -> RunResult {
        let m = Metrics {
            session_length: sl,
            ..Metrics::default()
        };
        RunResult {
            policy: policy.into(),
            seed,
            rounds: vec![m.clone(), m.clone()],
            total: m,
            updates: 0,
            seconds: 0.0,
            requests_per_s: 0.0,
        }
    }

    #[test]
    fn tables_report_mean_and_student_t_interval_per_row() {
        let rows = vec![MethodRow {
            label: "RLIV-UA".into(),
            policy: "rliv".into(),
        }];
        let runs = vec![
            run_with("rliv", 1, 2.0),
            run_with("rliv", 2, 4.0),
            run_with("dqn", 1, 9.0),
        ];
        let (md, csv) = render_table("T", &rows, &runs);
        let (m, ci) = mean_ci(&[2.0, 4.0]);
        assert!(
            md.contains(&format!("| RLIV-UA | {} ± {} |", fmt(m), fmt(ci))),
            "{md}"
        );
        assert!(md.contains("| RLIV-UA | 12.886 |"), "the paper's row: {md}");
        let line = csv.lines().nth(1).expect("row");
        assert!(
            line.starts_with(&format!("\"RLIV-UA\",rliv,2,{m},{ci}")),
            "{line}"
        );
    }

    #[test]
    fn figure5_bands_are_standard_deviations_over_seeds() {
        let mut cfg = ExperimentConfig::load(None).expect("default");
        cfg.table3 = vec![MethodRow {
            label: "x".into(),
            policy: "rliv".into(),
        }];
        cfg.figure5 = vec!["x".into()];
        let runs = vec![run_with("rliv", 1, 2.0), run_with("rliv", 2, 4.0)];
        let c = figure5_curves(&cfg, &runs);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].session_length, vec![(3.0, 2f64.sqrt()); 2]);
    }
}
