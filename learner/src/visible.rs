//! The pair's state as a ranking request could have seen it.
//!
//! A transition's `state` is the pair's counters right before the
//! interaction: it includes every earlier interaction of the pair, also
//! those of the same request (sibling items) and those a few minutes old.
//! At serving time none of those are in the pair state yet: the job closes
//! an exposure only `join.window_ms` after it was shown and commits it up to
//! the allowed lateness later. Training on the transition's own state would
//! teach the model features it never sees when it ranks (a sibling's click
//! raising `s_t`), so the learner rebuilds `s_t` as it was visible: the
//! state before the pair's oldest interaction that is less than
//! `visible_lag_ms` older than this one. States are cumulative, so that is
//! exact, with no subtraction.
//!
//! Per pair it keeps the interactions of the last `visible_lag_ms` of event
//! time (a pair's transitions arrive in event-time order). Memory: the pairs
//! active within the lag. The record is not checkpointed: after a restart
//! the first transitions of each pair within the lag see their whole state.

use std::collections::VecDeque;

use rliv_contract::Transition;
use rliv_contract::{FastMap, PairSnapshot};

pub struct Visibility {
    lag_ms: i64,
    /// Per pair: (exposure time, state before it) of its recent interactions.
    recent: FastMap<(u64, u64), VecDeque<(i64, PairSnapshot)>>,
    newest_ts: i64,
    since_sweep: usize,
}

impl Visibility {
    pub fn new(lag_ms: i64) -> Visibility {
        Visibility {
            lag_ms: lag_ms.max(0),
            recent: FastMap::default(),
            newest_ts: i64::MIN,
            since_sweep: 0,
        }
    }

    /// The state of `t`'s pair that a request at `t.ts_ms` could have seen:
    /// interactions at least `lag_ms` older than it (strictly older, so a
    /// lag of 0 still hides the request's sibling items).
    pub fn visible(&mut self, t: &Transition) -> PairSnapshot {
        let q = self.recent.entry((t.user_id, t.author_id)).or_default();
        while q
            .front()
            .is_some_and(|(ts, _)| ts.saturating_add(self.lag_ms) < t.ts_ms)
        {
            q.pop_front();
        }
        let visible = q.front().map_or(t.state, |(_, before)| *before);
        q.push_back((t.ts_ms, t.state));
        self.newest_ts = self.newest_ts.max(t.ts_ms);
        self.since_sweep += 1;
        if self.since_sweep >= 1 << 16 && self.recent.len() > 1 << 16 {
            self.sweep();
        }
        visible
    }

    /// Forgets pairs whose every recorded interaction is visible by now.
    fn sweep(&mut self) {
        self.since_sweep = 0;
        let horizon = self.newest_ts.saturating_sub(self.lag_ms);
        self.recent
            .retain(|_, q| q.back().is_some_and(|(ts, _)| *ts >= horizon));
    }

    /// Pairs with interactions still within the lag.
    pub fn pairs(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rliv_contract::Rewards;

    /// The transitions of one pair at `times`, each clicked and watched 10 s.
    fn chain(times: &[i64]) -> Vec<Transition> {
        let mut state = PairSnapshot::default();
        let r = Rewards {
            click: 1.0,
            watch: 10.0,
            follow: 0.0,
            gift: 0.0,
        };
        times
            .iter()
            .enumerate()
            .map(|(i, &ts)| {
                let next = crate::buffer::advance(&state, ts, &r);
                let t = Transition {
                    request_id: i as u64,
                    user_id: 1,
                    author_id: 2,
                    item_id: 3,
                    ts_ms: ts,
                    user_feats: Default::default(),
                    item_feats: Default::default(),
                    state,
                    reward: r,
                    next_state: next,
                };
                state = next;
                t
            })
            .collect()
    }

    #[test]
    fn recent_interactions_and_siblings_are_hidden_older_ones_seen() {
        let min = 60_000;
        // Two siblings at 0, one 5 minutes later, one 2 hours later, one 3 minutes after that.
        let ts = [0, 0, 5 * min, 120 * min, 123 * min];
        let chain = chain(&ts);
        let mut v = Visibility::new(31 * min);
        let seen: Vec<u64> = chain.iter().map(|t| v.visible(t).exposures).collect();
        // The sibling and the 5-minute-old ones are not visible; after 2 hours all
        // three are; the one 3 minutes before the last is not.
        assert_eq!(seen, vec![0, 0, 0, 3, 3]);
        let last = v.visible(&chain[4]);
        assert_eq!(last.watch_sec_total, 30.0);
        assert_eq!(last.last_ts_ms, 5 * min, "the last visible exposure");

        // Lag 0: only the request's own siblings are hidden.
        let mut v = Visibility::new(0);
        let seen: Vec<u64> = chain.iter().map(|t| v.visible(t).exposures).collect();
        assert_eq!(seen, vec![0, 0, 2, 3, 4]);
    }

    #[test]
    fn pairs_are_kept_only_while_they_have_hidden_interactions() {
        let mut v = Visibility::new(1_000);
        for (i, t) in chain(&[0, 10]).iter().enumerate() {
            let mut t = t.clone();
            t.user_id = i as u64;
            v.visible(&t);
        }
        assert_eq!(v.pairs(), 2);
        v.newest_ts = 5_000;
        v.sweep();
        assert_eq!(v.pairs(), 0);
    }
}
