//! Live relationship metrics (the paper's online metrics, Table 4) as the
//! inputs of incremental views: the facts each closed interaction adds, the
//! event-time expiry that retracts them, and the per-worker state that a
//! commit persists so that a resumed run continues the views exactly.
//!
//! The views (computed with differential dataflow in `operators::views`):
//! - **deep pairs** per author and in total: a pair is deep while it is
//!   followed, has at least `deep_min_watches` watched exposures, and its
//!   latest interaction is at most `deep_recent_days` old;
//! - **weekly gifted users**: distinct users with a gift in the trailing
//!   `gift_window_days` of event time (per author: distinct gifting users);
//! - **revenue** per author and in total (gift amounts, in thousandths);
//! - **new fans** per author per day (the pair's first follow), for the last
//!   `fans_keep_days` days.
//!
//! "Now" is the job's event-time watermark. Every fact carries an expiry
//! time `x`: it is live while `x >= now`, and retracted at the first epoch
//! whose watermark passes it (deep: latest interaction + `deep_recent_days`;
//! gift: its time + `gift_window_days`; new fan: the end of its day +
//! `fans_keep_days`; revenue never expires). So the views at a commit equal a
//! recomputation from the transitions up to it at its watermark.

use std::collections::BTreeMap;

use rliv_state::{FastMap, PairKey};
use serde::{Deserialize, Serialize};

pub const DAY_MS: i64 = 86_400_000;

/// Section `[views]` of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewsConfig {
    /// Keep the views (false: the job emits no facts and has no views).
    pub enabled: bool,
    /// A deep pair has at least this many watched exposures (and is followed).
    pub deep_min_watches: u64,
    /// ... and its latest interaction is at most this many days old.
    pub deep_recent_days: u32,
    /// Weekly gifted users: distinct users with a gift in this many trailing days.
    pub gift_window_days: u32,
    /// New fans per author per day are kept for this many days.
    pub fans_keep_days: u32,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            enabled: true,
            deep_min_watches: 3,
            deep_recent_days: 7,
            gift_window_days: 7,
            fans_keep_days: 30,
        }
    }
}

impl ViewsConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("deep_recent_days", self.deep_recent_days),
            ("gift_window_days", self.gift_window_days),
            ("fans_keep_days", self.fans_keep_days),
        ] {
            if v == 0 || v > 36_500 {
                return Err(format!("views.{key} = {v}: must be 1..=36500 days"));
            }
        }
        Ok(())
    }
}

/// What one closed interaction tells the views (from its transition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewFact {
    pub pair: PairKey,
    pub ts_ms: i64,
    /// Gift amount in thousandths (0: none).
    pub gift_milli: i64,
    /// The pair's first follow.
    pub new_fan: bool,
    /// After this interaction the pair is followed with enough watches.
    pub deep_candidate: bool,
    /// The pair's latest interaction time after it.
    pub last_ts_ms: i64,
}

impl ViewFact {
    /// The facts of one transition.
    pub fn of(t: &crate::event::Transition, cfg: &ViewsConfig) -> ViewFact {
        ViewFact::of_parts(
            PairKey::new(t.user_id, t.author_id),
            t.ts_ms,
            t.reward.gift,
            t.state.follows,
            t.next_state.follows,
            t.next_state.watches,
            t.next_state.last_ts_ms,
            cfg,
        )
    }

    /// The facts of one interaction from the pair's counters around it (what
    /// [`ViewFact::of`] reads off a transition, without building one).
    #[allow(clippy::too_many_arguments)]
    pub fn of_parts(
        pair: PairKey,
        ts_ms: i64,
        gift: f64,
        follows_before: u64,
        follows_after: u64,
        watches_after: u64,
        last_ts_after: i64,
        cfg: &ViewsConfig,
    ) -> ViewFact {
        ViewFact {
            pair,
            ts_ms,
            gift_milli: milli(gift),
            new_fan: follows_before == 0 && follows_after > 0,
            deep_candidate: follows_after > 0 && watches_after >= cfg.deep_min_watches,
            last_ts_ms: last_ts_after.max(ts_ms),
        }
    }

    /// Whether the views take this fact at all.
    pub fn says_something(&self) -> bool {
        self.gift_milli > 0 || self.new_fan || self.deep_candidate
    }
}

/// A gift amount in thousandths (what the views sum, exactly).
pub fn milli(amount: f64) -> i64 {
    if amount.is_finite() && amount > 0.0 {
        (amount * 1000.0).round() as i64
    } else {
        0
    }
}

/// An input record of the differential views.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViewInput {
    /// (author, user): the pair is deep.
    Deep(u64, u64),
    /// (author, user): the user gifted to the author in the window.
    Gift(u64, u64),
    /// (author, thousandths): revenue (summed).
    Revenue(u64, i64),
    /// (author, day): one new fan that day.
    Fan(u64, i64),
    /// The views' event time (one record, from worker 0).
    Now(i64),
}

/// A row of the views' output table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViewKey {
    DeepPairs(u64),
    DeepPairsTotal,
    WeeklyGiftedUsers(u64),
    WeeklyGiftedUsersTotal,
    RevenueMilli(u64),
    RevenueMilliTotal,
    NewFans(u64, i64),
    NewFansTotal,
    /// The watermark the table is as of.
    AsOfMs,
}

/// One worker's live facts: what it has put into the views and not yet
/// retracted, with their expiry times.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ViewsState {
    /// Deep pairs and the time they stop being deep.
    deep: BTreeMap<PairKey, i64>,
    /// Gifts still in the window: (expiry, author, user) with multiplicity.
    gifts: BTreeMap<(i64, u64, u64), u64>,
    /// Revenue per author (this worker's part).
    revenue: BTreeMap<u64, i64>,
    /// New fans per (day, author) still kept.
    fans: BTreeMap<(i64, u64), u64>,
    /// The last `Now` this worker put in (worker 0 only).
    now: Option<i64>,
    #[serde(skip)]
    deep_timers: BTreeMap<i64, Vec<PairKey>>,
}

impl ViewsState {
    /// Applies one epoch: its facts (in a fixed order), then the watermark
    /// `now`; pushes the view inputs' changes (record, diff) to `out`.
    pub fn epoch(
        &mut self,
        cfg: &ViewsConfig,
        mut facts: Vec<ViewFact>,
        now: Option<i64>,
        report_now: bool,
        out: &mut Vec<(ViewInput, i64)>,
    ) {
        facts.sort_unstable_by_key(|f| (f.pair, f.ts_ms));
        let deep_ms = i64::from(cfg.deep_recent_days) * DAY_MS;
        let gift_ms = i64::from(cfg.gift_window_days) * DAY_MS;
        let fans_ms = i64::from(cfg.fans_keep_days) * DAY_MS;
        for f in facts {
            let (user, author) = (f.pair.user_id, f.pair.author_id);
            if f.deep_candidate {
                let until = f.last_ts_ms.saturating_add(deep_ms);
                match self.deep.get(&f.pair).copied() {
                    Some(old) if old >= until => {}
                    Some(_) => {
                        self.deep.insert(f.pair, until);
                        self.deep_timers.entry(until).or_default().push(f.pair);
                    }
                    None => {
                        self.deep.insert(f.pair, until);
                        self.deep_timers.entry(until).or_default().push(f.pair);
                        out.push((ViewInput::Deep(author, user), 1));
                    }
                }
            }
            if f.gift_milli > 0 {
                *self
                    .gifts
                    .entry((f.ts_ms.saturating_add(gift_ms), author, user))
                    .or_default() += 1;
                out.push((ViewInput::Gift(author, user), 1));
                *self.revenue.entry(author).or_default() += f.gift_milli;
                out.push((ViewInput::Revenue(author, f.gift_milli), 1));
            }
            if f.new_fan {
                let day = f.ts_ms.div_euclid(DAY_MS);
                *self.fans.entry((day, author)).or_default() += 1;
                out.push((ViewInput::Fan(author, day), 1));
            }
        }
        let Some(now) = now else { return };
        // Retract what `now` has passed (a fact is live while its expiry >= now).
        while let Some(entry) = self.deep_timers.first_entry() {
            if *entry.key() >= now {
                break;
            }
            let (until, pairs) = entry.remove_entry();
            for p in pairs {
                if self.deep.get(&p) == Some(&until) {
                    self.deep.remove(&p);
                    out.push((ViewInput::Deep(p.author_id, p.user_id), -1));
                }
            }
        }
        while let Some(entry) = self.gifts.first_entry() {
            if entry.key().0 >= now {
                break;
            }
            let ((_, author, user), n) = entry.remove_entry();
            out.push((ViewInput::Gift(author, user), -(n as i64)));
        }
        while let Some(entry) = self.fans.first_entry() {
            let (day, _) = *entry.key();
            if (day + 1).saturating_mul(DAY_MS).saturating_add(fans_ms) >= now {
                break;
            }
            let ((day, author), n) = entry.remove_entry();
            out.push((ViewInput::Fan(author, day), -(n as i64)));
        }
        if report_now && self.now != Some(now) {
            if let Some(old) = self.now {
                out.push((ViewInput::Now(old), -1));
            }
            out.push((ViewInput::Now(now), 1));
            self.now = Some(now);
        }
    }

    /// Encodes this worker's live facts for a commit.
    pub fn encode(&self) -> Result<Vec<u8>, bincode::error::EncodeError> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
    }

    /// Adds the live facts of a committed state that `keep` assigns to this
    /// worker (any number of workers wrote them), and pushes them as view
    /// inputs, so the views continue from the commit.
    pub fn restore(
        &mut self,
        bytes: &[u8],
        keep_pair: impl Fn(PairKey) -> bool,
        keep_author: impl Fn(u64) -> bool,
        report_now: bool,
        out: &mut Vec<(ViewInput, i64)>,
    ) -> Result<(), bincode::error::DecodeError> {
        let (s, _): (ViewsState, usize) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
        for (p, until) in s.deep {
            if keep_pair(p) {
                self.deep.insert(p, until);
                self.deep_timers.entry(until).or_default().push(p);
                out.push((ViewInput::Deep(p.author_id, p.user_id), 1));
            }
        }
        for ((x, author, user), n) in s.gifts {
            if keep_pair(PairKey::new(user, author)) {
                *self.gifts.entry((x, author, user)).or_default() += n;
                out.push((ViewInput::Gift(author, user), n as i64));
            }
        }
        for (author, m) in s.revenue {
            if keep_author(author) {
                *self.revenue.entry(author).or_default() += m;
                out.push((ViewInput::Revenue(author, m), 1));
            }
        }
        for ((day, author), n) in s.fans {
            if keep_author(author) {
                *self.fans.entry((day, author)).or_default() += n;
                out.push((ViewInput::Fan(author, day), n as i64));
            }
        }
        if report_now {
            if let Some(now) = s.now {
                if self.now.is_none() {
                    self.now = Some(now);
                    out.push((ViewInput::Now(now), 1));
                }
            }
        }
        Ok(())
    }

    /// Live facts held (for memory figures).
    pub fn len(&self) -> usize {
        self.deep.len() + self.gifts.len() + self.revenue.len() + self.fans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The output table of the views, as the committer keeps it: one value per
/// key, from the views' changes (a change is `(key, value, diff)`: +1 sets
/// the value, -1 of the current value removes it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewTable {
    pub rows: FastMap<ViewKey, i64>,
}

impl ViewTable {
    pub fn apply(&mut self, changes: &[(ViewKey, i64, i64)]) {
        // Removals first: an epoch's changes come as (old, -1), (new, +1).
        for (k, v, d) in changes {
            if *d < 0 && self.rows.get(k) == Some(v) {
                self.rows.remove(k);
            }
        }
        for (k, v, d) in changes {
            if *d > 0 {
                self.rows.insert(*k, *v);
            }
        }
    }

    pub fn get(&self, k: ViewKey) -> i64 {
        self.rows.get(&k).copied().unwrap_or(0)
    }

    /// Rows in key order.
    pub fn sorted(&self) -> Vec<(ViewKey, i64)> {
        let mut v: Vec<(ViewKey, i64)> = self.rows.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn fact(user: u64, author: u64, ts: i64, gift: i64, fan: bool, deep: bool) -> ViewFact {
        ViewFact {
            pair: PairKey::new(user, author),
            ts_ms: ts,
            gift_milli: gift,
            new_fan: fan,
            deep_candidate: deep,
            last_ts_ms: ts,
        }
    }

    /// The net inputs, revenue as one sum per author (what the views read).
    fn net(out: &[(ViewInput, i64)]) -> BTreeMap<ViewInput, i64> {
        let mut m = BTreeMap::new();
        let mut revenue: BTreeMap<u64, i64> = BTreeMap::new();
        for (k, d) in out {
            match k {
                ViewInput::Revenue(a, v) => *revenue.entry(*a).or_default() += v * d,
                _ => *m.entry(k.clone()).or_default() += d,
            }
        }
        for (a, v) in revenue {
            m.insert(ViewInput::Revenue(a, v), 1);
        }
        m.retain(|_, d| *d != 0);
        m
    }

    #[test]
    fn facts_enter_and_leave_the_views_at_their_expiry() {
        let cfg = ViewsConfig::default();
        let mut s = ViewsState::default();
        let mut out = Vec::new();
        s.epoch(
            &cfg,
            vec![
                fact(1, 10, T0, 0, true, true),
                fact(2, 10, T0, 2500, false, false),
                fact(2, 10, T0 + 1000, 500, false, false),
            ],
            Some(T0),
            true,
            &mut out,
        );
        let m = net(&out);
        assert_eq!(m.get(&ViewInput::Deep(10, 1)), Some(&1));
        assert_eq!(m.get(&ViewInput::Gift(10, 2)), Some(&2));
        assert_eq!(m.get(&ViewInput::Revenue(10, 3000)), Some(&1));
        assert_eq!(m.get(&ViewInput::Fan(10, T0.div_euclid(DAY_MS))), Some(&1));
        // Eight days later: the deep pair (7 days) and the gifts (7 days) are retracted,
        // the new fan (30 days) and the revenue stay.
        let mut later = Vec::new();
        s.epoch(&cfg, Vec::new(), Some(T0 + 8 * DAY_MS), true, &mut later);
        let m = net(&later);
        assert_eq!(m.get(&ViewInput::Deep(10, 1)), Some(&-1));
        assert_eq!(m.get(&ViewInput::Gift(10, 2)), Some(&-2));
        assert!(!m
            .keys()
            .any(|k| matches!(k, ViewInput::Fan(..) | ViewInput::Revenue(..))));
        // A restore on two workers splits the live facts and adds up to them.
        let bytes = s.encode().expect("encode");
        let mut total = Vec::new();
        for me in 0..2u64 {
            let mut w = ViewsState::default();
            w.restore(
                &bytes,
                |p| p.user_id % 2 == me,
                |a| a % 2 == me,
                me == 0,
                &mut total,
            )
            .expect("restore");
        }
        let all: Vec<(ViewInput, i64)> = out.iter().chain(&later).cloned().collect();
        assert_eq!(net(&total), net(&all));
    }

    #[test]
    fn a_deep_pair_stays_deep_while_it_keeps_interacting() {
        let cfg = ViewsConfig::default();
        let mut s = ViewsState::default();
        let mut out = Vec::new();
        s.epoch(
            &cfg,
            vec![fact(1, 10, T0, 0, false, true)],
            Some(T0),
            false,
            &mut out,
        );
        s.epoch(
            &cfg,
            vec![fact(1, 10, T0 + 6 * DAY_MS, 0, false, true)],
            Some(T0 + 6 * DAY_MS),
            false,
            &mut out,
        );
        s.epoch(&cfg, Vec::new(), Some(T0 + 12 * DAY_MS), false, &mut out);
        assert_eq!(net(&out).get(&ViewInput::Deep(10, 1)), Some(&1));
        s.epoch(&cfg, Vec::new(), Some(T0 + 14 * DAY_MS), false, &mut out);
        assert_eq!(net(&out).get(&ViewInput::Deep(10, 1)), None);
    }

    #[test]
    fn the_table_follows_changes_in_any_order_within_an_epoch() {
        let mut t = ViewTable::default();
        t.apply(&[(ViewKey::DeepPairsTotal, 3, 1)]);
        t.apply(&[
            (ViewKey::DeepPairsTotal, 4, 1),
            (ViewKey::DeepPairsTotal, 3, -1),
        ]);
        assert_eq!(t.get(ViewKey::DeepPairsTotal), 4);
        t.apply(&[(ViewKey::DeepPairsTotal, 4, -1)]);
        assert!(t.rows.is_empty());
    }
}
