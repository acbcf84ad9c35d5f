//! The label join of one worker's shard of exposures, as plain logic (the
//! timely operator in `operators::label_join` is a thin shell around it).
//!
//! Input is processed one epoch (input chunk) at a time, in epoch order, and
//! within an epoch exposures first, then actions, each in input order (one
//! chunk is parsed by one worker, which forwards a join worker's records in
//! the chunk's order), so the output depends only on the input and the
//! configuration, never on thread scheduling or the number of workers. Only
//! records of the same identity can see each other's order: of two
//! exposures with one identity the first in the input is kept, and the
//! rewards of an exposure do not depend on the order of its actions
//! ([`rewards_of`]). Decisions compare event times
//! with the watermark *before* the epoch (`w_prev`), which every worker knows
//! identically:
//! - an exposure with `ts + window < w_prev` is late (it missed its window);
//! - an exposure is closed once the watermark passes `ts + window`;
//! - an action whose exposure is open is attributed if it lies within the
//!   window, deduplicated by (action, ts, value);
//! - an action whose exposure closed (within `late_retention_ms`) is late;
//! - an action with no exposure yet waits until `ts + window < watermark`
//!   for one to arrive, then it is an orphan.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, VecDeque};

use rliv_state::{FastMap, Rewards};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::config::JoinConfig;
use crate::event::{Action, ActionKind, Exposure, Interaction, Source};
use crate::metrics::{Counter, Counters, Reason};

type Key = (u64, u64);

/// Per-source event-time progress; the job's watermark is the minimum over
/// sources still being read, less the allowed lateness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    pub max_ts: [Option<i64>; 2],
    pub exhausted: [bool; 2],
}

impl Watermark {
    pub fn observe(&mut self, source: Source, max_ts: Option<i64>, exhausted: bool) {
        let s = source as usize;
        self.max_ts[s] = match (self.max_ts[s], max_ts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.exhausted[s] |= exhausted;
    }

    /// The event-time watermark: everything older is assumed to have arrived.
    pub fn current(&self, lateness: i64) -> i64 {
        let live: Vec<i64> = (0..2)
            .filter(|s| !self.exhausted[*s])
            .map(|s| self.max_ts[s].unwrap_or(i64::MIN))
            .collect();
        let t = if live.is_empty() {
            self.max_ts
                .iter()
                .flatten()
                .copied()
                .max()
                .unwrap_or(i64::MIN)
        } else {
            live.into_iter().min().unwrap_or(i64::MIN)
        };
        t.saturating_sub(lateness)
    }

    /// Starting a new input run: sources are live again, their times kept.
    pub fn reopen(&mut self) {
        self.exhausted = [false; 2];
    }
}

/// What a record that is not joined turns into.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rejected {
    Exposure(Reason, Exposure),
    Action(Reason, Action),
}

/// Output of one epoch of the join on one worker.
#[derive(Default, Debug)]
pub struct JoinOutput {
    pub interactions: Vec<Interaction>,
    pub rejected: Vec<Rejected>,
    pub counters: Counters,
}

impl JoinOutput {
    fn reject_action(&mut self, reason: Reason, a: Action) {
        self.counters.inc(reason.counter());
        self.rejected.push(Rejected::Action(reason, a));
    }
}

/// An open exposure as the window snapshot stores it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Open {
    exposure: Exposure,
    actions: Vec<Action>,
}

#[derive(Copy, Clone, Debug, Serialize, Deserialize)]
struct Tomb {
    expire_at: i64,
}

/// The serializable state of a [`JoinState`], restorable onto any number of
/// workers (each keeps the keys routed to it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JoinSnapshot {
    open: Vec<Open>,
    pending: Vec<Action>,
    tombs: Vec<(Key, Tomb)>,
}

impl JoinSnapshot {
    pub fn open_exposures(&self) -> usize {
        self.open.len()
    }
}

/// An open exposure in the join's slab. Most exposures get no more than two
/// actions (a click and a watch), which then live inline.
struct OpenSlot {
    exposure: Exposure,
    actions: SmallVec<[Action; 2]>,
    /// Its identity's entry in `JoinState::states`.
    id: u32,
}

/// What the join knows of one exposure identity. One hash lookup gives its
/// id, and the state is read and changed by id: closing an exposure and
/// forgetting it later cost no further lookup.
#[derive(Copy, Clone, Debug)]
enum Slot {
    /// Open: its index in the slab.
    Open(u32),
    /// Closed; remembered (actions for it are late, a repeat is a
    /// duplicate) until this event time.
    Closed(i64),
    /// Forgotten: its entry in `JoinState::slots` means nothing and is
    /// removed by the next sweep (entries are swept in bulk, not one by one).
    Expired,
    /// The id is free.
    Free,
}

/// The open exposures' (close time, slab index), popped in close-time order.
/// A log's exposures arrive roughly in time order, so most entries, sorted
/// per epoch, extend a sorted run that pops at the front in O(1); the rest
/// (older than the run's newest) go to a heap. Pops take the smaller head of
/// the two, which is the order a single heap would give up to ties of close
/// time (their order changes nothing the join emits).
#[derive(Default)]
struct CloseQueue {
    /// Pushed since the last `settle`.
    staged: Vec<(i64, u32)>,
    run: VecDeque<(i64, u32)>,
    heap: BinaryHeap<Reverse<(i64, u32)>>,
}

impl CloseQueue {
    fn push(&mut self, close: i64, idx: u32) {
        self.staged.push((close, idx));
    }

    /// Sorts the staged entries into the run or the heap (before reading).
    fn settle(&mut self) {
        self.staged.sort_unstable();
        for (close, idx) in self.staged.drain(..) {
            if self.run.back().is_none_or(|b| b.0 <= close) {
                self.run.push_back((close, idx));
            } else {
                self.heap.push(Reverse((close, idx)));
            }
        }
    }

    /// Whether the earliest entry is the heap's (else the run's, if any).
    fn heap_first(&self) -> bool {
        match (self.run.front(), self.heap.peek()) {
            (Some(r), Some(Reverse(h))) => h.0 < r.0,
            (run, _) => run.is_none(),
        }
    }

    /// The entry with the earliest close time (call `settle` first).
    fn peek(&self) -> Option<(i64, u32)> {
        if self.heap_first() {
            self.heap.peek().map(|Reverse(h)| *h)
        } else {
            self.run.front().copied()
        }
    }

    fn pop(&mut self) {
        if self.heap_first() {
            self.heap.pop();
        } else {
            self.run.pop_front();
        }
    }
}

/// One worker's label join state.
#[derive(Default)]
pub struct JoinState {
    cfg: JoinConfig,
    /// Every open or remembered exposure identity, to its id; also those
    /// forgotten since the last sweep (their id says `Expired`).
    slots: FastMap<Key, u32>,
    /// Entries of `slots` whose id says `Expired`.
    expired: usize,
    /// The state of each id; `Free` ids are listed in `free_ids`.
    states: Vec<Slot>,
    free_ids: Vec<u32>,
    /// Open exposures; `None` entries are free and listed in `free`.
    opens: Vec<Option<OpenSlot>>,
    free: Vec<u32>,
    /// Open exposures by close time (`ts + window`) and slab index. Each
    /// open exposure has exactly one entry, so an index is never stale.
    close_queue: CloseQueue,
    pending: FastMap<Key, Vec<Action>>,
    pending_queue: BinaryHeap<Reverse<(i64, u64, u64)>>,
    /// Closed exposures (expiry, id) by the time they are forgotten.
    /// Exposures close in time order (the close queue pops by time, and an
    /// exposure that is not late closes after every exposure already
    /// closed), so their expiry times arrive sorted and a FIFO is a priority
    /// queue here.
    tomb_queue: VecDeque<(i64, u32)>,
}

impl JoinState {
    pub fn new(cfg: JoinConfig) -> Self {
        JoinState {
            cfg,
            ..Default::default()
        }
    }

    pub fn open_exposures(&self) -> usize {
        self.opens.len() - self.free.len()
    }

    pub fn pending_actions(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }

    fn close_at(&self, ts: i64) -> i64 {
        ts.saturating_add(self.cfg.window_ms)
    }

    /// Processes the records of one epoch, each kind in input order. `w_prev`
    /// is the watermark before it.
    pub fn process_epoch(
        &mut self,
        w_prev: i64,
        exposures: impl IntoIterator<Item = Exposure>,
        actions: impl IntoIterator<Item = Action>,
        out: &mut JoinOutput,
    ) {
        for e in exposures {
            self.add_exposure(w_prev, e, out);
        }
        for a in actions {
            self.add_action(w_prev, a, out);
        }
    }

    /// A new id in state `slot` (not yet in `slots`).
    fn alloc_id(states: &mut Vec<Slot>, free_ids: &mut Vec<u32>, slot: Slot) -> u32 {
        match free_ids.pop() {
            Some(id) => {
                if let Some(s) = states.get_mut(id as usize) {
                    *s = slot;
                }
                id
            }
            None => {
                states.push(slot);
                (states.len() - 1) as u32
            }
        }
    }

    /// The id of a new identity `key` in state `slot`, reusing a forgotten
    /// entry of it.
    fn new_id(&mut self, key: Key, slot: Slot) -> u32 {
        let (states, free_ids) = (&mut self.states, &mut self.free_ids);
        let id = *self
            .slots
            .entry(key)
            .or_insert_with(|| Self::alloc_id(states, free_ids, Slot::Free));
        if let Some(s) = states.get_mut(id as usize) {
            if matches!(s, Slot::Expired) {
                self.expired = self.expired.saturating_sub(1);
            }
            *s = slot;
        }
        id
    }

    /// Opens an exposure under identity `id`: the exposure in the slab and
    /// its close time in the queue.
    fn open(&mut self, exposure: Exposure, actions: SmallVec<[Action; 2]>, id: u32) {
        let close = self.close_at(exposure.ts_ms);
        let slot = OpenSlot {
            exposure,
            actions,
            id,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.opens[i as usize] = Some(slot);
                i
            }
            None => {
                self.opens.push(Some(slot));
                (self.opens.len() - 1) as u32
            }
        };
        if let Some(s) = self.states.get_mut(id as usize) {
            *s = Slot::Open(idx);
        }
        self.close_queue.push(close, idx);
    }

    /// Remembers a closed exposure until `expire_at`.
    fn remember_closed(&mut self, key: Key, expire_at: i64) {
        let id = self.new_id(key, Slot::Closed(expire_at));
        self.push_tomb(expire_at, id);
    }

    fn add_exposure(&mut self, w_prev: i64, e: Exposure, out: &mut JoinOutput) {
        let key = e.key();
        let late = self.close_at(e.ts_ms) < w_prev;
        // One lookup: a remembered identity is a duplicate, a new or
        // forgotten one gets an id (unless the exposure is late).
        let (states, free_ids) = (&mut self.states, &mut self.free_ids);
        let id = match self.slots.entry(key) {
            Entry::Occupied(o) => {
                let id = *o.get();
                match states.get_mut(id as usize) {
                    Some(s @ Slot::Expired) if !late => {
                        *s = Slot::Free;
                        self.expired = self.expired.saturating_sub(1);
                        Some(id)
                    }
                    Some(Slot::Expired) => None,
                    _ => {
                        out.counters.inc(Counter::DuplicateExposures);
                        return;
                    }
                }
            }
            Entry::Vacant(v) if !late => {
                Some(*v.insert(Self::alloc_id(states, free_ids, Slot::Free)))
            }
            Entry::Vacant(_) => None,
        };
        let Some(id) = id else {
            out.counters.inc(Counter::LateExposures);
            out.rejected
                .push(Rejected::Exposure(Reason::LateExposure, e));
            return;
        };
        let mut actions = SmallVec::new();
        // Actions rarely come before their exposure: skip the lookup when
        // none is waiting.
        if !self.pending.is_empty() {
            if let Some(waiting) = self.pending.remove(&key) {
                for a in waiting {
                    Self::attribute(&self.cfg, &e, &mut actions, a, out);
                }
            }
        }
        self.open(e, actions, id);
    }

    fn add_action(&mut self, w_prev: i64, a: Action, out: &mut JoinOutput) {
        let key = a.key();
        let state = self
            .slots
            .get(&key)
            .map(|id| self.states.get(*id as usize).copied().unwrap_or(Slot::Free));
        match state {
            Some(Slot::Open(idx)) => match self.opens.get_mut(idx as usize) {
                Some(Some(open)) => {
                    Self::attribute(&self.cfg, &open.exposure, &mut open.actions, a, out)
                }
                // The slab and the states agree by construction.
                _ => out.reject_action(Reason::OrphanAction, a),
            },
            Some(Slot::Closed(_)) => out.reject_action(Reason::LateAction, a),
            // An id is free only once its identity left `slots`.
            Some(Slot::Free) => out.reject_action(Reason::OrphanAction, a),
            // A forgotten identity is as good as unknown.
            None | Some(Slot::Expired) if a.ts_ms.saturating_add(self.cfg.window_ms) < w_prev => {
                // Any exposure it could match would itself be late by now.
                out.reject_action(Reason::OrphanAction, a);
            }
            None | Some(Slot::Expired) => {
                self.pending_queue.push(Reverse((
                    a.ts_ms.saturating_add(self.cfg.window_ms),
                    key.0,
                    key.1,
                )));
                self.pending.entry(key).or_default().push(a);
            }
        }
    }

    fn attribute(
        cfg: &JoinConfig,
        e: &Exposure,
        actions: &mut SmallVec<[Action; 2]>,
        a: Action,
        out: &mut JoinOutput,
    ) {
        if a.user_id != e.user_id {
            out.reject_action(Reason::UserMismatch, a);
        } else if a.ts_ms < e.ts_ms || a.ts_ms > e.ts_ms.saturating_add(cfg.window_ms) {
            out.reject_action(Reason::OutOfWindow, a);
        } else if actions.iter().any(|b| b.identity() == a.identity()) {
            out.counters.inc(Counter::DuplicateActions);
        } else {
            out.counters.inc(Counter::AttributedActions);
            actions.push(a);
        }
    }

    /// Advances the watermark to `w`: closes exposures whose window it passed
    /// (one interaction each), turns expired waiting actions into orphans and
    /// forgets old closed exposures. With `drain`, everything open is closed
    /// and every waiting action is an orphan, whatever its time.
    pub fn advance(&mut self, w: i64, drain: bool, out: &mut JoinOutput) {
        let window = self.cfg.window_ms;
        let w_close = if drain { i64::MAX } else { w };
        self.close_queue.settle();
        while let Some((close, idx)) = self.close_queue.peek() {
            if !(close < w_close || drain) {
                break;
            }
            self.close_queue.pop();
            let Some(entry) = self.opens.get_mut(idx as usize) else {
                continue;
            };
            // Only the exposure leaves the slot (the slot, with its inline
            // actions, is more than twice its size).
            let Some(open) = entry.as_mut() else {
                continue;
            };
            let id = open.id;
            let interaction = Interaction {
                rewards: rewards_of(&mut open.actions),
                exposure: std::mem::take(&mut open.exposure),
            };
            *entry = None;
            self.free.push(idx);
            let expire_at = close.saturating_add(self.cfg.late_retention_ms);
            if let Some(s) = self.states.get_mut(id as usize) {
                *s = Slot::Closed(expire_at);
            }
            self.push_tomb(expire_at, id);
            out.counters.inc(Counter::ClosedExposures);
            out.interactions.push(interaction);
        }
        while let Some(Reverse((due, r, i))) = self.pending_queue.peek().copied() {
            if !(due < w_close || drain) {
                break;
            }
            self.pending_queue.pop();
            let Some(list) = self.pending.get_mut(&(r, i)) else {
                continue;
            };
            let (expired, kept): (Vec<Action>, Vec<Action>) = list
                .drain(..)
                .partition(|a| drain || a.ts_ms.saturating_add(window) < w_close);
            *list = kept;
            if list.is_empty() {
                self.pending.remove(&(r, i));
            }
            for a in expired {
                out.reject_action(Reason::OrphanAction, a);
            }
        }
        while let Some((expire_at, id)) = self.tomb_queue.front().copied() {
            if expire_at >= w {
                break;
            }
            self.tomb_queue.pop_front();
            let Some(state) = self.states.get_mut(id as usize) else {
                continue;
            };
            if !matches!(state, Slot::Closed(t) if *t == expire_at) {
                continue;
            }
            *state = Slot::Expired;
            self.expired += 1;
        }
        self.sweep();
    }

    /// Removes the forgotten entries from `slots` once they are at least as
    /// many as the others: one pass over the table then costs a few bucket
    /// visits per entry removed, in memory order, where removing each at
    /// its expiry would cost a random probe (a cache miss on a large map).
    fn sweep(&mut self) {
        if self.expired == 0 || self.expired * 2 < self.slots.len() {
            return;
        }
        let (states, free_ids) = (&mut self.states, &mut self.free_ids);
        self.slots
            .retain(|_, id| match states.get_mut(*id as usize) {
                Some(s @ Slot::Expired) => {
                    *s = Slot::Free;
                    free_ids.push(*id);
                    false
                }
                _ => true,
            });
        self.expired = 0;
    }

    /// The identities the join remembers (open or closed), in no order.
    #[cfg(test)]
    fn remembered(&self) -> impl Iterator<Item = Key> + '_ {
        self.slots
            .iter()
            .filter_map(|(key, id)| match self.states.get(*id as usize) {
                Some(Slot::Open(_) | Slot::Closed(_)) => Some(*key),
                _ => None,
            })
    }

    pub fn snapshot(&self) -> JoinSnapshot {
        let mut open: Vec<Open> = Vec::with_capacity(self.open_exposures());
        let mut tombs: Vec<(Key, Tomb)> = Vec::new();
        for (key, id) in &self.slots {
            match self.states.get(*id as usize).copied().unwrap_or(Slot::Free) {
                Slot::Open(idx) => {
                    if let Some(Some(o)) = self.opens.get(idx as usize) {
                        open.push(Open {
                            exposure: o.exposure.clone(),
                            actions: o.actions.to_vec(),
                        });
                    }
                }
                Slot::Closed(expire_at) => tombs.push((*key, Tomb { expire_at })),
                Slot::Expired | Slot::Free => {}
            }
        }
        open.sort_by_key(|o| o.exposure.key());
        let mut pending: Vec<Action> = self.pending.values().flatten().cloned().collect();
        pending.sort_by_key(Action::sort_key);
        tombs.sort_by_key(|(k, _)| *k);
        JoinSnapshot {
            open,
            pending,
            tombs,
        }
    }

    /// Loads the entries of `snap` for which `keep(key)` holds.
    pub fn restore(&mut self, snap: JoinSnapshot, keep: impl Fn(Key) -> bool) {
        for o in snap.open {
            let key = o.exposure.key();
            if keep(key) {
                let id = self.new_id(key, Slot::Free);
                self.open(o.exposure, o.actions.into(), id);
            }
        }
        for a in snap.pending {
            let key = a.key();
            if keep(key) {
                self.pending_queue.push(Reverse((
                    a.ts_ms.saturating_add(self.cfg.window_ms),
                    key.0,
                    key.1,
                )));
                self.pending.entry(key).or_default().push(a);
            }
        }
        let mut tombs: Vec<(Key, Tomb)> =
            snap.tombs.into_iter().filter(|(k, _)| keep(*k)).collect();
        tombs.sort_by_key(|(k, t)| (t.expire_at, *k));
        for (key, t) in tombs {
            self.remember_closed(key, t.expire_at);
        }
    }

    /// Queues a closed exposure to be forgotten at `expire_at` (its id says
    /// `Closed(expire_at)`). The FIFO stays sorted by expiry: an expiry older
    /// than the newest one (a restored window merged with newer closes
    /// cannot produce one, but a drain can close out of time order) is
    /// inserted at its place.
    fn push_tomb(&mut self, expire_at: i64, id: u32) {
        let entry = (expire_at, id);
        if self.tomb_queue.back().is_none_or(|b| b.0 <= expire_at) {
            self.tomb_queue.push_back(entry);
        } else {
            let at = self.tomb_queue.partition_point(|e| e.0 <= expire_at);
            self.tomb_queue.insert(at, entry);
        }
    }
}

/// The contract's rewards of one exposure from its attributed (deduplicated)
/// actions. Sums run in a fixed order so the result is bit-for-bit the same
/// whatever order the actions arrived in.
pub fn rewards_of(actions: &mut [Action]) -> Rewards {
    if actions.len() > 1 {
        actions.sort_by_key(Action::identity);
    }
    let mut r = Rewards::default();
    for a in actions.iter() {
        match a.kind {
            ActionKind::Click => r.click = 1.0,
            ActionKind::Watch => r.watch += a.value,
            ActionKind::Follow => r.follow = 1.0,
            ActionKind::Gift => r.gift += a.value,
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use crate::event::Origin;

    const W: i64 = 30 * 60 * 1000;
    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn closed_exposures_are_forgotten_at_their_expiry_whatever_order_they_closed_in() {
        let mut j = JoinState::new(JoinConfig::default());
        // Out of time order (a drain, or a watermark that went back on a new run).
        for (t, k) in [(300, (1, 1)), (100, (2, 2)), (200, (3, 3)), (100, (4, 4))] {
            j.remember_closed(k, T0 + t);
        }
        let mut out = JoinOutput::default();
        j.advance(T0 + 150, false, &mut out);
        let mut left: Vec<Key> = j.remembered().collect();
        left.sort_unstable();
        assert_eq!(left, vec![(1, 1), (3, 3)]);
        j.advance(T0 + 250, false, &mut out);
        assert_eq!(j.remembered().collect::<Vec<_>>(), vec![(1, 1)]);
        assert_eq!(j.tomb_queue.len(), 1);
    }

    #[test]
    fn of_two_exposures_with_one_identity_in_an_epoch_the_first_in_the_input_is_kept() {
        let mut late_twin = exp(1, 1, T0 - 50);
        late_twin.author_id = 8;
        let out = run(vec![(vec![exp(1, 1, T0), late_twin], vec![], T0)]);
        assert_eq!(out.interactions.len(), 1);
        assert_eq!(
            (
                out.interactions[0].exposure.ts_ms,
                out.interactions[0].exposure.author_id
            ),
            (T0, 7)
        );
        assert_eq!(out.counters.get(Counter::DuplicateExposures), 1);
    }

    #[test]
    fn close_queue_pops_in_close_time_order_whatever_the_push_order() {
        // Epochs of mostly rising close times with stragglers, popped
        // part-way between epochs as the join does.
        let mut q = CloseQueue::default();
        let mut all: Vec<(i64, u32)> = Vec::new();
        let mut popped: Vec<(i64, u32)> = Vec::new();
        let mut x: u64 = 7;
        let mut stragglers = 0;
        for epoch in 0..50i64 {
            for i in 0..40u32 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let jitter = (x >> 33) as i64 % 300;
                let close = epoch * 100 + if i % 7 == 0 { -jitter } else { jitter };
                let idx = epoch as u32 * 40 + i;
                q.push(close, idx);
                all.push((close, idx));
            }
            q.settle();
            stragglers += q.heap.len();
            while let Some(e) = q.peek() {
                if e.0 >= epoch * 100 - 200 {
                    break;
                }
                q.pop();
                popped.push(e);
            }
        }
        while let Some(e) = q.peek() {
            q.pop();
            popped.push(e);
        }
        assert!(stragglers > 0, "the heap was never used");
        assert!(
            popped.windows(2).all(|w| w[0].0 <= w[1].0),
            "not in close order"
        );
        popped.sort_unstable();
        all.sort_unstable();
        assert_eq!(popped, all);
    }

    #[test]
    fn a_forgotten_identity_is_unknown_before_and_after_its_entry_is_swept() {
        let mut j = JoinState::new(JoinConfig::default());
        for (t, k) in [(100, (1, 1)), (300, (2, 2)), (400, (3, 3))] {
            j.remember_closed(k, T0 + t);
        }
        let mut out = JoinOutput::default();
        // (1, 1) is forgotten; one of three entries is not enough to sweep.
        j.advance(T0 + 150, false, &mut out);
        assert_eq!(j.slots.len(), 3);
        let mut left: Vec<Key> = j.remembered().collect();
        left.sort_unstable();
        assert_eq!(left, vec![(2, 2), (3, 3)]);
        // An old action for it is an orphan, not late; a new exposure of
        // it opens, where one of a remembered identity is a duplicate.
        let old = act(1, 1, T0 - W - 1000, ActionKind::Click, 1.0);
        let again = act(2, 2, T0 + 120, ActionKind::Click, 1.0);
        j.process_epoch(T0 + 150, vec![], vec![old, again], &mut out);
        assert_eq!(
            reasons(&out),
            vec![Reason::OrphanAction, Reason::LateAction]
        );
        j.process_epoch(
            T0 + 150,
            vec![exp(1, 1, T0 + 200), exp(2, 2, T0 + 200)],
            vec![],
            &mut out,
        );
        assert_eq!(out.counters.get(Counter::DuplicateExposures), 1);
        assert_eq!(j.open_exposures(), 1);
        // Once the forgotten entries are as many as the others they go.
        j.advance(T0 + 350, false, &mut out);
        assert_eq!(j.slots.len(), 3);
        j.advance(T0 + 450, false, &mut out);
        assert_eq!(j.slots.len(), 1);
        assert_eq!(j.remembered().collect::<Vec<_>>(), vec![(1, 1)]);
        assert_eq!(j.free_ids.len(), 2);
    }

    fn exp(req: u64, item: u64, ts: i64) -> Exposure {
        Exposure {
            request_id: req,
            item_id: item,
            ts_ms: ts,
            user_id: 10,
            author_id: 7,
            position: 0,
            user_feats: Default::default(),
            item_feats: Default::default(),
            origin: Origin::default(),
        }
    }

    fn act(req: u64, item: u64, ts: i64, kind: ActionKind, value: f64) -> Action {
        Action {
            request_id: req,
            item_id: item,
            ts_ms: ts,
            kind,
            value,
            user_id: 10,
            origin: Origin::default(),
        }
    }

    /// Runs epochs of (exposures, actions, watermark after the epoch), then drains.
    fn run(epochs: Vec<(Vec<Exposure>, Vec<Action>, i64)>) -> JoinOutput {
        let mut j = JoinState::new(JoinConfig::default());
        let mut out = JoinOutput::default();
        let mut w = i64::MIN;
        for (e, a, w_after) in epochs {
            j.process_epoch(w, e, a, &mut out);
            w = w_after;
            j.advance(w, false, &mut out);
        }
        j.advance(w, true, &mut out);
        out
    }

    fn reasons(out: &JoinOutput) -> Vec<Reason> {
        out.rejected
            .iter()
            .map(|r| match r {
                Rejected::Exposure(r, _) | Rejected::Action(r, _) => *r,
            })
            .collect()
    }

    #[test]
    fn action_exactly_at_the_window_end_is_attributed() -> TestResult {
        let out = run(vec![(
            vec![exp(1, 1, T0)],
            vec![act(1, 1, T0 + W, ActionKind::Click, 1.0)],
            T0 + W,
        )]);
        assert_eq!(out.interactions.len(), 1);
        assert_eq!(out.interactions[0].rewards.click, 1.0);
        assert!(out.rejected.is_empty());
        Ok(())
    }

    #[test]
    fn action_one_ms_after_the_window_is_out_of_window() -> TestResult {
        let out = run(vec![(
            vec![exp(1, 1, T0)],
            vec![act(1, 1, T0 + W + 1, ActionKind::Click, 1.0)],
            T0,
        )]);
        assert_eq!(out.interactions[0].rewards.click, 0.0);
        assert_eq!(reasons(&out), vec![Reason::OutOfWindow]);
        Ok(())
    }

    #[test]
    fn action_before_its_exposure_is_out_of_window() -> TestResult {
        let out = run(vec![(
            vec![exp(1, 1, T0)],
            vec![act(1, 1, T0 - 1, ActionKind::Click, 1.0)],
            T0,
        )]);
        assert_eq!(out.interactions[0].rewards.click, 0.0);
        assert_eq!(reasons(&out), vec![Reason::OutOfWindow]);
        Ok(())
    }

    #[test]
    fn action_arriving_before_its_exposure_waits_for_it() -> TestResult {
        let out = run(vec![
            (
                vec![],
                vec![act(1, 1, T0 + 5, ActionKind::Watch, 3.5)],
                T0 - 1000,
            ),
            (vec![exp(1, 1, T0)], vec![], T0),
        ]);
        assert_eq!(out.interactions.len(), 1);
        assert_eq!(out.interactions[0].rewards.watch, 3.5);
        assert!(out.rejected.is_empty());
        Ok(())
    }

    #[test]
    fn duplicated_action_counts_once() -> TestResult {
        let a = act(1, 1, T0 + 9, ActionKind::Watch, 28.5);
        let out = run(vec![
            (vec![exp(1, 1, T0)], vec![a.clone(), a.clone()], T0),
            (vec![], vec![a], T0 + 10),
        ]);
        assert_eq!(out.interactions[0].rewards.watch, 28.5);
        assert_eq!(out.counters.get(Counter::DuplicateActions), 2);
        // Same time, different value: not a duplicate.
        let out = run(vec![(
            vec![exp(1, 1, T0)],
            vec![
                act(1, 1, T0 + 9, ActionKind::Watch, 1.0),
                act(1, 1, T0 + 9, ActionKind::Watch, 2.0),
            ],
            T0,
        )]);
        assert_eq!(out.interactions[0].rewards.watch, 3.0);
        Ok(())
    }

    #[test]
    fn duplicate_exposure_is_ignored_and_counted() -> TestResult {
        let out = run(vec![
            (vec![exp(1, 1, T0), exp(1, 1, T0)], vec![], T0),
            (vec![exp(1, 1, T0)], vec![], T0 + W + 1),
            (vec![exp(1, 1, T0)], vec![], T0 + W + 2),
        ]);
        assert_eq!(out.interactions.len(), 1);
        assert_eq!(out.counters.get(Counter::DuplicateExposures), 3);
        Ok(())
    }

    #[test]
    fn orphan_action_is_counted_and_rejected() -> TestResult {
        let out = run(vec![(
            vec![],
            vec![act(99, 555, T0, ActionKind::Click, 1.0)],
            T0 + W + 1,
        )]);
        assert!(out.interactions.is_empty());
        assert_eq!(reasons(&out), vec![Reason::OrphanAction]);
        assert_eq!(out.counters.get(Counter::OrphanActions), 1);
        Ok(())
    }

    #[test]
    fn action_after_its_exposure_closed_is_late_not_merged() -> TestResult {
        let out = run(vec![
            (vec![exp(1, 1, T0)], vec![], T0 + W + 1),
            (
                vec![],
                vec![act(1, 1, T0 + 10, ActionKind::Click, 1.0)],
                T0 + W + 2,
            ),
        ]);
        assert_eq!(out.interactions.len(), 1);
        assert_eq!(out.interactions[0].rewards.click, 0.0);
        assert_eq!(reasons(&out), vec![Reason::LateAction]);
        assert_eq!(out.counters.get(Counter::LateActions), 1);
        Ok(())
    }

    #[test]
    fn exposure_arriving_after_its_window_is_late() -> TestResult {
        let out = run(vec![
            (vec![], vec![], T0 + W + 1),
            (vec![exp(1, 1, T0)], vec![], T0 + W + 2),
        ]);
        assert!(out.interactions.is_empty());
        assert_eq!(reasons(&out), vec![Reason::LateExposure]);
        Ok(())
    }

    #[test]
    fn watch_of_zero_seconds_gives_zero_watch_reward() -> TestResult {
        let out = run(vec![(
            vec![exp(1, 1, T0)],
            vec![
                act(1, 1, T0 + 1, ActionKind::Watch, 0.0),
                act(1, 1, T0 + 2, ActionKind::Click, 1.0),
            ],
            T0,
        )]);
        let r = out.interactions[0].rewards;
        assert_eq!((r.click, r.watch), (1.0, 0.0));
        assert_eq!(out.counters.get(Counter::AttributedActions), 2);
        Ok(())
    }

    #[test]
    fn exposure_stays_open_until_the_watermark_passes_its_window() -> TestResult {
        let mut j = JoinState::new(JoinConfig::default());
        let mut out = JoinOutput::default();
        j.process_epoch(i64::MIN, vec![exp(1, 1, T0)], vec![], &mut out);
        j.advance(T0 + W, false, &mut out);
        assert!(
            out.interactions.is_empty(),
            "closed at watermark == ts + window"
        );
        j.advance(T0 + W + 1, false, &mut out);
        assert_eq!(out.interactions.len(), 1);
        Ok(())
    }

    #[test]
    fn user_mismatch_is_rejected() -> TestResult {
        let mut a = act(1, 1, T0 + 1, ActionKind::Click, 1.0);
        a.user_id = 11;
        let out = run(vec![(vec![exp(1, 1, T0)], vec![a], T0)]);
        assert_eq!(reasons(&out), vec![Reason::UserMismatch]);
        assert_eq!(out.interactions[0].rewards.click, 0.0);
        Ok(())
    }

    #[test]
    fn snapshot_restore_continues_identically() -> TestResult {
        let epochs = vec![
            (
                vec![exp(1, 1, T0), exp(2, 1, T0 + 100)],
                vec![act(3, 3, T0 + 50, ActionKind::Click, 1.0)],
                T0 + 10,
            ),
            (
                vec![exp(3, 3, T0 + 40)],
                vec![act(1, 1, T0 + 60, ActionKind::Gift, 2.5)],
                T0 + W + 60,
            ),
            (
                vec![],
                vec![act(1, 1, T0 + 70, ActionKind::Click, 1.0)],
                T0 + 2 * W,
            ),
        ];
        let whole = run(epochs.clone());
        let cfg = JoinConfig::default();
        let mut j = JoinState::new(cfg.clone());
        let mut out = JoinOutput::default();
        let (e0, a0, w0) = epochs[0].clone();
        j.process_epoch(i64::MIN, e0, a0, &mut out);
        j.advance(w0, false, &mut out);
        let snap = bincode::serde::encode_to_vec(j.snapshot(), bincode::config::standard())?;
        let (snap, _): (JoinSnapshot, _) =
            bincode::serde::decode_from_slice(&snap, bincode::config::standard())?;
        let mut j2 = JoinState::new(cfg);
        j2.restore(snap, |_| true);
        let mut w = w0;
        for (e, a, w_after) in epochs[1..].to_vec() {
            j2.process_epoch(w, e, a, &mut out);
            w = w_after;
            j2.advance(w, false, &mut out);
        }
        j2.advance(w, true, &mut out);
        assert_eq!(out.interactions, whole.interactions);
        assert_eq!(out.counters, whole.counters);
        Ok(())
    }

    #[test]
    fn watermark_is_the_slowest_live_source_less_lateness() -> TestResult {
        let mut w = Watermark::default();
        assert_eq!(w.current(10), i64::MIN);
        w.observe(Source::Exposures, Some(1000), false);
        assert_eq!(w.current(10), i64::MIN, "actions have not started");
        w.observe(Source::Actions, Some(500), false);
        assert_eq!(w.current(10), 490);
        w.observe(Source::Actions, None, true);
        assert_eq!(
            w.current(10),
            990,
            "an exhausted source no longer holds it back"
        );
        Ok(())
    }
}
