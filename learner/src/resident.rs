//! The candle engine's training state, resident on the device: the online
//! and target towers, the assistance net, the embedding tables, and Adam's
//! moments of all of them. A training step sends the batch's row indices,
//! dense features, rewards and gift labels to the device, runs the whole
//! update there (gather, forward, losses, backward, Adam on the nets, sparse
//! Adam on the embedding rows the batch used, soft target update) and reads
//! back one small vector of figures (the loss before the update, for the
//! finiteness check and the progress line).
//!
//! The host `Model` stays the checkpoint and scoring format: the learner
//! uploads it on the first update and downloads the device state when
//! someone reads the model (a checkpoint, a score, a test).
//!
//! Where candle-nn fits: [`DeviceAdam`] implements candle-nn's `Optimizer`
//! (the towers' and the assistance net's Adam). candle-nn's own `AdamW` does
//! not fit: its moments and step count are private, so a checkpoint could
//! neither save nor restore them. candle-nn's `Linear` does not fit the
//! towers: they are stacks of twelve small MLPs run as one batched matmul
//! per layer (`(N, in, out)` weights), not one matrix per layer; and its
//! `Embedding` is a dense lookup whose gradient is a full table, where the
//! step here touches only the rows a batch used.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::Optimizer;

use crate::autograd::{forward_with, host_stack, losses, q_from, Losses};
use crate::embed::{GatherPlan, Lookup};
use crate::model::Model;
use crate::nets::{AdamParams, AdamState, StackParams};
use crate::step::{Grads, StepStats};

/// Adam over candle variables, its moments and step readable and settable
/// (checkpoints); the same update as [`crate::nets::adam_update`].
pub struct DeviceAdam {
    vars: Vec<Var>,
    m: Vec<Var>,
    v: Vec<Var>,
    /// Updates done (the next one is `t + 1`, for the bias correction).
    t: u64,
    hp: AdamParams,
}

impl Optimizer for DeviceAdam {
    type Config = AdamParams;

    fn new(vars: Vec<Var>, hp: AdamParams) -> Result<Self> {
        let zeros = |v: &Var| Var::zeros(v.shape(), v.dtype(), v.device());
        let m = vars.iter().map(zeros).collect::<Result<Vec<_>>>()?;
        let v = vars.iter().map(zeros).collect::<Result<Vec<_>>>()?;
        Ok(DeviceAdam {
            vars,
            m,
            v,
            t: 0,
            hp,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        for ((p, m), v) in self.vars.iter().zip(&self.m).zip(&self.v) {
            if let Some(g) = grads.get(p) {
                let (m2, v2, p2) = adam_tensors(p, m, v, g, self.t, &self.hp)?;
                m.set(&m2)?;
                v.set(&v2)?;
                p.set(&p2)?;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.hp.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.hp.lr = lr;
    }
}

impl DeviceAdam {
    /// Sets the hyperparameters and the number of updates already done
    /// (the learner's global step: resumed runs continue the bias correction).
    pub fn set(&mut self, hp: AdamParams, done: u64) {
        self.hp = hp;
        self.t = done;
    }
}

/// One Adam update of `p` with gradient `g`: the new `(m, v, p)`.
fn adam_tensors(
    p: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    step: u64,
    hp: &AdamParams,
) -> Result<(Tensor, Tensor, Tensor)> {
    let step = step.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - hp.beta1.powi(step);
    let bc2 = 1.0 - hp.beta2.powi(step);
    let m2 = (m.affine(hp.beta1, 0.0)? + g.affine(1.0 - hp.beta1, 0.0)?)?;
    let v2 = (v.affine(hp.beta2, 0.0)? + g.sqr()?.affine(1.0 - hp.beta2, 0.0)?)?;
    let denom = v2.affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, hp.eps)?;
    let p2 = (p - (m2.affine(hp.lr / bc1, 0.0)? / denom)?)?;
    Ok((m2, v2, p2))
}

fn stack_vars(p: &StackParams, dev: &Device) -> Result<Vec<(Var, Var)>> {
    host_stack(p, dev)?
        .into_iter()
        .map(|(w, b)| Ok((Var::from_tensor(&w)?, Var::from_tensor(&b)?)))
        .collect()
}

/// `(w0, b0, w1, b1, ...)`, the order of [`StackParams::buffers`].
fn flat(layers: &[(Var, Var)]) -> Vec<Var> {
    layers
        .iter()
        .flat_map(|(w, b)| [w.clone(), b.clone()])
        .collect()
}

fn refs(layers: &[(Var, Var)]) -> Vec<(&Tensor, &Tensor)> {
    layers
        .iter()
        .map(|(w, b)| (w.as_tensor(), b.as_tensor()))
        .collect()
}

/// Variables back into the host buffers of `out` (in `buffers_mut` order).
fn to_host(vars: &[Var], out: &mut StackParams) -> Result<()> {
    for (v, buf) in vars.iter().zip(out.buffers_mut()) {
        *buf = v.flatten_all()?.to_vec1::<f32>()?;
    }
    Ok(())
}

/// An optimizer over a stack, its moments taken from the host's.
fn adam_for(layers: &[(Var, Var)], host: &AdamState, dev: &Device) -> Result<DeviceAdam> {
    let hp = AdamParams {
        lr: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let opt = DeviceAdam::new(flat(layers), hp)?;
    for ((m, v), (hm, hv)) in opt
        .m
        .iter()
        .zip(&opt.v)
        .zip(host.m.buffers().into_iter().zip(host.v.buffers()))
    {
        m.set(&Tensor::from_slice(hm, m.shape(), dev)?)?;
        v.set(&Tensor::from_slice(hv, v.shape(), dev)?)?;
    }
    Ok(opt)
}

/// One embedding table on the device: weights and Adam's moments, `(rows, dim)`.
struct DeviceTable {
    weight: Tensor,
    m: Tensor,
    v: Tensor,
}

/// A [`GatherPlan`] on the device.
struct DevicePlan {
    /// Per table: its distinct rows (`None`: the batch used none).
    rows: Vec<Option<Tensor>>,
    src: Tensor,
    dst: Tensor,
    samples: usize,
    /// `(samples, DENSE.len())` with `dense_features`.
    dense: Option<Tensor>,
}

/// The hyperparameters of one update.
pub struct UpdateParams {
    /// The update's 1-based global step (bias correction).
    pub step: u64,
    pub nets: AdamParams,
    pub embeddings: AdamParams,
    /// Decoupled weight decay of the embedding rows used.
    pub decay: f64,
    pub tau: f64,
}

pub struct Resident {
    dev: Device,
    dim: usize,
    towers: Vec<(Var, Var)>,
    target: Vec<(Var, Var)>,
    assist: Option<Vec<(Var, Var)>>,
    tower_opt: DeviceAdam,
    assist_opt: Option<DeviceAdam>,
    tables: Vec<DeviceTable>,
    plan: GatherPlan,
    plan_next: GatherPlan,
}

impl Resident {
    /// Uploads the model and its optimizer moments.
    pub fn upload(
        model: &Model,
        tower_adam: &AdamState,
        assist_adam: Option<&AdamState>,
        dev: &Device,
    ) -> Result<Resident> {
        let towers = stack_vars(&model.towers, dev)?;
        let target = stack_vars(&model.target, dev)?;
        let tower_opt = adam_for(&towers, tower_adam, dev)?;
        let (assist, assist_opt) = match &model.assist {
            Some(p) => {
                let layers = stack_vars(p, dev)?;
                let opt = match assist_adam {
                    Some(a) => adam_for(&layers, a, dev)?,
                    None => adam_for(&layers, &AdamState::new(p), dev)?,
                };
                (Some(layers), Some(opt))
            }
            None => (None, None),
        };
        let dim = model.emb.dim;
        let tables = model
            .emb
            .tables
            .iter()
            .map(|t| {
                let shape = (t.rows, dim);
                let moment = |h: &Vec<f32>| {
                    if h.is_empty() {
                        Tensor::zeros(shape, DType::F32, dev)
                    } else {
                        Tensor::from_slice(h, shape, dev)
                    }
                };
                Ok(DeviceTable {
                    weight: Tensor::from_slice(&t.weight, shape, dev)?,
                    m: moment(&t.m)?,
                    v: moment(&t.v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Resident {
            dev: dev.clone(),
            dim,
            towers,
            target,
            assist,
            tower_opt,
            assist_opt,
            tables,
            plan: GatherPlan::default(),
            plan_next: GatherPlan::default(),
        })
    }

    /// Copies the device state into the host model and optimizer moments.
    pub fn download(
        &self,
        model: &mut Model,
        tower_adam: &mut AdamState,
        assist_adam: Option<&mut AdamState>,
    ) -> Result<()> {
        to_host(&flat(&self.towers), &mut model.towers)?;
        to_host(&flat(&self.target), &mut model.target)?;
        to_host(&self.tower_opt.m, &mut tower_adam.m)?;
        to_host(&self.tower_opt.v, &mut tower_adam.v)?;
        if let (Some(layers), Some(p)) = (&self.assist, model.assist.as_mut()) {
            to_host(&flat(layers), p)?;
        }
        if let (Some(opt), Some(a)) = (&self.assist_opt, assist_adam) {
            to_host(&opt.m, &mut a.m)?;
            to_host(&opt.v, &mut a.v)?;
        }
        for (host, dev) in model.emb.tables.iter_mut().zip(&self.tables) {
            host.weight = dev.weight.flatten_all()?.to_vec1::<f32>()?;
            if !host.m.is_empty() {
                host.m = dev.m.flatten_all()?.to_vec1::<f32>()?;
                host.v = dev.v.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        Ok(())
    }

    fn upload_plan(&self, plan: &GatherPlan, dense: &[f32]) -> Result<DevicePlan> {
        let dev = &self.dev;
        let rows = plan
            .rows
            .iter()
            .map(|r| {
                if r.is_empty() {
                    Ok(None)
                } else {
                    Tensor::from_slice(r, r.len(), dev).map(Some)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let dense = if dense.is_empty() {
            None
        } else {
            let nd = dense.len() / plan.samples.max(1);
            Some(Tensor::from_slice(dense, (plan.samples, nd), dev)?)
        };
        Ok(DevicePlan {
            rows,
            src: Tensor::from_slice(&plan.src, plan.src.len(), dev)?,
            dst: Tensor::from_slice(&plan.dst, plan.dst.len(), dev)?,
            samples: plan.samples,
            dense,
        })
    }

    /// The batch's distinct rows `(U, dim)`, tables concatenated in order.
    fn rows(&self, p: &DevicePlan) -> Result<Tensor> {
        let parts = p
            .rows
            .iter()
            .zip(&self.tables)
            .filter_map(|(r, t)| r.as_ref().map(|r| t.weight.index_select(r, 0)))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)
    }

    /// `H (samples, D)` from the distinct rows (gradients flow to `rows`).
    fn h(&self, rows: &Tensor, p: &DevicePlan) -> Result<Tensor> {
        let per_slot = rows.index_select(&p.src, 0)?;
        let seg = Tensor::zeros((p.samples * 3, self.dim), DType::F32, &self.dev)?
            .index_add(&p.dst, &per_slot, 0)?
            .reshape((p.samples, 3 * self.dim))?;
        match &p.dense {
            Some(x) => Tensor::cat(&[&seg, x], 1),
            None => Ok(seg),
        }
    }

    /// The batch on the device: plans for `H_t` and `H_{t+1, j}`, rewards
    /// `(T, b)` and gift labels `(1, b)`.
    fn batch(
        &mut self,
        lookup: &Lookup,
        next: &Lookup,
        rewards: &[f32],
        gift: &[f32],
    ) -> Result<(DevicePlan, DevicePlan, Tensor, Tensor)> {
        let b = lookup.len();
        lookup.plan(&mut self.plan);
        next.plan(&mut self.plan_next);
        let now = self.upload_plan(&self.plan, lookup.dense())?;
        let then = self.upload_plan(&self.plan_next, next.dense())?;
        let t = rewards.len() / b.max(1);
        let rewards = Tensor::from_slice(rewards, (t, b), &self.dev)?;
        let gift = Tensor::from_slice(gift, (1, b), &self.dev)?;
        Ok((now, then, rewards, gift))
    }

    /// The loss of Eq. 10 with the device's parameters, given `H_t` and the
    /// plan of `H_{t+1, j}` (built here, without gradient; the target
    /// towers are read without gradient too).
    fn losses(
        &self,
        model: &Model,
        h: &Tensor,
        then: &DevicePlan,
        rewards: &Tensor,
        gift: &Tensor,
    ) -> Result<Losses> {
        let hn = self.h(&self.rows(then)?, then)?;
        let target: Vec<(Tensor, Tensor)> = self
            .target
            .iter()
            .map(|(w, b)| (w.as_tensor().detach(), b.as_tensor().detach()))
            .collect();
        let target: Vec<(&Tensor, &Tensor)> = target.iter().map(|(w, b)| (w, b)).collect();
        let assist = self.assist.as_deref().map(refs);
        losses(
            model,
            &refs(&self.towers),
            &target,
            assist.as_deref(),
            h,
            &hn,
            rewards,
            gift,
        )
    }

    /// The loss of a batch under the device parameters and, with `grads`,
    /// its gradients (brought to the host: for tests and diagnostics, not
    /// for training).
    pub fn evaluate(
        &mut self,
        model: &Model,
        lookup: &Lookup,
        next: &Lookup,
        rewards: &[f32],
        gift: &[f32],
        grads: bool,
    ) -> Result<(StepStats, Option<Grads>)> {
        let (now, then, rewards, gift) = self.batch(lookup, next, rewards, gift)?;
        let h = Var::from_tensor(&self.h(&self.rows(&now)?, &now)?)?;
        let l = self.losses(model, h.as_tensor(), &then, &rewards, &gift)?;
        let stats = l.stats()?;
        if !grads {
            return Ok((stats, None));
        }
        let g = l.total.backward()?;
        let host_grads = |layers: &[(Var, Var)], like: &StackParams| -> Result<StackParams> {
            let mut out = like.zeros_like();
            for (v, buf) in flat(layers).iter().zip(out.buffers_mut()) {
                if let Some(t) = g.get(v) {
                    *buf = t.flatten_all()?.to_vec1::<f32>()?;
                }
            }
            Ok(out)
        };
        let dx = match g.get(h.as_tensor()) {
            Some(t) => t.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; h.elem_count()],
        };
        Ok((
            stats,
            Some(Grads {
                towers: host_grads(&self.towers, &model.towers)?,
                assist: match (&self.assist, &model.assist) {
                    (Some(a), Some(p)) => Some(host_grads(a, p)?),
                    _ => None,
                },
                dx,
            }),
        ))
    }

    /// One TD update on the device. Returns the figures of the batch before
    /// the update; when its loss is not finite, nothing is updated.
    pub fn train(
        &mut self,
        model: &Model,
        lookup: &Lookup,
        next: &Lookup,
        rewards: &[f32],
        gift: &[f32],
        up: &UpdateParams,
    ) -> Result<StepStats> {
        let (now, then, rewards, gift) = self.batch(lookup, next, rewards, gift)?;
        let rows = Var::from_tensor(&self.rows(&now)?)?;
        let h = self.h(rows.as_tensor(), &now)?;
        let l = self.losses(model, &h, &then, &rewards, &gift)?;
        let stats = l.stats()?;
        if !stats.loss.is_finite() {
            return Ok(stats);
        }
        let g = l.total.backward()?;
        self.tower_opt.set(up.nets, up.step - 1);
        self.tower_opt.step(&g)?;
        if let Some(opt) = self.assist_opt.as_mut() {
            opt.set(up.nets, up.step - 1);
            opt.step(&g)?;
        }
        if let Some(grad_rows) = g.get(rows.as_tensor()) {
            self.sparse_adam(rows.as_tensor(), grad_rows, &now, up)?;
        }
        // Soft target update: target <- tau * online + (1 - tau) * target.
        for ((tw, tb), (ow, ob)) in self.target.iter().zip(&self.towers) {
            for (t, o) in [(tw, ow), (tb, ob)] {
                let next = (o.affine(up.tau, 0.0)? + t.affine(1.0 - up.tau, 0.0)?)?;
                t.set(&next)?;
            }
        }
        Ok(stats)
    }

    /// Lazy Adam on the rows the batch used: each table's rows are read,
    /// updated and written back in place (`scatter_set`); the other rows
    /// and their moments are not touched.
    fn sparse_adam(
        &self,
        rows: &Tensor,
        grad: &Tensor,
        p: &DevicePlan,
        up: &UpdateParams,
    ) -> Result<()> {
        let keep = 1.0 - up.embeddings.lr * up.decay;
        let mut start = 0;
        for (idx, table) in p.rows.iter().zip(&self.tables) {
            let Some(idx) = idx else { continue };
            let n = idx.dims1()?;
            let g = grad.narrow(0, start, n)?;
            let mut w = rows.narrow(0, start, n)?;
            start += n;
            if keep != 1.0 {
                w = w.affine(keep, 0.0)?;
            }
            let m = table.m.index_select(idx, 0)?;
            let v = table.v.index_select(idx, 0)?;
            let (m2, v2, w2) = adam_tensors(&w, &m, &v, &g, up.step, &up.embeddings)?;
            let at = idx
                .unsqueeze(1)?
                .broadcast_as((n, self.dim))?
                .contiguous()?;
            table.weight.scatter_set(&at, &w2.contiguous()?, 0)?;
            table.m.scatter_set(&at, &m2.contiguous()?, 0)?;
            table.v.scatter_set(&at, &v2.contiguous()?, 0)?;
        }
        Ok(())
    }
}

/// The candle engine: a device and, while training, the state on it.
pub struct CandleEngine {
    pub dev: Device,
    /// The training state on the device, built from the host model on the
    /// first update (`None`: the host copy is the newest).
    pub(crate) resident: Option<Box<Resident>>,
}

impl CandleEngine {
    pub fn new(dev: Device) -> Self {
        CandleEngine {
            dev,
            resident: None,
        }
    }

    /// The device state for training, uploaded from the host on first use.
    pub(crate) fn resident(
        &mut self,
        model: &Model,
        tower_adam: &AdamState,
        assist_adam: Option<&AdamState>,
    ) -> Result<&mut Resident> {
        let r = match self.resident.take() {
            Some(r) => r,
            None => Box::new(Resident::upload(model, tower_adam, assist_adam, &self.dev)?),
        };
        Ok(self.resident.insert(r))
    }

    /// Q values `(T, 2, b)` of `x` `(b, d)` under the host parameters of
    /// `model` (scoring a loaded checkpoint: the towers go to the device
    /// for the call).
    pub fn q_values(&self, model: &Model, x: &[f32], b: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(x, (b, model.emb.input_dim()), &self.dev)?;
        let layers = host_stack(&model.towers, &self.dev)?;
        let refs: Vec<(&Tensor, &Tensor)> = layers.iter().map(|(w, b)| (w, b)).collect();
        let out = forward_with(&refs, model.towers.nets, &x)?;
        let (_, q) = q_from(model, &out)?;
        q.flatten_all()?.to_vec1::<f32>()
    }
}
