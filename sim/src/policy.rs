//! The interface between the simulator and a ranking policy.

use crate::events::RoundEvents;

/// One retrieved candidate, as a ranking service sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The item.
    pub item_id: u64,
    /// Its author.
    pub author_id: u64,
    /// Static categorical item features.
    pub item_feats: Vec<u32>,
}

/// One ranking request (the same fields as the contract's `POST /rank`).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Unique over the whole run.
    pub request_id: u64,
    /// The user.
    pub user_id: u64,
    /// Static categorical user features.
    pub user_feats: Vec<u32>,
    /// Event time of the request (Unix ms).
    pub ts_ms: i64,
    /// The candidates, in a random order.
    pub candidates: Vec<Candidate>,
}

/// What a policy may learn about the true world: only the myopic oracle
/// uses it; every other policy must ignore it.
pub trait WorldPeek {
    /// True expected watch seconds of showing `item_id` to `user_id` at
    /// `ts_ms` (P(click) * E[watched fraction] * duration, under the user's
    /// current relationship and fatigue). `None` for unknown ids.
    fn expected_immediate(&self, user_id: u64, item_id: u64, ts_ms: i64) -> Option<f64>;
}

/// A [`WorldPeek`] that knows nothing (for calling policies outside a simulator).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeek;

impl WorldPeek for NoPeek {
    fn expected_immediate(&self, _: u64, _: u64, _: i64) -> Option<f64> {
        None
    }
}

/// A ranking policy.
pub trait Policy: Send {
    /// A short name for reports.
    fn name(&self) -> String;

    /// Indices into `req.candidates`, best first, at most `k`. Out-of-range
    /// or repeated indices are dropped by the simulator.
    fn rank(&mut self, req: &Request, k: usize, world: &dyn WorldPeek) -> Vec<usize>;

    /// Called once after each round with that round's events; policies that
    /// learn from logs update here.
    fn end_round(&mut self, _round: &RoundEvents) {}
}

/// Ranks candidate indices by `score` descending; ties broken by `tie`
/// (e.g. random keys) ascending, then by index. Returns at most `k`.
pub fn top_k_by(scores: &[f64], tie: &[u64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(tie.get(a).cmp(&tie.get(b)))
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}
