//! Ranks by each item's smoothed mean watch time per exposure.

use std::collections::HashMap;

use super::labels::{label_round, Labeled, DEFAULT_WINDOW_MS};
use crate::events::RoundEvents;
use crate::policy::{top_k_by, Policy, Request, WorldPeek};
use crate::rng::Rng;

/// Per-item watch statistics from the logs.
#[derive(Clone, Debug)]
pub struct ItemWatchStats {
    /// Pseudo-exposures of the prior toward the global mean.
    pub prior: f64,
    items: HashMap<u64, (f64, f64)>,
    total: (f64, f64),
}

impl Default for ItemWatchStats {
    fn default() -> Self {
        ItemWatchStats {
            prior: 5.0,
            items: HashMap::new(),
            total: (0.0, 0.0),
        }
    }
}

impl ItemWatchStats {
    /// Counts one labeled exposure.
    pub fn add(&mut self, l: &Labeled) {
        let s = self.items.entry(l.item_id).or_insert((0.0, 0.0));
        s.0 += 1.0;
        s.1 += l.watch_s;
        self.total.0 += 1.0;
        self.total.1 += l.watch_s;
    }

    /// Global mean watch seconds per exposure (0 without data).
    pub fn global_mean(&self) -> f64 {
        if self.total.0 > 0.0 {
            self.total.1 / self.total.0
        } else {
            0.0
        }
    }

    /// Item mean watch per exposure shrunk toward the global mean:
    /// (item watch total + prior * global mean) / (item exposures + prior).
    pub fn mean(&self, item_id: u64) -> f64 {
        let (e, w) = self.items.get(&item_id).copied().unwrap_or((0.0, 0.0));
        (w + self.prior * self.global_mean()) / (e + self.prior)
    }
}

/// Ranks by [`ItemWatchStats::mean`]; learns in `end_round` from all rounds
/// so far; ties are broken randomly.
pub struct ItemWatchPolicy {
    /// The statistics.
    pub stats: ItemWatchStats,
    rng: Rng,
}

impl ItemWatchPolicy {
    /// A fresh policy.
    pub fn new(seed: u64) -> Self {
        ItemWatchPolicy {
            stats: ItemWatchStats::default(),
            rng: Rng::new(seed),
        }
    }
}

impl Policy for ItemWatchPolicy {
    fn name(&self) -> String {
        "item_watch".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        let scores: Vec<f64> = req
            .candidates
            .iter()
            .map(|c| self.stats.mean(c.item_id))
            .collect();
        let tie: Vec<u64> = scores.iter().map(|_| self.rng.next_u64()).collect();
        top_k_by(&scores, &tie, k)
    }

    fn end_round(&mut self, round: &RoundEvents) {
        for l in label_round(round, DEFAULT_WINDOW_MS) {
            self.stats.add(&l);
        }
    }
}
