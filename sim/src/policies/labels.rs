//! Turns a round's raw events into labeled exposures the way the contract's
//! label join does (for the log-learning baselines).

use std::collections::{HashMap, HashSet};

use crate::events::{ActionKind, RoundEvents};

/// The contract's default attribution window (30 minutes).
pub const DEFAULT_WINDOW_MS: i64 = 1_800_000;

/// One exposure with its attributed rewards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labeled {
    /// Request.
    pub request_id: u64,
    /// User.
    pub user_id: u64,
    /// Item.
    pub item_id: u64,
    /// Author.
    pub author_id: u64,
    /// Exposure time.
    pub ts_ms: i64,
    /// Any click.
    pub click: bool,
    /// Total watch seconds.
    pub watch_s: f64,
    /// Any follow.
    pub follow: bool,
    /// Total gift amount.
    pub gift: f64,
}

/// Labels every distinct exposure of `events`: an action counts for the
/// exposure with the same (request_id, item_id) and user when
/// `exposure.ts <= action.ts <= exposure.ts + window_ms`; identical actions
/// count once. Output is in exposure order.
pub fn label_round(events: &RoundEvents, window_ms: i64) -> Vec<Labeled> {
    let mut index: HashMap<(u64, u64), usize> = HashMap::new();
    let mut out: Vec<Labeled> = Vec::new();
    for e in &events.exposures {
        index.entry((e.request_id, e.item_id)).or_insert_with(|| {
            out.push(Labeled {
                request_id: e.request_id,
                user_id: e.user_id,
                item_id: e.item_id,
                author_id: e.author_id,
                ts_ms: e.ts_ms,
                ..Labeled::default()
            });
            out.len() - 1
        });
    }
    let mut seen: HashSet<(u64, u64, ActionKind, i64, u64)> = HashSet::new();
    for a in &events.actions {
        let Some(&i) = index.get(&(a.request_id, a.item_id)) else {
            continue;
        };
        let l = &mut out[i];
        if l.user_id != a.user_id || a.ts_ms < l.ts_ms || a.ts_ms > l.ts_ms + window_ms {
            continue;
        }
        if !seen.insert((
            a.request_id,
            a.item_id,
            a.action,
            a.ts_ms,
            a.value.to_bits(),
        )) {
            continue;
        }
        match a.action {
            ActionKind::Click => l.click = true,
            ActionKind::Watch => l.watch_s += a.value,
            ActionKind::Follow => l.follow = true,
            ActionKind::Gift => l.gift += a.value,
        }
    }
    out
}
