//! The real-time sample buffer: a bounded ring of transitions, sampled
//! uniformly; and the authors' recent items (the candidates `j` of the TD
//! target's max over the author's item set).

use std::collections::VecDeque;

use rliv_contract::{FastMap, PairCounters, PairSnapshot, Rewards};
use rliv_contract::{Feats, Transition};

use crate::embed::PairInput;
use crate::rng::Rng;

/// One transition, compactly (about 130 bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub user_id: u64,
    pub author_id: u64,
    pub item_id: u64,
    pub user_feats: Feats,
    pub item_feats: Feats,
    pub state: [u32; 5],
    pub next_state: [u32; 5],
    /// The rest of `s_t` (totals, times) and the request's time.
    pub extra: Extra,
    /// The same for `s_{t+1}` (its time is an estimate: see [`Sample::new`]).
    pub next_extra: Extra,
    /// click, watch, follow, gift (unscaled).
    pub reward: [f32; 4],
}

/// The part of a sample's state besides the five counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Extra {
    pub watch_sec_total: f32,
    pub gift_total: f32,
    /// The pair's last closed exposure (0: none).
    pub last_ts_ms: i64,
    /// When the state is read: the ranking request's time (0: unknown).
    pub ts_ms: i64,
}

fn compact(c: &PairSnapshot) -> [u32; 5] {
    let s = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
    [
        s(c.exposures),
        s(c.clicks),
        s(c.watches),
        s(c.follows),
        s(c.gifts),
    ]
}

/// The snapshot a sample's counters and extras stand for.
pub fn expand(c: &[u32; 5], e: &Extra) -> PairSnapshot {
    PairSnapshot {
        exposures: u64::from(c[0]),
        clicks: u64::from(c[1]),
        watches: u64::from(c[2]),
        follows: u64::from(c[3]),
        gifts: u64::from(c[4]),
        watch_sec_total: f64::from(e.watch_sec_total),
        gift_total: f64::from(e.gift_total),
        first_ts_ms: 0,
        last_ts_ms: e.last_ts_ms,
    }
}

/// `state` after one more interaction at `ts_ms` with `r` (the paper's
/// Eq. 4 for the counters; totals added, the last exposure time moved).
pub fn advance(state: &PairSnapshot, ts_ms: i64, r: &Rewards) -> PairSnapshot {
    // The pair store's own update, so the two can never disagree.
    let mut c = PairCounters {
        counts: state.counts(),
        watch_sec_total: state.watch_sec_total,
        gift_total: state.gift_total,
        first_ts_ms: state.first_ts_ms,
        last_ts_ms: state.last_ts_ms,
    };
    c.apply(ts_ms, r);
    PairSnapshot::from(&c)
}

fn extra(s: &PairSnapshot, ts_ms: i64) -> Extra {
    Extra {
        watch_sec_total: s.watch_sec_total as f32,
        gift_total: s.gift_total as f32,
        last_ts_ms: s.last_ts_ms,
        ts_ms,
    }
}

impl From<&Transition> for Sample {
    /// The transition as written, every earlier interaction visible (see
    /// [`Sample::new`] for the state a request could see).
    fn from(t: &Transition) -> Self {
        Sample::new(t, t.state)
    }
}

impl Sample {
    /// A sample of `t` whose `s_t` is `visible` (the pair's state as a
    /// ranking request at `t.ts_ms` could have seen it) and whose `s_{t+1}`
    /// is that state after this interaction (ASA, the paper's Eq. 4). The
    /// next request's time is not known: it is estimated as this one plus
    /// the gap since the pair's previous visible exposure (the same rhythm),
    /// or this one's time for a new pair.
    pub fn new(t: &Transition, visible: PairSnapshot) -> Sample {
        let next = advance(&visible, t.ts_ms, &t.reward);
        let gap = if visible.exposures > 0 && visible.last_ts_ms > 0 {
            (t.ts_ms - visible.last_ts_ms).max(0)
        } else {
            0
        };
        let next_ts = if t.ts_ms > 0 { t.ts_ms + gap } else { 0 };
        Sample {
            user_id: t.user_id,
            author_id: t.author_id,
            item_id: t.item_id,
            user_feats: t.user_feats.clone(),
            item_feats: t.item_feats.clone(),
            state: compact(&visible),
            next_state: compact(&next),
            extra: extra(&visible, t.ts_ms),
            next_extra: extra(&next, next_ts),
            reward: [
                t.reward.click as f32,
                t.reward.watch as f32,
                t.reward.follow as f32,
                t.reward.gift as f32,
            ],
        }
    }

    pub fn input(&self) -> PairInput<'_> {
        PairInput {
            user_id: self.user_id,
            author_id: self.author_id,
            item_id: self.item_id,
            user_feats: &self.user_feats,
            item_feats: &self.item_feats,
            state: expand(&self.state, &self.extra),
            ts_ms: self.extra.ts_ms,
        }
    }
    pub fn next_input(&self) -> PairInput<'_> {
        PairInput {
            state: expand(&self.next_state, &self.next_extra),
            ts_ms: self.next_extra.ts_ms,
            ..self.input()
        }
    }
}

/// A bounded ring: when full, a new sample replaces the oldest.
pub struct Ring {
    capacity: usize,
    items: Vec<Sample>,
    next: usize,
    pushed: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Ring {
            capacity: capacity.max(1),
            items: Vec::new(),
            next: 0,
            pushed: 0,
        }
    }
    pub fn push(&mut self, s: Sample) {
        if self.items.len() < self.capacity {
            self.items.push(s);
        } else {
            self.items[self.next] = s;
        }
        self.next = (self.next + 1) % self.capacity;
        self.pushed += 1;
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Samples ever pushed.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }
    /// Every sample held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.items.iter()
    }
    /// `n` samples drawn uniformly with replacement.
    pub fn sample<'a>(&'a self, rng: &mut Rng, n: usize) -> Vec<&'a Sample> {
        if self.items.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|_| &self.items[rng.below(self.items.len() as u64) as usize])
            .collect()
    }
}

/// Each author's most recent distinct items (with their features), newest first.
pub struct RecentItems {
    keep: usize,
    by_author: FastMap<u64, VecDeque<(u64, Feats)>>,
}

impl RecentItems {
    pub fn new(keep: usize) -> Self {
        RecentItems {
            keep,
            by_author: FastMap::default(),
        }
    }

    pub fn observe(&mut self, author: u64, item: u64, feats: &Feats) {
        if self.keep <= 1 {
            return;
        }
        let q = self.by_author.entry(author).or_default();
        if let Some(pos) = q.iter().position(|(i, _)| *i == item) {
            q.remove(pos);
        }
        q.push_front((item, feats.clone()));
        q.truncate(self.keep);
    }

    /// Calls `f` with exactly `keep` candidates for `s` (no allocation: this
    /// runs for every sample of every batch): its own item first, then the
    /// author's other recent items, padded with its own item (a repeated
    /// candidate does not change a max).
    pub fn candidates<'a>(&'a self, s: &'a Sample, mut f: impl FnMut(u64, &'a [u32])) {
        let keep = self.keep.max(1);
        f(s.item_id, &s.item_feats);
        let mut n = 1;
        if let Some(q) = self.by_author.get(&s.author_id) {
            for (item, feats) in q.iter().filter(|(i, _)| *i != s.item_id) {
                if n >= keep {
                    break;
                }
                f(*item, feats);
                n += 1;
            }
        }
        for _ in n..keep {
            f(s.item_id, &s.item_feats);
        }
    }
}
