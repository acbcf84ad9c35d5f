//! Behavioural sections of [`SimConfig`](super::SimConfig): the response
//! model, relationships, fatigue, sessions, retrieval and event emission.

use serde::{Deserialize, Serialize};

/// The user-response model: logits of click, watch fraction, follow, gift.
/// `affinity` is the latent user-author affinity (about N(0, 1)), `quality`
/// the item's quality, `bait` its click-bait propensity in [0, 1], `depth`
/// the relationship depth in [0, 1], `followed` 0/1, `fatigue` the recent
/// exposure load of the same author (see `[fatigue]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseCfg {
    /// Standard deviation of the static per-pair noise added to affinity.
    pub pair_noise: f64,
    /// Click logit intercept.
    pub click_bias: f64,
    /// Click logit weight of affinity.
    pub click_affinity: f64,
    /// Click logit weight of item quality.
    pub click_quality: f64,
    /// Click logit weight of click-bait propensity (bait attracts clicks).
    pub click_bait: f64,
    /// Click logit weight of relationship depth.
    pub click_depth: f64,
    /// Click logit bonus when the user follows the author.
    pub click_follow: f64,
    /// Watch-fraction logit intercept.
    pub watch_bias: f64,
    /// Watch-fraction logit weight of affinity.
    pub watch_affinity: f64,
    /// Watch-fraction logit weight of item quality.
    pub watch_quality: f64,
    /// Watch-fraction logit penalty of click-bait (bait is abandoned early).
    pub watch_bait: f64,
    /// Watch-fraction logit weight of relationship depth.
    pub watch_depth: f64,
    /// Watch-fraction logit weight of ln(duration / 30 s) (long items are
    /// watched to a smaller fraction; negative).
    pub watch_duration: f64,
    /// Concentration of the Beta distribution of the watch fraction around
    /// its mean (smaller: noisier watches).
    pub watch_concentration: f64,
    /// A watch of at least this fraction is satisfying.
    pub satisfy_frac: f64,
    /// A click watched below this fraction is a dissatisfying short watch.
    pub short_frac: f64,
    /// Follow logit intercept (a follow is drawn only after a satisfying watch).
    pub follow_bias: f64,
    /// Follow logit weight of relationship depth.
    pub follow_depth: f64,
    /// Follow logit weight of affinity.
    pub follow_affinity: f64,
    /// Follow logit weight of item quality.
    pub follow_quality: f64,
    /// Gift logit intercept (a gift is drawn only after a satisfying watch).
    pub gift_bias: f64,
    /// Gift logit bonus for followers.
    pub gift_follow: f64,
    /// Gift logit weight of relationship depth.
    pub gift_depth: f64,
    /// Median gift amount (log-normal).
    pub gift_median: f64,
    /// Log-space sd of the gift amount.
    pub gift_sigma: f64,
    /// Gift amounts are multiplied by (1 + gift_depth_amount * depth).
    pub gift_depth_amount: f64,
}

impl Default for ResponseCfg {
    fn default() -> Self {
        ResponseCfg {
            pair_noise: 0.5,
            click_bias: -1.9,
            click_affinity: 0.8,
            click_quality: 0.4,
            click_bait: 1.5,
            click_depth: 1.5,
            click_follow: 0.5,
            watch_bias: -0.8,
            watch_affinity: 0.7,
            watch_quality: 0.6,
            watch_bait: 2.5,
            watch_depth: 1.2,
            watch_duration: -0.4,
            watch_concentration: 4.0,
            satisfy_frac: 0.5,
            short_frac: 0.2,
            follow_bias: -6.0,
            follow_depth: 3.0,
            follow_affinity: 0.5,
            follow_quality: 0.3,
            gift_bias: -8.5,
            gift_follow: 2.0,
            gift_depth: 2.5,
            gift_median: 3.0,
            gift_sigma: 1.0,
            gift_depth_amount: 1.0,
        }
    }
}

/// Dynamic user-author relationship (depth in [0, 1]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelationshipCfg {
    /// A satisfying watch adds growth * bond * (1 - depth).
    pub growth: f64,
    /// A dissatisfying click (short watch) removes hurt * depth.
    pub hurt: f64,
    /// A follow adds follow_boost * bond * (1 - depth).
    pub follow_boost: f64,
    /// Depth halves after this many days without interaction (neglect).
    pub half_life_days: f64,
    /// A deep pair is followed and has at least this many satisfying watches.
    pub deep_min_satisfying: u32,
}

impl Default for RelationshipCfg {
    fn default() -> Self {
        RelationshipCfg {
            growth: 0.08,
            hurt: 0.04,
            follow_boost: 0.3,
            half_life_days: 10.0,
            deep_min_satisfying: 10,
        }
    }
}

/// Fatigue: fatigue(u, a, t) = sum over u's recent exposures of author a of
/// exp(-(t - t_e) / tau).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FatigueCfg {
    /// Decay time constant tau in minutes.
    pub tau_min: f64,
    /// How many recent exposures per user are remembered.
    pub history: usize,
    /// Click logit penalty per unit of fatigue.
    pub click_penalty: f64,
    /// Watch-fraction logit penalty per unit of fatigue.
    pub watch_penalty: f64,
    /// Extra temper cost per unit of fatigue on every exposure.
    pub temper_penalty: f64,
}

impl Default for FatigueCfg {
    fn default() -> Self {
        FatigueCfg {
            tau_min: 15.0,
            history: 48,
            click_penalty: 0.3,
            watch_penalty: 0.25,
            temper_penalty: 0.1,
        }
    }
}

/// Sessions, requests and the quit mechanism (the per-session temper).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionCfg {
    /// Items returned by the policy per request (K).
    pub k: usize,
    /// Sessions start uniformly in [wake_hour, sleep_hour) of each day.
    pub wake_hour: f64,
    /// Latest session start (hour of day).
    pub sleep_hour: f64,
    /// No request is issued after this hour ("bedtime" quit); together with
    /// the longest item it keeps every event of a round inside its day.
    pub curfew_hour: f64,
    /// Minimum gap between two sessions of a user, minutes.
    pub min_gap_min: f64,
    /// Hard cap on requests per session.
    pub max_requests: u32,
    /// Probability of leaving after any request regardless of temper.
    pub base_quit_prob: f64,
    /// Temper cost of an item shown but not clicked.
    pub skip_cost: f64,
    /// Temper cost of a short (dissatisfying) watch, e.g. click-bait.
    pub short_cost: f64,
    /// Temper cost of a watch that is neither short nor satisfying.
    pub neutral_cost: f64,
    /// Temper recovered by a satisfying watch.
    pub satisfy_recover: f64,
    /// Temper never exceeds temper_cap * patience.
    pub temper_cap: f64,
    /// Median seconds spent on an item that is not clicked (log-normal).
    pub skip_dwell_s: f64,
    /// Median seconds from exposure to click.
    pub click_delay_s: f64,
    /// Median seconds of browsing between items and between requests.
    pub browse_gap_s: f64,
    /// Log-space sd of the dwell, click-delay and gap times (each capped at 30 s).
    pub time_sigma: f64,
}

impl Default for SessionCfg {
    fn default() -> Self {
        SessionCfg {
            k: 6,
            wake_hour: 7.0,
            sleep_hour: 22.75,
            curfew_hour: 23.0,
            min_gap_min: 5.0,
            max_requests: 60,
            base_quit_prob: 0.03,
            skip_cost: 0.25,
            short_cost: 1.0,
            neutral_cost: 0.1,
            satisfy_recover: 0.5,
            temper_cap: 1.5,
            skip_dwell_s: 2.0,
            click_delay_s: 1.5,
            browse_gap_s: 1.0,
            time_sigma: 0.5,
        }
    }
}

/// The candidate generator: N candidates per request from four channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalCfg {
    /// Candidates per request (N; capped at the catalogue size).
    pub n_candidates: usize,
    /// Share of candidates from authors the user has a relationship with.
    pub relationship_share: f64,
    /// Share from the user's retrieval-affinity author pool.
    pub affinity_share: f64,
    /// Share drawn by popularity.
    pub popular_share: f64,
    /// Authors in a user's affinity pool (top by a noisy affinity estimate).
    pub affinity_pool: usize,
    /// Standard deviation of the retrieval model's error on affinity.
    pub affinity_noise: f64,
    /// Minimum current depth (or a follow) for the relationship channel.
    pub relationship_min_depth: f64,
}

impl Default for RetrievalCfg {
    fn default() -> Self {
        RetrievalCfg {
            n_candidates: 60,
            relationship_share: 0.2,
            affinity_share: 0.3,
            popular_share: 0.25,
            affinity_pool: 40,
            affinity_noise: 0.7,
            relationship_min_depth: 0.05,
        }
    }
}

/// Event emission: delays and duplicates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsCfg {
    /// Attribution window of the contract (ms): every action is emitted
    /// within [exposure ts, exposure ts + window - 1 s].
    pub attribution_window_ms: i64,
    /// Median seconds from the end of the watch to a follow (log-normal).
    pub follow_delay_s: f64,
    /// Median seconds from the exposure to a gift (log-normal).
    pub gift_delay_s: f64,
    /// Log-space sd of the follow and gift delays.
    pub delay_sigma: f64,
    /// Fraction of exposures emitted twice (identical line).
    pub dup_exposure_frac: f64,
    /// Fraction of actions emitted twice (identical line).
    pub dup_action_frac: f64,
}

impl Default for EventsCfg {
    fn default() -> Self {
        EventsCfg {
            attribution_window_ms: 1_800_000,
            follow_delay_s: 30.0,
            gift_delay_s: 180.0,
            delay_sigma: 1.0,
            dup_exposure_frac: 0.001,
            dup_action_frac: 0.005,
        }
    }
}
