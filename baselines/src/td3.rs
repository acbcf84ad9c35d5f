//! TD3 — Fujimoto, van Hoof and Meger, "Addressing Function Approximation
//! Error in Actor-Critic Methods", ICML 2018 — used for ranking as in
//! KuaiSim (Zhao et al., "KuaiSim: A Comprehensive Simulator for
//! Recommender Systems", NeurIPS 2023 Datasets and Benchmarks): the actor
//! emits a hyper-action that scores the candidates.
//!
//! - State s = `Fields::user_input` of the request's user. Actor
//!   pi(s) = tanh(MLP(s)) in [-1, 1]^(D+1) is a hyper-action (w, b),
//!   D = `Fields::item_width()`; an item's score is w . item_vec + b with
//!   item_vec = `Fields::item_input` of that candidate; the top k are shown.
//! - Exploration: while ranking, one N(0, `td3_explore_noise`) draw per
//!   dimension is added to the request's hyper-action (one draw per request,
//!   shared by its candidates), which is then clipped to [-1, 1] (TD3's
//!   exploration); the noise comes from the policy's seeded [`Rng`], so
//!   rankings are deterministic per seed. Ties: random keys from that Rng.
//! - Logged action: the log was made by another policy, so a step's action
//!   is taken as a = (tanh(mean of the shown items' item_vec), b = 0),
//!   detached — the hyper-action that, by construction, scores the shown
//!   items highly. Its b is always 0, so the critics never see b vary (b
//!   does not change a ranking anyway).
//! - Reward of a step: the sum of [`crate::reward`] over its shown items.
//! - Twin critics Q1, Q2 = MLP([s, a]) -> scalar, target
//!   y = r + gamma * min(Q1', Q2')(s', clip(pi'(s') + clip(N(0,
//!   td3_policy_noise), -td3_noise_clip, td3_noise_clip), -1, 1)) when the
//!   step has a next state, else y = r; loss = MSE(Q1, y) + MSE(Q2, y).
//! - Every `td3_policy_delay` critic updates: the actor minimises
//!   -mean Q1(s, pi(s)), then the actor target and both critic targets move
//!   by `tau` (targets start as exact copies). All six nets
//!   are seeded MLPs (`cfg.hidden`, ReLU); the actor's output goes through tanh.
//! - Shared embedding table: only the critic loss updates it (at
//!   `embedding_lr`); the actor and the target networks read it detached (no
//!   target copy of the table). Since the logged action is detached, the
//!   item-side rows get no gradient (save rows a user field hashes to too):
//!   an item_vec is its fixed random id embeddings plus its dense counters,
//!   and w learns to weigh those. The logged action is summed in plain Rust
//!   from the table (same layout as `Fields::item_input`; a test checks it).
//! - Learning rates: critics `critic_lr`, actor `actor_lr` (Adam).

use candle_core::{Device, Module, Result, Tensor, Var, D};
use rliv_sim::events::RoundEvents;
use rliv_sim::policy::{top_k_by, Policy, Request, WorldPeek};
use rliv_sim::rng::Rng;

use crate::features::{History, ItemEnc, Step, StepBuffer, UserEnc, ITEM_DENSE, ITEM_FIELDS};
use crate::features::{USER_DENSE, USER_FIELDS};
use crate::nets::{soft_update, to_vec, vector, Adam2, Fields, Mlp, PairBatch, Params};
use crate::{reward, BaselineConfig};

const SEED_SALT: u64 = 0x07d3_5eed_0fa3_c7e1;
const NO_ITEM: ItemEnc = ItemEnc {
    ids: [0; ITEM_FIELDS],
    dense: [0.0; ITEM_DENSE],
};
const NO_USER: UserEnc = UserEnc {
    ids: [0; USER_FIELDS],
    dense: [0.0; USER_DENSE],
};

/// The TD3 hyper-action ranker (see the module docs).
pub struct Td3Policy {
    cfg: BaselineConfig,
    history: History,
    buffer: StepBuffer,
    rng: Rng,
    fields: Fields,
    emb: Vec<Var>,
    /// Actor, Q1, Q2; their targets; the parameters of each.
    nets: [Mlp; 3],
    targets: [Mlp; 3],
    vars: [Vec<Var>; 3],
    target_vars: [Vec<Var>; 3],
    critic_opt: Adam2,
    actor_opt: Adam2,
    /// Critic updates done.
    pub critic_updates: u64,
    /// Actor (and target) updates done.
    pub actor_updates: u64,
    /// Errors met (a rank fell back to a random order, or a round's training stopped).
    pub errors: u64,
}

fn act(actor: &Mlp, s: &Tensor) -> Result<Tensor> {
    actor.forward(s)?.tanh()
}

fn q(critic: &Mlp, s: &Tensor, a: &Tensor) -> Result<Tensor> {
    critic.forward(&Tensor::cat(&[s, a], D::Minus1)?)
}

/// `n` standard normals (Marsaglia's polar method: two per logarithm).
fn normals(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (x, y) = (2.0 * rng.uniform() - 1.0, 2.0 * rng.uniform() - 1.0);
        let r = x * x + y * y;
        if r > 0.0 && r < 1.0 {
            let f = (-2.0 * r.ln() / r).sqrt();
            out.extend([x * f, y * f]);
        }
    }
    out.truncate(n);
    out
}

/// clip(plain + clip(N(0, noise), -clip, clip), -1, 1), noise drawn from `rng`.
fn smooth(rng: &mut Rng, cfg: &BaselineConfig, plain: &Tensor) -> Result<Tensor> {
    let c = cfg.td3_noise_clip.abs();
    let n: Vec<f32> = normals(rng, plain.elem_count())
        .into_iter()
        .map(|z| (cfg.td3_policy_noise * z).clamp(-c, c) as f32)
        .collect();
    (plain + Tensor::from_vec(n, plain.shape(), &Device::Cpu)?)?.clamp(-1f32, 1f32)
}

impl Td3Policy {
    /// A fresh policy; every parameter is drawn from `seed`.
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<Td3Policy> {
        let mut p = Params::new(seed ^ SEED_SALT);
        let fields = Fields::new(&mut p, cfg.id_rows.max(1), cfg.embedding_dim)?;
        let (su, a) = (fields.user_width(), fields.item_width() + 1);
        // Actor, Q1, Q2; a target is drawn from the same seed: an exact copy.
        let net = |i: u64| {
            let mut q = Params::new(seed ^ SEED_SALT ^ (i + 1));
            let (inp, out) = if i == 0 { (su, a) } else { (su + a, 1) };
            Ok::<_, candle_core::Error>((q.mlp(inp, &cfg.hidden, out)?, q.net))
        };
        let ([n0, n1, n2], [t0, t1, t2]) =
            ([net(0)?, net(1)?, net(2)?], [net(0)?, net(1)?, net(2)?]);
        let critic_vars = [n1.1.clone(), n2.1.clone()].concat();
        Ok(Td3Policy {
            critic_opt: Adam2::new(critic_vars, cfg.critic_lr, p.emb.clone(), cfg.embedding_lr)?,
            actor_opt: Adam2::new(n0.1.clone(), cfg.actor_lr, vec![], 0.0)?,
            cfg: cfg.clone(),
            history: History::new(cfg.id_rows, seed),
            buffer: StepBuffer::new(cfg.buffer_capacity),
            rng: Rng::new(seed),
            fields,
            emb: p.emb,
            nets: [n0.0, n1.0, n2.0],
            targets: [t0.0, t1.0, t2.0],
            vars: [n0.1, n1.1, n2.1],
            target_vars: [t0.1, t1.1, t2.1],
            critic_updates: 0,
            actor_updates: 0,
            errors: 0,
        })
    }

    fn users_input(&self, users: &[&UserEnc]) -> Result<Tensor> {
        let items = vec![&NO_ITEM; users.len()];
        self.fields.user_input(&PairBatch::new(users, &items)?)
    }

    /// The actor's hyper-action (w, then b) for `user`, without noise.
    pub fn hyper_action(&self, user: &UserEnc) -> Result<Vec<f32>> {
        to_vec(&act(&self.nets[0], &self.users_input(&[user])?.detach())?)
    }

    /// The target actor's action for each of `users`: `[B, D + 1]`.
    pub fn target_action(&self, users: &[UserEnc]) -> Result<Tensor> {
        let u: Vec<&UserEnc> = users.iter().collect();
        act(&self.targets[0], &self.users_input(&u)?.detach())
    }

    /// The smoothed target action (TD3's target policy smoothing), noise
    /// drawn from the policy's generator.
    pub fn smoothed_target_action(&mut self, users: &[UserEnc]) -> Result<Tensor> {
        let plain = self.target_action(users)?;
        smooth(&mut self.rng, &self.cfg, &plain)
    }

    /// w . item_vec + b for every item, `hyper` = (w, b); one batch.
    pub fn scores(&self, hyper: &[f32], items: &[ItemEnc]) -> Result<Vec<f32>> {
        let d = self.fields.item_width();
        if hyper.len() != d + 1 {
            candle_core::bail!(
                "td3: hyper-action of {} values, want {}",
                hyper.len(),
                d + 1
            );
        }
        let vecs = self
            .fields
            .item_input(&PairBatch::for_user(&NO_USER, items)?)?;
        let w = Tensor::from_slice(&hyper[..d], (d, 1), &Device::Cpu)?;
        to_vec(&vecs.matmul(&w)?.affine(1.0, hyper[d] as f64)?)
    }

    /// The logged steps' actions: (tanh(mean shown item_vec), 0), detached.
    /// Summed in plain Rust from the table in the layout of
    /// `Fields::item_input` (the id fields' rows, then the dense features):
    /// no graph is needed, and no `[items, D]` temporaries.
    pub fn logged_actions(&self, steps: &[&Step]) -> Result<Tensor> {
        let (dim, d) = (self.fields.dim, self.fields.item_width());
        let table = self.emb[0].as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; steps.len() * (d + 1)];
        for (s, row) in steps.iter().zip(out.chunks_exact_mut(d + 1)) {
            for it in &s.items {
                for (&id, acc) in it.ids.iter().zip(row.chunks_exact_mut(dim)) {
                    let at = id as usize * dim;
                    let Some(src) = table.get(at..at + dim) else {
                        candle_core::bail!("td3: embedding row {id} out of range");
                    };
                    acc.iter_mut().zip(src).for_each(|(a, x)| *a += x);
                }
                let dense = &mut row[ITEM_FIELDS * dim..d];
                dense.iter_mut().zip(&it.dense).for_each(|(a, x)| *a += x);
            }
            let n = s.items.len().max(1) as f32;
            row[..d].iter_mut().for_each(|a| *a = (*a / n).tanh());
        }
        Tensor::from_vec(out, (steps.len(), d + 1), &Device::Cpu)
    }

    /// One TD3 update on `batch_size` steps from the buffer: the critics
    /// always; the actor and every target when the critic update count is a
    /// multiple of `td3_policy_delay`.
    pub fn update(&mut self) -> Result<()> {
        let batch = self.buffer.sample(&mut self.rng, self.cfg.batch_size);
        let b = batch.len();
        if b == 0 {
            return Ok(());
        }
        let users: Vec<&UserEnc> = batch.iter().map(|s| &s.user).collect();
        let next: Vec<&UserEnc> = batch
            .iter()
            .map(|s| s.next.as_ref().map_or(&s.user, |n| &n.user))
            .collect();
        let r: Vec<f32> = batch
            .iter()
            .map(|s| s.feedback.iter().map(|f| reward(f, &self.cfg)).sum())
            .collect();
        let alive: Vec<f32> = batch
            .iter()
            .map(|s| f32::from(u8::from(s.next.is_some())))
            .collect();
        let s = self.users_input(&users)?;
        let a = self.logged_actions(&batch)?;
        let sn = self.users_input(&next)?.detach();
        let an = smooth(&mut self.rng, &self.cfg, &act(&self.targets[0], &sn)?)?;
        let qn = q(&self.targets[1], &sn, &an)?.minimum(&q(&self.targets[2], &sn, &an)?)?;
        let qn = (qn * self.cfg.gamma)?.mul(&vector(&alive)?.reshape((b, 1))?)?;
        let y = (vector(&r)?.reshape((b, 1))? + qn)?.detach();
        let l1 = (q(&self.nets[1], &s, &a)? - &y)?.sqr()?.mean_all()?;
        let l2 = (q(&self.nets[2], &s, &a)? - &y)?.sqr()?.mean_all()?;
        self.critic_opt.backward_step(&(l1 + l2)?)?;
        self.critic_updates += 1;
        if self
            .critic_updates
            .is_multiple_of(self.cfg.td3_policy_delay.max(1) as u64)
        {
            let s = s.detach();
            let pi = act(&self.nets[0], &s)?;
            self.actor_opt
                .backward_step(&q(&self.nets[1], &s, &pi)?.mean_all()?.neg()?)?;
            for (t, o) in self.target_vars.iter().zip(&self.vars) {
                soft_update(t, o, self.cfg.tau)?;
            }
            self.actor_updates += 1;
        }
        Ok(())
    }

    fn try_rank(&mut self, req: &Request, k: usize) -> Result<Vec<usize>> {
        let (user, items) = self.history.encode_request(req);
        let mut h = self.hyper_action(&user)?;
        let sd = self.cfg.td3_explore_noise;
        if sd > 0.0 {
            let z = normals(&mut self.rng, h.len());
            for (x, z) in h.iter_mut().zip(z) {
                *x = (*x + (sd * z) as f32).clamp(-1.0, 1.0);
            }
        }
        let scores: Vec<f64> = self
            .scores(&h, &items)?
            .into_iter()
            .map(f64::from)
            .collect();
        let tie: Vec<u64> = scores.iter().map(|_| self.rng.next_u64()).collect();
        Ok(top_k_by(&scores, &tie, k))
    }

    fn note(&mut self, e: candle_core::Error) {
        if self.errors == 0 {
            eprintln!("td3: {e}");
        }
        self.errors += 1;
    }
}

impl Policy for Td3Policy {
    fn name(&self) -> String {
        "td3".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        match self.try_rank(req, k) {
            Ok(v) => v,
            Err(e) => {
                self.note(e);
                crate::random_top_k(&mut self.rng, req.candidates.len(), k)
            }
        }
    }

    fn end_round(&mut self, events: &RoundEvents) {
        self.buffer.record(&mut self.history, events);
        let n = self.cfg.updates(events.exposures.len());
        if let Err(e) = crate::train_for(n, || self.update()) {
            self.note(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Feedback, NextState};
    use rliv_sim::events::{Action, ActionKind, Exposure};
    use rliv_sim::policy::{Candidate, NoPeek};

    fn tiny() -> BaselineConfig {
        let (batch_size, hidden, embedding_dim, id_rows) = (8, vec![8], 4, 64);
        let (updates_per_round, td3_policy_delay, tau) = (3, 3, 0.5);
        BaselineConfig {
            batch_size,
            hidden,
            embedding_dim,
            id_rows,
            updates_per_round,
            td3_policy_delay,
            tau,
            ..BaselineConfig::default()
        }
    }

    fn user(u: u32) -> UserEnc {
        UserEnc {
            ids: [u, u + 1, u + 2, u + 3, u + 4],
            dense: [0.1 * u as f32, 0.5],
        }
    }

    fn item(i: u32) -> ItemEnc {
        let dense = std::array::from_fn(|j| 0.1 * i as f32 - 0.05 * j as f32);
        ItemEnc {
            ids: [i, i + 7, i + 9, 30, 31],
            dense,
        }
    }

    fn step(u: u32, items: &[u32], watch_s: f32, next: bool) -> Step {
        let fb = Feedback {
            watch_s,
            ..Feedback::default()
        };
        Step {
            user: user(u),
            items: items.iter().map(|&i| item(i)).collect(),
            feedback: vec![fb; items.len()],
            next: next.then(|| {
                Box::new(NextState {
                    user: user(u + 1),
                    items: vec![item(3)],
                })
            }),
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        to_vec(t).expect("values")
    }

    #[test]
    fn smoothed_target_action_is_noisy_clipped_and_bounded() {
        let users = [user(1), user(5)];
        // Noise std 10, clip 0.3: every perturbation is at most 0.3, most hit it.
        let cfg = BaselineConfig {
            td3_policy_noise: 10.0,
            td3_noise_clip: 0.3,
            ..tiny()
        };
        let mut p = Td3Policy::new(&cfg, 4).expect("policy");
        let plain = values(&p.target_action(&users).expect("plain"));
        let smooth = values(&p.smoothed_target_action(&users).expect("smooth"));
        assert_eq!(plain.len(), 2 * (p.fields.item_width() + 1));
        assert_ne!(plain, smooth);
        let diffs: Vec<f32> = plain
            .iter()
            .zip(&smooth)
            .map(|(a, b)| (a - b).abs())
            .collect();
        assert!(diffs.iter().all(|&d| d <= 0.3 + 1e-6), "noise clipped");
        assert!(diffs.iter().filter(|&&d| (d - 0.3).abs() < 1e-6).count() > diffs.len() / 2);
        assert!(smooth.iter().all(|x| (-1.0..=1.0).contains(x)));
        // A clip wider than the action range: the sum itself is clipped to [-1, 1].
        let cfg = BaselineConfig {
            td3_policy_noise: 10.0,
            td3_noise_clip: 5.0,
            ..tiny()
        };
        let mut p = Td3Policy::new(&cfg, 4).expect("policy");
        let smooth = values(&p.smoothed_target_action(&users).expect("smooth"));
        assert!(smooth.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert!(smooth.iter().filter(|x| x.abs() == 1.0).count() > smooth.len() / 2);
    }

    #[test]
    fn actor_and_targets_update_only_every_policy_delay_critic_updates() {
        let mut p = Td3Policy::new(&tiny(), 9).expect("policy");
        p.buffer
            .extend([step(1, &[1, 2], 30.0, true), step(4, &[3], 5.0, false)]);
        // Actor, Q1, Q2, then their targets.
        let snap = |p: &Td3Policy| -> Vec<Vec<Vec<f32>>> {
            let all = p.vars.iter().chain(&p.target_vars);
            all.map(|vs| vs.iter().map(|v| values(v.as_tensor())).collect())
                .collect()
        };
        let mut before = snap(&p);
        for n in 1..=6u64 {
            p.update().expect("update");
            let after = snap(&p);
            for (g, (a, b)) in after.iter().zip(&before).enumerate() {
                // The critics move every update; the actor and targets every 3rd.
                assert_eq!(
                    a != b,
                    g == 1 || g == 2 || n % 3 == 0,
                    "update {n}, group {g}"
                );
            }
            before = after;
        }
        assert_eq!((p.critic_updates, p.actor_updates), (6, 2));
    }

    #[test]
    fn scores_are_w_dot_item_vec_plus_b_and_rank_by_them() {
        let cfg = BaselineConfig {
            td3_explore_noise: 0.0,
            ..tiny()
        };
        let mut p = Td3Policy::new(&cfg, 2).expect("policy");
        let (rows, dim) = (64, 4);
        let table: Vec<f32> = (0..rows * dim)
            .map(|x| ((x * 7) % 11) as f32 * 0.05 - 0.25)
            .collect();
        let t = Tensor::from_vec(table.clone(), (rows, dim), &Device::Cpu).expect("table");
        p.emb[0].set(&t).expect("set");
        let d = p.fields.item_width();
        let hyper: Vec<f32> = (0..=d).map(|j| ((j % 5) as f32 - 2.0) * 0.1).collect();
        let items = [item(2), item(5)];
        for (it, got) in items.iter().zip(p.scores(&hyper, &items).expect("scores")) {
            let rows = it
                .ids
                .iter()
                .flat_map(|&id| &table[id as usize * dim..][..dim]);
            let v: Vec<f32> = rows.chain(&it.dense).copied().collect();
            let want = v.iter().zip(&hyper).map(|(a, b)| a * b).sum::<f32>() + hyper[d];
            assert!((want - got).abs() < 1e-5, "{want} vs {got}");
        }
        // Without exploration noise, rank is the top k by the actor's scores.
        let (u, items) = p.history.encode_request(&request());
        let s = p
            .scores(&p.hyper_action(&u).expect("h"), &items)
            .expect("scores");
        let got = p.rank(&request(), 6, &NoPeek);
        assert!(
            got.windows(2).all(|w| s[w[0]] > s[w[1]]),
            "{got:?} by {s:?}"
        );
    }

    #[test]
    fn the_logged_action_is_the_squashed_mean_of_the_shown_items() {
        let p = Td3Policy::new(&tiny(), 3).expect("policy");
        let s = step(1, &[1, 4], 0.0, false);
        let a = values(&p.logged_actions(&[&s]).expect("a"));
        let b = PairBatch::new(&[&NO_USER, &NO_USER], &[&item(1), &item(4)]).expect("batch");
        let v = values(&p.fields.item_input(&b).expect("item_vec"));
        let d = p.fields.item_width();
        for j in 0..d {
            assert!((a[j] - ((v[j] + v[d + j]) / 2.0).tanh()).abs() < 1e-6);
        }
        assert_eq!(a[d], 0.0);
    }

    #[test]
    fn terminal_steps_regress_the_critics_on_the_slates_summed_reward() {
        let cfg = BaselineConfig {
            critic_lr: 1e-2,
            embedding_lr: 1e-2,
            ..tiny()
        };
        let mut p = Td3Policy::new(&cfg, 6).expect("policy");
        // Two shown items watched 30 s each: r = 0.5 + 0.5; no next state.
        let s = step(2, &[1, 3], 30.0, false);
        p.buffer.extend([s.clone()]);
        for _ in 0..400 {
            p.update().expect("update");
        }
        let u = p.users_input(&[&s.user]).expect("u");
        let a = p.logged_actions(&[&s]).expect("a");
        for c in &p.nets[1..] {
            let v = values(&q(c, &u, &a).expect("q"))[0];
            assert!((v - 1.0).abs() < 0.05, "Q = {v}, want r = 1");
        }
    }

    fn round() -> RoundEvents {
        let exposure = |request_id, item_id, ts_ms, position| Exposure {
            request_id,
            user_id: 7,
            item_id,
            author_id: item_id % 3 + 1,
            ts_ms,
            position,
            user_feats: vec![1, 0, 2, 1],
            item_feats: vec![4, 1, 0],
        };
        let watch = |request_id, item_id, value| Action {
            request_id,
            user_id: 7,
            item_id,
            ts_ms: 30_000,
            action: ActionKind::Watch,
            value,
        };
        let exposures = vec![
            exposure(1, 10, 1_000, 0),
            exposure(1, 11, 1_000, 1),
            exposure(2, 12, 20_000, 0),
        ];
        RoundEvents {
            round: 0,
            exposures,
            actions: vec![watch(1, 11, 28.0), watch(2, 12, 40.0)],
        }
    }

    fn request() -> Request {
        let c = |item_id| Candidate {
            item_id,
            author_id: item_id % 3 + 1,
            item_feats: vec![4, 1, 0],
        };
        let candidates = (10..16).map(c).collect();
        Request {
            request_id: 9,
            user_id: 7,
            user_feats: vec![1, 0, 2, 1],
            ts_ms: 100_000,
            candidates,
        }
    }

    #[test]
    fn ranks_before_and_after_training_and_is_deterministic_per_seed() {
        let valid = |r: &[usize]| {
            let mut s = r.to_vec();
            s.sort();
            s.dedup();
            r.len() == 4 && s.len() == 4 && r.iter().all(|&i| i < 6)
        };
        let mut a = Td3Policy::new(&tiny(), 11).expect("a");
        let mut b = Td3Policy::new(&tiny(), 11).expect("b");
        assert_eq!(a.name(), "td3");
        for round_done in [false, true, true] {
            if round_done {
                a.end_round(&round());
                b.end_round(&round());
            }
            let ra = a.rank(&request(), 4, &NoPeek);
            assert!(valid(&ra));
            assert_eq!(ra, b.rank(&request(), 4, &NoPeek));
        }
        assert_eq!(
            (a.critic_updates, a.actor_updates, a.errors + b.errors),
            (6, 2, 0)
        );
    }
}
