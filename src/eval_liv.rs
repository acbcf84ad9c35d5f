//! `rliv eval-liv`: on held-out transitions, each tower's predicted LIV
//! against the pair's realized discounted return, by decile, with the rank
//! correlation; the pair's own history beside it as the bar to clear (see
//! `rliv_learner::eval`).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use rliv_dataflows::event::Transition;
use rliv_learner::checkpoint;
use rliv_learner::engine::Engine;
use rliv_learner::eval::{evaluate, TowerEval};

/// Reads `transitions` (JSONL, `.gz` too; bad lines are counted and
/// skipped), scores them with the newest checkpoint in `checkpoints` and
/// returns the per-tower report and the `gamma` used (the model's own when `None`).
pub fn run(
    transitions: &Path,
    checkpoints: &Path,
    gamma: Option<f64>,
) -> Result<(Vec<TowerEval>, f64)> {
    let (model, manifest, _) = checkpoint::load_newest_model(checkpoints)?
        .ok_or_else(|| anyhow!("no usable checkpoint in {}", checkpoints.display()))?;
    let mut dead = Vec::new();
    let mut ts: Vec<Transition> = Vec::new();
    let stats = rliv_learner::input::read_file(
        transitions,
        0,
        &mut |t| {
            ts.push(t);
            true
        },
        &mut |_| {},
        &mut dead,
    )
    .with_context(|| format!("reading {}", transitions.display()))?;
    if stats.bad > 0 {
        eprintln!(
            "eval-liv: {} bad lines in {} skipped",
            stats.bad,
            transitions.display()
        );
    }
    if ts.is_empty() {
        return Err(anyhow!("{} holds no transitions", transitions.display()));
    }
    let gamma = gamma.unwrap_or(manifest.config.gamma);
    let mut engine = Engine::new("auto", "cpu", 0).map_err(anyhow::Error::msg)?;
    let report = evaluate(&model, &mut engine, &ts, gamma).map_err(anyhow::Error::msg)?;
    Ok((report, gamma))
}

/// The report as a table.
pub fn table(report: &[TowerEval], gamma: f64) -> String {
    let mut out = String::new();
    for t in report {
        out += &format!(
            "tower {} ({} transitions, gamma {gamma}): Spearman rho model {:.3}, pair history {:.3}\n",
            t.tower, t.transitions, t.model.spearman, t.pair_history.spearman
        );
        out += "  decile   predicted LIV   realized return | history pred.   realized return\n";
        for (m, h) in t.model.deciles.iter().zip(&t.pair_history.deciles) {
            out += &format!(
                "  {:>6} {:>15.3} {:>17.3} | {:>13.3} {:>17.3}\n",
                m.decile, m.mean_predicted, m.mean_realized, h.mean_predicted, h.mean_realized
            );
        }
    }
    out
}
