//! Ranks by each item's smoothed click-through rate from the logs.

use std::collections::HashMap;

use super::labels::{label_round, DEFAULT_WINDOW_MS};
use crate::events::RoundEvents;
use crate::policy::{top_k_by, Policy, Request, WorldPeek};
use crate::rng::Rng;

/// Score = (item clicks + prior * global CTR) / (item exposures + prior).
/// Learns in `end_round` from all rounds so far; ties are broken randomly.
pub struct ItemCtrPolicy {
    /// Pseudo-exposures of the prior toward the global CTR.
    pub prior: f64,
    items: HashMap<u64, (f64, f64)>,
    total: (f64, f64),
    rng: Rng,
}

impl ItemCtrPolicy {
    /// A fresh policy (no history: random order at first).
    pub fn new(seed: u64) -> Self {
        ItemCtrPolicy {
            prior: 20.0,
            items: HashMap::new(),
            total: (0.0, 0.0),
            rng: Rng::new(seed),
        }
    }

    /// The smoothed CTR of an item.
    pub fn score(&self, item_id: u64) -> f64 {
        let global = if self.total.0 > 0.0 {
            self.total.1 / self.total.0
        } else {
            0.0
        };
        let (e, c) = self.items.get(&item_id).copied().unwrap_or((0.0, 0.0));
        (c + self.prior * global) / (e + self.prior)
    }
}

impl Policy for ItemCtrPolicy {
    fn name(&self) -> String {
        "item_ctr".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        let scores: Vec<f64> = req
            .candidates
            .iter()
            .map(|c| self.score(c.item_id))
            .collect();
        let tie: Vec<u64> = scores.iter().map(|_| self.rng.next_u64()).collect();
        top_k_by(&scores, &tie, k)
    }

    fn end_round(&mut self, round: &RoundEvents) {
        for l in label_round(round, DEFAULT_WINDOW_MS) {
            let c = l.click as u8 as f64;
            let s = self.items.entry(l.item_id).or_insert((0.0, 0.0));
            s.0 += 1.0;
            s.1 += c;
            self.total.0 += 1.0;
            self.total.1 += c;
        }
    }
}
