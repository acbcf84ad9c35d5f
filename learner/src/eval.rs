//! How well the learned LIV predicts what a pair went on to earn: each
//! tower's predicted LIV of held-out transitions against the pair's
//! realized discounted return from that interaction on, by decile of the
//! prediction, with Spearman's rank correlation (the paper's Fig. 6 shows
//! the gift tower's LIV against revenue this way).
//!
//! The realized return of the t-th interaction of a pair in the log is
//! `G_t = r_t + gamma * G_{t+1}` over the pair's later interactions in the
//! same log (in the reward's own units, as the model reports LIV),
//! truncated at the log's end: the last days' returns are short, which
//! lowers them for every predictor alike. For reference the same table is
//! given for the pair's own history (mean reward per exposure so far, times
//! `1 / (1 - gamma)`), the non-learned predictor the model must beat.

use rliv_contract::FastMap;
use rliv_contract::Transition;
use serde::Serialize;

use crate::buffer::Sample;
use crate::config::LABELS;
use crate::engine::Engine;
use crate::model::Model;
use crate::visible::Visibility;

/// One decile of the predictions.
#[derive(Clone, Debug, Serialize)]
pub struct Decile {
    pub decile: usize,
    pub n: usize,
    pub mean_predicted: f64,
    pub mean_realized: f64,
}

/// One predictor's agreement with the realized returns.
#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    pub predictor: String,
    pub spearman: f64,
    pub deciles: Vec<Decile>,
}

/// The report for one tower.
#[derive(Clone, Debug, Serialize)]
pub struct TowerEval {
    pub tower: &'static str,
    pub transitions: usize,
    pub model: Agreement,
    pub pair_history: Agreement,
}

/// `G_t` of every transition (same order), per label, unscaled.
pub fn realized_returns(ts: &[Transition], gamma: f64) -> Vec<[f64; 4]> {
    let mut out = vec![[0.0; 4]; ts.len()];
    // Later interactions of the same pair come later in a transitions log.
    let mut next: FastMap<(u64, u64), [f64; 4]> = FastMap::default();
    for (i, t) in ts.iter().enumerate().rev() {
        let r = [
            t.reward.click,
            t.reward.watch,
            t.reward.follow,
            t.reward.gift,
        ];
        let g = next.entry((t.user_id, t.author_id)).or_insert([0.0; 4]);
        for l in 0..4 {
            g[l] = r[l] + gamma * g[l];
        }
        out[i] = *g;
    }
    out
}

/// Average ranks (ties share the mean rank).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0;
        for k in &idx[i..=j] {
            r[*k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (0 when either side is constant).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Predictions against realized values, by decile of the prediction.
pub fn agreement(name: &str, predicted: &[f64], realized: &[f64]) -> Agreement {
    let mut idx: Vec<usize> = (0..predicted.len()).collect();
    idx.sort_by(|a, b| predicted[*a].total_cmp(&predicted[*b]));
    let n = idx.len();
    let deciles = (0..10)
        .filter_map(|d| {
            let part = &idx[d * n / 10..(d + 1) * n / 10];
            (!part.is_empty()).then(|| Decile {
                decile: d + 1,
                n: part.len(),
                mean_predicted: part.iter().map(|i| predicted[*i]).sum::<f64>() / part.len() as f64,
                mean_realized: part.iter().map(|i| realized[*i]).sum::<f64>() / part.len() as f64,
            })
        })
        .collect();
    Agreement {
        predictor: name.to_string(),
        spearman: spearman(predicted, realized),
        deciles,
    }
}

/// Scores `ts` (their `s_t` as a request could see it) with `model` and
/// compares every trained tower with the realized returns under `gamma`.
pub fn evaluate(
    model: &Model,
    engine: &mut Engine,
    ts: &[Transition],
    gamma: f64,
) -> Result<Vec<TowerEval>, crate::LearnerError> {
    let returns = realized_returns(ts, gamma);
    let mut visibility = Visibility::new(model.cfg.visible_lag_ms);
    let samples: Vec<Sample> = ts
        .iter()
        .map(|t| Sample::new(t, visibility.visible(t)))
        .collect();
    let mut predicted: Vec<Vec<f64>> = vec![Vec::with_capacity(ts.len()); 4];
    for chunk in samples.chunks(4096) {
        let inputs: Vec<_> = chunk.iter().map(Sample::input).collect();
        for liv in model.score(engine, &inputs)? {
            for (l, p) in predicted.iter_mut().enumerate() {
                p.push(f64::from(liv.towers[l].unwrap_or(0.0)));
            }
        }
    }
    let horizon = 1.0 / (1.0 - gamma);
    Ok(model
        .labels
        .iter()
        .map(|&l| {
            let realized: Vec<f64> = returns.iter().map(|g| g[l]).collect();
            let history: Vec<f64> = samples
                .iter()
                .map(|s| {
                    let st = s.input().state;
                    let total = match l {
                        0 => st.clicks as f64,
                        1 => st.watch_sec_total,
                        2 => st.follows as f64,
                        _ => st.gift_total,
                    };
                    horizon * total / (st.exposures as f64).max(1.0)
                })
                .collect();
            TowerEval {
                tower: LABELS[l],
                transitions: ts.len(),
                model: agreement("model", &predicted[l], &realized),
                pair_history: agreement("pair history", &history, &realized),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_and_reversed_orders() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&a, &[1.0, 1.0, 1.0, 1.0]), 0.0);
        // Ties share their mean rank.
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![1.5, 0.0, 1.5]);
    }

    #[test]
    fn realized_returns_discount_the_pairs_later_rewards_only() {
        let t = |user: u64, watch: f64| Transition {
            request_id: 0,
            user_id: user,
            author_id: 1,
            item_id: 1,
            ts_ms: 0,
            user_feats: Default::default(),
            item_feats: Default::default(),
            state: Default::default(),
            reward: rliv_contract::Rewards {
                watch,
                ..Default::default()
            },
            next_state: Default::default(),
        };
        // Pair (1,1): 10, 20, 40; pair (2,1) in between: 1000.
        let ts = [t(1, 10.0), t(2, 1000.0), t(1, 20.0), t(1, 40.0)];
        let g = realized_returns(&ts, 0.5);
        assert_eq!(g[3][1], 40.0);
        assert_eq!(g[2][1], 20.0 + 0.5 * 40.0);
        assert_eq!(g[0][1], 10.0 + 0.5 * (20.0 + 0.5 * 40.0));
        assert_eq!(g[1][1], 1000.0);
    }

    #[test]
    fn deciles_split_by_the_prediction() {
        let p: Vec<f64> = (0..100).map(f64::from).collect();
        let r: Vec<f64> = p.iter().map(|x| 2.0 * x).collect();
        let a = agreement("x", &p, &r);
        assert_eq!(a.deciles.len(), 10);
        assert_eq!(a.deciles[0].n, 10);
        assert!((a.deciles[0].mean_predicted - 4.5).abs() < 1e-12);
        assert!((a.deciles[9].mean_realized - 189.0).abs() < 1e-12);
        assert!((a.spearman - 1.0).abs() < 1e-12);
    }
}
