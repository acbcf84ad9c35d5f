//! Ranks by the user-author pair's own history, shrunk toward the item.

use std::collections::HashMap;

use super::item_watch::ItemWatchStats;
use super::labels::{label_round, DEFAULT_WINDOW_MS};
use crate::events::RoundEvents;
use crate::policy::{top_k_by, Policy, Request, WorldPeek};
use crate::rng::Rng;

/// score = (pair watch total + w * item mean watch) / (pair exposures + w),
/// with w = `pair_prior` (5) and the item mean watch of [`ItemWatchStats`].
/// Pair = (user_id, author_id). Stats are refreshed once per round from
/// the events (actions attributed to exposures by (request_id, item_id)).
pub struct PairHistoryPolicy {
    /// Weight w of the item prior.
    pub pair_prior: f64,
    /// Item statistics (the prior).
    pub items: ItemWatchStats,
    pairs: HashMap<(u64, u64), (f64, f64)>,
    rng: Rng,
}

impl PairHistoryPolicy {
    /// A fresh policy.
    pub fn new(seed: u64) -> Self {
        PairHistoryPolicy {
            pair_prior: 5.0,
            items: ItemWatchStats::default(),
            pairs: HashMap::new(),
            rng: Rng::new(seed),
        }
    }

    /// The score of showing `item_id` (by `author_id`) to `user_id`.
    pub fn score(&self, user_id: u64, author_id: u64, item_id: u64) -> f64 {
        let (e, w) = self
            .pairs
            .get(&(user_id, author_id))
            .copied()
            .unwrap_or((0.0, 0.0));
        (w + self.pair_prior * self.items.mean(item_id)) / (e + self.pair_prior)
    }
}

impl Policy for PairHistoryPolicy {
    fn name(&self) -> String {
        "pair_history".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        let scores: Vec<f64> = req
            .candidates
            .iter()
            .map(|c| self.score(req.user_id, c.author_id, c.item_id))
            .collect();
        let tie: Vec<u64> = scores.iter().map(|_| self.rng.next_u64()).collect();
        top_k_by(&scores, &tie, k)
    }

    fn end_round(&mut self, round: &RoundEvents) {
        for l in label_round(round, DEFAULT_WINDOW_MS) {
            self.items.add(&l);
            let p = self
                .pairs
                .entry((l.user_id, l.author_id))
                .or_insert((0.0, 0.0));
            p.0 += 1.0;
            p.1 += l.watch_s;
        }
    }
}
