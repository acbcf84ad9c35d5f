//! Section `[learner]` of the configuration. Defaults are the paper's Table 1
//! where it gives a value.

use serde::{Deserialize, Serialize};

use crate::error::InvalidSetting;

/// The four reward labels of the paper (target label set C).
pub const LABELS: [&str; 4] = ["click", "watch", "follow", "gift"];

/// Per-label values (weights, scales).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerLabel {
    pub click: f64,
    pub watch: f64,
    pub follow: f64,
    pub gift: f64,
}

impl PerLabel {
    pub fn get(&self, label: usize) -> f64 {
        [self.click, self.watch, self.follow, self.gift][label]
    }
    pub fn as_array(&self) -> [f64; 4] {
        [self.click, self.watch, self.follow, self.gift]
    }
}

/// How a tower's two value nets `Q_1`, `Q_2` combine into one value.
///
/// The minimum (clipped double Q) counters the overestimation of a max over
/// noisy estimates, but it is itself biased low by about the spread of the
/// two nets, and through the TD target that bias compounds over the
/// horizon, most where the value is least certain: pairs whose relationship
/// is still growing. With `next_items = 1` there is no max to counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DoubleQ {
    /// `(Q_1 + Q_2) / 2`.
    Mean,
    /// `min(Q_1, Q_2)` (the paper's Eq. 5).
    Min,
}

impl DoubleQ {
    fn legacy() -> DoubleQ {
        DoubleQ::Min
    }

    /// The combined value.
    pub fn combine(self, a: f32, b: f32) -> f32 {
        match self {
            DoubleQ::Mean => 0.5 * (a + b),
            DoubleQ::Min => a.min(b),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerConfig {
    // --- model (paper Table 1) ---
    /// Embedding dimension of every table.
    pub embedding_dim: usize,
    /// Rows of each id table (user, author, item); ids are hashed into them.
    pub id_rows: usize,
    /// Rows of the shared table of categorical feature values (field, value).
    pub feature_rows: usize,
    /// Buckets per pair counter: bucket = min(floor(log2(1 + count)), buckets - 1).
    pub counter_buckets: usize,
    /// Rows for features derived from the pair's state besides the five
    /// counters: mean watch per exposure, click and watch rates, mean gift,
    /// recency at the request's time (see `embed::DERIVED`). Off: the
    /// paper's counters only.
    pub derived_features: bool,
    /// Also feed the pair's state to the towers as a few numbers beside the
    /// embeddings (`embed::DENSE`: log counts, mean watch, rates, recency,
    /// each scaled to about [0, 1]), so that smooth, monotone effects such as
    /// "longer mean watch, higher value" need not be learned bucket by bucket.
    /// Off by default: neutral in closed-loop tests, and 10-50% more scoring
    /// time (see README). Missing in a saved manifest means false.
    #[serde(default)]
    pub dense_features: bool,
    /// Train on the pair's state as a ranking request at the transition's
    /// time could have seen it: interactions whose exposure is less than
    /// this old (ms) are left out of `s_t` (the job closes an exposure
    /// `join.window_ms` after it, and commits up to `allowed_lateness_ms`
    /// later). 0 still leaves out the request's own sibling items.
    pub visible_lag_ms: i64,
    /// Seed of the id hashing (fixed: changing it invalidates checkpoints).
    pub hash_seed: u64,
    /// Seed of the weight initialisation and of the batch sampling.
    pub seed: u64,
    /// Hidden layers of each MLP (reward head, value nets, assistance net).
    pub hidden: Vec<usize>,
    /// Discount factor gamma.
    pub gamma: f64,
    /// Soft target update rate tau: target <- tau * online + (1 - tau) * target.
    pub tau: f64,
    /// Adam learning rate of the towers and the assistance net.
    pub lr: f64,
    /// Adam learning rate of the embedding tables (lazy Adam: only rows a batch touched).
    pub embedding_lr: f64,
    /// Decoupled weight decay of the embedding rows a batch used (AdamW:
    /// each such row is multiplied by `1 - embedding_lr * decay` before its
    /// Adam step); shrinks the rows of rarely seen ids towards zero.
    pub embedding_weight_decay: f64,
    /// Probability that a training sample's `s_t` is built without the
    /// user's id row (its features stay), as in cold-start id dropout: the
    /// towers must also predict from what the user shares with others, and
    /// a user's own row cannot carry a single outcome alone. Scoring and
    /// the TD target always use the row.
    #[serde(default)]
    pub user_id_dropout: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Huber loss threshold (in scaled reward units).
    pub huber_delta: f64,
    /// How a tower's two value nets combine, in the TD target and in the
    /// LIV: [`DoubleQ::Mean`] or [`DoubleQ::Min`] (clipped double Q, the
    /// paper's Eq. 5). Missing in a saved manifest means `min` (what models
    /// before this setting were trained with).
    #[serde(default = "DoubleQ::legacy")]
    pub double_q: DoubleQ,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Candidates j in the target max over the author's items at t+1:
    /// the author's most recent distinct items seen in the stream (1 = the same item).
    pub next_items: usize,
    // --- ablation switches (paper Section 4) ---
    /// Four towers (click, watch, follow, gift); off: one tower for `target_label`.
    pub multi_task: bool,
    /// The tower trained alone when `multi_task` is off.
    pub target_label: String,
    /// Q = r_hat + gamma * V with a supervised reward head (Eq. 8); off: Q = V.
    pub supervised_head: bool,
    /// The assistance gift classifier on concat(h_u, h_a) (BCE on gift > 0).
    pub assist_gift: bool,
    /// Rewards are multiplied by these before training (watch is in seconds).
    pub reward_scale: PerLabel,
    /// Measure `reward_scale` from the data instead: when the sample buffer
    /// first reaches `min_buffer`, each label's scale becomes 1 / the root
    /// mean square of its rewards there (labels that never occurred keep the
    /// configured scale), so that scaled rewards are O(1) whatever the
    /// units, and the Huber losses regress towards the mean rather than the
    /// median. The measured scales are saved with the checkpoints and kept
    /// on resume.
    pub auto_reward_scale: bool,
    /// Combined ranking score = sum of weight * tower LIV.
    pub score_weights: PerLabel,
    // --- compute ---
    /// "auto" (fused CPU kernels on "cpu", candle elsewhere), "fused" or "candle"
    /// (candle's autograd; the same results, slower on CPU).
    pub engine: String,
    /// "cpu", or "cuda" (needs a build with the `cuda` feature; candle engine).
    pub device: String,
    /// Threads of the fused engine (towers are split over them); 0 = all cores.
    pub num_threads: usize,
    // --- streaming training ---
    /// Capacity of the real-time sample buffer (a ring of transitions).
    pub buffer_capacity: usize,
    /// Passes over the input: a replay does `epochs * transitions /
    /// batch_size` TD updates, spread over the input as it arrives.
    pub epochs: f64,
    /// TD updates per new transition; 0 = derive it from `epochs`
    /// (`epochs / batch_size`).
    pub updates_per_transition: f64,
    /// Transitions in the buffer before the first update.
    pub min_buffer: usize,
    /// Write a checkpoint every this many updates (0 = off)...
    pub checkpoint_every_updates: u64,
    /// ...and/or every this many seconds (0 = off).
    pub checkpoint_every_secs: u64,
    /// Checkpoints kept (the newest).
    pub keep_checkpoints: usize,
    /// Seconds between progress log lines.
    pub log_every_secs: u64,
    /// "" (use `score_weights`), "watch" or "revenue": see [`score_preset`].
    pub score_preset: String,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            embedding_dim: 32,
            id_rows: 1 << 20,
            feature_rows: 1 << 16,
            counter_buckets: 32,
            derived_features: true,
            dense_features: false,
            visible_lag_ms: 30 * 60_000 + 60_000,
            hash_seed: 1_592_594_203,
            seed: 7,
            hidden: vec![64, 64],
            gamma: 0.9,
            tau: 0.005,
            lr: 1e-3,
            embedding_lr: 1e-3,
            embedding_weight_decay: 0.0,
            user_id_dropout: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            huber_delta: 10.0,
            double_q: DoubleQ::Mean,
            batch_size: 1024,
            next_items: 1,
            multi_task: true,
            target_label: "watch".into(),
            supervised_head: true,
            assist_gift: true,
            reward_scale: PerLabel {
                click: 1.0,
                watch: 0.1,
                follow: 1.0,
                gift: 1.0,
            },
            auto_reward_scale: true,
            score_weights: PerLabel {
                click: 0.0,
                watch: 1.0,
                follow: 0.0,
                gift: 0.0,
            },
            engine: "auto".into(),
            device: "cpu".into(),
            num_threads: 0,
            buffer_capacity: 1_000_000,
            epochs: 8.0,
            updates_per_transition: 0.0,
            min_buffer: 10_000,
            checkpoint_every_updates: 5_000,
            checkpoint_every_secs: 300,
            keep_checkpoints: 3,
            log_every_secs: 10,
            score_preset: String::new(),
        }
    }
}

/// Score weight presets: `watch` (the paper's offline and Kuaishou choice)
/// and `revenue` (follow and gift LIV, as on Kwai).
pub fn score_preset(name: &str) -> Option<PerLabel> {
    match name {
        "watch" => Some(PerLabel {
            click: 0.0,
            watch: 1.0,
            follow: 0.0,
            gift: 0.0,
        }),
        "revenue" => Some(PerLabel {
            click: 0.0,
            watch: 0.0,
            follow: 1.0,
            gift: 1.0,
        }),
        _ => None,
    }
}

impl LearnerConfig {
    /// The weights of the combined score (the preset's, if one is named).
    pub fn weights(&self) -> PerLabel {
        score_preset(&self.score_preset).unwrap_or(self.score_weights)
    }

    /// TD updates per new transition: `updates_per_transition`, or
    /// `epochs / batch_size` when that is 0.
    pub fn update_ratio(&self) -> f64 {
        if self.updates_per_transition > 0.0 {
            self.updates_per_transition
        } else {
            self.epochs / self.batch_size.max(1) as f64
        }
    }

    /// Threads the fused engine uses.
    pub fn threads(&self) -> usize {
        if self.num_threads > 0 {
            self.num_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Indices (into [`LABELS`]) of the towers this configuration trains.
    pub fn towers(&self) -> Vec<usize> {
        if self.multi_task {
            vec![0, 1, 2, 3]
        } else {
            LABELS
                .iter()
                .position(|l| *l == self.target_label)
                .into_iter()
                .collect()
        }
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |key: &'static str, rule: String| Err(InvalidSetting::new(key, rule));
        let pos = |name: &'static str, v: usize| {
            if v == 0 {
                bad(name, "must be >= 1".into())
            } else {
                Ok(())
            }
        };
        pos("embedding_dim", self.embedding_dim)?;
        pos("id_rows", self.id_rows)?;
        pos("feature_rows", self.feature_rows)?;
        pos("counter_buckets", self.counter_buckets)?;
        pos("batch_size", self.batch_size)?;
        pos("next_items", self.next_items)?;
        pos("buffer_capacity", self.buffer_capacity)?;
        pos("keep_checkpoints", self.keep_checkpoints)?;
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad("hidden", "must be a non-empty list of sizes >= 1".into());
        }
        if !self.score_preset.is_empty() && score_preset(&self.score_preset).is_none() {
            return bad(
                "score_preset",
                format!(
                    "must be \"\", \"watch\" or \"revenue\", got {:?}",
                    self.score_preset
                ),
            );
        }
        if !(0.0..1.0).contains(&self.gamma) {
            return bad("gamma", format!("must be in [0, 1), got {}", self.gamma));
        }
        if !(self.tau > 0.0 && self.tau <= 1.0) {
            return bad("tau", format!("must be in (0, 1], got {}", self.tau));
        }
        for (name, v) in [
            ("lr", self.lr),
            ("embedding_lr", self.embedding_lr),
            ("adam_eps", self.adam_eps),
            ("huber_delta", self.huber_delta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, format!("must be a positive number, got {v}"));
            }
        }
        let wd = self.embedding_weight_decay;
        if !(wd.is_finite() && wd >= 0.0 && self.embedding_lr * wd < 1.0) {
            return bad(
                "embedding_weight_decay",
                format!("must be >= 0 with embedding_lr * decay < 1, got {wd}"),
            );
        }
        let p = self.user_id_dropout;
        if !(0.0..1.0).contains(&p) {
            return bad("user_id_dropout", format!("must be in [0, 1), got {p}"));
        }
        for (name, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(name, format!("must be in [0, 1), got {v}"));
            }
        }
        if !(self.updates_per_transition.is_finite() && self.updates_per_transition >= 0.0) {
            return bad("updates_per_transition", "must be >= 0".into());
        }
        if !(self.epochs.is_finite() && self.epochs >= 0.0) {
            return bad("epochs", format!("must be >= 0, got {}", self.epochs));
        }
        if self.visible_lag_ms < 0 {
            return bad(
                "visible_lag_ms",
                format!("must be >= 0, got {}", self.visible_lag_ms),
            );
        }
        if !self.multi_task && !LABELS.contains(&self.target_label.as_str()) {
            return bad(
                "target_label",
                format!("must be one of {LABELS:?}, got {:?}", self.target_label),
            );
        }
        for w in self
            .reward_scale
            .as_array()
            .iter()
            .chain(self.score_weights.as_array().iter())
        {
            if !w.is_finite() {
                return bad(
                    "reward_scale",
                    "and learner.score_weights must be finite".into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_written_before_double_q_loads_as_the_min_it_was_trained_with() {
        assert_eq!(LearnerConfig::default().double_q, DoubleQ::Mean);
        let mut json = serde_json::to_value(LearnerConfig::default()).expect("json");
        json.as_object_mut().expect("object").remove("double_q");
        let cfg: LearnerConfig = serde_json::from_value(json).expect("old manifest");
        assert_eq!(cfg.double_q, DoubleQ::Min);
        let json = serde_json::to_value(LearnerConfig::default()).expect("json");
        assert_eq!(json["double_q"], "mean");
        let bad = serde_json::json!({ "double_q": "max" });
        assert!(serde_json::from_value::<LearnerConfig>(bad).is_err());
    }

    #[test]
    fn embedding_weight_decay_must_be_non_negative_and_below_one_over_the_rate() {
        let with = |wd: f64| LearnerConfig {
            embedding_weight_decay: wd,
            ..LearnerConfig::default()
        };
        assert!(with(0.0).validate().is_ok());
        assert!(with(10.0).validate().is_ok());
        for bad in [-1.0, f64::NAN, 1000.0] {
            let err = with(bad).validate().expect_err("rejected").to_string();
            assert!(err.contains("embedding_weight_decay"), "{err}");
        }
    }

    #[test]
    fn user_id_dropout_must_be_a_probability_below_one() {
        let with = |p: f64| LearnerConfig {
            user_id_dropout: p,
            ..LearnerConfig::default()
        };
        assert!(with(0.0).validate().is_ok());
        assert!(with(0.5).validate().is_ok());
        for bad in [-0.1, 1.0, f64::NAN] {
            let err = with(bad).validate().expect_err("rejected").to_string();
            assert!(err.contains("user_id_dropout"), "{err}");
        }
    }
}
