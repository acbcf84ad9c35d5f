//! Uniformly random ranking.

use crate::policy::{Policy, Request, WorldPeek};
use crate::rng::Rng;

/// Shows K candidates chosen uniformly at random.
pub struct RandomPolicy {
    rng: Rng,
}

impl RandomPolicy {
    /// A random policy with its own seed.
    pub fn new(seed: u64) -> Self {
        RandomPolicy {
            rng: Rng::new(seed),
        }
    }
}

impl Policy for RandomPolicy {
    fn name(&self) -> String {
        "random".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..req.candidates.len()).collect();
        self.rng.shuffle(&mut idx);
        idx.truncate(k);
        idx
    }
}
