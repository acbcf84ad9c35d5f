//! The user-response model: what a user does with one shown item, given the
//! latent affinity, the item, the relationship and the fatigue.

use crate::config::SimConfig;
use crate::rng::Rng;
use crate::world::{Author, Item};

/// Everything about the (user, item, now) situation the response depends on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    /// Latent user-author affinity.
    pub affinity: f64,
    /// Current relationship depth in [0, 1].
    pub depth: f64,
    /// The user follows the author.
    pub followed: bool,
    /// Same-author fatigue.
    pub fatigue: f64,
}

/// The sampled response to one exposure.
#[derive(Clone, Copy, Debug, Default)]
pub struct Response {
    /// Clicked (started watching).
    pub clicked: bool,
    /// Fraction of the duration watched (0 without a click).
    pub frac: f64,
    /// Seconds watched, rounded to ms (0 without a click; <= duration).
    pub watch_s: f64,
    /// Watched at least `satisfy_frac`.
    pub satisfying: bool,
    /// Clicked but watched below `short_frac`.
    pub short: bool,
    /// Followed the author now.
    pub follow: bool,
    /// Gift amount (0: none).
    pub gift: f64,
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Probability of a click.
pub fn click_prob(cfg: &SimConfig, item: &Item, c: &Ctx) -> f64 {
    let r = &cfg.response;
    sigmoid(
        r.click_bias
            + r.click_affinity * c.affinity
            + r.click_quality * item.quality
            + r.click_bait * item.clickbait
            + r.click_depth * c.depth
            + if c.followed { r.click_follow } else { 0.0 }
            - cfg.fatigue.click_penalty * c.fatigue,
    )
}

/// Mean watched fraction given a click.
pub fn watch_mean(cfg: &SimConfig, item: &Item, c: &Ctx) -> f64 {
    let r = &cfg.response;
    sigmoid(
        r.watch_bias + r.watch_affinity * c.affinity + r.watch_quality * item.quality
            - r.watch_bait * item.clickbait
            + r.watch_depth * c.depth
            + r.watch_duration * (item.duration_s / 30.0).ln()
            - cfg.fatigue.watch_penalty * c.fatigue,
    )
}

/// The exact expected watch seconds of one exposure:
/// P(click) * E[fraction | click] * duration.
pub fn expected_watch_s(cfg: &SimConfig, item: &Item, c: &Ctx) -> f64 {
    click_prob(cfg, item, c) * watch_mean(cfg, item, c) * item.duration_s
}

/// Samples the response to one exposure.
pub fn sample(cfg: &SimConfig, item: &Item, author: &Author, c: &Ctx, rng: &mut Rng) -> Response {
    let r = &cfg.response;
    let mut out = Response {
        clicked: rng.bernoulli(click_prob(cfg, item, c)),
        ..Response::default()
    };
    if !out.clicked {
        return out;
    }
    let mean = watch_mean(cfg, item, c).clamp(1e-6, 1.0 - 1e-6);
    let k = r.watch_concentration;
    out.frac = rng.beta(mean * k, (1.0 - mean) * k).clamp(0.0, 1.0);
    out.watch_s = ((out.frac * item.duration_s * 1000.0).round() / 1000.0).min(item.duration_s);
    out.satisfying = out.frac >= r.satisfy_frac;
    out.short = out.frac < r.short_frac;
    if !out.satisfying {
        return out;
    }
    if !c.followed {
        let p = sigmoid(
            r.follow_bias
                + r.follow_depth * c.depth
                + r.follow_affinity * c.affinity
                + r.follow_quality * item.quality,
        );
        out.follow = rng.bernoulli(p);
    }
    let follower = c.followed || out.follow;
    let p_gift = sigmoid(
        r.gift_bias
            + author.gift_boost
            + if follower { r.gift_follow } else { 0.0 }
            + r.gift_depth * c.depth,
    );
    if rng.bernoulli(p_gift) {
        let amount =
            rng.lognormal(r.gift_median, r.gift_sigma) * (1.0 + r.gift_depth_amount * c.depth);
        out.gift = ((amount * 100.0).round() / 100.0).max(0.01);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::World;

    #[test]
    fn expected_watch_matches_sampled_mean() {
        let cfg = SimConfig::default();
        let world = World::generate(&cfg, 1);
        let mut rng = Rng::new(2);
        for (i, depth) in [(0usize, 0.0), (17, 0.4), (123, 0.9)] {
            let item = &world.items[i];
            let author = &world.authors[item.author as usize];
            let c = Ctx {
                affinity: 0.3,
                depth,
                followed: depth > 0.5,
                fatigue: 0.5,
            };
            let n = 200_000;
            let mean = (0..n)
                .map(|_| sample(&cfg, item, author, &c, &mut rng).watch_s)
                .sum::<f64>()
                / n as f64;
            let want = expected_watch_s(&cfg, item, &c);
            assert!((mean - want).abs() < 0.02 * want, "{mean} vs {want}");
        }
    }

    #[test]
    fn relationship_raises_and_fatigue_lowers_every_propensity() {
        let cfg = SimConfig::default();
        let world = World::generate(&cfg, 1);
        let item = &world.items[5];
        let base = Ctx::default();
        let deep = Ctx { depth: 0.6, ..base };
        let tired = Ctx {
            fatigue: 2.0,
            ..base
        };
        for f in [click_prob, watch_mean, expected_watch_s] {
            assert!(f(&cfg, item, &deep) > f(&cfg, item, &base));
            assert!(f(&cfg, item, &tired) < f(&cfg, item, &base));
        }
    }

    #[test]
    fn clickbait_attracts_clicks_but_not_watching() {
        let cfg = SimConfig::default();
        let world = World::generate(&cfg, 1);
        let mut bait = world.items[0].clone();
        let mut honest = bait.clone();
        bait.clickbait = 0.9;
        honest.clickbait = 0.0;
        let c = Ctx::default();
        assert!(click_prob(&cfg, &bait, &c) > click_prob(&cfg, &honest, &c));
        assert!(watch_mean(&cfg, &bait, &c) < 0.5 * watch_mean(&cfg, &honest, &c));
    }
}
