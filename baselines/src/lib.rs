//! `rliv-baselines`: the comparison methods of the paper's offline evaluation
//! (Section 4.2, Tables 2-3) as simulator [`Policy`]s, in candle.
//!
//! Every method sees the same inputs ([`features`]: hashed ids and the
//! counters of the user, the item and the user-author pair, refreshed once a
//! round), learns from the same logged events (`Policy::end_round`) with the
//! same budget ([`BaselineConfig::updates`]: as many passes over each
//! round's shown items as the rliv learner makes) and the paper's Table 1 hyperparameters.
//!
//! - [`deepfm`]: the ranking model (DeepFM on immediate feedback);
//! - [`dqn`]: Q-learning over the candidates; [`cql`]: its conservative,
//!   offline variant trained on the logged history only;
//! - [`td3`]: an actor emitting a hyper-action that scores items (as in
//!   KuaiSim); [`rlur`]: fusion weights over predicted immediate feedback,
//!   with a long-term and an immediate critic.

use rliv_sim::Policy;
use serde::{Deserialize, Serialize};

pub mod cql;
pub mod deepfm;
pub mod dqn;
pub mod features;
pub mod nets;
pub mod rlur;
pub mod td3;

/// Hyperparameters shared by the baselines (paper Table 1 unless noted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// Discount factor.
    pub gamma: f64,
    /// Soft target update rate.
    pub tau: f64,
    /// Learning rate of critics (and of supervised networks).
    pub critic_lr: f64,
    /// Learning rate of actors.
    pub actor_lr: f64,
    /// Learning rate of the embedding table.
    pub embedding_lr: f64,
    /// Samples per update.
    pub batch_size: usize,
    /// Hidden layer widths of every MLP.
    pub hidden: Vec<usize>,
    /// Embedding dimension.
    pub embedding_dim: usize,
    /// Rows of the hashed embedding table (not in Table 1).
    pub id_rows: usize,
    /// Gradient updates after each round when `epochs` is 0 (not in
    /// Table 1, which trains offline for 250 x 1e4 steps).
    pub updates_per_round: usize,
    /// Passes over each round's shown items: a round of n shown items gets
    /// ceil(epochs x n / batch_size) updates (the rliv learner's budget
    /// rule, `[learner] epochs`); 0 = `updates_per_round`.
    pub epochs: f64,
    /// Logged requests kept for training.
    pub buffer_capacity: usize,
    /// Watch seconds are divided by this in rewards.
    pub watch_scale: f64,
    /// CQL: weight of the conservative penalty.
    pub cql_alpha: f64,
    /// TD3: std of the target policy smoothing noise.
    pub td3_policy_noise: f64,
    /// TD3: clip of that noise.
    pub td3_noise_clip: f64,
    /// TD3: actor (and target) updates every this many critic updates.
    pub td3_policy_delay: usize,
    /// TD3: std of the exploration noise on the hyper-action when ranking.
    pub td3_explore_noise: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            gamma: 0.9,
            tau: 0.005,
            critic_lr: 1e-3,
            actor_lr: 1e-4,
            embedding_lr: 1e-3,
            batch_size: 1024,
            hidden: vec![64, 64],
            embedding_dim: 32,
            id_rows: 1 << 14,
            updates_per_round: 200,
            epochs: 0.0,
            buffer_capacity: 200_000,
            watch_scale: 60.0,
            cql_alpha: 1.0,
            td3_policy_noise: 0.2,
            td3_noise_clip: 0.5,
            td3_policy_delay: 2,
            td3_explore_noise: 0.1,
        }
    }
}

impl BaselineConfig {
    /// Updates after a round that showed `shown` items (see [`Self::epochs`]).
    pub fn updates(&self, shown: usize) -> usize {
        if self.epochs > 0.0 && self.epochs.is_finite() {
            (self.epochs * shown as f64 / self.batch_size.max(1) as f64).ceil() as usize
        } else {
            self.updates_per_round
        }
    }
}

/// The reward of one shown item for the RL baselines: its watch time in
/// units of `watch_scale` seconds (the paper's offline metrics are watch
/// time and session length; every RL baseline optimises the same reward).
pub fn reward(f: &features::Feedback, cfg: &BaselineConfig) -> f32 {
    (f.watch_s as f64 / cfg.watch_scale) as f32
}

/// Runs `n` updates, stopping at the first error, which it returns (the
/// policy counts it; the next round tries again).
pub fn train_for<E>(n: usize, mut update: impl FnMut() -> Result<(), E>) -> Result<(), E> {
    for _ in 0..n {
        update()?;
    }
    Ok(())
}

/// `k` of `0..n` in a random order: a policy's ranking when its networks
/// fail (counted, never a panic).
pub fn random_top_k(rng: &mut rliv_sim::rng::Rng, n: usize, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut idx);
    idx.truncate(k);
    idx
}

/// The names [`by_name`] knows.
pub const NAMES: [&str; 5] = ["deepfm", "dqn", "cql", "td3", "rlur"];

/// A baseline by name, seeded; `None` for an unknown name, an error when
/// its networks cannot be built.
pub fn by_name(
    name: &str,
    cfg: &BaselineConfig,
    seed: u64,
) -> Option<candle_core::Result<Box<dyn Policy>>> {
    fn boxed<P: Policy + 'static>(
        p: candle_core::Result<P>,
    ) -> candle_core::Result<Box<dyn Policy>> {
        p.map(|p| Box::new(p) as Box<dyn Policy>)
    }
    Some(match name {
        "deepfm" => boxed(deepfm::DeepFmPolicy::new(cfg, seed)),
        "dqn" => boxed(dqn::DqnPolicy::new(cfg, seed)),
        "cql" => boxed(cql::CqlPolicy::new(cfg, seed)),
        "td3" => boxed(td3::Td3Policy::new(cfg, seed)),
        "rlur" => boxed(rlur::RlurPolicy::new(cfg, seed)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_epochs_over_the_shown_items_or_a_fixed_count() {
        let mut cfg = BaselineConfig {
            batch_size: 100,
            updates_per_round: 7,
            ..BaselineConfig::default()
        };
        assert_eq!(cfg.updates(1_000), 7, "epochs 0: the fixed count");
        cfg.epochs = 2.0;
        assert_eq!(cfg.updates(1_000), 20);
        assert_eq!(cfg.updates(1_001), 21, "rounded up");
        assert_eq!(cfg.updates(0), 0);
    }

    #[test]
    fn every_name_builds_a_policy_of_that_name() {
        let cfg = BaselineConfig::default();
        for name in NAMES {
            let p = by_name(name, &cfg, 1).expect("known").expect("built");
            assert_eq!(p.name(), name);
        }
        assert!(by_name("nope", &cfg, 1).is_none());
    }
}
