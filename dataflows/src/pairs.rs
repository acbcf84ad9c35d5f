//! One worker's shard of pair state: applies closed interactions in the
//! contract's order, produces ASA transitions, and keeps a bounded cache of
//! counters in front of RocksDB.
//!
//! The cache has two generations. New and touched entries go to `hot`; when
//! `hot` is full the `cold` generation is dropped and `hot` becomes `cold`.
//! A generation is dropped only once everything modified in it is durable in
//! RocksDB (`durable_before` > its newest modification epoch), so a later
//! miss never reads a value older than the one this worker already used.
//!
//! Changed pairs are marked dirty and written out by [`PairShard::flush`] at
//! commit epochs only: a pair touched many times between two commits costs
//! one RocksDB put, not one per interaction.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rliv_state::{FastMap, PairCounters, PairKey, PairSnapshot, StateError, Store};

use crate::event::{Interaction, Transition};
use crate::metrics::{Counter, Counters};
use crate::views::{ViewFact, ViewsConfig};

#[derive(Copy, Clone)]
struct Entry {
    counters: PairCounters,
    /// Epoch of the last modification, or 0 if unmodified since loaded.
    modified: u64,
    /// Modified since the last flush.
    dirty: bool,
}

/// Where pair counters are read from on a cache miss.
pub trait PairSource {
    fn get_pairs(&self, keys: &[PairKey]) -> Result<Vec<Option<PairCounters>>, StateError>;
}

impl PairSource for Store {
    fn get_pairs(&self, keys: &[PairKey]) -> Result<Vec<Option<PairCounters>>, StateError> {
        Store::get_pairs(self, keys)
    }
}

/// An empty source: every pair is new (tests, benchmarks).
pub struct NoPairs;

impl PairSource for NoPairs {
    fn get_pairs(&self, keys: &[PairKey]) -> Result<Vec<Option<PairCounters>>, StateError> {
        Ok(vec![None; keys.len()])
    }
}

/// The result of applying one epoch.
#[derive(Default)]
pub struct EpochApplied {
    /// Transitions in (user, author, ts, request, item) order.
    pub transitions: Vec<Transition>,
    /// The views' facts, in the same order (when asked for).
    pub facts: Vec<ViewFact>,
    pub counters: Counters,
}

pub struct PairShard<S> {
    source: Arc<S>,
    hot: FastMap<PairKey, Entry>,
    cold: FastMap<PairKey, Entry>,
    /// Keys whose entry is dirty (in `hot` or `cold`).
    dirty: Vec<PairKey>,
    hot_newest: u64,
    cold_newest: u64,
    capacity: usize,
    durable_before: Arc<AtomicU64>,
}

impl<S: PairSource> PairShard<S> {
    /// `durable_before`: every epoch below it is committed to RocksDB.
    pub fn new(source: Arc<S>, capacity: usize, durable_before: Arc<AtomicU64>) -> Self {
        PairShard {
            source,
            hot: FastMap::default(),
            cold: FastMap::default(),
            dirty: Vec::new(),
            hot_newest: 0,
            cold_newest: 0,
            capacity: capacity.max(2),
            durable_before,
        }
    }

    pub fn cached(&self) -> usize {
        self.hot.len() + self.cold.len()
    }

    /// Applies the interactions closed in `epoch` (any order; they are sorted
    /// here into the contract's order) and returns the transitions.
    pub fn apply_epoch(
        &mut self,
        epoch: u64,
        batch: Vec<Interaction>,
    ) -> Result<EpochApplied, StateError> {
        self.apply_epoch_with(epoch, batch, true, None)
    }

    /// [`Self::apply_epoch`] producing only what is read: the transitions
    /// when `transitions`, and with `views` the facts the views take (those
    /// that say something: a gift, a new fan, a deep candidate).
    pub fn apply_epoch_with(
        &mut self,
        epoch: u64,
        batch: Vec<Interaction>,
        transitions: bool,
        views: Option<&ViewsConfig>,
    ) -> Result<EpochApplied, StateError> {
        let mut out = EpochApplied::default();
        if batch.is_empty() {
            return Ok(out);
        }
        // Sort small keys, not the interactions (each carries its exposure).
        let mut order: Vec<((PairKey, i64, u64, u64), u32)> = batch
            .iter()
            .enumerate()
            .map(|(i, it)| (it.order_key(), i as u32))
            .collect();
        order.sort_unstable();
        self.load(order.iter().map(|((pair, ..), _)| *pair), &mut out.counters)?;
        if transitions {
            out.transitions.reserve(batch.len());
        }
        for it in order.iter().filter_map(|(_, i)| batch.get(*i as usize)) {
            let e = &it.exposure;
            let key = PairKey::new(e.user_id, e.author_id);
            let Some(entry) = self.hot.get_mut(&key) else {
                return Err(StateError::Corrupt(format!(
                    "pair ({}, {}) was not loaded",
                    key.user_id, key.author_id
                )));
            };
            let follows_before = entry.counters.counts.follows;
            let state = transitions.then(|| PairSnapshot::from(&entry.counters));
            entry.counters.apply(e.ts_ms, &it.rewards);
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(key);
            }
            entry.modified = epoch;
            if let Some(cfg) = views {
                let c = &entry.counters;
                let fact = ViewFact::of_parts(
                    key,
                    e.ts_ms,
                    it.rewards.gift,
                    follows_before,
                    c.counts.follows,
                    c.counts.watches,
                    c.last_ts_ms,
                    cfg,
                );
                if fact.says_something() {
                    out.facts.push(fact);
                }
            }
            let Some(state) = state else { continue };
            out.transitions.push(Transition {
                request_id: e.request_id,
                user_id: e.user_id,
                author_id: e.author_id,
                item_id: e.item_id,
                ts_ms: e.ts_ms,
                user_feats: e.user_feats.clone(),
                item_feats: e.item_feats.clone(),
                state,
                reward: it.rewards,
                next_state: PairSnapshot::from(&entry.counters),
            });
        }
        self.hot_newest = self.hot_newest.max(epoch);
        out.counters.add(Counter::Transitions, order.len() as u64);
        self.maybe_rotate();
        Ok(out)
    }

    /// The encoded values of every pair changed since the last flush, in key
    /// order, for the commit of the current epoch. The committer must commit
    /// them at this epoch: rotation relies on `durable_before` passing it.
    pub fn flush(&mut self) -> Vec<(PairKey, Vec<u8>)> {
        if self.dirty.len() * 4 >= self.cached() {
            // Most of the cache is dirty: one pass over it in memory order
            // costs less than a random lookup per dirty pair.
            let mut puts = Vec::with_capacity(self.dirty.len());
            self.dirty.clear();
            for (key, entry) in self.hot.iter_mut().chain(self.cold.iter_mut()) {
                if entry.dirty {
                    entry.dirty = false;
                    puts.push((*key, entry.counters.to_bytes()));
                }
            }
            puts.sort_unstable_by_key(|(key, _)| *key);
            return puts;
        }
        let mut keys = std::mem::take(&mut self.dirty);
        keys.sort_unstable();
        let mut puts = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = match self.hot.get_mut(&key) {
                Some(e) => Some(e),
                None => self.cold.get_mut(&key),
            };
            if let Some(entry) = entry {
                entry.dirty = false;
                puts.push((key, entry.counters.to_bytes()));
            }
        }
        puts
    }

    /// Pairs changed since the last flush.
    pub fn dirty(&self) -> usize {
        self.dirty.len()
    }

    /// Makes sure every pair of `sorted_pairs` is in `hot`: from `cold`, or from the
    /// source in one batched read.
    fn load(
        &mut self,
        sorted_pairs: impl Iterator<Item = PairKey>,
        counters: &mut Counters,
    ) -> Result<(), StateError> {
        let mut missing: Vec<PairKey> = Vec::new();
        let mut last = None;
        for key in sorted_pairs {
            if last == Some(key) {
                continue;
            }
            last = Some(key);
            if self.hot.contains_key(&key) {
                continue;
            }
            if let Some(entry) = self.cold.remove(&key) {
                self.hot.insert(key, entry);
                self.hot_newest = self.hot_newest.max(entry.modified);
                continue;
            }
            missing.push(key);
        }
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.source.get_pairs(&missing)?;
        for (key, value) in missing.into_iter().zip(found) {
            if value.is_none() {
                counters.inc(Counter::NewPairs);
            }
            self.hot.insert(
                key,
                Entry {
                    counters: value.unwrap_or_default(),
                    modified: 0,
                    dirty: false,
                },
            );
        }
        Ok(())
    }

    fn maybe_rotate(&mut self) {
        if self.hot.len() < self.capacity / 2 {
            return;
        }
        if self.cold.is_empty() || self.cold_newest < self.durable_before.load(Ordering::Acquire) {
            self.cold = std::mem::take(&mut self.hot);
            self.cold_newest = self.hot_newest;
            self.hot_newest = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use crate::event::{Exposure, Origin};
    use rliv_state::Rewards;

    fn it(user: u64, author: u64, ts: i64, req: u64, click: f64) -> Interaction {
        Interaction {
            exposure: Exposure {
                request_id: req,
                item_id: 1,
                ts_ms: ts,
                user_id: user,
                author_id: author,
                position: 0,
                user_feats: Default::default(),
                item_feats: Default::default(),
                origin: Origin::default(),
            },
            rewards: Rewards {
                click,
                watch: click * 3.0,
                follow: 0.0,
                gift: 0.0,
            },
        }
    }

    #[test]
    fn facts_without_transitions_equal_the_facts_read_off_the_transitions() -> TestResult {
        let cfg = ViewsConfig {
            deep_min_watches: 2,
            ..ViewsConfig::default()
        };
        // Follows, gifts and watches spread over pairs and epochs, so every
        // kind of fact (new fan, gift, deep candidate) and none occur.
        let epochs: Vec<Vec<Interaction>> = (0..4u64)
            .map(|epoch| {
                (0..30u64)
                    .map(|i| {
                        let mut x =
                            it(i % 5, i % 3, (epoch * 100 + i) as i64, epoch * 100 + i, 1.0);
                        x.rewards.follow = f64::from(u8::from((i + epoch) % 4 == 0));
                        x.rewards.gift = if i % 7 == 0 { 1.5 } else { 0.0 };
                        x.rewards.watch = if i % 2 == 0 { 3.0 } else { 0.0 };
                        x
                    })
                    .collect()
            })
            .collect();
        let durable = || Arc::new(AtomicU64::new(0));
        let mut full = PairShard::new(Arc::new(NoPairs), 100, durable());
        let mut lean = PairShard::new(Arc::new(NoPairs), 100, durable());
        let mut kinds = [0usize; 3];
        for (epoch, batch) in epochs.into_iter().enumerate() {
            let epoch = epoch as u64 + 1;
            let a = full.apply_epoch(epoch, batch.clone())?;
            let b = lean.apply_epoch_with(epoch, batch, false, Some(&cfg))?;
            let expected: Vec<ViewFact> = a
                .transitions
                .iter()
                .map(|t| ViewFact::of(t, &cfg))
                .filter(ViewFact::says_something)
                .collect();
            assert!(b.transitions.is_empty());
            assert_eq!(b.facts, expected);
            assert_eq!(b.counters, a.counters);
            for f in &b.facts {
                kinds[0] += usize::from(f.new_fan);
                kinds[1] += usize::from(f.gift_milli > 0);
                kinds[2] += usize::from(f.deep_candidate);
            }
        }
        assert!(
            kinds.iter().all(|k| *k > 0),
            "every kind of fact occurs: {kinds:?}"
        );
        assert_eq!(full.flush(), lean.flush());
        Ok(())
    }

    #[test]
    fn a_pairs_interactions_apply_in_time_order_whatever_the_input_order() -> TestResult {
        let durable = Arc::new(AtomicU64::new(0));
        let mut shard = PairShard::new(Arc::new(NoPairs), 100, durable);
        let out = shard.apply_epoch(
            1,
            vec![
                it(1, 2, 300, 3, 0.0),
                it(1, 2, 100, 1, 1.0),
                it(1, 2, 200, 2, 1.0),
            ],
        )?;
        let states: Vec<(u64, u64)> = out
            .transitions
            .iter()
            .map(|t| (t.state.exposures, t.state.clicks))
            .collect();
        assert_eq!(states, vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(out.transitions[2].next_state.clicks, 2);
        let puts = shard.flush();
        assert_eq!(puts.len(), 1);
        let c = PairCounters::decode(&puts[0].1)?;
        assert_eq!(
            (c.first_ts_ms, c.last_ts_ms, c.watch_sec_total),
            (100, 300, 6.0)
        );
        assert_eq!(out.counters.get(Counter::NewPairs), 1);
        Ok(())
    }

    /// A source that counts reads, to observe the cache.
    struct Counting(std::sync::Mutex<FastMap<PairKey, PairCounters>>, AtomicU64);
    impl PairSource for Counting {
        fn get_pairs(&self, keys: &[PairKey]) -> Result<Vec<Option<PairCounters>>, StateError> {
            self.1.fetch_add(keys.len() as u64, Ordering::SeqCst);
            let m = self
                .0
                .lock()
                .map_err(|_| StateError::Corrupt("a poisoned lock".into()))?;
            Ok(keys.iter().map(|k| m.get(k).copied()).collect())
        }
    }

    #[test]
    fn cache_keeps_undurable_values_and_drops_durable_ones() -> TestResult {
        let durable = Arc::new(AtomicU64::new(0));
        let src = Arc::new(Counting(Default::default(), AtomicU64::new(0)));
        let mut shard = PairShard::new(src.clone(), 4, durable.clone());
        for (epoch, user) in (1..=6).zip(10..) {
            shard.apply_epoch(epoch, vec![it(user, 1, epoch as i64, epoch, 1.0)])?;
        }
        // Nothing durable yet: nothing may be dropped.
        assert_eq!(shard.cached(), 6);
        let again = shard.apply_epoch(7, vec![it(10, 1, 7, 7, 1.0)])?;
        assert_eq!(
            again.transitions[0].state.exposures, 1,
            "value came from the cache, not the empty source"
        );
        durable.store(9, Ordering::SeqCst);
        shard.apply_epoch(8, vec![it(99, 1, 8, 8, 1.0)])?;
        shard.apply_epoch(9, vec![it(98, 1, 9, 9, 1.0)])?;
        shard.apply_epoch(10, vec![it(97, 1, 10, 10, 1.0)])?;
        assert!(
            shard.cached() < 9,
            "cache did not shrink: {}",
            shard.cached()
        );
        Ok(())
    }

    #[test]
    fn flush_writes_each_changed_pair_once_with_its_latest_value() -> TestResult {
        let durable = Arc::new(AtomicU64::new(0));
        // Capacity 4: the pairs of epochs 1-2 rotate into `cold` while dirty.
        let mut shard = PairShard::new(Arc::new(NoPairs), 4, durable);
        shard.apply_epoch(1, vec![it(1, 1, 10, 1, 1.0), it(2, 1, 10, 2, 1.0)])?;
        shard.apply_epoch(2, vec![it(1, 1, 20, 3, 1.0), it(3, 1, 20, 4, 0.0)])?;
        shard.apply_epoch(3, vec![it(4, 1, 30, 5, 1.0), it(5, 1, 30, 6, 1.0)])?;
        assert_eq!(shard.dirty(), 5);
        let puts = shard.flush();
        let users: Vec<u64> = puts.iter().map(|(k, _)| k.user_id).collect();
        assert_eq!(users, vec![1, 2, 3, 4, 5], "one put per pair, in key order");
        let c = PairCounters::decode(&puts[0].1)?;
        assert_eq!(
            (c.counts.exposures, c.counts.clicks, c.last_ts_ms),
            (2, 2, 20)
        );
        assert_eq!(shard.dirty(), 0);
        assert!(
            shard.flush().is_empty(),
            "nothing changed since the last flush"
        );
        shard.apply_epoch(4, vec![it(2, 1, 40, 7, 0.0)])?;
        let puts = shard.flush();
        assert_eq!(puts.len(), 1);
        assert_eq!(PairCounters::decode(&puts[0].1)?.counts.exposures, 2);
        Ok(())
    }
}
