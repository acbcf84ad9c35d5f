//! The shared embedding layer, kept in host memory and trained with a lazy
//! (sparse) Adam: a step touches only the rows its batch used.
//!
//! The model input `H = concat(h_u, h_a, h_ua)` of a sample is a sum of rows
//! (paper Fig. 3):
//! - `h_u`  = user-id row + one row per `user_feats` field value;
//! - `h_a`  = author-id row + item-id row + one row per `item_feats` field value;
//! - `h_ua` = one row per pair counter, bucketized by `log2(1 + count)`, and
//!   (with `derived_features`) one row per derived feature of the pair's
//!   state: mean watch seconds per exposure, click and watch rates, mean gift
//!   per exposure, and the recency of the pair's last interaction at the
//!   request's time. The counters alone cannot express a pair's mean watch
//!   (`watches` counts views, not seconds), which is what its own history
//!   predicts best.
//!
//! With `dense_features`, `H` ends with a few numbers read from the same
//! pair state ([`DENSE`]), after `h_ua`: they carry no rows and get no
//! gradient step, they only give the first layer a smooth view of the
//! quantities the buckets cut into steps.
//!
//! Ids are hashed into tables of `id_rows` rows with a fixed seed; feature
//! values are hashed with their field index and side into one shared table.
//! Gathering builds `H` for a batch; scattering takes `dL/dH` back to the rows.

use rliv_contract::{mix64, FastMap, PairSnapshot};

use crate::config::LearnerConfig;
use crate::nets::{adam_update, AdamParams};

/// The embedding tables, in checkpoint order.
pub const TABLES: [&str; 5] = ["user", "author", "item", "feature", "counter"];
const USER: u8 = 0;
const AUTHOR: u8 = 1;
const ITEM: u8 = 2;
const FEATURE: u8 = 3;
const COUNTER: u8 = 4;
/// The pair counters of `f_ua` (the ASA state).
pub const COUNTERS: [&str; 5] = ["exposures", "clicks", "watches", "follows", "gifts"];
/// Features derived from the pair's state (rows after the counters' in the
/// counter table, `counter_buckets` each).
pub const DERIVED: [&str; 5] = [
    "mean_watch_sec",
    "click_rate",
    "watch_rate",
    "mean_gift",
    "recency",
];

/// Numbers from the pair's state appended to `H` (with `dense_features`),
/// each scaled to about [0, 1]: `ln(1 + x) / 8` for counts and per-exposure
/// means (8 = e^8, about 3,000), the rates as they are, recency as
/// `ln(1 + minutes) / 12` (12: about 300 days), and two indicators.
pub const DENSE: [&str; 12] = [
    "has_history",
    "log_exposures",
    "log_clicks",
    "log_watches",
    "log_follows",
    "log_gifts",
    "log_mean_watch_sec",
    "click_rate",
    "watch_rate",
    "log_mean_gift",
    "recency_known",
    "log_recency_min",
];

/// The [`DENSE`] values of one input.
pub fn dense_values(x: &PairInput<'_>) -> [f32; 12] {
    let s = &x.state;
    let mut out = [0f32; 12];
    if s.exposures == 0 {
        return out;
    }
    let ln = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v.ln_1p()
        } else {
            0.0
        }
    };
    let n = s.exposures as f64;
    out[0] = 1.0;
    out[1] = (ln(n) / 8.0) as f32;
    out[2] = (ln(s.clicks as f64) / 8.0) as f32;
    out[3] = (ln(s.watches as f64) / 8.0) as f32;
    out[4] = (ln(s.follows as f64) / 8.0) as f32;
    out[5] = (ln(s.gifts as f64) / 8.0) as f32;
    out[6] = (ln(s.watch_sec_total / n) / 8.0) as f32;
    out[7] = (s.clicks as f64 / n).min(1.0) as f32;
    out[8] = (s.watches as f64 / n).min(1.0) as f32;
    out[9] = (ln(s.gift_total / n) / 8.0) as f32;
    if x.ts_ms > 0 && s.last_ts_ms > 0 {
        let minutes = (x.ts_ms - s.last_ts_ms).max(0) as f64 / 60_000.0;
        out[10] = 1.0;
        out[11] = (ln(minutes) / 12.0) as f32;
    }
    out
}

/// What the model needs to know about one (user, author, item) at one state.
#[derive(Clone, Copy, Debug)]
pub struct PairInput<'a> {
    pub user_id: u64,
    pub author_id: u64,
    pub item_id: u64,
    pub user_feats: &'a [u32],
    pub item_feats: &'a [u32],
    /// The pair's state as a request at `ts_ms` could see it.
    pub state: PairSnapshot,
    /// The request's event time (0: unknown, recency is not used).
    pub ts_ms: i64,
}

/// `min(floor(log2(1 + count)), buckets - 1)`.
pub fn bucket(count: u64, buckets: usize) -> usize {
    let b = (u64::BITS - count.saturating_add(1).leading_zeros()) as usize - 1;
    b.min(buckets - 1)
}

fn counts_array(c: &PairSnapshot) -> [u64; 5] {
    [c.exposures, c.clicks, c.watches, c.follows, c.gifts]
}

/// `min(floor(per_octave * log2(1 + x)), buckets - 1)` for `x >= 0`.
fn log_bucket(x: f64, per_octave: f64, buckets: usize) -> usize {
    if !(x.is_finite() && x > 0.0) {
        return 0;
    }
    ((per_octave * (1.0 + x).log2()) as usize).min(buckets - 1)
}

/// The derived features' buckets, in [`DERIVED`] order. Bucket 0 means "no
/// history" (and "unknown time" for recency); rates and means start at 1.
pub fn derived_buckets(x: &PairInput<'_>, buckets: usize) -> [usize; 5] {
    let s = &x.state;
    let top = buckets - 1;
    let mut out = [0usize; 5];
    if s.exposures > 0 {
        let n = s.exposures as f64;
        // Half-octave steps of seconds: 1 s, 1.8 s, 3 s, ... up to hours.
        out[0] = (1 + log_bucket(s.watch_sec_total / n, 2.0, buckets)).min(top);
        // Rates in tenths: 1 + floor(10 * rate) in 1..=11.
        let rate = |k: u64| {
            (1 + (10.0 * k as f64 / n).floor() as usize)
                .min(11)
                .min(top)
        };
        out[1] = rate(s.clicks);
        out[2] = rate(s.watches);
        out[3] = (1 + log_bucket(s.gift_total / n, 2.0, buckets)).min(top);
        if x.ts_ms > 0 && s.last_ts_ms > 0 {
            // log2 of minutes since the last closed exposure: 1 = under a
            // minute, 12 = about a month.
            let minutes = (x.ts_ms - s.last_ts_ms).max(0) as f64 / 60_000.0;
            out[4] = (1 + log_bucket(minutes, 1.0, buckets)).min(top);
        }
    }
    out
}

/// One table row used by a sample, and the segment of `H` it adds into
/// (0 = h_u, 1 = h_a, 2 = h_ua).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    table: u8,
    seg: u8,
    row: u32,
}

/// The rows of a batch: `slots[offsets[i]..offsets[i + 1]]` belong to sample `i`.
#[derive(Default, Debug)]
pub struct Lookup {
    slots: Vec<Slot>,
    offsets: Vec<usize>,
    /// [`DENSE`] values of every sample (with `dense_features`).
    dense: Vec<f32>,
}

impl Lookup {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.offsets.clear();
        self.dense.clear();
    }
}

impl Lookup {
    /// The [`DENSE`] values of every sample, `(samples, DENSE.len())`
    /// (empty without `dense_features`).
    pub fn dense(&self) -> &[f32] {
        &self.dense
    }

    /// The batch's rows laid out for a device gather (see [`GatherPlan`]).
    pub fn plan(&self, plan: &mut GatherPlan) {
        for r in plan.rows.iter_mut() {
            r.clear();
        }
        plan.src.clear();
        plan.dst.clear();
        plan.index.clear();
        plan.samples = self.len();
        // First pass: each distinct (table, row) gets its place in its
        // table's list; `src` holds (table << 32 | place) for now.
        for (i, w) in self.offsets.windows(2).enumerate() {
            for slot in &self.slots[w[0]..w[1]] {
                let key = (u64::from(slot.table) << 32) | u64::from(slot.row);
                let list = &mut plan.rows[slot.table as usize];
                let next = list.len() as u32;
                let at = *plan.index.entry(key).or_insert(next);
                if at == next {
                    list.push(slot.row);
                }
                plan.src.push(at);
                plan.tables.push(slot.table);
                plan.dst.push((i * 3) as u32 + u32::from(slot.seg));
            }
        }
        // Second pass: places become indices into the concatenated lists.
        let mut start = [0u32; 5];
        for t in 1..5 {
            start[t] = start[t - 1] + plan.rows[t - 1].len() as u32;
        }
        for (s, t) in plan.src.iter_mut().zip(plan.tables.drain(..)) {
            *s += start[t as usize];
        }
    }
}

/// A batch's embedding rows as a device gathers them: `H`'s three segments
/// are `zeros(samples * 3, dim).index_add(dst, rows.index_select(src))`,
/// where `rows` is the concatenation, in [`TABLES`] order, of each table's
/// distinct rows (`table.index_select(rows[t])`). The distinct rows are
/// also what the sparse Adam step updates: the gradient of `rows` is each
/// row's gradient summed over the batch.
#[derive(Default, Debug)]
pub struct GatherPlan {
    /// Each table's distinct rows, in order of first use.
    pub rows: [Vec<u32>; 5],
    /// Per slot: its row's index in the concatenation of `rows`.
    pub src: Vec<u32>,
    /// Per slot: `sample * 3 + segment`.
    pub dst: Vec<u32>,
    pub samples: usize,
    index: FastMap<u64, u32>,
    tables: Vec<u8>,
}

impl GatherPlan {
    /// Distinct rows over all tables.
    pub fn distinct(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }
}

/// One embedding table with its Adam moments.
pub struct Table {
    pub rows: usize,
    pub weight: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct Embeddings {
    pub dim: usize,
    pub tables: Vec<Table>,
    id_rows: u64,
    feature_rows: u64,
    buckets: usize,
    derived: bool,
    dense: bool,
    seed: u64,
    /// Scratch: gradient rows accumulated per (table, row).
    grad_index: FastMap<u64, usize>,
    grad_rows: Vec<f32>,
    grad_keys: Vec<(u8, u32)>,
}

impl Embeddings {
    /// Tables initialised uniformly in [-0.05, 0.05] from `rng` (`None`:
    /// zeros, to be loaded), with Adam moments only when `moments` (training).
    pub fn new(cfg: &LearnerConfig, rng: Option<&mut crate::rng::Rng>, moments: bool) -> Self {
        let mut rng = rng;
        let dim = cfg.embedding_dim;
        let rows = [
            cfg.id_rows,
            cfg.id_rows,
            cfg.id_rows,
            cfg.feature_rows,
            counter_features(cfg) * cfg.counter_buckets,
        ];
        let tables = rows
            .iter()
            .map(|&r| Table {
                rows: r,
                weight: match rng.as_deref_mut() {
                    Some(rng) => (0..r * dim).map(|_| rng.uniform(-0.05, 0.05)).collect(),
                    None => vec![0.0; r * dim],
                },
                m: if moments {
                    vec![0.0; r * dim]
                } else {
                    Vec::new()
                },
                v: if moments {
                    vec![0.0; r * dim]
                } else {
                    Vec::new()
                },
            })
            .collect();
        Embeddings {
            dim,
            tables,
            id_rows: cfg.id_rows as u64,
            feature_rows: cfg.feature_rows as u64,
            buckets: cfg.counter_buckets,
            derived: cfg.derived_features,
            dense: cfg.dense_features,
            seed: cfg.hash_seed,
            grad_index: FastMap::default(),
            grad_rows: Vec::new(),
            grad_keys: Vec::new(),
        }
    }

    /// Width of `H`.
    pub fn input_dim(&self) -> usize {
        3 * self.dim + if self.dense { DENSE.len() } else { 0 }
    }

    fn id_row(&self, table: u8, id: u64) -> u32 {
        let h = mix64(id ^ mix64(self.seed ^ u64::from(table).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        (h % self.id_rows) as u32
    }

    fn feature_row(&self, side: u64, field: usize, value: u32) -> u32 {
        let h = mix64(
            u64::from(value)
                ^ mix64(
                    self.seed
                        ^ (side << 32)
                        ^ (field as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93),
                ),
        );
        (h % self.feature_rows) as u32
    }

    /// Appends the rows of one sample to `lookup`. `item` overrides the
    /// input's item (the target's candidate items j).
    pub fn push(&self, lookup: &mut Lookup, x: &PairInput<'_>, item: Option<(u64, &[u32])>) {
        self.push_with(lookup, x, item, true);
    }

    /// As [`Embeddings::push`], without the user's id row when `user_id`
    /// is false (id dropout in training: `LearnerConfig::user_id_dropout`).
    pub fn push_with(
        &self,
        lookup: &mut Lookup,
        x: &PairInput<'_>,
        item: Option<(u64, &[u32])>,
        user_id: bool,
    ) {
        if lookup.offsets.is_empty() {
            lookup.offsets.push(0);
        }
        let (item_id, item_feats) = item.unwrap_or((x.item_id, x.item_feats));
        let s = &mut lookup.slots;
        if user_id {
            s.push(Slot {
                table: USER,
                seg: 0,
                row: self.id_row(USER, x.user_id),
            });
        }
        for (f, v) in x.user_feats.iter().enumerate() {
            s.push(Slot {
                table: FEATURE,
                seg: 0,
                row: self.feature_row(1, f, *v),
            });
        }
        s.push(Slot {
            table: AUTHOR,
            seg: 1,
            row: self.id_row(AUTHOR, x.author_id),
        });
        s.push(Slot {
            table: ITEM,
            seg: 1,
            row: self.id_row(ITEM, item_id),
        });
        for (f, v) in item_feats.iter().enumerate() {
            s.push(Slot {
                table: FEATURE,
                seg: 1,
                row: self.feature_row(2, f, *v),
            });
        }
        for (c, count) in counts_array(&x.state).iter().enumerate() {
            s.push(Slot {
                table: COUNTER,
                seg: 2,
                row: (c * self.buckets + bucket(*count, self.buckets)) as u32,
            });
        }
        if self.derived {
            for (f, b) in derived_buckets(x, self.buckets).iter().enumerate() {
                s.push(Slot {
                    table: COUNTER,
                    seg: 2,
                    row: ((COUNTERS.len() + f) * self.buckets + b) as u32,
                });
            }
        }
        lookup.offsets.push(s.len());
        if self.dense {
            lookup.dense.extend_from_slice(&dense_values(x));
        }
    }

    /// Fills `out` (len = samples x input_dim) with `H` of every sample.
    pub fn gather(&self, lookup: &Lookup, out: &mut Vec<f32>) {
        let d = self.dim;
        let width = self.input_dim();
        let nd = width - 3 * d;
        out.clear();
        out.resize(lookup.len() * width, 0.0);
        for (i, w) in lookup.offsets.windows(2).enumerate() {
            let row_out = &mut out[i * width..(i + 1) * width];
            if nd > 0 {
                row_out[3 * d..].copy_from_slice(&lookup.dense[i * nd..(i + 1) * nd]);
            }
            for slot in &lookup.slots[w[0]..w[1]] {
                let t = &self.tables[slot.table as usize];
                let src = &t.weight[slot.row as usize * d..(slot.row as usize + 1) * d];
                let dst = &mut row_out[slot.seg as usize * d..(slot.seg as usize + 1) * d];
                for (o, s) in dst.iter_mut().zip(src) {
                    *o += *s;
                }
            }
        }
    }

    /// Applies one lazy Adam step with `grad_h` = dL/dH (samples x input_dim):
    /// every row used in the batch gets the sum of its gradients, then its
    /// moments and weights are updated; untouched rows are left alone.
    /// `step` is the 1-based global step (bias correction).
    /// `decay` is the decoupled weight decay (see
    /// `LearnerConfig::embedding_weight_decay`): every row used is first
    /// multiplied by `1 - cfg.lr * decay`.
    pub fn adam_step(
        &mut self,
        lookup: &Lookup,
        grad_h: &[f32],
        step: u64,
        cfg: &AdamParams,
        decay: f64,
    ) {
        let keep = (1.0 - cfg.lr * decay) as f32;
        let d = self.dim;
        // dL/dH's dense columns (after 3d) have no rows to update.
        let width = self.input_dim();
        self.grad_index.clear();
        self.grad_keys.clear();
        self.grad_rows.clear();
        for (i, w) in lookup.offsets.windows(2).enumerate() {
            let g_row = &grad_h[i * width..(i + 1) * width];
            for slot in &lookup.slots[w[0]..w[1]] {
                let key = (u64::from(slot.table) << 32) | u64::from(slot.row);
                let next = self.grad_keys.len();
                let at = *self.grad_index.entry(key).or_insert(next);
                if at == next {
                    self.grad_keys.push((slot.table, slot.row));
                    self.grad_rows.extend(std::iter::repeat_n(0.0, d));
                }
                let g = &g_row[slot.seg as usize * d..(slot.seg as usize + 1) * d];
                for (acc, x) in self.grad_rows[at * d..(at + 1) * d].iter_mut().zip(g) {
                    *acc += *x;
                }
            }
        }
        for (k, &(table, row)) in self.grad_keys.iter().enumerate() {
            let t = &mut self.tables[table as usize];
            let r = row as usize * d..(row as usize + 1) * d;
            let g = &self.grad_rows[k * d..(k + 1) * d];
            if keep != 1.0 {
                t.weight[r.clone()].iter_mut().for_each(|w| *w *= keep);
            }
            adam_update(
                &mut t.weight[r.clone()],
                g,
                &mut t.m[r.clone()],
                &mut t.v[r],
                step,
                cfg,
            );
        }
    }

    /// Bytes of weights and of Adam moments (when training).
    pub fn bytes(&self) -> (usize, usize) {
        let w: usize = self.tables.iter().map(|t| t.weight.len() * 4).sum();
        let m: usize = self
            .tables
            .iter()
            .map(|t| (t.m.len() + t.v.len()) * 4)
            .sum();
        (w, m)
    }
}

/// Features (counters, then derived ones) with rows in the counter table.
pub fn counter_features(cfg: &LearnerConfig) -> usize {
    COUNTERS.len()
        + if cfg.derived_features {
            DERIVED.len()
        } else {
            0
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(state: PairSnapshot, ts_ms: i64) -> PairInput<'static> {
        PairInput {
            user_id: 1,
            author_id: 2,
            item_id: 3,
            user_feats: &[],
            item_feats: &[],
            state,
            ts_ms,
        }
    }

    #[test]
    fn derived_features_express_the_pairs_mean_watch_rates_and_recency() {
        // No history: every derived bucket is 0.
        assert_eq!(
            derived_buckets(&input(PairSnapshot::default(), 5), 32),
            [0; 5]
        );
        let s = PairSnapshot {
            exposures: 4,
            clicks: 2,
            watches: 1,
            watch_sec_total: 60.0, // 15 s per exposure
            gift_total: 0.0,
            last_ts_ms: 1_000_000,
            ..PairSnapshot::default()
        };
        // 1 + floor(2 * log2(16)) = 9; rates 1 + floor(10 * 0.5) = 6 and
        // 1 + floor(10 * 0.25) = 3; no gifts: 1; 8 minutes: 1 + floor(log2(9)) = 4.
        let b = derived_buckets(&input(s, 1_000_000 + 8 * 60_000), 32);
        assert_eq!(b, [9, 6, 3, 1, 4]);
        // A pair watched twice as long per exposure lands two buckets higher.
        let longer = PairSnapshot {
            watch_sec_total: 124.0,
            ..s
        };
        assert_eq!(derived_buckets(&input(longer, 0), 32)[0], 11);
        // Unknown request time: recency is 0, the rest unchanged.
        assert_eq!(derived_buckets(&input(s, 0), 32)[4], 0);
        // Capped at the last bucket.
        let huge = PairSnapshot {
            watch_sec_total: 1e30,
            ..s
        };
        assert_eq!(derived_buckets(&input(huge, 0), 8)[0], 7);
    }

    #[test]
    fn weight_decay_shrinks_the_rows_a_batch_used_and_only_those() {
        let cfg = LearnerConfig {
            id_rows: 64,
            feature_rows: 64,
            embedding_dim: 4,
            ..LearnerConfig::default()
        };
        let mut rng = crate::rng::Rng::new(3);
        let mut emb = Embeddings::new(&cfg, Some(&mut rng), true);
        let before: Vec<Vec<f32>> = emb.tables.iter().map(|t| t.weight.clone()).collect();
        let mut lookup = Lookup::default();
        emb.push(&mut lookup, &input(PairSnapshot::default(), 0), None);
        let used: Vec<(u8, u32)> = lookup.slots.iter().map(|s| (s.table, s.row)).collect();
        // A zero gradient: Adam does not move the rows, only the decay does.
        let grad = vec![0.0; emb.input_dim()];
        let hp = AdamParams {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        emb.adam_step(&lookup, &grad, 1, &hp, 5.0);
        let d = emb.dim;
        for (t, table) in emb.tables.iter().enumerate() {
            for row in 0..table.rows {
                let r = row * d..(row + 1) * d;
                let keep = if used.contains(&(t as u8, row as u32)) {
                    1.0 - 0.01 * 5.0
                } else {
                    1.0
                };
                for (w, w0) in table.weight[r.clone()].iter().zip(&before[t][r]) {
                    assert!(
                        (w - w0 * keep).abs() < 1e-7,
                        "table {t} row {row}: {w} vs {w0}"
                    );
                }
            }
        }
        // With no decay the step leaves them as they were.
        let now: Vec<Vec<f32>> = emb.tables.iter().map(|t| t.weight.clone()).collect();
        emb.adam_step(&lookup, &grad, 2, &hp, 0.0);
        assert!(emb.tables.iter().zip(&now).all(|(t, w)| &t.weight == w));
    }

    #[test]
    fn a_gather_plan_rebuilds_h_from_each_tables_distinct_rows() {
        let cfg = LearnerConfig {
            id_rows: 16,
            feature_rows: 8,
            embedding_dim: 4,
            counter_buckets: 8,
            dense_features: true,
            ..LearnerConfig::default()
        };
        let emb = Embeddings::new(&cfg, Some(&mut crate::rng::Rng::new(9)), false);
        let s = PairSnapshot {
            exposures: 3,
            clicks: 1,
            watch_sec_total: 20.0,
            ..PairSnapshot::default()
        };
        // Two samples sharing a user and an author (16 id rows: other ids
        // may collide too), and a sample without its user row.
        let mut lookup = Lookup::default();
        emb.push(&mut lookup, &input(s, 0), None);
        emb.push(&mut lookup, &input(PairSnapshot::default(), 0), None);
        emb.push_with(&mut lookup, &input(s, 0), Some((77, &[])), false);
        let mut plan = GatherPlan::default();
        lookup.plan(&mut plan);
        assert_eq!(plan.samples, 3);
        assert_eq!(plan.src.len(), lookup.slots.len());
        // Every table's rows are distinct, and the user table holds one row.
        for rows in &plan.rows {
            let mut r = rows.clone();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), rows.len());
        }
        assert_eq!(plan.rows[USER as usize].len(), 1);
        // H from the plan, the way a device computes it, equals `gather`.
        let d = emb.dim;
        let rows: Vec<&[f32]> = plan
            .rows
            .iter()
            .enumerate()
            .flat_map(|(t, rows)| {
                let w = &emb.tables[t].weight;
                rows.iter()
                    .map(move |r| &w[*r as usize * d..(*r as usize + 1) * d])
            })
            .collect();
        assert_eq!(rows.len(), plan.distinct());
        let mut seg = vec![0f32; plan.samples * 3 * d];
        for (src, dst) in plan.src.iter().zip(&plan.dst) {
            let out = &mut seg[*dst as usize * d..(*dst as usize + 1) * d];
            for (o, x) in out.iter_mut().zip(rows[*src as usize]) {
                *o += *x;
            }
        }
        let mut h = Vec::new();
        emb.gather(&lookup, &mut h);
        let width = emb.input_dim();
        for i in 0..plan.samples {
            assert_eq!(
                &h[i * width..i * width + 3 * d],
                &seg[i * 3 * d..(i + 1) * 3 * d]
            );
            assert_eq!(
                &h[i * width + 3 * d..(i + 1) * width],
                &lookup.dense()[i * DENSE.len()..(i + 1) * DENSE.len()]
            );
        }
    }

    #[test]
    fn buckets_are_log2_of_one_plus_count_capped() {
        let got: Vec<usize> = [0u64, 1, 2, 3, 6, 7, 1000, u64::MAX]
            .iter()
            .map(|c| bucket(*c, 32))
            .collect();
        // log2(1)=0, log2(2)=1, log2(3)=1.58, log2(4)=2, log2(7)=2.8, log2(8)=3, log2(1001)=9.97, capped.
        assert_eq!(got, vec![0, 1, 1, 2, 2, 3, 9, 31]);
        assert_eq!(bucket(1000, 4), 3);
    }

    #[test]
    fn dense_features_are_scaled_numbers_appended_after_h_ua() {
        assert_eq!(dense_values(&input(PairSnapshot::default(), 5)), [0.0; 12]);
        let s = PairSnapshot {
            exposures: 4,
            clicks: 2,
            watches: 1,
            follows: 1,
            watch_sec_total: 60.0,
            last_ts_ms: 1_000_000,
            ..PairSnapshot::default()
        };
        let v = dense_values(&input(s, 1_000_000 + 8 * 60_000));
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-6;
        assert!(close(v[0], 1.0));
        assert!(close(v[1], 5f64.ln() / 8.0));
        assert!(close(v[4], 2f64.ln() / 8.0));
        assert!(close(v[6], 16f64.ln() / 8.0), "mean watch 15 s: {}", v[6]);
        assert!(close(v[7], 0.5) && close(v[8], 0.25));
        assert!(close(v[9], 0.0));
        assert!(close(v[10], 1.0) && close(v[11], 9f64.ln() / 12.0));
        // Unknown request time: no recency.
        let v0 = dense_values(&input(s, 0));
        assert_eq!((v0[10], v0[11]), (0.0, 0.0));

        // In H they follow the three embedding segments, and only with the switch.
        let mut cfg = LearnerConfig {
            embedding_dim: 4,
            id_rows: 16,
            feature_rows: 16,
            counter_buckets: 8,
            dense_features: true,
            ..LearnerConfig::default()
        };
        let mut rng = crate::rng::Rng::new(1);
        let emb = Embeddings::new(&cfg, Some(&mut rng), false);
        assert_eq!(emb.input_dim(), 12 + DENSE.len());
        let mut lookup = Lookup::default();
        emb.push(&mut lookup, &input(s, 1_000_000 + 8 * 60_000), None);
        emb.push(&mut lookup, &input(PairSnapshot::default(), 0), None);
        let mut h = Vec::new();
        emb.gather(&lookup, &mut h);
        assert_eq!(h.len(), 2 * emb.input_dim());
        assert_eq!(&h[12..12 + DENSE.len()], &v[..]);
        assert_eq!(&h[emb.input_dim() + 12..], &[0.0; 12][..]);
        cfg.dense_features = false;
        let plain = Embeddings::new(&cfg, Some(&mut crate::rng::Rng::new(1)), false);
        assert_eq!(plain.input_dim(), 12);
        let mut h2 = Vec::new();
        plain.gather(&lookup, &mut h2);
        // Same embedding rows, same h_u, h_a, h_ua.
        assert_eq!(&h2[..12], &h[..12]);
    }

    #[test]
    fn a_manifest_written_before_dense_features_loads_without_them() {
        let mut json = serde_json::to_value(LearnerConfig::default()).unwrap();
        json.as_object_mut().unwrap().remove("dense_features");
        let cfg: LearnerConfig = serde_json::from_value(json).unwrap();
        assert!(!cfg.dense_features);
        let on = serde_json::to_value(LearnerConfig {
            dense_features: true,
            ..LearnerConfig::default()
        })
        .unwrap();
        let cfg: LearnerConfig = serde_json::from_value(on).unwrap();
        assert!(cfg.dense_features);
    }
}
