//! What every baseline sees, so that all of them compete on the same inputs.
//!
//! A policy keeps a [`History`] of the labeled exposures it has been shown
//! (the same events the rliv pipeline replays) and refreshes it once per
//! round, like the pair-history ranker: within a round it ranks with the
//! history as of the round's start, which is also what its training steps
//! for that round are encoded with. An encoding is hashed id fields (rows of
//! one embedding table) plus dense counters:
//!
//! - user: `user_id` and the user features; the user's exposures and mean
//!   watch so far;
//! - item: `item_id`, `author_id` and the item features; the item's smoothed
//!   click rate and mean watch and its exposures; and the user-author pair's
//!   counters (exposures, smoothed click rate, mean watch per exposure,
//!   followed, gift total, hours since the last exposure) — the same facts
//!   the pair state gives rliv.

use std::collections::HashMap;

use rliv_sim::events::RoundEvents;
use rliv_sim::policies::labels::{label_round, DEFAULT_WINDOW_MS};
use rliv_sim::policy::{Candidate, Request};
use rliv_sim::rng::hash_words;

/// Id fields of the user side: `user_id`, then up to 4 user features.
pub const USER_FIELDS: usize = 5;
/// Id fields of the item side: `item_id`, `author_id`, then up to 3 item features.
pub const ITEM_FIELDS: usize = 5;
/// Dense features of the user side.
pub const USER_DENSE: usize = 2;
/// Dense features of the item side (item, then pair counters).
pub const ITEM_DENSE: usize = 9;

/// Requests of one user further apart than this belong to different
/// sessions (a step's `next` is `None` across the gap).
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// The user side of a state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UserEnc {
    /// Rows of the shared embedding table.
    pub ids: [u32; USER_FIELDS],
    /// Dense counters (scaled to about unit size).
    pub dense: [f32; USER_DENSE],
}

/// One candidate as seen by one user.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemEnc {
    /// Rows of the shared embedding table.
    pub ids: [u32; ITEM_FIELDS],
    /// Dense counters of the item and of the user-author pair.
    pub dense: [f32; ITEM_DENSE],
}

/// The immediate feedback on one shown item (the label join's result).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Feedback {
    /// 1 if clicked.
    pub click: f32,
    /// Watch seconds.
    pub watch_s: f32,
    /// 1 if the user followed the author.
    pub follow: f32,
    /// Gift amount.
    pub gift: f32,
}

/// The state after a step: the same user's next request in the session.
#[derive(Clone, Debug, PartialEq)]
pub struct NextState {
    /// The user side at the next request.
    pub user: UserEnc,
    /// The items the next request showed (the only candidates the log
    /// knows for it: the max of a Q-learning target runs over these).
    pub items: Vec<ItemEnc>,
}

/// One logged request: what was shown and what came of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The user side.
    pub user: UserEnc,
    /// The shown items, in slate order.
    pub items: Vec<ItemEnc>,
    /// Feedback per shown item.
    pub feedback: Vec<Feedback>,
    /// The user's next request in the same session; `None` when the
    /// session ended (the user quit or the round ended).
    pub next: Option<Box<NextState>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct PairStats {
    exposures: f64,
    clicks: f64,
    watch_s: f64,
    followed: bool,
    gift: f64,
    last_ts: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    exposures: f64,
    clicks: f64,
    watch_s: f64,
}

/// The logged history a baseline knows, refreshed once per round.
#[derive(Clone, Debug)]
pub struct History {
    rows: u32,
    salt: u64,
    pairs: HashMap<(u64, u64), PairStats>,
    items: HashMap<u64, Stats>,
    users: HashMap<u64, Stats>,
    global: Stats,
}

/// Smoothing weight of the item and pair rates toward the global ones.
const PRIOR: f64 = 5.0;
/// Watch seconds are divided by this for dense features.
const WATCH_SCALE: f64 = 60.0;

impl History {
    /// An empty history hashing ids into `rows` embedding rows.
    pub fn new(rows: usize, salt: u64) -> History {
        History {
            rows: rows.clamp(1, u32::MAX as usize) as u32,
            salt,
            pairs: HashMap::new(),
            items: HashMap::new(),
            users: HashMap::new(),
            global: Stats::default(),
        }
    }

    /// Rows of the embedding table the ids hash into.
    pub fn rows(&self) -> usize {
        self.rows as usize
    }

    fn row(&self, field: u64, value: u64) -> u32 {
        (hash_words(&[self.salt, field, value]) % self.rows as u64) as u32
    }

    fn global_rates(&self) -> (f64, f64) {
        let g = &self.global;
        if g.exposures > 0.0 {
            (g.clicks / g.exposures, g.watch_s / g.exposures)
        } else {
            (0.0, 0.0)
        }
    }

    /// The user side of a request.
    pub fn encode_user(&self, user_id: u64, user_feats: &[u32]) -> UserEnc {
        let mut ids = [0u32; USER_FIELDS];
        ids[0] = self.row(0, user_id);
        for (f, slot) in ids.iter_mut().enumerate().skip(1) {
            let v = user_feats.get(f - 1).map_or(u64::MAX, |&v| v as u64);
            *slot = self.row(f as u64, v);
        }
        let u = self.users.get(&user_id).copied().unwrap_or_default();
        let mean = if u.exposures > 0.0 {
            u.watch_s / u.exposures
        } else {
            0.0
        };
        UserEnc {
            ids,
            dense: [
                (u.exposures.ln_1p() / 5.0) as f32,
                (mean / WATCH_SCALE) as f32,
            ],
        }
    }

    /// One candidate as `user_id` sees it at `ts_ms`.
    pub fn encode_item(&self, user_id: u64, c: &Candidate, ts_ms: i64) -> ItemEnc {
        let mut ids = [0u32; ITEM_FIELDS];
        ids[0] = self.row(10, c.item_id);
        ids[1] = self.row(11, c.author_id);
        for (f, slot) in ids.iter_mut().enumerate().skip(2) {
            let v = c.item_feats.get(f - 2).map_or(u64::MAX, |&v| v as u64);
            *slot = self.row(10 + f as u64, v);
        }
        let (g_ctr, g_watch) = self.global_rates();
        let it = self.items.get(&c.item_id).copied().unwrap_or_default();
        let item_ctr = (it.clicks + PRIOR * g_ctr) / (it.exposures + PRIOR);
        let item_watch = (it.watch_s + PRIOR * g_watch) / (it.exposures + PRIOR);
        let p = self
            .pairs
            .get(&(user_id, c.author_id))
            .copied()
            .unwrap_or_default();
        let pair_ctr = (p.clicks + PRIOR * item_ctr) / (p.exposures + PRIOR);
        let pair_watch = (p.watch_s + PRIOR * item_watch) / (p.exposures + PRIOR);
        let hours = p
            .last_ts
            .map_or(0.0, |t| ((ts_ms - t).max(0) as f64 / 3.6e6).ln_1p() / 5.0);
        ItemEnc {
            ids,
            dense: [
                item_ctr as f32,
                (item_watch / WATCH_SCALE) as f32,
                (it.exposures.ln_1p() / 5.0) as f32,
                (p.exposures.ln_1p() / 5.0) as f32,
                pair_ctr as f32,
                (pair_watch / WATCH_SCALE) as f32,
                if p.followed { 1.0 } else { 0.0 },
                p.gift.ln_1p() as f32,
                hours as f32,
            ],
        }
    }

    /// Every candidate of a request, in order.
    pub fn encode_request(&self, req: &Request) -> (UserEnc, Vec<ItemEnc>) {
        let user = self.encode_user(req.user_id, &req.user_feats);
        let items = req
            .candidates
            .iter()
            .map(|c| self.encode_item(req.user_id, c, req.ts_ms))
            .collect();
        (user, items)
    }

    /// The round's logged requests as training steps, encoded with the
    /// history as it is now (call before [`Self::add_round`]).
    pub fn steps(&self, events: &RoundEvents) -> Vec<Step> {
        struct Req {
            user_id: u64,
            ts: i64,
            user: UserEnc,
            items: Vec<(u32, ItemEnc, Feedback)>,
        }
        let labels: HashMap<(u64, u64), Feedback> = label_round(events, DEFAULT_WINDOW_MS)
            .into_iter()
            .map(|l| {
                let f = Feedback {
                    click: if l.click { 1.0 } else { 0.0 },
                    watch_s: l.watch_s as f32,
                    follow: if l.follow { 1.0 } else { 0.0 },
                    gift: l.gift as f32,
                };
                ((l.request_id, l.item_id), f)
            })
            .collect();
        let mut reqs: Vec<Req> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut seen: std::collections::HashSet<(u64, u64)> = Default::default();
        for e in &events.exposures {
            if !seen.insert((e.request_id, e.item_id)) {
                continue; // a duplicated exposure line
            }
            let i = *index.entry(e.request_id).or_insert_with(|| {
                reqs.push(Req {
                    user_id: e.user_id,
                    ts: e.ts_ms,
                    user: self.encode_user(e.user_id, &e.user_feats),
                    items: Vec::new(),
                });
                reqs.len() - 1
            });
            let c = Candidate {
                item_id: e.item_id,
                author_id: e.author_id,
                item_feats: e.item_feats.clone(),
            };
            let enc = self.encode_item(e.user_id, &c, e.ts_ms);
            let fb = labels
                .get(&(e.request_id, e.item_id))
                .copied()
                .unwrap_or_default();
            reqs[i].items.push((e.position, enc, fb));
        }
        for r in &mut reqs {
            r.items.sort_by_key(|(pos, _, _)| *pos);
        }
        // Each user's requests in time order; the next one within the
        // session gap is the step's next state.
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by_key(|&i| (reqs[i].user_id, reqs[i].ts, i));
        let mut next_of: Vec<Option<usize>> = vec![None; reqs.len()];
        for w in order.windows(2) {
            let (a, b) = (&reqs[w[0]], &reqs[w[1]]);
            if a.user_id == b.user_id && b.ts - a.ts <= SESSION_GAP_MS {
                next_of[w[0]] = Some(w[1]);
            }
        }
        (0..reqs.len())
            .map(|i| {
                let r = &reqs[i];
                Step {
                    user: r.user,
                    items: r.items.iter().map(|(_, e, _)| *e).collect(),
                    feedback: r.items.iter().map(|(_, _, f)| *f).collect(),
                    next: next_of[i].map(|j| {
                        Box::new(NextState {
                            user: reqs[j].user,
                            items: reqs[j].items.iter().map(|(_, e, _)| *e).collect(),
                        })
                    }),
                }
            })
            .collect()
    }

    /// Adds a round's labeled exposures to the counters.
    pub fn add_round(&mut self, events: &RoundEvents) {
        for l in label_round(events, DEFAULT_WINDOW_MS) {
            let click = if l.click { 1.0 } else { 0.0 };
            for s in [
                self.items.entry(l.item_id).or_default(),
                self.users.entry(l.user_id).or_default(),
            ] {
                s.exposures += 1.0;
                s.clicks += click;
                s.watch_s += l.watch_s;
            }
            self.global.exposures += 1.0;
            self.global.clicks += click;
            self.global.watch_s += l.watch_s;
            let p = self.pairs.entry((l.user_id, l.author_id)).or_default();
            p.exposures += 1.0;
            p.clicks += click;
            p.watch_s += l.watch_s;
            p.followed |= l.follow;
            p.gift += l.gift;
            p.last_ts = p.last_ts.max(Some(l.ts_ms));
        }
    }
}

/// A bounded store of training steps: the newest `capacity` are kept.
#[derive(Clone, Debug)]
pub struct StepBuffer {
    steps: Vec<Step>,
    capacity: usize,
    next_slot: usize,
}

impl StepBuffer {
    /// An empty buffer keeping at most `capacity` steps (at least 1).
    pub fn new(capacity: usize) -> StepBuffer {
        StepBuffer {
            steps: Vec::new(),
            capacity: capacity.max(1),
            next_slot: 0,
        }
    }

    /// Keeps a round's steps, encoded with `history` as it was when they
    /// were ranked, then adds the round to `history`.
    pub fn record(&mut self, history: &mut History, events: &RoundEvents) {
        self.extend(history.steps(events));
        history.add_round(events);
    }

    /// Adds steps, replacing the oldest when full.
    pub fn extend(&mut self, steps: impl IntoIterator<Item = Step>) {
        for s in steps {
            if self.steps.len() < self.capacity {
                self.steps.push(s);
            } else {
                self.steps[self.next_slot] = s;
                self.next_slot = (self.next_slot + 1) % self.capacity;
            }
        }
    }

    /// Number of steps held.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether no step is held.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The held steps (in no particular order).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// `n` shown items drawn uniformly with replacement: a step, and the
    /// index of one of its items (steps with no items are skipped).
    pub fn sample_items<'a>(
        &'a self,
        rng: &mut rliv_sim::rng::Rng,
        n: usize,
    ) -> Vec<(&'a Step, usize)> {
        if self.steps.iter().all(|s| s.items.is_empty()) {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let s = &self.steps[rng.index(self.steps.len())];
            if !s.items.is_empty() {
                out.push((s, rng.index(s.items.len())));
            }
        }
        out
    }

    /// `n` steps drawn uniformly with replacement.
    pub fn sample<'a>(&'a self, rng: &mut rliv_sim::rng::Rng, n: usize) -> Vec<&'a Step> {
        if self.steps.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|_| &self.steps[rng.index(self.steps.len())])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rliv_sim::events::{Action, ActionKind, Exposure};

    fn exposure(
        request_id: u64,
        user_id: u64,
        item_id: u64,
        ts_ms: i64,
        position: u32,
    ) -> Exposure {
        Exposure {
            request_id,
            user_id,
            item_id,
            author_id: item_id % 3 + 1,
            ts_ms,
            position,
            user_feats: vec![1, 0, 2, 1],
            item_feats: vec![4, 1, 0],
        }
    }

    fn round() -> RoundEvents {
        RoundEvents {
            round: 0,
            exposures: vec![
                exposure(1, 7, 10, 1_000, 0),
                exposure(1, 7, 11, 1_000, 1),
                exposure(2, 7, 12, 61_000, 0),
                exposure(3, 7, 13, 61_000 + SESSION_GAP_MS + 1, 0),
            ],
            actions: vec![
                Action {
                    request_id: 1,
                    user_id: 7,
                    item_id: 11,
                    ts_ms: 2_000,
                    action: ActionKind::Click,
                    value: 1.0,
                },
                Action {
                    request_id: 1,
                    user_id: 7,
                    item_id: 11,
                    ts_ms: 30_000,
                    action: ActionKind::Watch,
                    value: 28.0,
                },
            ],
        }
    }

    #[test]
    fn steps_follow_the_session_and_carry_the_feedback() {
        let h = History::new(1024, 1);
        let steps = h.steps(&round());
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].items.len(), 2);
        assert_eq!(steps[0].feedback[1].watch_s, 28.0);
        assert_eq!(steps[0].feedback[1].click, 1.0);
        assert_eq!(steps[0].feedback[0], Feedback::default());
        let next = steps[0].next.as_ref().expect("request 2 follows request 1");
        assert_eq!(next.items.len(), 1);
        // Request 3 comes after the session gap: request 2 ends its session.
        assert!(steps[1].next.is_none());
        assert!(steps[2].next.is_none());
    }

    #[test]
    fn the_pair_counters_appear_after_the_round_is_added() {
        let mut h = History::new(1024, 1);
        let c = Candidate {
            item_id: 11,
            author_id: 11 % 3 + 1,
            item_feats: vec![4, 1, 0],
        };
        let before = h.encode_item(7, &c, 100_000);
        h.add_round(&round());
        let after = h.encode_item(7, &c, 100_000);
        assert_eq!(before.ids, after.ids);
        assert_eq!(before.dense[3], 0.0, "no pair exposures before");
        assert!(after.dense[3] > 0.0, "pair exposures after");
        assert!(
            after.dense[5] > before.dense[5],
            "the pair's mean watch rose"
        );
        // Another user's pair with the same author is untouched.
        assert_eq!(h.encode_item(8, &c, 100_000).dense[3], 0.0);
    }

    #[test]
    fn the_buffer_keeps_the_newest_steps() {
        let h = History::new(64, 1);
        let steps = h.steps(&round());
        let mut b = StepBuffer::new(2);
        b.extend(steps.clone());
        assert_eq!(b.len(), 2);
        assert!(b.steps().contains(&steps[2]));
        assert!(!b.steps().contains(&steps[0]));
    }
}
