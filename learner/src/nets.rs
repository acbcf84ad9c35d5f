//! Parameters of stacks of small MLPs, the paper's losses and Adam.
//!
//! The twelve MLPs of the four towers (reward head and two value nets each)
//! share their input `H`, so a stack of `N` nets keeps layer `l` as one
//! row-major buffer `(N, in, out)` plus biases `(N, out)`: the layout of the
//! batched candle tensors and of the fused CPU kernels alike. Parameters live
//! in host memory; the engines (`fused`, `autograd`) read them.

use crate::rng::Rng;

/// `N` MLPs of identical shape `dims[0] -> dims[1] -> ... -> 1`, ReLU between layers.
#[derive(Clone, Debug, PartialEq)]
pub struct StackParams {
    pub nets: usize,
    /// Layer widths, input first, output (1) last.
    pub dims: Vec<usize>,
    /// Per layer: `(N, in, out)` row-major.
    pub w: Vec<Vec<f32>>,
    /// Per layer: `(N, out)`.
    pub b: Vec<Vec<f32>>,
}

impl StackParams {
    /// PyTorch `nn.Linear` initialisation: U(-1/sqrt(in), 1/sqrt(in)).
    pub fn new(nets: usize, input: usize, hidden: &[usize], rng: &mut Rng) -> StackParams {
        let mut dims = vec![input];
        dims.extend_from_slice(hidden);
        dims.push(1);
        let mut w = Vec::new();
        let mut b = Vec::new();
        for d in dims.windows(2) {
            let bound = 1.0 / (d[0] as f32).sqrt();
            w.push(
                (0..nets * d[0] * d[1])
                    .map(|_| rng.uniform(-bound, bound))
                    .collect(),
            );
            b.push(
                (0..nets * d[1])
                    .map(|_| rng.uniform(-bound, bound))
                    .collect(),
            );
        }
        StackParams { nets, dims, w, b }
    }

    pub fn zeros_like(&self) -> StackParams {
        StackParams {
            nets: self.nets,
            dims: self.dims.clone(),
            w: self.w.iter().map(|x| vec![0.0; x.len()]).collect(),
            b: self.b.iter().map(|x| vec![0.0; x.len()]).collect(),
        }
    }

    pub fn layers(&self) -> usize {
        self.w.len()
    }

    /// Weights `(in, out)` of net `n` at layer `l`.
    pub fn w_net(&self, l: usize, n: usize) -> &[f32] {
        let size = self.dims[l] * self.dims[l + 1];
        &self.w[l][n * size..(n + 1) * size]
    }

    pub fn b_net(&self, l: usize, n: usize) -> &[f32] {
        let size = self.dims[l + 1];
        &self.b[l][n * size..(n + 1) * size]
    }

    pub fn param_count(&self) -> usize {
        self.w.iter().chain(&self.b).map(Vec::len).sum()
    }

    /// All buffers in a fixed order (w0, b0, w1, b1, ...).
    pub fn buffers(&self) -> Vec<&Vec<f32>> {
        self.w
            .iter()
            .zip(&self.b)
            .flat_map(|(w, b)| [w, b])
            .collect()
    }

    pub fn buffers_mut(&mut self) -> Vec<&mut Vec<f32>> {
        self.w
            .iter_mut()
            .zip(self.b.iter_mut())
            .flat_map(|(w, b)| [w, b])
            .collect()
    }

    /// Soft target update `self <- tau * online + (1 - tau) * self`.
    pub fn soft_update_from(&mut self, online: &StackParams, tau: f32) {
        for (t, o) in self.buffers_mut().into_iter().zip(online.buffers()) {
            for (t, o) in t.iter_mut().zip(o) {
                *t = tau * *o + (1.0 - tau) * *t;
            }
        }
    }
}

/// Huber loss of a difference `d` with threshold `delta`.
#[inline]
pub fn huber(d: f32, delta: f32) -> f32 {
    let a = d.abs();
    if a <= delta {
        0.5 * a * a
    } else {
        delta * (a - 0.5 * delta)
    }
}

/// Derivative of [`huber`] with respect to `d`.
#[inline]
pub fn huber_grad(d: f32, delta: f32) -> f32 {
    d.clamp(-delta, delta)
}

/// Binary cross-entropy of a logit `x` against a label `z` in {0, 1}, in the
/// stable form `max(x, 0) - x z + ln(1 + exp(-|x|))`.
#[inline]
pub fn bce_with_logits(x: f32, z: f32) -> f32 {
    x.max(0.0) - x * z + (-x.abs()).exp().ln_1p()
}

/// Derivative of [`bce_with_logits`] with respect to `x`: `sigmoid(x) - z`.
#[inline]
pub fn bce_grad(x: f32, z: f32) -> f32 {
    1.0 / (1.0 + (-x).exp()) - z
}

/// Adam hyperparameters of one parameter group (no weight decay: the
/// paper's Table 1 says Adam).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// One Adam update of `p` with gradient `g` and moments `m`, `v`, at 1-based `step`.
pub fn adam_update(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: u64,
    hp: &AdamParams,
) {
    let (b1, b2) = (hp.beta1 as f32, hp.beta2 as f32);
    let bc1 = 1.0 - hp.beta1.powi(step.min(i32::MAX as u64) as i32) as f32;
    let bc2 = 1.0 - hp.beta2.powi(step.min(i32::MAX as u64) as i32) as f32;
    let (lr, eps) = (hp.lr as f32, hp.eps as f32);
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
}

/// Adam's moments of a stack.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: StackParams,
    pub v: StackParams,
}

impl AdamState {
    pub fn new(p: &StackParams) -> Self {
        AdamState {
            m: p.zeros_like(),
            v: p.zeros_like(),
        }
    }

    pub fn step(&mut self, p: &mut StackParams, g: &StackParams, step: u64, hp: &AdamParams) {
        let ms = self.m.buffers_mut();
        let vs = self.v.buffers_mut();
        for (((p, g), m), v) in p.buffers_mut().into_iter().zip(g.buffers()).zip(ms).zip(vs) {
            adam_update(p, g, m, v, step, hp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huber_matches_hand_computed_values() {
        // delta = 1:
        //   d = 0.5  -> 0.5 * 0.5^2          = 0.125
        //   d = 2    -> 1 * (2 - 0.5)         = 1.5
        //   d = -2.5 -> 1 * (2.5 - 0.5)       = 2.0
        //   d = 0    -> 0
        // delta = 2: d = 3 -> 2 * (3 - 1) = 4; d = 1.5 -> 0.5 * 2.25 = 1.125
        let cases = [
            (0.5, 1.0, 0.125),
            (2.0, 1.0, 1.5),
            (-2.5, 1.0, 2.0),
            (0.0, 1.0, 0.0),
            (3.0, 2.0, 4.0),
            (1.5, 2.0, 1.125),
        ];
        for (d, delta, want) in cases {
            assert!((huber(d, delta) - want).abs() < 1e-6, "huber({d}, {delta})");
        }
        // The gradient is d inside the threshold, +-delta outside.
        assert_eq!(huber_grad(0.5, 1.0), 0.5);
        assert_eq!(huber_grad(-2.5, 1.0), -1.0);
        assert_eq!(huber_grad(3.0, 2.0), 2.0);
    }

    #[test]
    fn bce_matches_hand_computed_values() {
        // BCE(x, z) = -[z ln s(x) + (1 - z) ln(1 - s(x))], s = sigmoid:
        //   x = 0,  z = 1: -ln(0.5)               = 0.693147
        //   x = 2,  z = 1: ln(1 + e^-2)            = 0.126928
        //   x = 2,  z = 0: -ln(1 - 0.880797)       = 2.126928
        //   x = -3, z = 0: ln(1 + e^-3)            = 0.048587
        //   x = 40, z = 0: 40 (no overflow)
        let cases = [
            (0.0, 1.0, 0.693147),
            (2.0, 1.0, 0.126928),
            (2.0, 0.0, 2.126928),
            (-3.0, 0.0, 0.048587),
            (40.0, 0.0, 40.0),
        ];
        for (x, z, want) in cases {
            assert!((bce_with_logits(x, z) - want).abs() < 1e-5, "bce({x}, {z})");
        }
        // d/dx = sigmoid(x) - z: sigmoid(2) = 0.880797
        assert!((bce_grad(2.0, 1.0) + 0.119203).abs() < 1e-5);
        assert!((bce_grad(0.0, 0.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn one_adam_step_matches_hand_computed_values() {
        // p = [1, -2], g = [0.5, -4], lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, step 1:
        //   m = 0.1 g = [0.05, -0.4];  v = 0.001 g^2 = [0.00025, 0.016]
        //   mhat = m / 0.1 = g;  vhat = v / 0.001 = g^2
        //   p -= 0.1 * g / (|g| + 1e-8) = p - 0.1 sign(g) -> [0.9, -1.9]
        // step 2 with g = [0.5, 0]:
        //   m = [0.9*0.05 + 0.05, 0.9*-0.4] = [0.095, -0.36]; mhat = m / 0.19 = [0.5, -1.894737]
        //   v = [0.999*0.00025 + 0.00025, 0.999*0.016] = [0.00049975, 0.015984]
        //   vhat = v / 0.001999 = [0.25, 7.995998]; sqrt = [0.5, 2.827719]
        //   p -= 0.1 * mhat / sqrt = [0.1, -0.067006] -> [0.8, -1.832994]
        let hp = AdamParams {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let mut p = [1.0f32, -2.0];
        let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
        adam_update(&mut p, &[0.5, -4.0], &mut m, &mut v, 1, &hp);
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6,
            "{p:?}"
        );
        adam_update(&mut p, &[0.5, 0.0], &mut m, &mut v, 2, &hp);
        assert!(
            (p[0] - 0.8).abs() < 1e-5 && (p[1] + 1.832994).abs() < 1e-5,
            "{p:?}"
        );
    }

    #[test]
    fn soft_update_moves_target_by_tau() {
        let mut rng = Rng::new(5);
        let online = StackParams::new(2, 3, &[4], &mut rng);
        let mut target = StackParams::new(2, 3, &[4], &mut rng);
        let before = target.clone();
        target.soft_update_from(&online, 0.25);
        for ((t, o), b) in target.w[0].iter().zip(&online.w[0]).zip(&before.w[0]) {
            // target' = 0.25 online + 0.75 target
            assert!((t - (0.25 * o + 0.75 * b)).abs() < 1e-6);
        }
        for ((t, o), b) in target.b[1].iter().zip(&online.b[1]).zip(&before.b[1]) {
            assert!((t - (0.25 * o + 0.75 * b)).abs() < 1e-6);
        }
    }
}
