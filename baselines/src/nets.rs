//! Shared building blocks of the baselines: parameters initialised from the
//! simulator's seeded generator (candle's CPU generator cannot be seeded, and
//! every method must be deterministic per seed), MLPs, the field embedding,
//! Adam with one learning rate for the networks and one for the embedding
//! (paper Table 1), soft target updates and batch tensors.

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{AdamW, Embedding, Linear, Optimizer, ParamsAdamW};
use rliv_sim::rng::Rng;

use crate::features::{ItemEnc, UserEnc, ITEM_DENSE, ITEM_FIELDS, USER_DENSE, USER_FIELDS};

/// Creates parameters from a seeded generator and remembers them, split into
/// network weights and embedding tables (trained with different rates).
pub struct Params {
    rng: Rng,
    /// Network weights (Linear layers).
    pub net: Vec<Var>,
    /// Embedding tables.
    pub emb: Vec<Var>,
}

impl Params {
    /// Parameters drawn from `seed`.
    pub fn new(seed: u64) -> Params {
        Params {
            rng: Rng::new(seed),
            net: Vec::new(),
            emb: Vec::new(),
        }
    }

    fn uniform(&mut self, shape: (usize, usize), bound: f64) -> Result<Var> {
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| self.rng.range_f64(-bound, bound) as f32)
            .collect();
        Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    /// A linear layer `in_dim -> out_dim`, weights and bias uniform in
    /// +-1/sqrt(in_dim) (the usual default).
    pub fn linear(&mut self, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
        let w = self.uniform((out_dim, in_dim), bound)?;
        let b = self.uniform((1, out_dim), bound)?;
        let b_flat = b.as_tensor().flatten_all()?;
        // The bias Var must be the tensor the layer uses, so keep it 1-D.
        let b = Var::from_tensor(&b_flat)?;
        let layer = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        self.net.push(w);
        self.net.push(b);
        Ok(layer)
    }

    /// An MLP `in_dim -> hidden... -> out_dim` with ReLU between layers.
    pub fn mlp(&mut self, in_dim: usize, hidden: &[usize], out_dim: usize) -> Result<Mlp> {
        let mut layers = Vec::new();
        let mut d = in_dim;
        for &h in hidden {
            layers.push(self.linear(d, h)?);
            d = h;
        }
        layers.push(self.linear(d, out_dim)?);
        Ok(Mlp { layers })
    }

    /// An embedding table `rows x dim`, entries N(0, 0.1^2)-like (uniform
    /// with the same spread).
    pub fn embedding(&mut self, rows: usize, dim: usize) -> Result<Embedding> {
        let t = self.uniform((rows, dim), 0.17)?;
        let e = Embedding::new(t.as_tensor().clone(), dim);
        self.emb.push(t);
        Ok(e)
    }

    /// All parameters, networks first.
    pub fn all(&self) -> Vec<Var> {
        self.net.iter().chain(&self.emb).cloned().collect()
    }
}

/// A stack of linear layers with ReLU between them (none after the last).
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

/// Adam (no weight decay) over two groups: networks at `lr`, embeddings at
/// `embedding_lr`. The embedding tables use lazy Adam (only the rows with a
/// gradient move, and only their moments decay), as embedding tables usually
/// are trained: a batch touches a few hundred of the table's rows, and a
/// dense step over the whole table would cost most of an update.
pub struct Adam2 {
    net: AdamW,
    emb: LazyAdam,
}

impl Adam2 {
    /// Optimizers over `net` and `emb`.
    pub fn new(net: Vec<Var>, lr: f64, emb: Vec<Var>, embedding_lr: f64) -> Result<Adam2> {
        let p = ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        Ok(Adam2 {
            net: AdamW::new(net, p)?,
            emb: LazyAdam::new(emb, embedding_lr)?,
        })
    }

    /// One step on the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.net.step(&grads)?;
        self.emb.step(&grads)
    }
}

/// Adam on the rows of 2-D tables that received a gradient.
struct LazyAdam {
    tables: Vec<(Var, Vec<f32>, Vec<f32>)>,
    lr: f64,
    t: i32,
}

impl LazyAdam {
    fn new(vars: Vec<Var>, lr: f64) -> Result<LazyAdam> {
        let tables = vars
            .into_iter()
            .map(|v| {
                let n = v.as_tensor().elem_count();
                (v, vec![0f32; n], vec![0f32; n])
            })
            .collect();
        Ok(LazyAdam { tables, lr, t: 0 })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.t = self.t.saturating_add(1);
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let step = (self.lr * c2.sqrt() / c1) as f32;
        for (var, m, v) in &mut self.tables {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let dims = var.as_tensor().dims().to_vec();
            let dim = dims.last().copied().unwrap_or(1).max(1);
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for (row, gr) in g.chunks(dim).enumerate() {
                if gr.iter().all(|x| *x == 0.0) {
                    continue;
                }
                let base = row * dim;
                for (j, &gj) in gr.iter().enumerate() {
                    let i = base + j;
                    m[i] = (B1 as f32) * m[i] + (1.0 - B1 as f32) * gj;
                    v[i] = (B2 as f32) * v[i] + (1.0 - B2 as f32) * gj * gj;
                    theta[i] -= step * m[i] / (v[i].sqrt() + EPS as f32);
                }
            }
            var.set(&Tensor::from_vec(theta, dims, &Device::Cpu)?)?;
        }
        Ok(())
    }
}

/// target <- tau * online + (1 - tau) * target, pairwise.
pub fn soft_update(target: &[Var], online: &[Var], tau: f64) -> Result<()> {
    for (t, o) in target.iter().zip(online) {
        let next = ((o.as_tensor() * tau)? + (t.as_tensor() * (1.0 - tau))?)?;
        t.set(&next)?;
    }
    Ok(())
}

/// target <- online, pairwise.
pub fn hard_update(target: &[Var], online: &[Var]) -> Result<()> {
    for (t, o) in target.iter().zip(online) {
        t.set(&o.as_tensor().copy()?)?;
    }
    Ok(())
}

/// A batch of (user, item) pairs as tensors.
pub struct PairBatch {
    /// `[B, USER_FIELDS]` u32 rows.
    pub user_ids: Tensor,
    /// `[B, USER_DENSE]` f32.
    pub user_dense: Tensor,
    /// `[B, ITEM_FIELDS]` u32 rows.
    pub item_ids: Tensor,
    /// `[B, ITEM_DENSE]` f32.
    pub item_dense: Tensor,
}

impl PairBatch {
    /// Row `i` is (`users[i]`, `items[i]`).
    pub fn new(users: &[&UserEnc], items: &[&ItemEnc]) -> Result<PairBatch> {
        let n = users.len().min(items.len());
        let dev = &Device::Cpu;
        let uid: Vec<u32> = users[..n].iter().flat_map(|u| u.ids).collect();
        let ud: Vec<f32> = users[..n].iter().flat_map(|u| u.dense).collect();
        let iid: Vec<u32> = items[..n].iter().flat_map(|i| i.ids).collect();
        let idn: Vec<f32> = items[..n].iter().flat_map(|i| i.dense).collect();
        Ok(PairBatch {
            user_ids: Tensor::from_vec(uid, (n, USER_FIELDS), dev)?,
            user_dense: Tensor::from_vec(ud, (n, USER_DENSE), dev)?,
            item_ids: Tensor::from_vec(iid, (n, ITEM_FIELDS), dev)?,
            item_dense: Tensor::from_vec(idn, (n, ITEM_DENSE), dev)?,
        })
    }

    /// Every item of `items` paired with the same `user`.
    pub fn for_user(user: &UserEnc, items: &[ItemEnc]) -> Result<PairBatch> {
        let users: Vec<&UserEnc> = vec![user; items.len()];
        let items: Vec<&ItemEnc> = items.iter().collect();
        PairBatch::new(&users, &items)
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.user_ids.dims()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One embedding table shared by every id field.
#[derive(Clone, Debug)]
pub struct Fields {
    table: Embedding,
    /// Embedding dimension.
    pub dim: usize,
}

impl Fields {
    /// A table of `rows x dim`.
    pub fn new(p: &mut Params, rows: usize, dim: usize) -> Result<Fields> {
        Ok(Fields {
            table: p.embedding(rows, dim)?,
            dim,
        })
    }

    /// `[B, F]` rows -> `[B, F, dim]`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        self.table.forward(ids)
    }

    /// Width of [`Self::user_input`].
    pub fn user_width(&self) -> usize {
        USER_FIELDS * self.dim + USER_DENSE
    }

    /// Width of [`Self::item_input`].
    pub fn item_width(&self) -> usize {
        ITEM_FIELDS * self.dim + ITEM_DENSE
    }

    /// The user side, flattened: `[B, user_width]`.
    pub fn user_input(&self, b: &PairBatch) -> Result<Tensor> {
        let e = self.lookup(&b.user_ids)?.flatten_from(1)?;
        Tensor::cat(&[&e, &b.user_dense], D::Minus1)
    }

    /// The item side, flattened: `[B, item_width]`.
    pub fn item_input(&self, b: &PairBatch) -> Result<Tensor> {
        let e = self.lookup(&b.item_ids)?.flatten_from(1)?;
        Tensor::cat(&[&e, &b.item_dense], D::Minus1)
    }

    /// Both sides: `[B, user_width + item_width]`.
    pub fn pair_input(&self, b: &PairBatch) -> Result<Tensor> {
        Tensor::cat(&[&self.user_input(b)?, &self.item_input(b)?], D::Minus1)
    }
}

/// A `[n]` f32 tensor.
pub fn vector(xs: &[f32]) -> Result<Tensor> {
    Tensor::from_slice(xs, xs.len(), &Device::Cpu)
}

/// A `[B, 1]` or `[B]` tensor as a Vec.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_deterministic_per_seed() {
        let a = Params::new(3).linear(4, 2).expect("a");
        let b = Params::new(3).linear(4, 2).expect("b");
        let c = Params::new(4).linear(4, 2).expect("c");
        let x = Tensor::ones((1, 4), DType::F32, &Device::Cpu).expect("x");
        let fa = to_vec(&a.forward(&x).expect("fa")).expect("va");
        assert_eq!(fa, to_vec(&b.forward(&x).expect("fb")).expect("vb"));
        assert_ne!(fa, to_vec(&c.forward(&x).expect("fc")).expect("vc"));
    }

    #[test]
    fn soft_update_moves_the_target_by_tau() {
        let mut p = Params::new(1);
        let _ = p.linear(2, 1).expect("online");
        let mut q = Params::new(2);
        let _ = q.linear(2, 1).expect("target");
        let before = to_vec(q.net[0].as_tensor()).expect("before");
        let online = to_vec(p.net[0].as_tensor()).expect("online");
        soft_update(&q.net, &p.net, 0.25).expect("update");
        let after = to_vec(q.net[0].as_tensor()).expect("after");
        for ((a, b), o) in after.iter().zip(&before).zip(&online) {
            assert!((a - (0.25 * o + 0.75 * b)).abs() < 1e-6);
        }
    }

    #[test]
    fn lazy_adam_moves_only_the_rows_a_batch_used() {
        let mut p = Params::new(9);
        let table = p.embedding(6, 3).expect("table");
        let before = to_vec(p.emb[0].as_tensor()).expect("before");
        let mut opt = Adam2::new(vec![], 0.0, p.emb.clone(), 0.1).expect("opt");
        let ids = Tensor::new(&[[1u32, 4]], &Device::Cpu).expect("ids");
        let loss = table.forward(&ids).and_then(|e| e.sum_all()).expect("loss");
        opt.backward_step(&loss).expect("step");
        let after = to_vec(p.emb[0].as_tensor()).expect("after");
        for row in 0..6 {
            let moved = (0..3).any(|j| after[row * 3 + j] != before[row * 3 + j]);
            assert_eq!(moved, row == 1 || row == 4, "row {row}");
        }
        // The first Adam step moves each used entry by lr against the gradient (1).
        assert!((before[3] - after[3] - 0.1).abs() < 1e-4);
    }

    #[test]
    fn a_step_of_adam_lowers_a_simple_loss() {
        let mut p = Params::new(5);
        let mlp = p.mlp(3, &[8], 1).expect("mlp");
        let mut opt = Adam2::new(p.net.clone(), 0.01, vec![], 0.0).expect("opt");
        let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu).expect("x");
        let loss = |m: &Mlp| {
            m.forward(&x)
                .and_then(|y| y.sqr())
                .and_then(|y| y.mean_all())
        };
        let l0 = loss(&mlp).expect("l0").to_scalar::<f32>().expect("s0");
        for _ in 0..20 {
            opt.backward_step(&loss(&mlp).expect("l")).expect("step");
        }
        let l1 = loss(&mlp).expect("l1").to_scalar::<f32>().expect("s1");
        assert!(l1 < l0, "{l1} < {l0}");
    }
}
