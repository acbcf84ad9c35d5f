//! What `rliv sim` reports: mean and 95% confidence intervals over seeds,
//! per-policy summaries and learning curves, the terminal table, and paired
//! per-seed comparisons between policies.

use rliv_sim::Metrics;
use serde::Serialize;

use super::RunResult;

/// Mean and the half-width of its 95% confidence interval (Student t over
/// the seeds; 0 for one seed).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let (mean, sd) = mean_sd(xs);
    let n = xs.len();
    if n < 2 {
        return (mean, 0.0);
    }
    (mean, t975(n - 1) * sd / (n as f64).sqrt())
}

/// Mean and sample standard deviation (n - 1) of `xs`; (NaN, 0) for none,
/// (x, 0) for one.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
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
