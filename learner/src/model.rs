//! The RLIV-UA model (paper Section 3.2, Fig. 3): shared embeddings, one tower
//! per label with a reward head `r_hat` and two value nets `V_1, V_2`, their
//! soft-updated target copies, and the assistance gift classifier.
//!
//! [`Model::score`] (in `score.rs`) is the one scoring path: the learner's
//! evaluation, the ranking service and the simulator all call it.
//!
//! Target copies cover the towers; the embedding layer is shared by the online
//! and target networks (the target reads the current embeddings without
//! gradient). A target copy of the 100M-parameter tables, soft-updated every
//! step, would cost a full pass over them per update.

use crate::config::{LearnerConfig, LABELS};
use crate::embed::Embeddings;
use crate::error::LearnerError;
use crate::nets::StackParams;
use crate::rng::Rng;

/// Per-candidate output of [`Model::score`].
#[derive(Clone, Debug, PartialEq)]
pub struct Liv {
    /// Each tower's LIV (the min of its two Q values, in the reward's own
    /// units: `reward_scale` undone), in [`LABELS`] order;
    /// `None` for towers the configuration does not train.
    pub towers: [Option<f32>; 4],
    /// `sum(score_weights[l] * towers[l])` over the trained towers.
    pub score: f32,
}

pub struct Model {
    pub cfg: LearnerConfig,
    pub emb: Embeddings,
    /// Labels (indices into [`LABELS`]) of the towers, in net order.
    pub labels: Vec<usize>,
    /// Nets per tower: `[r_hat, v1, v2]` or `[v1, v2]` without the supervised head.
    pub per_tower: usize,
    pub towers: StackParams,
    pub target: StackParams,
    pub assist: Option<StackParams>,
}

/// Names of the nets of one tower, in order.
pub fn net_names(supervised_head: bool) -> &'static [&'static str] {
    if supervised_head {
        &["reward", "v1", "v2"]
    } else {
        &["v1", "v2"]
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ModelSizes {
    pub embedding_params: usize,
    pub net_params: usize,
    /// Weights: embeddings, online nets, target towers.
    pub bytes: usize,
    /// Adam's two moments of every trained parameter.
    pub optimizer_bytes: usize,
}

impl Model {
    /// A freshly initialised model, ready to train.
    pub fn new(cfg: &LearnerConfig) -> Result<Model, LearnerError> {
        Self::build(cfg, true)
    }

    /// A model with zero weights and no optimizer moments, to be filled from
    /// a checkpoint and used for scoring (half the memory of a training model,
    /// and no time spent on random initialisation).
    pub fn for_inference(cfg: &LearnerConfig) -> Result<Model, LearnerError> {
        Self::build(cfg, false)
    }

    fn build(cfg: &LearnerConfig, train: bool) -> Result<Model, LearnerError> {
        cfg.validate()?;
        let mut rng = Rng::new(cfg.seed);
        let emb = Embeddings::new(cfg, train.then_some(&mut rng), train);
        let labels = cfg.towers();
        let per_tower = net_names(cfg.supervised_head).len();
        let towers = StackParams::new(
            labels.len() * per_tower,
            emb.input_dim(),
            &cfg.hidden,
            &mut rng,
        );
        let target = towers.clone();
        let assist = cfg
            .assist_gift
            .then(|| StackParams::new(1, 2 * cfg.embedding_dim, &cfg.hidden[..1], &mut rng));
        Ok(Model {
            cfg: cfg.clone(),
            emb,
            labels,
            per_tower,
            towers,
            target,
            assist,
        })
    }

    pub fn sizes(&self) -> ModelSizes {
        let (emb_bytes, emb_moments) = self.emb.bytes();
        let tower_params = self.towers.param_count();
        let net_params = tower_params + self.assist.as_ref().map_or(0, StackParams::param_count);
        ModelSizes {
            embedding_params: emb_bytes / 4,
            net_params,
            bytes: emb_bytes + 4 * net_params + 4 * tower_params,
            optimizer_bytes: emb_moments + 8 * net_params,
        }
    }

    /// Tower names for logs: `click`, `watch`, ...
    pub fn tower_names(&self) -> Vec<&'static str> {
        self.labels.iter().map(|l| LABELS[*l]).collect()
    }
}
