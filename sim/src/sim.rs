//! [`Simulator`]: the closed loop. One round = `round_days` simulated days;
//! sessions of all users are processed in event-time order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use crate::config::{SimConfig, DAY_MS};
use crate::events::RoundEvents;
use crate::metrics::{Metrics, RoundReport};
use crate::policy::{Policy, WorldPeek};
use crate::relation::{half_life_ms, tau_ms, RelView, UserState};
use crate::response::{expected_watch_s, Ctx};
use crate::rng::Rng;
use crate::world::World;
use crate::SimError;

const STREAM_SCHEDULE: u64 = 0x0053_4348_4544;
const STREAM_BEHAVE: u64 = 0x4245_4841_5645;
const STREAM_RETRIEVE: u64 = 0x5245_5452;
const STREAM_TIMING: u64 = 0x5449_4d45;

/// The closed-loop simulator. Deterministic in (config, seed, policy).
pub struct Simulator {
    pub(crate) cfg: SimConfig,
    seed: u64,
    pub(crate) world: World,
    pub(crate) users: Vec<UserState>,
    round: u32,
    pub(crate) next_request_id: u64,
    pub(crate) behave: Rng,
    pub(crate) retrieve_rng: Rng,
    pub(crate) timing: Rng,
    cumulative: Metrics,
    pub(crate) stamp: Vec<u32>,
    pub(crate) stamp_gen: u32,
}

/// The oracle's read-only window on the true world.
pub(crate) struct Peek<'a> {
    pub(crate) cfg: &'a SimConfig,
    pub(crate) world: &'a World,
    pub(crate) users: &'a [UserState],
}

impl WorldPeek for Peek<'_> {
    fn expected_immediate(&self, user_id: u64, item_id: u64, ts_ms: i64) -> Option<f64> {
        let u = self.world.user_index(user_id)?;
        let i = self.world.item_index(item_id)?;
        let item = &self.world.items[i];
        let st = &self.users[u];
        let view = st.view(item.author, ts_ms, half_life_ms(self.cfg));
        let ctx = Ctx {
            affinity: self.world.affinity(u, item.author as usize),
            depth: view.depth,
            followed: view.followed,
            fatigue: st.fatigue(item.author, ts_ms, tau_ms(self.cfg)),
        };
        Some(expected_watch_s(self.cfg, item, &ctx))
    }
}

impl Simulator {
    /// Validates the config and generates the world.
    pub fn new(cfg: SimConfig, seed: u64) -> Result<Self, SimError> {
        cfg.validate()?;
        let world = World::generate(&cfg, seed);
        let n_users = world.users.len();
        let n_items = world.items.len();
        Ok(Simulator {
            seed,
            world,
            users: vec![UserState::default(); n_users],
            round: 0,
            next_request_id: 1,
            behave: Rng::derive(seed, &[STREAM_BEHAVE]),
            retrieve_rng: Rng::derive(seed, &[STREAM_RETRIEVE]),
            timing: Rng::derive(seed, &[STREAM_TIMING]),
            cumulative: Metrics::default(),
            stamp: vec![0; n_items],
            stamp_gen: 0,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The true world (for analysis and tests; policies never get it).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The next round to run (= rounds run so far).
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Metrics over all rounds run so far.
    pub fn cumulative(&self) -> &Metrics {
        &self.cumulative
    }

    /// Event time at which round `round` starts.
    pub fn round_start_ms(&self, round: u32) -> i64 {
        self.cfg.world.start_ts_ms + round as i64 * self.cfg.world.round_days as i64 * DAY_MS
    }

    /// True expected watch seconds of showing `item_id` to `user_id` at
    /// `ts_ms` given the current state (see [`WorldPeek`]).
    pub fn expected_immediate(&self, user_id: u64, item_id: u64, ts_ms: i64) -> Option<f64> {
        self.peek().expected_immediate(user_id, item_id, ts_ms)
    }

    /// The true relationship of a pair at `ts_ms` (analysis and tests).
    pub fn relationship(&self, user_id: u64, author_id: u64, ts_ms: i64) -> Option<RelView> {
        let u = self.world.user_index(user_id)?;
        let a = self.world.author_index(author_id)? as u32;
        Some(self.users[u].view(a, ts_ms, half_life_ms(&self.cfg)))
    }

    /// Deep pairs in the whole world now.
    pub fn deep_pairs(&self) -> u64 {
        let m = self.cfg.relationship.deep_min_satisfying;
        self.users.iter().map(|s| s.deep_pairs(m)).sum()
    }

    pub(crate) fn peek(&self) -> Peek<'_> {
        Peek {
            cfg: &self.cfg,
            world: &self.world,
            users: &self.users,
        }
    }

    /// Simulates one round with `policy`, calls `policy.end_round` with the
    /// round's events, and returns the events and metrics.
    pub fn run_round(&mut self, policy: &mut dyn Policy) -> RoundReport {
        let round = self.round;
        let start_ms = self.round_start_ms(round);
        let days = self.cfg.world.round_days as i64;
        let end_ms = start_ms + days * DAY_MS;
        let s = &self.cfg.session;
        let hour = 3_600_000.0;
        let mut sched = Rng::derive(self.seed, &[STREAM_SCHEDULE, round as u64]);
        let mut heap = BinaryHeap::new();
        for d in 0..days {
            let day0 = start_ms + d * DAY_MS;
            for (u, user) in self.world.users.iter().enumerate() {
                for _ in 0..sched.poisson(user.activity) {
                    let t = day0 + (sched.range_f64(s.wake_hour, s.sleep_hour) * hour) as i64;
                    heap.push(Reverse((t, u as u32, d)));
                }
            }
        }
        let min_gap = (s.min_gap_min * 60_000.0) as i64;
        let curfew_off = (s.curfew_hour * hour) as i64;
        let mut busy_until = vec![i64::MIN / 2; self.world.users.len()];
        let mut events = RoundEvents {
            round,
            ..RoundEvents::default()
        };
        let mut m = Metrics {
            rounds: 1,
            ..Metrics::default()
        };
        while let Some(Reverse((t, u, d))) = heap.pop() {
            let free = busy_until[u as usize] + min_gap;
            if t < free {
                heap.push(Reverse((free, u, d)));
                continue;
            }
            let curfew = start_ms + d * DAY_MS + curfew_off;
            if t >= curfew {
                continue;
            }
            busy_until[u as usize] =
                self.run_session(u as usize, t, curfew, policy, &mut events, &mut m);
        }
        events.sort();
        m.deep_pairs = self.deep_pairs();
        m.finish();
        self.cumulative.merge(&m);
        policy.end_round(&events);
        self.round += 1;
        RoundReport {
            round,
            policy: policy.name(),
            start_ms,
            end_ms,
            metrics: m,
            cumulative: self.cumulative.clone(),
            events,
        }
    }
}

impl WorldPeek for Simulator {
    fn expected_immediate(&self, user_id: u64, item_id: u64, ts_ms: i64) -> Option<f64> {
        Simulator::expected_immediate(self, user_id, item_id, ts_ms)
    }
}

impl RoundReport {
    /// Writes the round's events to `base/round_NNNN/{exposures,actions}.jsonl`
    /// and returns that directory.
    pub fn write_events(&self, base: &Path) -> Result<PathBuf, SimError> {
        let dir = base.join(format!("round_{:04}", self.round));
        self.events.write_dir(&dir)?;
        Ok(dir)
    }
}
