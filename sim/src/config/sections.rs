//! The sections of [`SimConfig`](super::SimConfig). Every field has a
//! default (the default world); `configs/sim.toml` repeats them with comments.

use serde::{Deserialize, Serialize};

/// Size of the world and the clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldCfg {
    /// Number of users.
    pub n_users: usize,
    /// Number of authors.
    pub n_authors: usize,
    /// Total number of items (at least one per author).
    pub n_items: usize,
    /// Items per author are proportional to 1 / rank^exponent (Zipf-ish);
    /// 0 gives every author the same number of items.
    pub items_zipf_exponent: f64,
    /// Dimension of the latent taste (user) and style (author) vectors.
    pub taste_dim: usize,
    /// Number of content categories (an item feature).
    pub n_categories: u32,
    /// Event time of the start of round 0 (Unix ms, midnight of simulated day 0).
    pub start_ts_ms: i64,
    /// Simulated days per round.
    pub round_days: u32,
}

impl Default for WorldCfg {
    fn default() -> Self {
        WorldCfg {
            n_users: 1500,
            n_authors: 250,
            n_items: 2000,
            items_zipf_exponent: 1.0,
            taste_dim: 8,
            n_categories: 12,
            start_ts_ms: 1_699_920_000_000,
            round_days: 1,
        }
    }
}

/// User population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersCfg {
    /// Cardinality of the age-bucket feature (`user_feats[0]`).
    pub age_buckets: u32,
    /// Cardinality of the gender feature (`user_feats[1]`).
    pub genders: u32,
    /// Cardinality of the region feature (`user_feats[2]`).
    pub regions: u32,
    /// Median sessions per day (log-normal across users). `user_feats[3]` is the
    /// activity bucket: <1, <2, <4, >=4 sessions per day.
    pub activity_median: f64,
    /// Log-space standard deviation of the activity rate.
    pub activity_sigma: f64,
    /// Median patience: the temper a session starts with (log-normal).
    pub patience_median: f64,
    /// Log-space standard deviation of the patience.
    pub patience_sigma: f64,
    /// Weight of the feature-driven part of taste (age and region centroids):
    /// how much the observable features tell about taste.
    pub taste_feature_weight: f64,
    /// Standard deviation of the individual (unobservable) part of taste.
    pub taste_noise: f64,
}

impl Default for UsersCfg {
    fn default() -> Self {
        UsersCfg {
            age_buckets: 6,
            genders: 2,
            regions: 8,
            activity_median: 2.0,
            activity_sigma: 0.6,
            patience_median: 3.0,
            patience_sigma: 0.35,
            taste_feature_weight: 0.7,
            taste_noise: 0.7,
        }
    }
}

/// Overrides for one author (used by presets such as the long-term probe).
/// Unset fields keep the generated value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorOverride {
    /// 0-based index of the author to override (author_id = index + 1).
    pub index: usize,
    /// Replace the author's affinity bias (added to every user's affinity).
    pub affinity_bias: Option<f64>,
    /// Scale of the style vector (0: taste does not matter for this author).
    pub vector_scale: Option<f64>,
    /// Relationship growth multiplier ("bond"; 0: no relationship ever grows).
    pub bond: Option<f64>,
    /// Quality of every item of this author.
    pub quality: Option<f64>,
    /// Click-bait propensity of every item of this author.
    pub clickbait: Option<f64>,
    /// Duration in seconds of every item of this author.
    pub duration_s: Option<f64>,
    /// Gift logit boost (live-streamer-like authors get more gifts).
    pub gift_boost: Option<f64>,
}

/// Author population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorsCfg {
    /// Weight of the category centroid in the author's style vector.
    pub category_weight: f64,
    /// Standard deviation of the individual part of the style vector.
    pub style_noise: f64,
    /// Standard deviation of the author-level quality offset of its items.
    pub quality_sigma: f64,
    /// Log-space sd of the bond (relationship growth multiplier, median 1).
    pub bond_sigma: f64,
    /// Fraction of authors that are live-streamer-like (receive gifts).
    pub streamer_frac: f64,
    /// Gift logit boost of streamer-like authors.
    pub streamer_gift_boost: f64,
    /// Log-space sd of author popularity (drives the popular retrieval
    /// channel; its quartile is `item_feats[2]`).
    pub popularity_sigma: f64,
    /// Per-author overrides (`[[authors.overrides]]`), applied after generation.
    pub overrides: Vec<AuthorOverride>,
}

impl Default for AuthorsCfg {
    fn default() -> Self {
        AuthorsCfg {
            category_weight: 0.8,
            style_noise: 0.6,
            quality_sigma: 0.4,
            bond_sigma: 0.5,
            streamer_frac: 0.15,
            streamer_gift_boost: 2.5,
            popularity_sigma: 1.0,
            overrides: Vec::new(),
        }
    }
}

/// Item catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ItemsCfg {
    /// Probability that an item has its author's category (else a random one).
    pub own_category_prob: f64,
    /// Median item duration in seconds (log-normal).
    pub duration_median_s: f64,
    /// Log-space sd of the duration.
    pub duration_sigma: f64,
    /// Shortest duration in seconds.
    pub duration_min_s: f64,
    /// Longest duration in seconds (bounds how long one item can hold a user).
    pub duration_max_s: f64,
    /// Standard deviation of the item's own quality around its author's.
    pub quality_sigma: f64,
    /// Fraction of click-bait items.
    pub clickbait_frac: f64,
    /// Click-bait propensity of a click-bait item is uniform in [min, 1].
    pub clickbait_min: f64,
}

impl Default for ItemsCfg {
    fn default() -> Self {
        ItemsCfg {
            own_category_prob: 0.8,
            duration_median_s: 20.0,
            duration_sigma: 0.7,
            duration_min_s: 5.0,
            duration_max_s: 180.0,
            quality_sigma: 0.6,
            clickbait_frac: 0.08,
            clickbait_min: 0.5,
        }
    }
}
