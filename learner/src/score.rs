//! Scoring: [`Model::score`], the one path from pair inputs to LIV that the
//! learner's evaluation, the ranking service and the simulator share. Kept
//! apart from `model.rs` so that the model does not depend on the engines
//! (which depend on the model).

use crate::embed::{Lookup, PairInput};
use crate::engine::Engine;
use crate::error::LearnerError;
use crate::model::{Liv, Model};

impl Model {
    /// Scores candidates with `engine`: each tower's LIV and the weighted sum.
    pub fn score(
        &self,
        engine: &mut Engine,
        inputs: &[PairInput<'_>],
    ) -> Result<Vec<Liv>, LearnerError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let mut lookup = Lookup::default();
        for x in inputs {
            self.emb.push(&mut lookup, x, None);
        }
        let mut h = Vec::new();
        self.emb.gather(&lookup, &mut h);
        let b = inputs.len();
        let q = engine.q_values(self, &h, b)?;
        let weights = self.cfg.weights().as_array();
        // The towers learn scaled rewards; LIV is reported in the rewards'
        // own units (watch seconds, gift amount).
        let unscale =
            self.cfg
                .reward_scale
                .as_array()
                .map(|s| if s > 0.0 { (1.0 / s) as f32 } else { 1.0 });
        Ok((0..b)
            .map(|i| {
                let mut towers = [None; 4];
                let mut score = 0.0f32;
                for (t, &label) in self.labels.iter().enumerate() {
                    let q2 = self
                        .cfg
                        .double_q
                        .combine(q[(t * 2) * b + i], q[(t * 2 + 1) * b + i]);
                    let liv = unscale[label] * q2;
                    towers[label] = Some(liv);
                    score += weights[label] as f32 * liv;
                }
                Liv { towers, score }
            })
            .collect())
    }
}
