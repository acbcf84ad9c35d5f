//! The real-time sample buffer: a bounded ring of transitions, sampled
//! uniformly; and the authors' recent items (the candidates `j` of the TD
//! target's max over the author's item set).

use std::collections::VecDeque;

use rliv_dataflows::event::{Feats, Transition};
use rliv_state::{FastMap, StateCounts};

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
    /// click, watch, follow, gift (unscaled).
    pub reward: [f32; 4],
}

fn compact(c: &StateCounts) -> [u32; 5] {
    let s = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
    [
        s(c.exposures),
        s(c.clicks),
        s(c.watches),
        s(c.follows),
        s(c.gifts),
    ]
}

pub fn expand(c: &[u32; 5]) -> StateCounts {
    StateCounts {
        exposures: u64::from(c[0]),
        clicks: u64::from(c[1]),
        watches: u64::from(c[2]),
        follows: u64::from(c[3]),
        gifts: u64::from(c[4]),
    }
}

impl From<&Transition> for Sample {
    fn from(t: &Transition) -> Self {
        Sample {
            user_id: t.user_id,
            author_id: t.author_id,
            item_id: t.item_id,
            user_feats: t.user_feats.clone(),
            item_feats: t.item_feats.clone(),
            state: compact(&t.state),
            next_state: compact(&t.next_state),
            reward: [
                t.reward.click as f32,
                t.reward.watch as f32,
                t.reward.follow as f32,
                t.reward.gift as f32,
            ],
        }
    }
}

impl Sample {
    pub fn input(&self) -> PairInput<'_> {
        PairInput {
            user_id: self.user_id,
            author_id: self.author_id,
            item_id: self.item_id,
            user_feats: &self.user_feats,
            item_feats: &self.item_feats,
            counts: expand(&self.state),
        }
    }
    pub fn next_input(&self) -> PairInput<'_> {
        PairInput {
            counts: expand(&self.next_state),
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
