//! The static world: users, authors and items with their latent traits,
//! generated once from the config and the seed.

use crate::config::SimConfig;
use crate::rng::{hash_normal, hash_words, Rng};

/// A user. Ids are `index + 1`.
#[derive(Clone, Debug)]
pub struct User {
    /// user_id on the wire.
    pub id: u64,
    /// Static categorical features: [age bucket, gender, region, activity bucket].
    pub feats: Vec<u32>,
    /// Latent taste vector.
    pub taste: Vec<f64>,
    /// Expected sessions per day.
    pub activity: f64,
    /// Base temper: what each session starts with.
    pub patience: f64,
    /// Author indices the retrieval model thinks this user likes (top by a
    /// noisy affinity estimate).
    pub affinity_pool: Vec<u32>,
}

/// An author. Ids are `index + 1`.
#[derive(Clone, Debug)]
pub struct Author {
    /// author_id on the wire.
    pub id: u64,
    /// Main content category.
    pub category: u32,
    /// Latent style vector (affinity = taste . vector / sqrt(dim) + ...).
    pub vector: Vec<f64>,
    /// Added to every user's affinity to this author.
    pub affinity_bias: f64,
    /// Relationship growth multiplier.
    pub bond: f64,
    /// Gift logit boost.
    pub gift_boost: f64,
    /// Popularity weight (popular retrieval channel).
    pub popularity: f64,
    /// Popularity quartile, 0..4 (`item_feats[2]`).
    pub tier: u32,
    /// Indices of this author's items.
    pub items: Vec<u32>,
}

/// An item. Ids are `index + 1`.
#[derive(Clone, Debug)]
pub struct Item {
    /// item_id on the wire.
    pub id: u64,
    /// Index of the author.
    pub author: u32,
    /// Static categorical features: [category, duration bucket, author tier].
    pub feats: Vec<u32>,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Quality (about N(0, 1)).
    pub quality: f64,
    /// Click-bait propensity in [0, 1] (0 for most items).
    pub clickbait: f64,
}

/// The generated world.
#[derive(Clone, Debug)]
pub struct World {
    /// Users by index.
    pub users: Vec<User>,
    /// Authors by index.
    pub authors: Vec<Author>,
    /// Items by index.
    pub items: Vec<Item>,
    /// Running sums of item popularity weights (popular retrieval).
    pub popularity_cum: Vec<f64>,
    pair_seed: u64,
    pair_noise: f64,
    inv_sqrt_dim: f64,
    /// Precomputed affinities (user-major) when the matrix is small.
    affinity_cache: Vec<f64>,
}

/// Affinity matrices up to this many entries are precomputed.
const AFFINITY_CACHE_MAX: usize = 1 << 22;

/// Duration bucket: <15 s, <30 s, <60 s, <120 s, longer.
pub fn duration_bucket(d: f64) -> u32 {
    [15.0, 30.0, 60.0, 120.0]
        .iter()
        .filter(|&&b| d >= b)
        .count() as u32
}

fn gaussian_vec(rng: &mut Rng, dim: usize) -> Vec<f64> {
    (0..dim).map(|_| rng.normal()).collect()
}

/// Items per author: 1 + a Zipf-proportional share of the rest (largest
/// remainder), ranks in a random order.
fn items_per_author(cfg: &SimConfig, rng: &mut Rng) -> Vec<usize> {
    let n = cfg.world.n_authors;
    let extra = cfg.world.n_items - n;
    let mut rank: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut rank);
    let w: Vec<f64> = rank
        .iter()
        .map(|&r| 1.0 / ((r + 1) as f64).powf(cfg.world.items_zipf_exponent))
        .collect();
    let total: f64 = w.iter().sum();
    let exact: Vec<f64> = w.iter().map(|x| x / total * extra as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = extra - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for &a in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[a] += 1;
        left -= 1;
    }
    counts.iter().map(|c| c + 1).collect()
}

impl World {
    /// Generates the world. Deterministic in (cfg, seed).
    pub fn generate(cfg: &SimConfig, seed: u64) -> World {
        let mut rng = Rng::derive(seed, &[0x57_4f_52_4c_44]);
        let dim = cfg.world.taste_dim;
        let (uc, ac, ic) = (&cfg.users, &cfg.authors, &cfg.items);
        let cat_centroids: Vec<Vec<f64>> = (0..cfg.world.n_categories)
            .map(|_| gaussian_vec(&mut rng, dim))
            .collect();
        let age_centroids: Vec<Vec<f64>> = (0..uc.age_buckets)
            .map(|_| gaussian_vec(&mut rng, dim))
            .collect();
        let region_centroids: Vec<Vec<f64>> = (0..uc.regions)
            .map(|_| gaussian_vec(&mut rng, dim))
            .collect();

        // Authors.
        let mut authors: Vec<Author> = (0..cfg.world.n_authors)
            .map(|a| {
                let category = rng.below(cfg.world.n_categories as u64) as u32;
                let vector = (0..dim)
                    .map(|d| {
                        ac.category_weight * cat_centroids[category as usize][d]
                            + ac.style_noise * rng.normal()
                    })
                    .collect();
                let streamer = rng.bernoulli(ac.streamer_frac);
                Author {
                    id: a as u64 + 1,
                    category,
                    vector,
                    affinity_bias: ac.quality_sigma * rng.normal(),
                    bond: rng.lognormal(1.0, ac.bond_sigma),
                    gift_boost: if streamer {
                        ac.streamer_gift_boost
                    } else {
                        0.0
                    },
                    popularity: rng.lognormal(1.0, ac.popularity_sigma),
                    tier: 0,
                    items: Vec::new(),
                }
            })
            .collect();
        let mut pops: Vec<f64> = authors.iter().map(|a| a.popularity).collect();
        pops.sort_by(f64::total_cmp);
        for a in &mut authors {
            a.tier = (pops.partition_point(|&p| p < a.popularity) * 4 / pops.len()) as u32;
        }

        // Items.
        let counts = items_per_author(cfg, &mut rng);
        let mut items = Vec::with_capacity(cfg.world.n_items);
        for (a, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                let author = &mut authors[a];
                let category = if rng.bernoulli(ic.own_category_prob) {
                    author.category
                } else {
                    rng.below(cfg.world.n_categories as u64) as u32
                };
                let duration_s = rng
                    .lognormal(ic.duration_median_s, ic.duration_sigma)
                    .clamp(ic.duration_min_s, ic.duration_max_s)
                    .round();
                // The author's quality offset doubles as its affinity bias
                // source: good authors are liked by everybody a little.
                let quality = author.affinity_bias + ic.quality_sigma * rng.normal();
                let clickbait = if rng.bernoulli(ic.clickbait_frac) {
                    rng.range_f64(ic.clickbait_min, 1.0)
                } else {
                    0.0
                };
                let idx = items.len() as u32;
                author.items.push(idx);
                items.push(Item {
                    id: idx as u64 + 1,
                    author: a as u32,
                    feats: vec![category, duration_bucket(duration_s), author.tier],
                    duration_s,
                    quality,
                    clickbait,
                });
            }
        }
        for a in &mut authors {
            a.affinity_bias *= 0.5;
        }
        apply_overrides(cfg, &mut authors, &mut items);

        let mut popularity_cum = Vec::with_capacity(items.len());
        let mut acc = 0.0;
        for it in &items {
            acc += authors[it.author as usize].popularity * (0.5 * it.quality).exp();
            popularity_cum.push(acc);
        }

        // Users.
        let mut world = World {
            users: Vec::new(),
            authors,
            items,
            popularity_cum,
            pair_seed: hash_words(&[seed, 0x50_41_49_52]),
            pair_noise: cfg.response.pair_noise,
            inv_sqrt_dim: 1.0 / (dim as f64).sqrt(),
            affinity_cache: Vec::new(),
        };
        for u in 0..cfg.world.n_users {
            let age = rng.below(uc.age_buckets as u64) as u32;
            let gender = rng.below(uc.genders as u64) as u32;
            let region = rng.below(uc.regions as u64) as u32;
            let activity = rng.lognormal(uc.activity_median, uc.activity_sigma);
            let bucket = [1.0, 2.0, 4.0].iter().filter(|&&b| activity >= b).count() as u32;
            let taste = (0..dim)
                .map(|d| {
                    uc.taste_feature_weight
                        * (age_centroids[age as usize][d] + region_centroids[region as usize][d])
                        / std::f64::consts::SQRT_2
                        + uc.taste_noise * rng.normal()
                })
                .collect();
            world.users.push(User {
                id: u as u64 + 1,
                feats: vec![age, gender, region, bucket],
                taste,
                activity,
                patience: rng.lognormal(uc.patience_median, uc.patience_sigma),
                affinity_pool: Vec::new(),
            });
            let mut scored: Vec<(f64, u32)> = (0..world.authors.len())
                .map(|a| {
                    let est = world.affinity(u, a) + cfg.retrieval.affinity_noise * rng.normal();
                    (est, a as u32)
                })
                .collect();
            scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            scored.truncate(cfg.retrieval.affinity_pool);
            world.users[u].affinity_pool = scored.into_iter().map(|(_, a)| a).collect();
        }
        let n_pairs = world.users.len() * world.authors.len();
        if n_pairs <= AFFINITY_CACHE_MAX {
            let cache: Vec<f64> = (0..n_pairs)
                .map(|p| world.compute_affinity(p / world.authors.len(), p % world.authors.len()))
                .collect();
            world.affinity_cache = cache;
        }
        world
    }

    /// Latent affinity of user `u` to author `a` (indices): taste . style /
    /// sqrt(dim) + the author's bias + static per-pair noise.
    pub fn affinity(&self, u: usize, a: usize) -> f64 {
        match self.affinity_cache.get(u * self.authors.len() + a) {
            Some(&x) => x,
            None => self.compute_affinity(u, a),
        }
    }

    fn compute_affinity(&self, u: usize, a: usize) -> f64 {
        let (user, author) = (&self.users[u], &self.authors[a]);
        let dot: f64 = user
            .taste
            .iter()
            .zip(&author.vector)
            .map(|(x, y)| x * y)
            .sum();
        let noise = if self.pair_noise > 0.0 {
            self.pair_noise * hash_normal(hash_words(&[self.pair_seed, u as u64, a as u64]))
        } else {
            0.0
        };
        dot * self.inv_sqrt_dim + author.affinity_bias + noise
    }

    /// Index of a user id.
    pub fn user_index(&self, user_id: u64) -> Option<usize> {
        let i = user_id.checked_sub(1)? as usize;
        (i < self.users.len()).then_some(i)
    }

    /// Index of an item id.
    pub fn item_index(&self, item_id: u64) -> Option<usize> {
        let i = item_id.checked_sub(1)? as usize;
        (i < self.items.len()).then_some(i)
    }

    /// Index of an author id.
    pub fn author_index(&self, author_id: u64) -> Option<usize> {
        let i = author_id.checked_sub(1)? as usize;
        (i < self.authors.len()).then_some(i)
    }
}

fn apply_overrides(cfg: &SimConfig, authors: &mut [Author], items: &mut [Item]) {
    for o in &cfg.authors.overrides {
        let a = &mut authors[o.index];
        if let Some(v) = o.affinity_bias {
            a.affinity_bias = v;
        }
        if let Some(s) = o.vector_scale {
            a.vector.iter_mut().for_each(|x| *x *= s);
        }
        if let Some(b) = o.bond {
            a.bond = b;
        }
        if let Some(g) = o.gift_boost {
            a.gift_boost = g;
        }
        for &i in &a.items {
            let it = &mut items[i as usize];
            if let Some(q) = o.quality {
                it.quality = q;
            }
            if let Some(c) = o.clickbait {
                it.clickbait = c;
            }
            if let Some(d) = o.duration_s {
                it.duration_s = d;
                it.feats[1] = duration_bucket(d);
            }
        }
    }
}
