//! The candle engine: the towers as batched candle tensors and the loss of
//! Eq. 10 built from candle ops, with gradients from candle's autograd. Runs
//! on any candle device (CPU, or CUDA with the `cuda` feature). Training
//! keeps every parameter on the device (`resident`); this module holds the
//! graph that training and scoring share.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::config::DoubleQ;
use crate::model::Model;
use crate::nets::StackParams;
use crate::step::StepStats;

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

/// A stack's layers as `(N, in, out)` / `(N, 1, out)` tensors on `dev`.
pub(crate) fn host_stack(p: &StackParams, dev: &Device) -> Result<Vec<(Tensor, Tensor)>> {
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

/// The figures of Eq. 10 as candle tensors, before they are read back.
pub(crate) struct Losses {
    /// The scalar the optimizer follows.
    pub total: Tensor,
    /// `(T)`: each tower's critic loss.
    pub critic: Tensor,
    /// `(T)`: each tower's supervised reward loss (with the head).
    pub reward: Option<Tensor>,
    /// Scalar: the assistance BCE (with the network).
    pub assist: Option<Tensor>,
    /// `(T)`: mean |Q_k - y|.
    pub td_error: Tensor,
}

impl Losses {
    /// Reads every figure back in one transfer.
    pub fn stats(&self) -> Result<StepStats> {
        let t = self.td_error.dims1()?;
        let dev = self.total.device();
        let mut parts = vec![self.total.reshape(1)?, self.critic.clone()];
        parts.push(match &self.reward {
            Some(r) => r.clone(),
            None => Tensor::zeros(t, DType::F32, dev)?,
        });
        parts.push(self.td_error.clone());
        if let Some(a) = &self.assist {
            parts.push(a.reshape(1)?);
        }
        let v = Tensor::cat(&parts, 0)?.to_vec1::<f32>()?;
        Ok(StepStats {
            loss: v[0],
            critic_loss: v[1..1 + t].to_vec(),
            reward_loss: v[1 + t..1 + 2 * t].to_vec(),
            td_error: v[1 + 2 * t..1 + 3 * t].to_vec(),
            assist_loss: self.assist.as_ref().map(|_| v[1 + 3 * t]),
        })
    }
}

/// Splits stacked outputs `(N, B...)` into `r_hat (T, B...)` and
/// `Q (T, 2, B...)` with `Q_k = r_hat + gamma V_k` (Eq. 8), or `Q_k = V_k`.
pub(crate) fn q_from(model: &Model, out: &Tensor) -> Result<(Option<Tensor>, Tensor)> {
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

/// The loss of Eq. 10 as a candle graph: `towers`, `target` and `assist`
/// are the layers of the online towers, the target towers (to be read
/// without gradient) and the assistance net; `h` is `H_t (B, D)`, `hn`
/// `H_{t+1, j} (B * J, D)`, `rewards (T, B)` scaled, `gift (1, B)` labels.
/// `model` gives the shape and the hyperparameters only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn losses(
    model: &Model,
    towers: &[(&Tensor, &Tensor)],
    target: &[(&Tensor, &Tensor)],
    assist: Option<&[(&Tensor, &Tensor)]>,
    h: &Tensor,
    hn: &Tensor,
    rewards: &Tensor,
    gift: &Tensor,
) -> Result<Losses> {
    let cfg = &model.cfg;
    let (b, _) = h.dims2()?;
    let j = hn.dims2()?.0 / b.max(1);
    let delta = cfg.huber_delta;
    // Target (Eq. 5, 7): y = r + gamma * max_j combine_k Q'_k(H_{t+1, j}).
    let out_n = forward_with(target, model.towers.nets, hn)?.reshape((model.towers.nets, b, j))?;
    let (_, qn) = q_from(model, &out_n)?; // (T, 2, B, J)
    let both = match cfg.double_q {
        DoubleQ::Min => qn.min(1)?,
        DoubleQ::Mean => qn.mean(1)?,
    };
    let y = (rewards + both.max(D::Minus1)?.affine(cfg.gamma, 0.0)?)?.detach();

    let (rhat, q) = q_from(model, &forward_with(towers, model.towers.nets, h)?)?;
    let y2 = y.unsqueeze(1)?.broadcast_as(q.shape())?;
    let critic = huber(&q, &y2, delta)?.mean(2)?.sum(1)?; // (T)
    let mut total = critic.sum_all()?;
    let reward = match &rhat {
        Some(rhat) => {
            let l = huber(rhat, rewards, delta)?.mean(1)?;
            total = (total + l.sum_all()?)?;
            Some(l)
        }
        None => None,
    };
    let assist = match assist {
        Some(layers) => {
            let hua = h.narrow(1, 0, 2 * cfg.embedding_dim)?;
            let l = bce_with_logits(&forward_with(layers, 1, &hua)?, gift)?.mean_all()?;
            total = (total + &l)?;
            Some(l)
        }
        None => None,
    };
    let td_error = (&q - &y2)?.abs()?.mean(2)?.mean(1)?.detach();
    Ok(Losses {
        total,
        critic,
        reward,
        assist,
        td_error,
    })
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
