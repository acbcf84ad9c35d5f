//! DQN: Mnih et al., "Human-level control through deep reinforcement
//! learning", Nature 518, 2015, with the double-DQN target of van Hasselt,
//! Guez and Silver, "Deep Reinforcement Learning with Double Q-learning",
//! AAAI 2016. The paper's Section 4.1.2 names it as a baseline ([39]).
//!
//! Design choices (where the papers and the task leave freedom):
//! - An action is one candidate item: `Q(s, a) = MLP(user side ++ item side)`
//!   over [`Fields::pair_input`] (hidden widths `cfg.hidden`, one scalar out).
//! - Transition of shown item `i` of a logged step `s`: reward
//!   `r_i = crate::reward` (watch seconds / `watch_scale`), next state
//!   `s.next` (the user's next request in the session), whose action set is
//!   the logged next slate `s.next.items` (the only candidates the log knows).
//! - Double-DQN target: `y = r_i + gamma * Q_target(s', argmax_{j in s'.items}
//!   Q_online(s', j))`; `y = r_i` when `s.next` is `None` (or its slate is
//!   empty). The argmax is taken in Rust over one flattened batch of every
//!   next item of the minibatch; `y` carries no gradient.
//! - Loss: Huber (delta 1) on `Q_online(s, a_i) - y`, mean over the batch.
//! - Optimiser: Adam, `cfg.critic_lr` for the MLP and `cfg.embedding_lr` for
//!   the embedding table. The target network (MLP and embedding table) starts
//!   equal to the online one (same parameter seed) and is soft-updated with
//!   `cfg.tau` after every gradient step.
//! - Ranking is greedy by `Q_online(s, candidate)`: there is no epsilon
//!   exploration (the evaluation compares learned rankings); the random tie
//!   keys only break exact ties.
//!
//! [`QNet`], [`double_dqn_targets`], [`td_loss`], [`QLearner`] and
//! [`QAgent`] are shared with [`crate::cql`].

use candle_core::{Module, Result, Tensor};
use rliv_sim::events::RoundEvents;
use rliv_sim::policy::{top_k_by, Policy, Request, WorldPeek};
use rliv_sim::rng::Rng;

use crate::features::{History, ItemEnc, Step, StepBuffer, UserEnc};
use crate::nets::{soft_update, to_vec, vector, Adam2, Fields, Mlp, PairBatch, Params};
use crate::{reward, BaselineConfig};

/// Mixed into DQN's seed for its parameters.
const DQN_SALT: u64 = 0x9d0a_5e11_0000_0001;

/// A Q-network over (user, item) pairs: embedding table + MLP.
pub struct QNet {
    fields: Fields,
    mlp: Mlp,
    /// Its parameters (networks, then the embedding table).
    pub params: Params,
}

impl QNet {
    /// A network drawn from `seed` (equal seeds give equal networks).
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<QNet> {
        let mut params = Params::new(seed);
        let fields = Fields::new(&mut params, cfg.id_rows.max(1), cfg.embedding_dim)?;
        let mlp = params.mlp(fields.user_width() + fields.item_width(), &cfg.hidden, 1)?;
        Ok(QNet {
            fields,
            mlp,
            params,
        })
    }

    /// `Q` of every row of the batch: `[B]`.
    pub fn q(&self, b: &PairBatch) -> Result<Tensor> {
        self.mlp.forward(&self.fields.pair_input(b)?)?.squeeze(1)
    }

    /// `Q(user, item)` for each of `items`.
    pub fn scores(&self, user: &UserEnc, items: &[ItemEnc]) -> Result<Vec<f32>> {
        to_vec(&self.q(&PairBatch::for_user(user, items)?)?)
    }
}

/// One transition: item `.1` of step `.0`.
pub type Sample<'a> = (&'a Step, usize);

/// A regulariser of the online network (CQL's penalty): returns
/// `Q(s, a_i)` of the samples (`[B]`, computed in the same pass) and the
/// scalar term added to the TD loss.
pub type Penalty<'p> = &'p dyn Fn(&QNet, &[Sample<'_>]) -> Result<(Tensor, Tensor)>;

/// The double-DQN targets `y` of `samples` (see the module doc).
pub fn double_dqn_targets(
    online: &QNet,
    target: &QNet,
    samples: &[Sample<'_>],
    cfg: &BaselineConfig,
) -> Result<Vec<f32>> {
    let mut y: Vec<f32> = samples
        .iter()
        .map(|(s, i)| s.feedback.get(*i).map_or(0.0, |f| reward(f, cfg)))
        .collect();
    // Every next item of the non-terminal samples, flattened; segments
    // (sample, start, len) into the flat batch.
    let (mut users, mut items, mut segs) = (Vec::new(), Vec::new(), Vec::new());
    for (k, (s, _)) in samples.iter().enumerate() {
        if let Some(n) = s.next.as_deref().filter(|n| !n.items.is_empty()) {
            segs.push((k, items.len(), n.items.len()));
            users.extend(std::iter::repeat_n(&n.user, n.items.len()));
            items.extend(n.items.iter());
        }
    }
    if segs.is_empty() {
        return Ok(y);
    }
    let q_on = to_vec(&online.q(&PairBatch::new(&users, &items)?)?)?;
    let best: Vec<usize> = segs
        .iter()
        .map(|&(_, start, len)| {
            (start..start + len).fold(start, |b, j| if q_on[j] > q_on[b] { j } else { b })
        })
        .collect();
    let bu: Vec<&UserEnc> = best.iter().map(|&j| users[j]).collect();
    let bi: Vec<&ItemEnc> = best.iter().map(|&j| items[j]).collect();
    let q_tg = to_vec(&target.q(&PairBatch::new(&bu, &bi)?)?)?;
    for (&(k, _, _), q) in segs.iter().zip(q_tg) {
        y[k] += cfg.gamma as f32 * q;
    }
    Ok(y)
}

/// Huber loss (delta 1) of `q_sa - y`, mean over the batch.
pub fn td_loss(q_sa: &Tensor, y: &Tensor) -> Result<Tensor> {
    let a = (q_sa - y)?.abs()?;
    let m = a.clamp(0f32, 1f32)?;
    ((m.sqr()? * 0.5)? + (a - &m)?)?.mean_all()
}

/// Online and target Q-networks with their optimiser.
pub struct QLearner {
    /// The trained network (ranks).
    pub online: QNet,
    /// The slowly following network of the targets.
    pub target: QNet,
    opt: Adam2,
    cfg: BaselineConfig,
}

impl QLearner {
    /// Both networks drawn from `seed` (so they start equal).
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<QLearner> {
        let online = QNet::new(cfg, seed)?;
        let target = QNet::new(cfg, seed)?;
        let p = &online.params;
        let opt = Adam2::new(
            p.net.clone(),
            cfg.critic_lr,
            p.emb.clone(),
            cfg.embedding_lr,
        )?;
        Ok(QLearner {
            online,
            target,
            opt,
            cfg: cfg.clone(),
        })
    }

    /// One gradient step on TD loss (+ `penalty`), then the soft target
    /// update. Returns the loss.
    pub fn update(&mut self, samples: &[Sample<'_>], penalty: Option<Penalty<'_>>) -> Result<f32> {
        let samples: Vec<Sample<'_>> = samples
            .iter()
            .copied()
            .filter(|(s, i)| *i < s.items.len())
            .collect();
        if samples.is_empty() {
            return Ok(0.0);
        }
        let y = double_dqn_targets(&self.online, &self.target, &samples, &self.cfg)?;
        let loss = match penalty {
            Some(p) => {
                let (q_sa, extra) = p(&self.online, &samples)?;
                (td_loss(&q_sa, &vector(&y)?)? + extra)?
            }
            None => {
                let users: Vec<&UserEnc> = samples.iter().map(|(s, _)| &s.user).collect();
                let items: Vec<&ItemEnc> = samples.iter().map(|(s, i)| &s.items[*i]).collect();
                let q_sa = self.online.q(&PairBatch::new(&users, &items)?)?;
                td_loss(&q_sa, &vector(&y)?)?
            }
        };
        self.opt.backward_step(&loss)?;
        soft_update(
            &self.target.params.all(),
            &self.online.params.all(),
            self.cfg.tau,
        )?;
        loss.to_scalar::<f32>()
    }
}

/// What DQN and CQL share: the history, the step buffer, the learner and
/// the greedy ranking.
pub struct QAgent {
    /// Hyperparameters.
    pub cfg: BaselineConfig,
    /// The features' counters.
    pub history: History,
    /// Logged steps to train on.
    pub buffer: StepBuffer,
    /// Sampling and tie keys.
    pub rng: Rng,
    /// The Q-networks.
    pub learner: QLearner,
    /// Gradient steps taken.
    pub updates: u64,
    /// Candle errors seen (the first is printed).
    pub errors: u64,
    /// Items shown in the last observed round (sets the round's budget).
    pub last_shown: usize,
}

impl QAgent {
    /// An untrained agent; parameters from `seed ^ salt`.
    pub fn new(cfg: &BaselineConfig, seed: u64, salt: u64) -> Result<QAgent> {
        Ok(QAgent {
            cfg: cfg.clone(),
            history: History::new(cfg.id_rows, seed),
            buffer: StepBuffer::new(cfg.buffer_capacity),
            rng: Rng::new(seed),
            learner: QLearner::new(cfg, seed ^ salt)?,
            updates: 0,
            errors: 0,
            last_shown: 0,
        })
    }

    fn fail(&mut self, e: &candle_core::Error) {
        if self.errors == 0 {
            eprintln!("q-learning baseline: {e}");
        }
        self.errors += 1;
    }

    /// Top `k` candidates by `Q_online`, random tie keys; a random order if
    /// scoring fails.
    pub fn rank(&mut self, req: &Request, k: usize) -> Vec<usize> {
        let tie: Vec<u64> = req.candidates.iter().map(|_| self.rng.next_u64()).collect();
        if req.candidates.is_empty() {
            return Vec::new();
        }
        let (user, items) = self.history.encode_request(req);
        match self.learner.online.scores(&user, &items) {
            Ok(q) => {
                let s: Vec<f64> = q.iter().map(|&x| x as f64).collect();
                top_k_by(&s, &tie, k)
            }
            Err(e) => {
                self.fail(&e);
                crate::random_top_k(&mut self.rng, req.candidates.len(), k)
            }
        }
    }

    /// Adds the round's steps to the buffer (if `keep_steps`), encoded with
    /// the history as it was when they were ranked, then refreshes the
    /// history.
    pub fn observe(&mut self, events: &RoundEvents, keep_steps: bool) {
        self.last_shown = events.exposures.len();
        if keep_steps {
            self.buffer.record(&mut self.history, events);
        } else {
            self.history.add_round(events);
        }
    }

    /// `cfg.updates(shown)` gradient steps (after a round that showed
    /// `shown` items) on minibatches of `cfg.batch_size` items sampled from
    /// the buffer.
    pub fn train(&mut self, penalty: Option<Penalty<'_>>) {
        for _ in 0..self.cfg.updates(self.last_shown) {
            let samples = self.buffer.sample_items(&mut self.rng, self.cfg.batch_size);
            if samples.is_empty() {
                return;
            }
            if let Err(e) = self.learner.update(&samples, penalty) {
                self.fail(&e);
                return;
            }
            self.updates += 1;
        }
    }
}

/// The DQN baseline (name "dqn").
pub struct DqnPolicy {
    /// History, buffer and networks.
    pub agent: QAgent,
}

impl DqnPolicy {
    /// An untrained policy, deterministic per `seed`.
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<DqnPolicy> {
        Ok(DqnPolicy {
            agent: QAgent::new(cfg, seed, DQN_SALT)?,
        })
    }
}

impl Policy for DqnPolicy {
    fn name(&self) -> String {
        "dqn".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        self.agent.rank(req, k)
    }

    fn end_round(&mut self, events: &RoundEvents) {
        self.agent.observe(events, true);
        self.agent.train(None);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::{Feedback, NextState, ITEM_DENSE, ITEM_FIELDS, USER_DENSE, USER_FIELDS};
    use rliv_sim::events::{Action, ActionKind, Exposure};
    use rliv_sim::policy::{Candidate, NoPeek};

    pub(crate) fn small_cfg() -> BaselineConfig {
        BaselineConfig {
            hidden: vec![16, 16],
            embedding_dim: 4,
            id_rows: 64,
            batch_size: 32,
            updates_per_round: 5,
            critic_lr: 1e-2,
            embedding_lr: 1e-2,
            ..BaselineConfig::default()
        }
    }

    pub(crate) fn user(rng: &mut Rng) -> UserEnc {
        UserEnc {
            ids: [0; USER_FIELDS].map(|_| rng.index(64) as u32),
            dense: [0.0; USER_DENSE].map(|_| rng.uniform() as f32),
        }
    }

    pub(crate) fn item(rng: &mut Rng) -> ItemEnc {
        ItemEnc {
            ids: [0; ITEM_FIELDS].map(|_| rng.index(64) as u32),
            dense: [0.0; ITEM_DENSE].map(|_| rng.uniform() as f32),
        }
    }

    /// A step whose items were watched `watch[i]` seconds.
    pub(crate) fn step(
        u: UserEnc,
        items: Vec<ItemEnc>,
        watch: &[f32],
        next: Option<NextState>,
    ) -> Step {
        let fb = |&watch_s: &f32| Feedback {
            watch_s,
            ..Feedback::default()
        };
        let feedback = watch.iter().map(fb).collect();
        let next = next.map(Box::new);
        Step {
            user: u,
            items,
            feedback,
            next,
        }
    }

    #[test]
    fn the_target_uses_the_target_net() {
        let cfg = small_cfg();
        let mut rng = Rng::new(3);
        let online = QNet::new(&cfg, 1).expect("online");
        let target = QNet::new(&cfg, 1).expect("target");
        // Q_target = Q_online + 1 everywhere (the output bias is shifted).
        let bias = target.params.net.last().expect("bias");
        bias.set(&(bias.as_tensor() + 1.0).expect("+1"))
            .expect("set");
        let next = NextState {
            user: user(&mut rng),
            items: (0..4).map(|_| item(&mut rng)).collect(),
        };
        let live = step(user(&mut rng), vec![item(&mut rng)], &[30.0], Some(next));
        let done = step(user(&mut rng), vec![item(&mut rng)], &[30.0], None);
        let samples = [(&live, 0), (&done, 0)];
        let y_t = double_dqn_targets(&online, &target, &samples, &cfg).expect("y");
        let y_o = double_dqn_targets(&online, &online, &samples, &cfg).expect("y online");
        assert!(
            (y_t[0] - y_o[0] - cfg.gamma as f32).abs() < 1e-5,
            "{y_t:?} vs {y_o:?}"
        );
        assert_eq!(y_t[1], 0.5, "terminal: the reward alone (30 s / 60 s)");
    }

    #[test]
    fn the_double_dqn_argmax_is_taken_by_the_online_net() {
        let cfg = small_cfg();
        let online = QNet::new(&cfg, 1).expect("online");
        let target = QNet::new(&cfg, 2).expect("target");
        let mut rng = Rng::new(5);
        for _ in 0..100 {
            let next = NextState {
                user: user(&mut rng),
                items: (0..5).map(|_| item(&mut rng)).collect(),
            };
            let q_on = online.scores(&next.user, &next.items).expect("on");
            let q_tg = target.scores(&next.user, &next.items).expect("tg");
            let argmax = |q: &[f32]| (0..q.len()).fold(0, |b, j| if q[j] > q[b] { j } else { b });
            let (a_on, a_tg) = (argmax(&q_on), argmax(&q_tg));
            if a_on == a_tg {
                continue; // the nets agree here: no evidence either way
            }
            let s = step(user(&mut rng), vec![item(&mut rng)], &[0.0], Some(next));
            let y = double_dqn_targets(&online, &target, &[(&s, 0)], &cfg).expect("y")[0];
            let gamma = cfg.gamma as f32;
            assert!(
                (y - gamma * q_tg[a_on]).abs() < 1e-5,
                "Q_target at the online argmax"
            );
            assert!(
                (y - gamma * q_tg[a_tg]).abs() > 1e-5,
                "not the target's own max"
            );
            return;
        }
        panic!("no slate where the nets' argmaxes differ");
    }

    #[test]
    fn updates_fit_a_terminal_reward() {
        let cfg = small_cfg();
        let mut rng = Rng::new(7);
        let s = step(user(&mut rng), vec![item(&mut rng)], &[120.0], None);
        let mut l = QLearner::new(&cfg, 9).expect("learner");
        for _ in 0..300 {
            l.update(&[(&s, 0)], None).expect("update");
        }
        let q = l.online.scores(&s.user, &s.items).expect("q")[0];
        assert!((q - 2.0).abs() < 0.1, "Q -> r = 2, got {q}");
        // The target followed (soft updates), but only part of the way.
        let q_tg = l.target.scores(&s.user, &s.items).expect("q target")[0];
        let q_0 = QNet::new(&cfg, 9)
            .and_then(|n| n.scores(&s.user, &s.items))
            .expect("q0")[0];
        assert!(
            q_tg != q_0 && (q_tg - q).abs() > 0.1,
            "{q_0} -> {q_tg} (online {q})"
        );
    }

    /// Round `r`: users 1..=4, two requests of 3 items each one minute
    /// apart; the first item of every request is watched.
    pub(crate) fn round(r: u32) -> RoundEvents {
        let mut ev = RoundEvents {
            round: r,
            exposures: Vec::new(),
            actions: Vec::new(),
        };
        for (u, q) in (1..=4u64).flat_map(|u| [(u, 0u64), (u, 1)]) {
            let (request_id, ts_ms) = (
                r as u64 * 100 + u * 10 + q,
                (r as i64 * 1440 + q as i64) * 60_000,
            );
            for p in 0..3 {
                let item_id = (u * 7 + q * 3 + p + r as u64) % 20;
                ev.exposures.push(Exposure {
                    request_id,
                    user_id: u,
                    item_id,
                    author_id: item_id % 5 + 1,
                    ts_ms,
                    position: p as u32,
                    user_feats: vec![u as u32 % 3, 1],
                    item_feats: vec![item_id as u32 % 4],
                });
            }
            let item_id = (u * 7 + q * 3 + r as u64) % 20;
            for (action, value) in [
                (ActionKind::Click, 1.0),
                (ActionKind::Watch, 20.0 + u as f64),
            ] {
                let ts_ms = ts_ms + 1_000;
                let user_id = u;
                ev.actions.push(Action {
                    request_id,
                    user_id,
                    item_id,
                    ts_ms,
                    action,
                    value,
                });
            }
        }
        ev
    }

    pub(crate) fn request(id: u64) -> Request {
        Request {
            request_id: id,
            user_id: 2,
            user_feats: vec![2, 1],
            ts_ms: 5 * 86_400_000,
            candidates: (0..8)
                .map(|i| Candidate {
                    item_id: i * 3,
                    author_id: i % 5 + 1,
                    item_feats: vec![(i % 4) as u32],
                })
                .collect(),
        }
    }

    /// `make()` ranks k distinct valid indices before and after
    /// `end_round` (with and without a ranking before the rounds), and two
    /// policies from `make()` fed the same events rank alike.
    pub(crate) fn check_ranking(make: impl Fn() -> Box<dyn Policy>) {
        let req = request(1);
        let valid = |r: &[usize]| {
            let mut s = r.to_vec();
            s.sort_unstable();
            s.dedup();
            s.len() == 3 && r.len() == 3 && s.iter().all(|&i| i < req.candidates.len())
        };
        for rank_first in [true, false] {
            let (mut a, mut b) = (make(), make());
            if rank_first {
                let before = a.rank(&req, 3, &NoPeek);
                assert!(valid(&before), "{before:?}");
                assert_eq!(before, b.rank(&req, 3, &NoPeek));
            }
            for r in 0..2 {
                a.end_round(&round(r));
                b.end_round(&round(r));
            }
            let after = a.rank(&req, 3, &NoPeek);
            assert!(valid(&after), "{after:?}");
            assert_eq!(after, b.rank(&req, 3, &NoPeek));
        }
    }

    #[test]
    fn dqn_ranks_k_distinct_candidates_deterministically() {
        check_ranking(|| Box::new(DqnPolicy::new(&small_cfg(), 11).expect("dqn")));
        let mut p = DqnPolicy::new(&small_cfg(), 11).expect("dqn");
        p.end_round(&round(0));
        assert_eq!((p.agent.updates, p.agent.errors), (5, 0));
        assert_eq!(p.name(), "dqn");
    }
}
