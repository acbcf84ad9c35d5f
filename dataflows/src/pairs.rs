//! One worker's shard of pair state: applies closed interactions in the
//! contract's order, produces ASA transitions, and keeps a bounded cache of
//! counters in front of RocksDB.
//!
//! The cache has two generations. New and touched entries go to `hot`; when
//! `hot` is full the `cold` generation is dropped and `hot` becomes `cold`.
//! A generation is dropped only once everything modified in it is durable in
//! RocksDB (`durable_before` > its newest modification epoch), so a later
//! miss never reads a value older than the one this worker already used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rliv_state::{PairCounters, PairKey, StateError, Store};

use crate::event::{Interaction, Transition};
use crate::metrics::{Counter, Counters};

#[derive(Copy, Clone)]
struct Entry {
    counters: PairCounters,
    /// Epoch of the last modification, or 0 if unmodified since loaded.
    modified: u64,
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
    /// New values of every pair the epoch changed, encoded for RocksDB.
    pub puts: Vec<(PairKey, Vec<u8>)>,
    pub counters: Counters,
}

pub struct PairShard<S> {
    source: Arc<S>,
    hot: HashMap<PairKey, Entry>,
    cold: HashMap<PairKey, Entry>,
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
            hot: HashMap::new(),
            cold: HashMap::new(),
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
        mut batch: Vec<Interaction>,
    ) -> Result<EpochApplied, StateError> {
        let mut out = EpochApplied::default();
        if batch.is_empty() {
            return Ok(out);
        }
        batch.sort_unstable_by(|a, b| a.order_key().cmp(&b.order_key()));
        self.load(&batch, &mut out.counters)?;
        out.transitions.reserve(batch.len());
        let mut changed: Vec<PairKey> = Vec::new();
        for it in batch {
            let e = it.exposure;
            let key = PairKey::new(e.user_id, e.author_id);
            let Some(entry) = self.hot.get_mut(&key) else {
                return Err(StateError::Corrupt(format!(
                    "pair ({}, {}) was not loaded",
                    key.user_id, key.author_id
                )));
            };
            let state = entry.counters.counts;
            entry.counters.apply(e.ts_ms, &it.rewards);
            if changed.last() != Some(&key) {
                changed.push(key);
            }
            entry.modified = epoch;
            out.transitions.push(Transition {
                request_id: e.request_id,
                user_id: e.user_id,
                author_id: e.author_id,
                item_id: e.item_id,
                ts_ms: e.ts_ms,
                user_feats: e.user_feats,
                item_feats: e.item_feats,
                state,
                reward: it.rewards,
                next_state: entry.counters.counts,
            });
        }
        self.hot_newest = self.hot_newest.max(epoch);
        out.counters
            .add(Counter::Transitions, out.transitions.len() as u64);
        out.puts.reserve(changed.len());
        for key in changed {
            if let Some(entry) = self.hot.get(&key) {
                out.puts.push((key, entry.counters.to_bytes()));
            }
        }
        self.maybe_rotate();
        Ok(out)
    }

    /// Makes sure every pair of `batch` is in `hot`: from `cold`, or from the
    /// source in one batched read.
    fn load(&mut self, batch: &[Interaction], counters: &mut Counters) -> Result<(), StateError> {
        let mut missing: Vec<PairKey> = Vec::new();
        let mut last = None;
        for it in batch {
            let key = it.exposure.pair();
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
                user_feats: vec![],
                item_feats: vec![],
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
    fn a_pairs_interactions_apply_in_time_order_whatever_the_input_order() {
        let durable = Arc::new(AtomicU64::new(0));
        let mut shard = PairShard::new(Arc::new(NoPairs), 100, durable);
        let out = shard
            .apply_epoch(
                1,
                vec![
                    it(1, 2, 300, 3, 0.0),
                    it(1, 2, 100, 1, 1.0),
                    it(1, 2, 200, 2, 1.0),
                ],
            )
            .unwrap();
        let states: Vec<(u64, u64)> = out
            .transitions
            .iter()
            .map(|t| (t.state.exposures, t.state.clicks))
            .collect();
        assert_eq!(states, vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(out.transitions[2].next_state.clicks, 2);
        assert_eq!(out.puts.len(), 1);
        let c = PairCounters::decode(&out.puts[0].1).unwrap();
        assert_eq!(
            (c.first_ts_ms, c.last_ts_ms, c.watch_sec_total),
            (100, 300, 6.0)
        );
        assert_eq!(out.counters.get(Counter::NewPairs), 1);
    }

    /// A source that counts reads, to observe the cache.
    struct Counting(std::sync::Mutex<HashMap<PairKey, PairCounters>>, AtomicU64);
    impl PairSource for Counting {
        fn get_pairs(&self, keys: &[PairKey]) -> Result<Vec<Option<PairCounters>>, StateError> {
            self.1.fetch_add(keys.len() as u64, Ordering::SeqCst);
            let m = self.0.lock().unwrap();
            Ok(keys.iter().map(|k| m.get(k).copied()).collect())
        }
    }

    #[test]
    fn cache_keeps_undurable_values_and_drops_durable_ones() {
        let durable = Arc::new(AtomicU64::new(0));
        let src = Arc::new(Counting(Default::default(), AtomicU64::new(0)));
        let mut shard = PairShard::new(src.clone(), 4, durable.clone());
        for (epoch, user) in (1..=6).zip(10..) {
            shard
                .apply_epoch(epoch, vec![it(user, 1, epoch as i64, epoch, 1.0)])
                .unwrap();
        }
        // Nothing durable yet: nothing may be dropped.
        assert_eq!(shard.cached(), 6);
        let again = shard.apply_epoch(7, vec![it(10, 1, 7, 7, 1.0)]).unwrap();
        assert_eq!(
            again.transitions[0].state.exposures, 1,
            "value came from the cache, not the empty source"
        );
        durable.store(9, Ordering::SeqCst);
        shard.apply_epoch(8, vec![it(99, 1, 8, 8, 1.0)]).unwrap();
        shard.apply_epoch(9, vec![it(98, 1, 9, 9, 1.0)]).unwrap();
        shard.apply_epoch(10, vec![it(97, 1, 10, 10, 1.0)]).unwrap();
        assert!(
            shard.cached() < 9,
            "cache did not shrink: {}",
            shard.cached()
        );
    }
}
