//! The fused CPU engine: forward and backward passes of the towers written
//! out by hand over reused buffers (no allocation per step once warm), with
//! the towers split over threads. Each thread owns whole towers (a tower's
//! reward head, value nets and target are coupled by its loss), so threads
//! share nothing but the read-only input and add their `dL/dH` at the end.
//!
//! It computes exactly what the candle autograd engine (`autograd`) computes;
//! `tests::fused_and_candle_engines_agree` holds them to each other.
//!
//! Why one file over 400 lines: the forward pass, the backward pass and the
//! per-thread workspaces of one tower group share private buffer layouts;
//! split apart, those layouts would have to become a public contract
//! between files.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, ShapeError, Slice};

use crate::error::LearnerError;
use crate::model::Model;
use crate::nets::{bce_grad, bce_with_logits, huber, huber_grad, StackParams};
use crate::step::{BatchData, Grads, StepStats};

/// A mis-sized buffer (a model whose layers disagree with its input, say)
/// is an error of the step, not a panic.
type Shaped<T> = Result<T, ShapeError>;

fn view(buf: &[f32], rows: usize, cols: usize) -> Shaped<ArrayView2<'_, f32>> {
    ArrayView2::from_shape((rows, cols), buf)
}

fn view_mut(buf: &mut [f32], rows: usize, cols: usize) -> Shaped<ArrayViewMut2<'_, f32>> {
    ArrayViewMut2::from_shape((rows, cols), buf)
}

/// Contiguous ranges of towers, one per thread group.
fn tower_ranges(towers: usize, groups: usize) -> Vec<std::ops::Range<usize>> {
    (0..groups)
        .map(|g| (g * towers / groups)..((g + 1) * towers / groups))
        .collect()
}

/// Activations of one net: pre-activation `z[l]` and output `a[l]` per layer.
#[derive(Default)]
pub struct NetWs {
    z: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
    dz: Vec<f32>,
    da: Vec<f32>,
}

/// Forward pass of net `n` of `p` on `x` (B, in): fills `ws`, returns the
/// output (B).
pub fn forward_net<'w>(
    p: &StackParams,
    n: usize,
    x: ArrayView2<'_, f32>,
    ws: &'w mut NetWs,
) -> Shaped<&'w [f32]> {
    forward_from(p, n, 0, x, ws)
}

/// [`forward_net`] from layer `start`, whose input is `input`.
fn forward_from<'w>(
    p: &StackParams,
    n: usize,
    start: usize,
    input: ArrayView2<'_, f32>,
    ws: &'w mut NetWs,
) -> Shaped<&'w [f32]> {
    let rows = input.nrows();
    let layers = p.layers();
    ws.z.resize_with(layers, Vec::new);
    ws.a.resize_with(layers, Vec::new);
    for l in start..layers {
        let (din, dout) = (p.dims[l], p.dims[l + 1]);
        let w = view(p.w_net(l, n), din, dout)?;
        let bias = p.b_net(l, n);
        let mut z = std::mem::take(&mut ws.z[l]);
        z.clear();
        z.resize(rows * dout, 0.0);
        {
            let mut zv = view_mut(&mut z, rows, dout)?;
            if l == start {
                general_mat_mul(1.0, &input, &w, 0.0, &mut zv);
            } else {
                let prev = view(&ws.a[l - 1], rows, din)?;
                general_mat_mul(1.0, &prev, &w, 0.0, &mut zv);
            }
        }
        for row in z.chunks_exact_mut(dout) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += *b;
            }
        }
        let a = &mut ws.a[l];
        a.clear();
        if l + 1 < layers {
            a.extend(z.iter().map(|v| v.max(0.0)));
        } else {
            a.extend_from_slice(&z);
        }
        ws.z[l] = z;
    }
    Ok(&ws.a[layers - 1])
}

/// Inference forward pass of the nets `nets` of `p`, which share the input
/// `x`: their first layers run as one wide GEMM (`x` times the side-by-side
/// first-layer weights), the rest per net. `outs[j]` gets net `nets.start + j`.
/// When the first `shared` columns of `x` are the same in every row (one
/// user's candidates: `h_u`), their product is computed once.
fn forward_wide(
    p: &StackParams,
    nets: std::ops::Range<usize>,
    x: ArrayView2<'_, f32>,
    shared: usize,
    ws: &mut WideWs,
    outs: &mut Vec<Vec<f32>>,
) -> Shaped<()> {
    let rows = x.nrows();
    let n = nets.len();
    let (d0, h) = (p.dims[0], p.dims[1]);
    let width = n * h;
    ws.wcat.clear();
    ws.wcat.resize(d0 * width, 0.0);
    for (j, net) in nets.clone().enumerate() {
        let w = p.w_net(0, net);
        for r in 0..d0 {
            ws.wcat[r * width + j * h..r * width + (j + 1) * h]
                .copy_from_slice(&w[r * h..(r + 1) * h]);
        }
    }
    ws.z.clear();
    ws.z.resize(rows * width, 0.0);
    // The shared columns' contribution plus the bias: one row for all.
    ws.row.clear();
    for net in nets.clone() {
        ws.row.extend_from_slice(p.b_net(0, net));
    }
    if shared > 0 && rows > 0 {
        let wv = view(&ws.wcat, d0, width)?;
        let x0 = x.row(0);
        for c in 0..shared {
            let xc = x0[c];
            for (acc, w) in ws.row.iter_mut().zip(wv.row(c).iter()) {
                *acc += xc * *w;
            }
        }
    }
    {
        let wv = view(&ws.wcat, d0, width)?;
        let mut zv = view_mut(&mut ws.z, rows, width)?;
        let xs = x.slice_axis(Axis(1), Slice::from(shared..));
        let ws_rows = wv.slice_axis(Axis(0), Slice::from(shared..));
        general_mat_mul(1.0, &xs, &ws_rows, 0.0, &mut zv);
    }
    let last = p.layers() == 1;
    for row in ws.z.chunks_exact_mut(width) {
        for (v, b) in row.iter_mut().zip(&ws.row) {
            *v += *b;
            if !last {
                *v = v.max(0.0);
            }
        }
    }
    outs.resize_with(n, Vec::new);
    ws.nets.resize_with(1, NetWs::default);
    let zv = view(&ws.z, rows, width)?;
    for (j, net) in nets.enumerate() {
        outs[j].clear();
        if last {
            outs[j].extend(zv.column(j).iter());
            continue;
        }
        let a0 = zv.slice_axis(Axis(1), Slice::from(j * h..(j + 1) * h));
        let out = forward_from(p, net, 1, a0, &mut ws.nets[0])?;
        outs[j].extend_from_slice(out);
    }
    Ok(())
}

/// Buffers of [`forward_wide`].
#[derive(Default)]
pub struct WideWs {
    wcat: Vec<f32>,
    row: Vec<f32>,
    z: Vec<f32>,
    nets: Vec<NetWs>,
}

/// Backward pass of net `n` after [`forward_net`] with `dout` = dL/d(output):
/// writes the net's gradients into `g` at local index `gn` and adds dL/dx
/// into `dx` (B, in).
pub fn backward_net(
    p: &StackParams,
    n: usize,
    x: ArrayView2<'_, f32>,
    ws: &mut NetWs,
    dout: &[f32],
    g: &mut StackParams,
    gn: usize,
    dx: &mut ArrayViewMut2<'_, f32>,
) -> Shaped<()> {
    let rows = x.nrows();
    let layers = p.layers();
    let mut dz = std::mem::take(&mut ws.dz);
    let mut da = std::mem::take(&mut ws.da);
    dz.clear();
    dz.extend_from_slice(dout);
    for l in (0..layers).rev() {
        let (din, dout_w) = (p.dims[l], p.dims[l + 1]);
        let dzv = view(&dz, rows, dout_w)?;
        let size = din * dout_w;
        // dW = A_prev^T dZ; db = column sums of dZ.
        {
            let gw = &mut g.w[l][gn * size..(gn + 1) * size];
            let mut gwv = view_mut(gw, din, dout_w)?;
            if l == 0 {
                general_mat_mul(1.0, &x.t(), &dzv, 0.0, &mut gwv);
            } else {
                let prev = view(&ws.a[l - 1], rows, din)?;
                general_mat_mul(1.0, &prev.t(), &dzv, 0.0, &mut gwv);
            }
            let gb = &mut g.b[l][gn * dout_w..(gn + 1) * dout_w];
            gb.iter_mut().for_each(|v| *v = 0.0);
            for row in dz.chunks_exact(dout_w) {
                for (acc, v) in gb.iter_mut().zip(row) {
                    *acc += *v;
                }
            }
        }
        let w = view(p.w_net(l, n), din, dout_w)?;
        if l == 0 {
            general_mat_mul(1.0, &dzv, &w.t(), 1.0, dx);
        } else {
            da.clear();
            da.resize(rows * din, 0.0);
            {
                let mut dav = view_mut(&mut da, rows, din)?;
                general_mat_mul(1.0, &dzv, &w.t(), 0.0, &mut dav);
            }
            // ReLU: pass the gradient where the pre-activation was positive.
            let z = &ws.z[l - 1];
            dz.clear();
            dz.extend(
                da.iter()
                    .zip(z)
                    .map(|(g, z)| if *z > 0.0 { *g } else { 0.0 }),
            );
        }
    }
    ws.dz = dz;
    ws.da = da;
    Ok(())
}

/// Per-thread buffers, reused across steps.
#[derive(Default)]
pub struct GroupWs {
    nets: Vec<NetWs>,
    target: NetWs,
    target_out: Vec<Vec<f32>>,
    outs: Vec<Vec<f32>>,
    douts: Vec<Vec<f32>>,
    y: Vec<f32>,
    dx: Vec<f32>,
    grads: Option<StackParams>,
    assist: NetWs,
    assist_grads: Option<StackParams>,
    wide: WideWs,
}

#[derive(Default)]
pub struct FusedEngine {
    groups: Vec<GroupWs>,
    threads: usize,
}

struct GroupResult {
    stats: Vec<(usize, f32, f32, f32)>,
    assist_loss: Option<f32>,
}

impl FusedEngine {
    pub fn new(threads: usize) -> Self {
        FusedEngine {
            groups: Vec::new(),
            threads: threads.max(1),
        }
    }

    /// Loss of Eq. 10 on the batch and, with `grads`, its gradients.
    pub fn loss_and_grads(
        &mut self,
        model: &Model,
        data: &BatchData<'_>,
        grads: bool,
    ) -> Result<(StepStats, Option<Grads>), LearnerError> {
        let towers = model.labels.len();
        let groups = self.threads.min(towers).max(1);
        self.groups.resize_with(groups, GroupWs::default);
        let ranges = tower_ranges(towers, groups);
        let results: Vec<Shaped<GroupResult>> = if groups == 1 {
            vec![run_group(
                model,
                data,
                ranges[0].clone(),
                true,
                grads,
                &mut self.groups[0],
            )]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .groups
                    .iter_mut()
                    .zip(ranges.iter().cloned())
                    .enumerate()
                    .map(|(i, (ws, r))| {
                        s.spawn(move || run_group(model, data, r, i == 0, grads, ws))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        let results = results.into_iter().collect::<Shaped<Vec<GroupResult>>>()?;
        let mut stats = StepStats {
            reward_loss: vec![0.0; towers],
            critic_loss: vec![0.0; towers],
            td_error: vec![0.0; towers],
            ..StepStats::default()
        };
        let mut total = 0.0f32;
        for r in &results {
            for &(t, rl, cl, td) in &r.stats {
                stats.reward_loss[t] = rl;
                stats.critic_loss[t] = cl;
                stats.td_error[t] = td;
                total += rl + cl;
            }
            if let Some(a) = r.assist_loss {
                stats.assist_loss = Some(a);
                total += a;
            }
        }
        stats.loss = total;
        if !grads {
            return Ok((stats, None));
        }
        // Gather the groups' gradients into whole-stack buffers and sum dL/dH.
        let mut g = Grads {
            towers: model.towers.zeros_like(),
            assist: model.assist.as_ref().map(StackParams::zeros_like),
            dx: vec![0.0; data.b * data.d],
        };
        let per = model.per_tower;
        for (i, (ws, r)) in self.groups.iter().zip(&ranges).enumerate() {
            if let Some(local) = &ws.grads {
                let n0 = r.start * per;
                for l in 0..local.layers() {
                    let size = local.dims[l] * local.dims[l + 1];
                    let len = (r.end - r.start) * per;
                    g.towers.w[l][n0 * size..(n0 + len) * size]
                        .copy_from_slice(&local.w[l][..len * size]);
                    let bs = local.dims[l + 1];
                    g.towers.b[l][n0 * bs..(n0 + len) * bs]
                        .copy_from_slice(&local.b[l][..len * bs]);
                }
            }
            if let (0, Some(dst), Some(src)) = (i, g.assist.as_mut(), ws.assist_grads.as_ref()) {
                dst.clone_from(src);
            }
            for (acc, v) in g.dx.iter_mut().zip(&ws.dx) {
                *acc += *v;
            }
        }
        Ok((stats, Some(g)))
    }

    /// Online `(T, 2, B)` Q values, tower-major: `q[(t * 2 + k) * B + i]`,
    /// with the towers split over the engine's threads.
    pub fn q_values(
        &mut self,
        model: &Model,
        x: &[f32],
        b: usize,
    ) -> Result<Vec<f32>, LearnerError> {
        let towers = model.labels.len();
        let groups = self.threads.min(towers).max(1);
        self.groups.resize_with(groups, GroupWs::default);
        let ranges = tower_ranges(towers, groups);
        let mut q = vec![0.0f32; towers * 2 * b];
        // Each group writes the contiguous block of its towers.
        let mut blocks: Vec<&mut [f32]> = Vec::with_capacity(groups);
        let mut rest = q.as_mut_slice();
        for r in &ranges {
            let (head, tail) = rest.split_at_mut((r.end - r.start) * 2 * b);
            blocks.push(head);
            rest = tail;
        }
        let done: Shaped<()> = if groups == 1 {
            q_group(
                model,
                x,
                b,
                ranges[0].clone(),
                &mut self.groups[0],
                blocks.remove(0),
            )
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .groups
                    .iter_mut()
                    .zip(ranges.iter().cloned())
                    .zip(blocks)
                    .map(|((ws, r), block)| s.spawn(move || q_group(model, x, b, r, ws, block)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        done?;
        Ok(q)
    }
}

fn q_group(
    model: &Model,
    x: &[f32],
    b: usize,
    range: std::ops::Range<usize>,
    ws: &mut GroupWs,
    out: &mut [f32],
) -> Shaped<()> {
    let d = model.emb.input_dim();
    let xv = view(x, b, d)?;
    let per = model.per_tower;
    let gamma = model.cfg.gamma as f32;
    let sup = model.cfg.supervised_head;
    let first = range.start;
    // One user's candidates share h_u (the first embedding_dim columns).
    let e = model.cfg.embedding_dim;
    let shared = if b > 1 && (1..b).all(|i| x[i * d..i * d + e] == x[..e]) {
        e
    } else {
        0
    };
    forward_wide(
        &model.towers,
        range.start * per..range.end * per,
        xv,
        shared,
        &mut ws.wide,
        &mut ws.outs,
    )?;
    let off = usize::from(sup);
    for t in range {
        let local = t - first;
        let o = |k: usize| &ws.outs[local * per + k];
        for k in 0..2 {
            let dst = &mut out[(local * 2 + k) * b..(local * 2 + k + 1) * b];
            for (i, v) in dst.iter_mut().enumerate() {
                let val = o(off + k)[i];
                *v = if sup { o(0)[i] + gamma * val } else { val };
            }
        }
    }
    Ok(())
}

/// Forward, loss and backward of the towers in `range` (and of the
/// assistance net when `assist`).
fn run_group(
    model: &Model,
    data: &BatchData<'_>,
    range: std::ops::Range<usize>,
    assist: bool,
    grads: bool,
    ws: &mut GroupWs,
) -> Shaped<GroupResult> {
    let (b, d, j) = (data.b, data.d, data.j);
    let cfg = &model.cfg;
    let gamma = cfg.gamma as f32;
    let delta = cfg.huber_delta as f32;
    let per = model.per_tower;
    let sup = cfg.supervised_head;
    let x = view(data.x, b, d)?;
    let xn = view(data.xn, b * j, d)?;
    let p = &model.towers;
    let local_nets = (range.end - range.start) * per;
    ws.nets.resize_with(local_nets, NetWs::default);
    ws.outs.resize_with(local_nets, Vec::new);
    ws.douts.resize_with(local_nets, Vec::new);
    ws.target_out.resize_with(per, Vec::new);
    if grads {
        let fits = ws
            .grads
            .as_ref()
            .is_some_and(|g| g.nets == local_nets && g.dims == p.dims);
        if !fits {
            let mut g = p.zeros_like();
            g.nets = local_nets;
            for l in 0..g.layers() {
                g.w[l].truncate(local_nets * g.dims[l] * g.dims[l + 1]);
                g.b[l].truncate(local_nets * g.dims[l + 1]);
            }
            ws.grads = Some(g);
        }
        ws.dx.clear();
        ws.dx.resize(b * d, 0.0);
    } else {
        ws.dx.clear();
    }
    let mut stats = Vec::new();
    for t in range.clone() {
        let n0 = t * per;
        let l0 = (t - range.start) * per;
        // Target: y = r + gamma * max_j combine_k Q'_k(H_{t+1, j}) (min or mean).
        for k in 0..per {
            let out = forward_net(&model.target, n0 + k, xn, &mut ws.target)?;
            ws.target_out[k].clear();
            ws.target_out[k].extend_from_slice(out);
        }
        ws.y.clear();
        let r = &data.rewards[t * b..(t + 1) * b];
        for i in 0..b {
            let mut best = f32::NEG_INFINITY;
            for c in 0..j {
                let at = i * j + c;
                let q = |k: usize| -> f32 {
                    if sup {
                        ws.target_out[0][at] + gamma * ws.target_out[1 + k][at]
                    } else {
                        ws.target_out[k][at]
                    }
                };
                best = best.max(cfg.double_q.combine(q(0), q(1)));
            }
            ws.y.push(r[i] + gamma * best);
        }
        // Online nets.
        for k in 0..per {
            let out = forward_net(p, n0 + k, x, &mut ws.nets[l0 + k])?;
            ws.outs[l0 + k].clear();
            ws.outs[l0 + k].extend_from_slice(out);
        }
        let inv_b = 1.0 / b as f32;
        let (mut rl, mut cl, mut td) = (0.0f32, 0.0f32, 0.0f32);
        for k in 0..per {
            ws.douts[l0 + k].clear();
            ws.douts[l0 + k].resize(b, 0.0);
        }
        let off = usize::from(sup);
        for i in 0..b {
            let rhat = if sup { ws.outs[l0][i] } else { 0.0 };
            let mut drhat = 0.0;
            for k in 0..2 {
                let v = ws.outs[l0 + off + k][i];
                let q = if sup { rhat + gamma * v } else { v };
                let diff = q - ws.y[i];
                cl += huber(diff, delta);
                td += diff.abs();
                let dq = huber_grad(diff, delta) * inv_b;
                if sup {
                    drhat += dq;
                    ws.douts[l0 + off + k][i] = gamma * dq;
                } else {
                    ws.douts[l0 + off + k][i] = dq;
                }
            }
            if sup {
                let diff = rhat - r[i];
                rl += huber(diff, delta);
                drhat += huber_grad(diff, delta) * inv_b;
                ws.douts[l0][i] = drhat;
            }
        }
        stats.push((t, rl * inv_b, cl * inv_b, td * inv_b * 0.5));
        // `grads` implies the buffers were allocated above.
        if let (true, Some(g)) = (grads, ws.grads.as_mut()) {
            let mut dxv = view_mut(&mut ws.dx, b, d)?;
            for k in 0..per {
                let dout = std::mem::take(&mut ws.douts[l0 + k]);
                backward_net(
                    p,
                    n0 + k,
                    x,
                    &mut ws.nets[l0 + k],
                    &dout,
                    g,
                    l0 + k,
                    &mut dxv,
                )?;
                ws.douts[l0 + k] = dout;
            }
        }
    }
    let mut assist_loss = None;
    if assist {
        if let Some(ap) = &model.assist {
            let e2 = 2 * cfg.embedding_dim;
            let xa = x.slice_axis(Axis(1), Slice::from(..e2));
            let logits = forward_net(ap, 0, xa, &mut ws.assist)?.to_vec();
            let inv_b = 1.0 / b as f32;
            let mut loss = 0.0;
            let mut dl = Vec::with_capacity(b);
            for (i, z) in logits.iter().zip(data.gift) {
                loss += bce_with_logits(*i, *z);
                dl.push(bce_grad(*i, *z) * inv_b);
            }
            assist_loss = Some(loss * inv_b);
            if grads {
                let g = ws.assist_grads.get_or_insert_with(|| ap.zeros_like());
                let mut dxv = view_mut(&mut ws.dx, b, d)?;
                let mut dxa = dxv.slice_axis_mut(Axis(1), Slice::from(..e2));
                backward_net(ap, 0, xa, &mut ws.assist, &dl, g, 0, &mut dxa)?;
            }
        }
    }
    Ok(GroupResult { stats, assist_loss })
}
