//! RLUR: Qingpeng Cai, Shuchang Liu, Xueliang Wang, Tianyou Zuo, Wentao Xie,
//! Bin Yang, Dong Zheng, Peng Jiang and Kun Gai, "Reinforcing User Retention
//! in a Billion Scale Short Video Recommender System", Companion Proceedings
//! of the ACM Web Conference (WWW '23 Companion), 2023, pp. 421-426.
//!
//! Why one file (about 410 lines without its tests): the predictor, the
//! actor and the two critics share one embedding table and one update step;
//! the file reads as the paper's method, top to bottom.
//!
//! The action of a request is a vector w of 3 fusion weights over predicted
//! immediate feedback; an item's score is `sum_k w_k * pred_k(s, item)`.
//!
//! - Predictor: MLP over `Fields::pair_input` with 3 outputs (click logit,
//!   watch / `watch_scale`, follow logit), trained on shown items with BCE +
//!   MSE + BCE at `critic_lr` (its embedding table at `embedding_lr`);
//!   `pred = (sigmoid(o0), o1, sigmoid(o2))` (the watch output used raw).
//! - State `s` = `Fields::user_input` of the same embedding table, detached:
//!   the table is learnt by the predictor only, and the actor and critics
//!   read it as a fixed representation (a second table for the critics
//!   would double the embedding's share of an update's cost).
//! - Actor: s -> MLP -> z; the action is the log-weight
//!   `a = B tanh(z)`, `w = exp(a)` with B = [`LOG_W_BOUND`]: positive and
//!   bounded in [e^-B, e^B] (a bound keeps the actor from running off the
//!   region the critics saw; rankings only depend on w's direction anyway).
//!   Ranking explores with `a + N(0, EXPLORE_NOISE^2)` clipped to [-B, B],
//!   drawn from the policy's Rng.
//! - Critics on (s, a) = `[user_input, a]`, both TD with `gamma`:
//!   `Q_ret`: the session-level signal. The paper's RLUR rewards the return
//!   time; our simulator's session signal is whether the session went on, so
//!   `r_long = 1` for a step whose `next` is Some and `0` at a session end,
//!   target `r_long + gamma * Q_ret'(s', mu'(s'))` if `next` is Some, else
//!   just `r_long` (= 0). A round's end also ends a session (Step cannot tell
//!   the two apart). `Q_imm`: the heuristic immediate reward `sum_i
//!   crate::reward(f_i)` over the step's slate, target `r_imm + gamma *
//!   Q_imm'(s', mu'(s'))` (no bootstrap at a session end). The state is the
//!   user side only, so the next state is `next.user`.
//! - Actor loss `-(Q_ret(s, mu(s)) + LAMBDA * Q_imm(s, mu(s)))`, LAMBDA =
//!   [`LAMBDA_IMM`] = 1 (DDPG's deterministic policy gradient; the critics'
//!   weights are not stepped by it). Targets for the actor and both critics
//!   (MLPs over the same state), soft update `tau`. Rates: actor
//!   `actor_lr`, critics and predictor `critic_lr`, embedding
//!   `embedding_lr`. One update = one predictor step (on `batch_size` shown
//!   items), one critic step and one actor step (on `batch_size` steps) and
//!   the soft updates.
//! - The logged action: when this policy ranked the request (the simulator
//!   feeds a policy the events of its own rankings), the exact noisy
//!   log-weight it used, kept per request id until `end_round` (DDPG stores
//!   the action taken). For a request it did not rank (another policy's
//!   log), the action is unknown; it is taken as the target actor's action
//!   plus the exploration noise, drawn at training time: such steps teach
//!   the critics the state's value without biasing their slope in a.
//!   Steps are matched to request ids by the order of first exposure, checked
//!   (item count and user encoding) against `History::steps`; on mismatch
//!   every action of the round counts as unknown.
//!
//! Left out of RLUR: the return-time normalisation, the intrinsic
//! (exploration) reward and the regularisation against training instability.

use std::collections::{HashMap, HashSet};

use candle_core::{Module, Result, Tensor, Var, D};
use rliv_sim::events::RoundEvents;
use rliv_sim::policy::{top_k_by, Policy, Request, WorldPeek};
use rliv_sim::rng::Rng;

use crate::features::{History, ItemEnc, Step, StepBuffer, UserEnc, ITEM_DENSE, ITEM_FIELDS};
use crate::nets::{
    hard_update, soft_update, to_vec, vector, Adam2, Fields, Mlp, PairBatch, Params,
};
use crate::{reward, BaselineConfig};

/// Bound B of the log-weights: every weight lies in [e^-B, e^B].
pub const LOG_W_BOUND: f32 = 2.0;
/// Std of the exploration noise on the log-weights when ranking.
pub const EXPLORE_NOISE: f64 = 0.2;
/// Weight of the immediate critic in the actor loss.
pub const LAMBDA_IMM: f64 = 1.0;
/// Session-level reward of a step after which the session went on / ended.
pub const R_CONTINUE: f32 = 1.0;
/// See [`R_CONTINUE`].
pub const R_END: f32 = 0.0;
const K: usize = 3;
const DUMMY: ItemEnc = ItemEnc {
    ids: [0; ITEM_FIELDS],
    dense: [0.0; ITEM_DENSE],
};

/// The RLUR baseline (see the module docs).
pub struct RlurPolicy {
    cfg: BaselineConfig,
    history: History,
    buffer: StepBuffer,
    /// The logged action per buffer slot (mirrors the buffer's ring), with
    /// the step's user to check that slot and step still agree.
    actions: Vec<Option<(UserEnc, [f32; K])>>,
    action_slot: usize,
    /// Log-weights used per request id since the last `end_round`.
    taken: HashMap<u64, [f32; K]>,
    rng: Rng,
    fields: Fields,
    pred: Mlp,
    actor: Mlp,
    q_ret: Mlp,
    q_imm: Mlp,
    actor_t: Mlp,
    q_ret_t: Mlp,
    q_imm_t: Mlp,
    /// (target, online) network weights for the soft updates.
    sync: Vec<(Vec<Var>, Vec<Var>)>,
    pred_opt: Adam2,
    critic_opt: Adam2,
    actor_opt: Adam2,
    /// Failed updates / rankings (the first is printed).
    pub errors: u64,
}

fn bce_logits(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    // max(x, 0) - x y + ln(1 + e^-|x|), stable for any logit.
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((x.relu()? - (x * y)?)? + soft)?.mean_all()
}

fn col(t: &Tensor, k: usize) -> Result<Tensor> {
    t.narrow(1, k, 1)?.squeeze(1)
}

/// Scores `[N]` = `sum_k w_k * preds[:, k]` for preds `[N, 3]`, w `[3]`.
pub fn fuse(preds: &Tensor, w: &Tensor) -> Result<Tensor> {
    preds.broadcast_mul(&w.unsqueeze(0)?)?.sum(1)
}

fn user_batch(users: &[&UserEnc]) -> Result<PairBatch> {
    PairBatch::new(users, &vec![&DUMMY; users.len()])
}

type WithTarget = (Mlp, Mlp, Vec<Var>, Vec<Var>);

/// An MLP, its target (a copy) and the weights of both.
fn with_target(seed: u64, inp: usize, h: &[usize], out: usize) -> Result<WithTarget> {
    let (mut on, mut tg) = (Params::new(seed), Params::new(seed ^ 1));
    let (m, mt) = (on.mlp(inp, h, out)?, tg.mlp(inp, h, out)?);
    hard_update(&tg.net, &on.net)?;
    Ok((m, mt, on.net, tg.net))
}

impl RlurPolicy {
    /// A fresh policy; parameters drawn from `seed`.
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<RlurPolicy> {
        let h = &cfg.hidden;
        let mut pp = Params::new(seed ^ 0x524c_5552_0001);
        let fields = Fields::new(&mut pp, cfg.id_rows, cfg.embedding_dim)?;
        let pred = pp.mlp(fields.user_width() + fields.item_width(), h, K)?;
        let sw = fields.user_width();
        let (actor, actor_t, a, at) = with_target(seed ^ 0x524c_5552_0010, sw, h, K)?;
        let (q_ret, q_ret_t, r, rt) = with_target(seed ^ 0x524c_5552_0020, sw + K, h, 1)?;
        let (q_imm, q_imm_t, m, mt) = with_target(seed ^ 0x524c_5552_0030, sw + K, h, 1)?;
        let pred_opt = Adam2::new(pp.net, cfg.critic_lr, pp.emb, cfg.embedding_lr)?;
        let critic_opt = Adam2::new([r.clone(), m.clone()].concat(), cfg.critic_lr, vec![], 0.0)?;
        let actor_opt = Adam2::new(a.clone(), cfg.actor_lr, vec![], 0.0)?;
        Ok(RlurPolicy {
            cfg: cfg.clone(),
            history: History::new(cfg.id_rows, seed),
            buffer: StepBuffer::new(cfg.buffer_capacity),
            actions: Vec::new(),
            action_slot: 0,
            taken: HashMap::new(),
            rng: Rng::new(seed),
            fields,
            pred,
            actor,
            q_ret,
            q_imm,
            actor_t,
            q_ret_t,
            q_imm_t,
            sync: vec![(at, a), (rt, r), (mt, m)],
            pred_opt,
            critic_opt,
            actor_opt,
            errors: 0,
        })
    }

    fn fail(&mut self, e: candle_core::Error) {
        if self.errors == 0 {
            eprintln!("rlur: {e}");
        }
        self.errors += 1;
    }

    /// Predicted feedback `[N, 3]` = (P(click), watch / scale, P(follow)).
    pub fn preds(&self, b: &PairBatch) -> Result<Tensor> {
        let o = self.pred.forward(&self.fields.pair_input(b)?)?;
        let sig = |k| candle_nn::ops::sigmoid(&col(&o, k)?);
        Tensor::stack(&[sig(0)?, col(&o, 1)?, sig(2)?], 1)
    }

    /// The log-weights `[B, 3]` = B tanh(actor(s)).
    fn log_w(actor: &Mlp, s: &Tensor) -> Result<Tensor> {
        actor.forward(s)?.tanh()? * LOG_W_BOUND as f64
    }

    /// The actor's (noise-free) log-weights for `user`.
    fn action(&self, user: &UserEnc) -> Result<[f32; K]> {
        let s = self.fields.user_input(&user_batch(&[user])?)?.detach();
        let a = to_vec(&Self::log_w(&self.actor, &s)?)?;
        Ok([a[0], a[1], a[2]])
    }

    /// The actor's (noise-free) fusion weights for `user`.
    pub fn weights(&self, user: &UserEnc) -> Result<[f32; K]> {
        Ok(self.action(user)?.map(f32::exp))
    }

    /// The exploring log-weights of one request, then its scores.
    fn scores(&mut self, user: &UserEnc, items: &[ItemEnc]) -> Result<(Vec<f64>, [f32; K])> {
        let mut a = self.action(user)?;
        for ak in &mut a {
            *ak =
                (*ak + (EXPLORE_NOISE * self.rng.normal()) as f32).clamp(-LOG_W_BOUND, LOG_W_BOUND);
        }
        let w = vector(&a.map(f32::exp))?;
        let s = fuse(&self.preds(&PairBatch::for_user(user, items)?)?, &w)?;
        Ok((to_vec(&s)?.into_iter().map(f64::from).collect(), a))
    }

    /// `(Q_ret'(s, mu'(s)), Q_imm'(s, mu'(s)))` of the target networks.
    pub fn target_values(&self, users: &[&UserEnc]) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = self.fields.user_input(&user_batch(users)?)?.detach();
        let sa = Tensor::cat(&[&s, &Self::log_w(&self.actor_t, &s)?], D::Minus1)?;
        Ok((
            to_vec(&self.q_ret_t.forward(&sa)?)?,
            to_vec(&self.q_imm_t.forward(&sa)?)?,
        ))
    }

    /// TD targets (long-term, immediate) of `steps` (see the module docs).
    pub fn targets(&self, steps: &[&Step]) -> Result<(Vec<f32>, Vec<f32>)> {
        let next: Vec<&UserEnc> = steps
            .iter()
            .filter_map(|s| s.next.as_ref().map(|n| &n.user))
            .collect();
        let (qr, qi) = if next.is_empty() {
            (vec![], vec![])
        } else {
            self.target_values(&next)?
        };
        let g = self.cfg.gamma as f32;
        let (mut yr, mut yi, mut j) = (Vec::new(), Vec::new(), 0);
        for s in steps {
            let r_imm: f32 = s.feedback.iter().map(|f| reward(f, &self.cfg)).sum();
            if s.next.is_some() {
                yr.push(R_CONTINUE + g * qr[j]);
                yi.push(r_imm + g * qi[j]);
                j += 1;
            } else {
                yr.push(R_END);
                yi.push(r_imm);
            }
        }
        Ok((yr, yi))
    }

    fn push_action(&mut self, a: Option<(UserEnc, [f32; K])>) {
        let cap = self.cfg.buffer_capacity.max(1);
        if self.actions.len() < cap {
            self.actions.push(a);
        } else {
            self.actions[self.action_slot] = a;
            self.action_slot = (self.action_slot + 1) % cap;
        }
    }

    /// The round's request ids in the order `History::steps` lists them,
    /// or `None` if that order cannot be confirmed.
    fn request_ids(&self, events: &RoundEvents, steps: &[Step]) -> Option<Vec<u64>> {
        let (mut ids, mut count, mut seen) = (Vec::new(), HashMap::new(), HashSet::new());
        for e in &events.exposures {
            if seen.insert((e.request_id, e.item_id)) {
                if !count.contains_key(&e.request_id) {
                    ids.push((
                        e.request_id,
                        self.history.encode_user(e.user_id, &e.user_feats),
                    ));
                }
                *count.entry(e.request_id).or_insert(0usize) += 1;
            }
        }
        let ok = ids.len() == steps.len()
            && ids
                .iter()
                .zip(steps)
                .all(|((r, u), s)| *u == s.user && count.get(r) == Some(&s.items.len()));
        ok.then(|| ids.into_iter().map(|(r, _)| r).collect())
    }

    fn update(&mut self) -> Result<()> {
        let (n, cfg) = (self.cfg.batch_size.max(1), &self.cfg);
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Immediate-feedback predictor.
        let items = self.buffer.sample_items(&mut self.rng, n);
        if !items.is_empty() {
            let users: Vec<&UserEnc> = items.iter().map(|(s, _)| &s.user).collect();
            let encs: Vec<&ItemEnc> = items.iter().map(|(s, i)| &s.items[*i]).collect();
            let fb =
                |g: &dyn Fn(usize) -> f32| vector(&(0..items.len()).map(g).collect::<Vec<_>>());
            let click = fb(&|j| items[j].0.feedback[items[j].1].click)?;
            let watch = fb(&|j| reward(&items[j].0.feedback[items[j].1], cfg))?;
            let follow = fb(&|j| items[j].0.feedback[items[j].1].follow)?;
            let o = self
                .pred
                .forward(&self.fields.pair_input(&PairBatch::new(&users, &encs)?)?)?;
            let loss = ((bce_logits(&col(&o, 0)?, &click)?
                + (col(&o, 1)? - watch)?.sqr()?.mean_all()?)?
                + bce_logits(&col(&o, 2)?, &follow)?)?;
            self.pred_opt.backward_step(&loss)?;
        }
        // Critics, on the logged actions.
        let idx: Vec<usize> = (0..n).map(|_| self.rng.index(self.buffer.len())).collect();
        let steps: Vec<&Step> = idx.iter().map(|&i| &self.buffer.steps()[i]).collect();
        let (yr, yi) = self.targets(&steps)?;
        let users: Vec<&UserEnc> = steps.iter().map(|s| &s.user).collect();
        let s = self.fields.user_input(&user_batch(&users)?)?.detach();
        let (mut a, mut missing) = (Vec::with_capacity(n * K), Vec::new());
        for (j, &i) in idx.iter().enumerate() {
            match self.actions.get(i) {
                Some(Some((u, la))) if *u == steps[j].user => a.extend_from_slice(la),
                _ => {
                    missing.push(j as u32);
                    a.extend_from_slice(&[0.0; K]);
                }
            }
        }
        if !missing.is_empty() {
            let rows = s.index_select(&Tensor::new(missing.as_slice(), s.device())?, 0)?;
            let guess = to_vec(&Self::log_w(&self.actor_t, &rows)?)?;
            for (m, &j) in missing.iter().enumerate() {
                for k in 0..K {
                    let noisy = guess[m * K + k] + (EXPLORE_NOISE * self.rng.normal()) as f32;
                    a[j as usize * K + k] = noisy.clamp(-LOG_W_BOUND, LOG_W_BOUND);
                }
            }
        }
        let sa = Tensor::cat(&[&s, &Tensor::from_vec(a, (n, K), s.device())?], D::Minus1)?;
        let mse = |q: &Mlp, y: &[f32]| {
            (q.forward(&sa)?.squeeze(1)? - vector(y)?)?
                .sqr()?
                .mean_all()
        };
        let loss = (mse(&self.q_ret, &yr)? + mse(&self.q_imm, &yi)?)?;
        self.critic_opt.backward_step(&loss)?;
        self.actor_step(&s)?;
        for (t, o) in &self.sync {
            soft_update(t, o, self.cfg.tau)?;
        }
        Ok(())
    }

    /// One deterministic-policy-gradient step of the actor.
    fn actor_step(&mut self, s: &Tensor) -> Result<()> {
        let sa = Tensor::cat(&[s, &Self::log_w(&self.actor, s)?], D::Minus1)?;
        let q = (self.q_ret.forward(&sa)? + (self.q_imm.forward(&sa)? * LAMBDA_IMM)?)?;
        let loss = q.mean_all()?.neg()?;
        self.actor_opt.backward_step(&loss)
    }
}

impl Policy for RlurPolicy {
    fn name(&self) -> String {
        "rlur".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        if req.candidates.is_empty() {
            return Vec::new();
        }
        let (user, items) = self.history.encode_request(req);
        let scores = self.scores(&user, &items);
        match scores {
            Ok((scores, a)) => {
                self.taken.insert(req.request_id, a);
                let tie: Vec<u64> = scores.iter().map(|_| self.rng.next_u64()).collect();
                top_k_by(&scores, &tie, k)
            }
            Err(e) => {
                self.fail(e);
                crate::random_top_k(&mut self.rng, req.candidates.len(), k)
            }
        }
    }

    fn end_round(&mut self, events: &RoundEvents) {
        let steps = self.history.steps(events);
        let ids = self.request_ids(events, &steps);
        for (j, s) in steps.iter().enumerate() {
            let a = ids
                .as_ref()
                .and_then(|ids| self.taken.get(&ids[j]))
                .map(|a| (s.user, *a));
            self.push_action(a);
        }
        self.taken.clear();
        self.buffer.extend(steps);
        self.history.add_round(events);
        let n = self.cfg.updates(events.exposures.len());
        if let Err(e) = crate::train_for(n, || self.update()) {
            self.fail(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Feedback, NextState};
    use rliv_sim::events::{Action, ActionKind, Exposure};
    use rliv_sim::policy::{Candidate, NoPeek};

    fn cfg() -> BaselineConfig {
        BaselineConfig {
            hidden: vec![16],
            embedding_dim: 8,
            id_rows: 256,
            batch_size: 32,
            updates_per_round: 3,
            critic_lr: 1e-2,
            embedding_lr: 1e-2,
            ..BaselineConfig::default()
        }
    }

    fn user(u: u32) -> UserEnc {
        UserEnc {
            ids: [u, u + 1, u + 2, u + 3, u + 4],
            dense: [0.1 * u as f32, 0.2],
        }
    }

    fn item(i: u32) -> ItemEnc {
        ItemEnc {
            ids: [i, i + 50, i + 100, 0, 1],
            dense: [0.3; ITEM_DENSE],
        }
    }

    fn step(u: u32, items: &[u32], next: Option<u32>) -> Step {
        let fb = |&i: &u32| Feedback {
            watch_s: if i == 10 { 60.0 } else { 0.0 },
            click: (i == 10) as u8 as f32,
            ..Default::default()
        };
        Step {
            user: user(u),
            items: items.iter().map(|&i| item(i)).collect(),
            feedback: items.iter().map(fb).collect(),
            next: next.map(|v| {
                Box::new(NextState {
                    user: user(v),
                    items: vec![item(20)],
                })
            }),
        }
    }

    fn request(request_id: u64, n: u64) -> Request {
        Request {
            request_id,
            user_id: 7,
            user_feats: vec![1, 0, 2, 1],
            ts_ms: 1_000 * request_id as i64,
            candidates: (0..n)
                .map(|i| Candidate {
                    item_id: 10 + i,
                    author_id: i % 3 + 1,
                    item_feats: vec![4, 1, 0],
                })
                .collect(),
        }
    }

    /// Requests 1 and 2 of user 7 show the first two candidates; request 3
    /// (never ranked by the policy) shows one; item 11 is watched.
    fn events() -> RoundEvents {
        let ex = |request_id: u64, item_id: u64, position: u32| Exposure {
            request_id,
            user_id: 7,
            item_id,
            author_id: (item_id - 10) % 3 + 1,
            ts_ms: 1_000 * request_id as i64,
            position,
            user_feats: vec![1, 0, 2, 1],
            item_feats: vec![4, 1, 0],
        };
        let act = |item_id, action, value| Action {
            request_id: 1,
            user_id: 7,
            item_id,
            ts_ms: 1_500,
            action,
            value,
        };
        RoundEvents {
            round: 0,
            exposures: vec![
                ex(1, 10, 0),
                ex(1, 11, 1),
                ex(2, 10, 0),
                ex(2, 11, 1),
                ex(3, 12, 0),
            ],
            actions: vec![
                act(11, ActionKind::Click, 1.0),
                act(11, ActionKind::Watch, 30.0),
            ],
        }
    }

    #[test]
    fn the_fusion_score_is_the_weighted_sum_of_the_predictions() {
        let preds = Tensor::new(
            &[[0.5f32, 1.0, 0.1], [0.2, 0.0, 0.9]],
            &candle_core::Device::Cpu,
        )
        .expect("p");
        let s =
            to_vec(&fuse(&preds, &vector(&[1.0, 2.0, 3.0]).expect("w")).expect("fuse")).expect("v");
        assert!(
            (s[0] - 2.8).abs() < 1e-6 && (s[1] - 2.9).abs() < 1e-6,
            "{s:?}"
        );
        // The policy's own ranking scores, by hand from its preds and weights.
        let mut p = RlurPolicy::new(&cfg(), 3).expect("policy");
        let items = [item(1), item(2), item(3)];
        let (scores, a) = p.scores(&user(1), &items).expect("scores");
        let preds = p
            .preds(&PairBatch::for_user(&user(1), &items).expect("b"))
            .expect("preds");
        let preds = preds.to_vec2::<f32>().expect("rows");
        for (sc, pr) in scores.iter().zip(&preds) {
            let hand: f32 = (0..K).map(|k| a[k].exp() * pr[k]).sum();
            assert!((*sc as f32 - hand).abs() < 1e-5, "{sc} vs {hand}");
            assert!(pr[0] > 0.0 && pr[0] < 1.0 && pr[2] > 0.0 && pr[2] < 1.0);
        }
    }

    #[test]
    fn the_weights_are_positive_and_bounded_even_when_the_actor_saturates() {
        let mut p = RlurPolicy::new(&cfg(), 4).expect("policy");
        let (lo, hi) = ((-LOG_W_BOUND).exp() * 0.999, LOG_W_BOUND.exp() * 1.001);
        let check = |p: &mut RlurPolicy| {
            for u in 0..20 {
                let w = p.weights(&user(u * 7)).expect("w");
                let (_, a) = p.scores(&user(u * 7), &[item(1)]).expect("explore");
                assert!(
                    w.iter()
                        .chain(&a.map(f32::exp))
                        .all(|&x| x >= lo && x <= hi),
                    "{w:?} {a:?}"
                );
            }
        };
        check(&mut p);
        // Blow the actor's weights up: tanh saturates, w stays in range.
        for v in &p.sync[0].1 {
            v.set(&(v.as_tensor() * 1e4).expect("scale")).expect("set");
        }
        check(&mut p);
    }

    #[test]
    fn the_predictor_learns_which_item_gets_watched() {
        let mut p = RlurPolicy::new(&cfg(), 5).expect("policy");
        p.buffer.extend((0..8).map(|u| step(u, &[10, 11], None)));
        for _ in 0..300 {
            p.update().expect("update");
        }
        let b = PairBatch::for_user(&user(3), &[item(10), item(11)]).expect("b");
        let pr = p.preds(&b).expect("preds").to_vec2::<f32>().expect("rows");
        assert!(pr[0][1] > 0.7 && pr[1][1] < 0.3, "watch {pr:?}");
        assert!(pr[0][0] > pr[1][0], "click {pr:?}");
    }

    #[test]
    fn the_long_term_target_bootstraps_only_before_the_session_ends() {
        let mut c = cfg();
        c.gamma = 0.5;
        let p = RlurPolicy::new(&c, 6).expect("policy");
        let (end, go) = (step(1, &[10, 11], None), step(1, &[10, 11], Some(2)));
        let (yr, yi) = p.targets(&[&end, &go]).expect("targets");
        let (qr, qi) = p.target_values(&[&user(2)]).expect("q'");
        assert!(
            qr[0].abs() > 1e-4 && qi[0].abs() > 1e-4,
            "the test needs Q' != 0"
        );
        assert_eq!(yr[0], R_END);
        assert!(
            (yr[1] - (R_CONTINUE + 0.5 * qr[0])).abs() < 1e-6,
            "{} {}",
            yr[1],
            qr[0]
        );
        // The immediate critic: the slate's watch reward (item 10: 60 s -> 1).
        assert!((yi[0] - 1.0).abs() < 1e-6);
        assert!((yi[1] - (1.0 + 0.5 * qi[0])).abs() < 1e-6);
    }

    #[test]
    fn the_actor_climbs_the_critics() {
        let mut c = cfg();
        c.actor_lr = 1e-2;
        let mut p = RlurPolicy::new(&c, 7).expect("policy");
        let users: Vec<UserEnc> = (0..16).map(user).collect();
        let s = p
            .fields
            .user_input(&user_batch(&users.iter().collect::<Vec<_>>()).expect("b"))
            .expect("s")
            .detach();
        // J = mean (Q_ret + Q_imm)(s, mu(s)), computed apart from the step.
        let j = |p: &RlurPolicy| {
            let a = RlurPolicy::log_w(&p.actor, &s).expect("a");
            let sa = Tensor::cat(&[&s, &a], D::Minus1).expect("sa");
            let q =
                (p.q_ret.forward(&sa).expect("r") + p.q_imm.forward(&sa).expect("i")).expect("q");
            q.mean_all().expect("m").to_scalar::<f32>().expect("j")
        };
        let (before, w) = (j(&p), p.weights(&users[0]).expect("w"));
        for _ in 0..100 {
            p.actor_step(&s).expect("step");
        }
        assert!(j(&p) > before + 1e-3, "J: {before} -> {}", j(&p));
        assert_ne!(p.weights(&users[0]).expect("w"), w, "the weights moved");
        // The critics are not stepped by the actor loss.
        let sa = Tensor::cat(
            &[
                &s,
                &Tensor::zeros((16, K), candle_core::DType::F32, s.device()).expect("0"),
            ],
            D::Minus1,
        )
        .expect("sa");
        let fresh = RlurPolicy::new(&c, 7).expect("fresh");
        assert_eq!(
            to_vec(&p.q_ret.forward(&sa).expect("q")).expect("v"),
            to_vec(&fresh.q_ret.forward(&sa).expect("q")).expect("v")
        );
    }

    #[test]
    fn the_logged_action_is_the_one_the_policy_ranked_with() {
        for cap in [3, 2] {
            let c = BaselineConfig {
                buffer_capacity: cap,
                ..cfg()
            };
            let mut p = RlurPolicy::new(&c, 8).expect("policy");
            p.rank(&request(1, 2), 2, &NoPeek);
            p.rank(&request(2, 2), 2, &NoPeek);
            let taken = p.taken.clone();
            assert_ne!(taken[&1], taken[&2], "the exploration noise differs");
            p.end_round(&events());
            assert_eq!(p.errors, 0);
            assert!(p.taken.is_empty());
            // Request 3 was not ranked by this policy: no logged action. With
            // room for 2 steps, its step (1 item) replaced request 1's.
            let (want, sizes) = if cap == 3 {
                (vec![Some(taken[&1]), Some(taken[&2]), None], vec![2, 2, 1])
            } else {
                (vec![None, Some(taken[&2])], vec![1, 2])
            };
            let got: Vec<_> = p.actions.iter().map(|x| x.map(|x| x.1)).collect();
            assert_eq!(got, want);
            let got: Vec<_> = p.buffer.steps().iter().map(|s| s.items.len()).collect();
            assert_eq!(got, sizes);
        }
    }

    #[test]
    fn ranks_k_distinct_candidates_and_is_deterministic_per_seed() {
        let (mut a, mut b) = (
            RlurPolicy::new(&cfg(), 9).expect("a"),
            RlurPolicy::new(&cfg(), 9).expect("b"),
        );
        assert_eq!(a.name(), "rlur");
        let mut rankings = Vec::new();
        for round in 0..3 {
            for p in [&mut a, &mut b] {
                let r = p.rank(&request(round + 1, 6), 4, &NoPeek);
                let distinct: HashSet<usize> = r.iter().copied().collect();
                assert!(
                    r.len() == 4 && distinct.len() == 4 && r.iter().all(|&i| i < 6),
                    "{r:?}"
                );
                rankings.push(r);
                p.end_round(&events());
                assert_eq!(p.errors, 0);
            }
            assert_eq!(rankings[rankings.len() - 2], rankings[rankings.len() - 1]);
        }
        assert_eq!(
            a.weights(&user(1)).expect("wa"),
            b.weights(&user(1)).expect("wb")
        );
    }
}
