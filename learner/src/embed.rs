//! The shared embedding layer, kept in host memory and trained with a lazy
//! (sparse) Adam: a step touches only the rows its batch used.
//!
//! The model input `H = concat(h_u, h_a, h_ua)` of a sample is a sum of rows
//! (paper Fig. 3):
//! - `h_u`  = user-id row + one row per `user_feats` field value;
//! - `h_a`  = author-id row + item-id row + one row per `item_feats` field value;
//! - `h_ua` = one row per pair counter, bucketized by `log2(1 + count)`.
//!
//! Ids are hashed into tables of `id_rows` rows with a fixed seed; feature
//! values are hashed with their field index and side into one shared table.
//! Gathering builds `H` for a batch; scattering takes `dL/dH` back to the rows.

use rliv_state::{mix64, FastMap, StateCounts};

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

/// What the model needs to know about one (user, author, item) at one state.
#[derive(Clone, Copy, Debug)]
pub struct PairInput<'a> {
    pub user_id: u64,
    pub author_id: u64,
    pub item_id: u64,
    pub user_feats: &'a [u32],
    pub item_feats: &'a [u32],
    pub counts: StateCounts,
}

/// `min(floor(log2(1 + count)), buckets - 1)`.
pub fn bucket(count: u64, buckets: usize) -> usize {
    let b = (u64::BITS - count.saturating_add(1).leading_zeros()) as usize - 1;
    b.min(buckets - 1)
}

fn counts_array(c: &StateCounts) -> [u64; 5] {
    [c.exposures, c.clicks, c.watches, c.follows, c.gifts]
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
            COUNTERS.len() * cfg.counter_buckets,
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
            seed: cfg.hash_seed,
            grad_index: FastMap::default(),
            grad_rows: Vec::new(),
            grad_keys: Vec::new(),
        }
    }

    /// Width of `H`.
    pub fn input_dim(&self) -> usize {
        3 * self.dim
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
        if lookup.offsets.is_empty() {
            lookup.offsets.push(0);
        }
        let (item_id, item_feats) = item.unwrap_or((x.item_id, x.item_feats));
        let s = &mut lookup.slots;
        s.push(Slot {
            table: USER,
            seg: 0,
            row: self.id_row(USER, x.user_id),
        });
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
        for (c, count) in counts_array(&x.counts).iter().enumerate() {
            s.push(Slot {
                table: COUNTER,
                seg: 2,
                row: (c * self.buckets + bucket(*count, self.buckets)) as u32,
            });
        }
        lookup.offsets.push(s.len());
    }

    /// Fills `out` (len = samples x input_dim) with `H` of every sample.
    pub fn gather(&self, lookup: &Lookup, out: &mut Vec<f32>) {
        let d = self.dim;
        let width = 3 * d;
        out.clear();
        out.resize(lookup.len() * width, 0.0);
        for (i, w) in lookup.offsets.windows(2).enumerate() {
            let row_out = &mut out[i * width..(i + 1) * width];
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
    pub fn adam_step(&mut self, lookup: &Lookup, grad_h: &[f32], step: u64, cfg: &AdamParams) {
        let d = self.dim;
        let width = 3 * d;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
