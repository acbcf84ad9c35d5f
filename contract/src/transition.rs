//! The ASA transition (contract "Transition") and the learner's input messages.

use serde::{Deserialize, Serialize};

use crate::{PairSnapshot, Rewards};

/// Categorical feature values (`user_feats`, `item_feats`): a handful per
/// record, kept inline so an exposure costs no heap allocation.
pub type Feats = smallvec::SmallVec<[u32; 4]>;

/// An ASA transition `(s_t, a, r_t, s_{t+1})` (contract "Transition").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub request_id: u64,
    pub user_id: u64,
    pub author_id: u64,
    pub item_id: u64,
    pub ts_ms: i64,
    pub user_feats: Feats,
    pub item_feats: Feats,
    /// `f_ua^t` and the pair's totals, read before this interaction.
    pub state: PairSnapshot,
    pub reward: Rewards,
    /// After it (the paper's Eq. 4 for the counters).
    pub next_state: PairSnapshot,
}

impl Transition {
    /// Appends the contract's JSON line (newline included).
    pub fn write_jsonl(&self, out: &mut Vec<u8>) {
        use crate::json::{write_f64, write_i64, write_pair_snapshot, write_u64};
        out.extend_from_slice(b"{\"request_id\":");
        write_u64(out, self.request_id);
        out.extend_from_slice(b",\"user_id\":");
        write_u64(out, self.user_id);
        out.extend_from_slice(b",\"author_id\":");
        write_u64(out, self.author_id);
        out.extend_from_slice(b",\"item_id\":");
        write_u64(out, self.item_id);
        out.extend_from_slice(b",\"ts_ms\":");
        write_i64(out, self.ts_ms);
        out.extend_from_slice(b",\"user_feats\":");
        write_u32s(out, &self.user_feats);
        out.extend_from_slice(b",\"item_feats\":");
        write_u32s(out, &self.item_feats);
        out.extend_from_slice(b",\"state\":");
        write_pair_snapshot(out, &self.state);
        out.extend_from_slice(b",\"reward\":{\"click\":");
        write_f64(out, self.reward.click);
        out.extend_from_slice(b",\"watch\":");
        write_f64(out, self.reward.watch);
        out.extend_from_slice(b",\"follow\":");
        write_f64(out, self.reward.follow);
        out.extend_from_slice(b",\"gift\":");
        write_f64(out, self.reward.gift);
        out.extend_from_slice(b"},\"next_state\":");
        write_pair_snapshot(out, &self.next_state);
        out.extend_from_slice(b"}\n");
    }
}

fn write_u32s(out: &mut Vec<u8>, v: &[u32]) {
    out.push(b'[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::json::write_u64(out, u64::from(*x));
    }
    out.push(b']');
}

/// What a job sends its in-process learner.
#[derive(Debug)]
pub enum Fed {
    /// A transition the learner's checkpoint already covers: it only
    /// refills the sample buffer (no update is owed for it).
    Refill(Transition),
    /// A new transition with its transition-log sequence number.
    Logged(u64, Transition),
    /// A new transition from an input without a log (a transitions file).
    New(Transition),
}
