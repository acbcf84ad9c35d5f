//! The candle engine: the towers as batched candle tensors, the loss of
//! Eq. 10 built from candle ops, and the gradients from candle's autograd.
//! Runs on any candle device (CPU, or CUDA with the `cuda` feature). It is
//! also the readable reference the fused CPU engine is tested against.

use candle_core::{Device, Result, Tensor, Var, D};

use crate::config::DoubleQ;
use crate::model::Model;
use crate::nets::StackParams;
use crate::step::{BatchData, Grads, StepStats};

pub struct CandleEngine {
    pub dev: Device,
}

/// A stack's layers as `(N, in, out)` / `(N, 1, out)` variables.
struct VarStack {
    layers: Vec<(Var, Var)>,
    nets: usize,
}

impl VarStack {
    fn new(p: &StackParams, dev: &Device) -> Result<VarStack> {
        let layers = (0..p.layers())
            .map(|l| {
                let (i, o) = (p.dims[l], p.dims[l + 1]);
                Ok((
                    Var::from_tensor(&Tensor::from_slice(&p.w[l], (p.nets, i, o), dev)?)?,
                    Var::from_tensor(&Tensor::from_slice(&p.b[l], (p.nets, 1, o), dev)?)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(VarStack {
            layers,
            nets: p.nets,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let layers: Vec<(&Tensor, &Tensor)> = self
            .layers
            .iter()
            .map(|(w, b)| (w.as_tensor(), b.as_tensor()))
            .collect();
        forward_with(&layers, self.nets, x)
    }

    /// Gradients back into a host stack.
    fn grads(
        &self,
        g: &candle_core::backprop::GradStore,
        like: &StackParams,
    ) -> Result<StackParams> {
        let mut out = like.zeros_like();
        for (l, (w, b)) in self.layers.iter().enumerate() {
            if let Some(gw) = g.get(w.as_tensor()) {
                out.w[l] = gw.flatten_all()?.to_vec1::<f32>()?;
            }
            if let Some(gb) = g.get(b.as_tensor()) {
                out.b[l] = gb.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        Ok(out)
    }
}

/// `N` MLPs on the same input `x` `(B, in)`: `H` broadcast to `(N, B, in)`
/// times `(N, in, out)` is one batched GEMM per layer. Returns `(N, B)`.
pub fn forward_with(layers: &[(&Tensor, &Tensor)], nets: usize, x: &Tensor) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    let mut h = x.unsqueeze(0)?.broadcast_as((nets, b, d))?;
    let last = layers.len() - 1;
    for (l, (w, bias)) in layers.iter().enumerate() {
        h = h.matmul(w)?.broadcast_add(bias)?;
        if l < last {
            h = h.relu()?;
        }
    }
    h.squeeze(2)
}

fn host_stack(p: &StackParams, dev: &Device) -> Result<Vec<(Tensor, Tensor)>> {
    (0..p.layers())
        .map(|l| {
            let (i, o) = (p.dims[l], p.dims[l + 1]);
            Ok((
                Tensor::from_slice(&p.w[l], (p.nets, i, o), dev)?,
                Tensor::from_slice(&p.b[l], (p.nets, 1, o), dev)?,
            ))
        })
        .collect()
}

/// Elementwise Huber with threshold `delta`, branch-free: with `a = |x - y|`
/// and `q = min(a, delta)`, `0.5 q^2 + delta (a - q)`.
pub fn huber(x: &Tensor, y: &Tensor, delta: f64) -> Result<Tensor> {
    let a = (x - y)?.abs()?;
    let q = a.clamp(0.0, delta)?;
    let lin = (&a - &q)?;
    q.sqr()?.affine(0.5, 0.0)? + lin.affine(delta, 0.0)?
}

/// Elementwise BCE of logits: `max(x, 0) - x z + ln(1 + exp(-|x|))`.
pub fn bce_with_logits(x: &Tensor, z: &Tensor) -> Result<Tensor> {
    let soft = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (x.relu()? - (x * z)?)? + soft
}

impl CandleEngine {
    pub fn new(dev: Device) -> Self {
        CandleEngine { dev }
    }

    /// Splits stacked outputs `(N, B...)` into `r_hat (T, B...)` and
    /// `Q (T, 2, B...)` with `Q_k = r_hat + gamma V_k` (Eq. 8), or `Q_k = V_k`.
    fn q_from(model: &Model, out: &Tensor) -> Result<(Option<Tensor>, Tensor)> {
        let mut dims = vec![model.labels.len(), model.per_tower];
        dims.extend_from_slice(&out.dims()[1..]);
        let o = out.reshape(dims)?;
        if model.cfg.supervised_head {
            let rhat = o.narrow(1, 0, 1)?;
            let q = o
                .narrow(1, 1, 2)?
                .affine(model.cfg.gamma, 0.0)?
                .broadcast_add(&rhat)?;
            Ok((Some(rhat.squeeze(1)?), q))
        } else {
            Ok((None, o))
        }
    }

    pub fn q_values(&self, model: &Model, x: &[f32], b: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(x, (b, model.emb.input_dim()), &self.dev)?;
        let layers = host_stack(&model.towers, &self.dev)?;
        let refs: Vec<(&Tensor, &Tensor)> = layers.iter().map(|(w, b)| (w, b)).collect();
        let out = forward_with(&refs, model.towers.nets, &x)?;
        let (_, q) = Self::q_from(model, &out)?;
        q.flatten_all()?.to_vec1::<f32>()
    }

    pub fn loss_and_grads(
        &self,
        model: &Model,
        data: &BatchData<'_>,
        want_grads: bool,
    ) -> Result<(StepStats, Option<Grads>)> {
        let dev = &self.dev;
        let cfg = &model.cfg;
        let (b, d, j) = (data.b, data.d, data.j);
        let t = model.labels.len();
        let delta = cfg.huber_delta;
        let rewards = Tensor::from_slice(data.rewards, (t, b), dev)?;
        // Target (Eq. 5, 7): y = r + gamma * max_j combine_k Q'_k(H_{t+1, j}).
        let xn = Tensor::from_slice(data.xn, (b * j, d), dev)?;
        let target = host_stack(&model.target, dev)?;
        let refs: Vec<(&Tensor, &Tensor)> = target.iter().map(|(w, b)| (w, b)).collect();
        let out_n =
            forward_with(&refs, model.target.nets, &xn)?.reshape((model.target.nets, b, j))?;
        let (_, qn) = Self::q_from(model, &out_n)?; // (T, 2, B, J)
        let both = match cfg.double_q {
            DoubleQ::Min => qn.min(1)?,
            DoubleQ::Mean => qn.mean(1)?,
        };
        let y = (&rewards + both.max(D::Minus1)?.affine(cfg.gamma, 0.0)?)?;

        let h = Var::from_tensor(&Tensor::from_slice(data.x, (b, d), dev)?)?;
        let towers = VarStack::new(&model.towers, dev)?;
        let (rhat, q) = Self::q_from(model, &towers.forward(h.as_tensor())?)?;
        let y2 = y.unsqueeze(1)?.broadcast_as(q.shape())?;
        let critic = huber(&q, &y2, delta)?.mean(2)?.sum(1)?; // (T)
        let mut total = critic.sum_all()?;
        let reward_loss = match &rhat {
            Some(rhat) => {
                let l = huber(rhat, &rewards, delta)?.mean(1)?;
                total = (total + l.sum_all()?)?;
                l.to_vec1::<f32>()?
            }
            None => vec![0.0; t],
        };
        let assist = match &model.assist {
            Some(p) => Some(VarStack::new(p, dev)?),
            None => None,
        };
        let mut assist_loss = None;
        if let Some(a) = &assist {
            let hua = h.as_tensor().narrow(1, 0, 2 * cfg.embedding_dim)?;
            let gift = Tensor::from_slice(data.gift, (1, b), dev)?;
            let l = bce_with_logits(&a.forward(&hua)?, &gift)?.mean_all()?;
            assist_loss = Some(l.to_scalar::<f32>()?);
            total = (total + l)?;
        }
        let td_error = (&q - &y2)?.abs()?.mean(2)?.mean(1)?.to_vec1::<f32>()?;
        let stats = StepStats {
            loss: total.to_scalar::<f32>()?,
            reward_loss,
            critic_loss: critic.to_vec1::<f32>()?,
            td_error,
            assist_loss,
        };
        if !want_grads {
            return Ok((stats, None));
        }
        let g = total.backward()?;
        let dx = match g.get(h.as_tensor()) {
            Some(t) => t.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; b * d],
        };
        let grads = Grads {
            towers: towers.grads(&g, &model.towers)?,
            assist: match (&assist, &model.assist) {
                (Some(a), Some(p)) => Some(a.grads(&g, p)?),
                _ => None,
            },
            dx,
        };
        Ok((stats, Some(grads)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn candle_huber_and_bce_match_the_host_functions() -> TestResult {
        let dev = Device::Cpu;
        let x = [0.5f32, 3.0, -2.0, 1.0, 40.0];
        let y = [0.0f32, 1.0, 0.5, 1.0, 0.0];
        let xt = Tensor::new(&x, &dev)?;
        let yt = Tensor::new(&y, &dev)?;
        let h = huber(&xt, &yt, 1.0)?.to_vec1::<f32>()?;
        let c = bce_with_logits(&xt, &yt)?.to_vec1::<f32>()?;
        for i in 0..x.len() {
            assert!((h[i] - crate::nets::huber(x[i] - y[i], 1.0)).abs() < 1e-5);
            let z = if y[i] > 0.5 { 1.0 } else { 0.0 };
            let want = crate::nets::bce_with_logits(x[i], z);
            if z == y[i] {
                assert!((c[i] - want).abs() < 1e-4, "{} vs {want}", c[i]);
            }
        }
        Ok(())
    }
}
