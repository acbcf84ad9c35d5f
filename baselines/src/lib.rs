//! `rliv-baselines`: the comparison methods of the paper's offline evaluation
//! (Section 4.2, Tables 2-3) as simulator [`Policy`]s, in candle.
//!
//! Every method sees the same inputs ([`features`]: hashed ids and the
//! counters of the user, the item and the user-author pair, refreshed once a
//! round), learns from the same logged events (`Policy::end_round`) with the
//! same budget ([`BaselineConfig::updates_per_round`] updates of
//! [`BaselineConfig::batch_size`]) and the paper's Table 1 hyperparameters.
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
    /// Gradient updates after each round (the training budget; not in
    /// Table 1, which trains offline for 250 x 1e4 steps).
    pub updates_per_round: usize,
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

/// The reward of one shown item for the RL baselines: its watch time in
/// units of `watch_scale` seconds (the paper's offline metrics are watch
/// time and session length; every RL baseline optimises the same reward).
pub fn reward(f: &features::Feedback, cfg: &BaselineConfig) -> f32 {
    (f.watch_s as f64 / cfg.watch_scale) as f32
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
    fn boxed<P: Policy + 'static>(p: candle_core::Result<P>) -> candle_core::Result<Box<dyn Policy>> {
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
