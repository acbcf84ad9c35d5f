//! Dynamic per-user state: the relationship with each author and the recent
//! exposures that cause same-author fatigue.

use std::collections::{BTreeMap, VecDeque};

use crate::config::SimConfig;

/// The relationship of one user with one author.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairRel {
    /// Depth in [0, 1] as of `updated_ms` (decays afterwards).
    pub depth: f64,
    /// Event time of the last update of `depth`.
    pub updated_ms: i64,
    /// The user follows the author (at most one follow per pair).
    pub followed: bool,
    /// Satisfying watches so far.
    pub satisfying: u32,
    /// Exposures so far.
    pub exposures: u32,
    /// Sum of gifts so far.
    pub gift_total: f64,
}

impl PairRel {
    /// Depth decayed to `ts_ms` (half-life in ms).
    pub fn depth_at(&self, ts_ms: i64, half_life_ms: f64) -> f64 {
        let dt = (ts_ms - self.updated_ms).max(0) as f64;
        self.depth * (0.5f64).powf(dt / half_life_ms)
    }
}

/// What one exposure did, as far as the relationship is concerned.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interaction {
    /// Watched at least the satisfying fraction.
    pub satisfying: bool,
    /// Clicked but watched below the short fraction.
    pub short: bool,
    /// Followed during this exposure.
    pub follow: bool,
    /// Gift amount (0: none).
    pub gift: f64,
}

/// A read-only view of a pair's relationship at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RelView {
    /// Current (decayed) depth.
    pub depth: f64,
    /// Followed.
    pub followed: bool,
    /// Satisfying watches so far.
    pub satisfying: u32,
}

/// Dynamic state of one user.
#[derive(Clone, Debug, Default)]
pub struct UserState {
    /// Relationships by author index (ordered: iteration is deterministic).
    pub rels: BTreeMap<u32, PairRel>,
    /// Recent exposures (ts_ms, author index), oldest first.
    pub recent: VecDeque<(i64, u32)>,
}

impl UserState {
    /// The relationship view with author `a` at `ts_ms`.
    pub fn view(&self, a: u32, ts_ms: i64, half_life_ms: f64) -> RelView {
        self.rels
            .get(&a)
            .map(|r| RelView {
                depth: r.depth_at(ts_ms, half_life_ms),
                followed: r.followed,
                satisfying: r.satisfying,
            })
            .unwrap_or_default()
    }

    /// Fatigue toward author `a` at `ts_ms`: sum of exp(-(ts - t_e) / tau)
    /// over remembered exposures of `a` at or before `ts_ms`.
    pub fn fatigue(&self, a: u32, ts_ms: i64, tau_ms: f64) -> f64 {
        self.recent
            .iter()
            .filter(|(t, b)| *b == a && *t <= ts_ms)
            .map(|(t, _)| (-((ts_ms - t) as f64) / tau_ms).exp())
            .sum()
    }

    /// Records an exposure of author `a` at `ts_ms` and its outcome; `bond`
    /// (the author's growth multiplier) scales every deepening.
    pub fn record(&mut self, cfg: &SimConfig, a: u32, bond: f64, ts_ms: i64, it: Interaction) {
        self.recent.push_back((ts_ms, a));
        while self.recent.len() > cfg.fatigue.history {
            self.recent.pop_front();
        }
        let rc = &cfg.relationship;
        let r = self.rels.entry(a).or_default();
        let mut d = r.depth_at(ts_ms, half_life_ms(cfg));
        if it.satisfying {
            d += (rc.growth * bond).min(1.0) * (1.0 - d);
            r.satisfying += 1;
        }
        if it.short {
            d -= rc.hurt * d;
        }
        if it.follow && !r.followed {
            r.followed = true;
            d += (rc.follow_boost * bond).min(1.0) * (1.0 - d);
        }
        r.depth = d.clamp(0.0, 1.0);
        r.updated_ms = ts_ms;
        r.exposures += 1;
        r.gift_total += it.gift;
    }

    /// Deep pairs of this user: followed with enough satisfying watches.
    pub fn deep_pairs(&self, min_satisfying: u32) -> u64 {
        self.rels
            .values()
            .filter(|r| r.followed && r.satisfying >= min_satisfying)
            .count() as u64
    }
}

/// The relationship half-life in ms.
pub fn half_life_ms(cfg: &SimConfig) -> f64 {
    cfg.relationship.half_life_days * crate::config::DAY_MS as f64
}

/// The fatigue time constant in ms.
pub fn tau_ms(cfg: &SimConfig) -> f64 {
    cfg.fatigue.tau_min * 60_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepens_decays_follows_once_and_tires() {
        let cfg = SimConfig::default();
        let hl = half_life_ms(&cfg);
        let mut s = UserState::default();
        let good = Interaction {
            satisfying: true,
            ..Interaction::default()
        };
        for i in 0..5 {
            s.record(&cfg, 3, 1.0, i * 1000, good);
        }
        let d = s.view(3, 4000, hl).depth;
        assert!((d - (1.0 - (1.0 - cfg.relationship.growth).powi(5))).abs() < 1e-6);
        // Neglect: one half-life later, half the depth.
        assert!((s.view(3, 4000 + hl as i64, hl).depth - d / 2.0).abs() < 1e-9);
        // Follow boosts depth once.
        let follow = Interaction {
            follow: true,
            ..Interaction::default()
        };
        s.record(&cfg, 3, 1.0, 6000, follow);
        let after = s.view(3, 6000, hl);
        assert!(after.followed && after.depth > d);
        s.record(&cfg, 3, 1.0, 6000, follow);
        assert!((s.view(3, 6000, hl).depth - after.depth).abs() < 1e-12);
        // A short watch hurts.
        let short = Interaction {
            short: true,
            ..Interaction::default()
        };
        s.record(&cfg, 3, 1.0, 6000, short);
        assert!(s.view(3, 6000, hl).depth < after.depth);
        // Fatigue: 8 recent exposures of author 3, none of author 4.
        let tau = tau_ms(&cfg);
        assert!(s.fatigue(3, 6000, tau) > 7.9);
        assert_eq!(s.fatigue(4, 6000, tau), 0.0);
        assert!(s.fatigue(3, 6000 + 10 * tau as i64, tau) < 0.001);
        // Bond 0: no growth at all.
        let mut z = UserState::default();
        z.record(&cfg, 1, 0.0, 0, good);
        z.record(&cfg, 1, 0.0, 0, follow);
        assert_eq!(z.view(1, 0, hl).depth, 0.0);
    }
}
