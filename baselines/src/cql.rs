//! CQL, discrete version: Kumar, Zhou, Tucker and Levine, "Conservative
//! Q-Learning for Offline Reinforcement Learning", NeurIPS 2020 (the
//! CQL(H) objective for discrete actions). The paper's Section 4.1.2 names
//! it as the offline-RL baseline ([24]).
//!
//! Loss = the double-DQN TD loss of [`crate::dqn`] (same network, targets,
//! Huber loss, optimiser and soft target update) plus
//! `cfg.cql_alpha * mean_samples [logsumexp_{a in slate(s)} Q(s, a) - Q(s, a_logged)]`.
//!
//! Design choices:
//! - The action set of a logged step is its logged slate (the shown items:
//!   the only candidates the log records for that request), and `a_logged`
//!   is the sampled shown item of the transition. The penalty is computed on
//!   one flattened batch of every sampled step's slate, padded per sample to
//!   the longest slate with masked (-1e9) entries before the logsumexp.
//! - Offline: CQL trains only on the logged history it is given before it
//!   ranks anything. Once [`Policy::rank`] has been called, `end_round`
//!   still refreshes the [`crate::features::History`] (features stay
//!   current) but adds no steps to the buffer and takes no gradient steps.
//!   A harness hands it the log by calling `end_round` on past rounds
//!   before the first `rank` (a CQL that ranks first never trains).
//! - Ranking: greedy by `Q`, random keys only break ties (as DQN).

use candle_core::{Device, Result, Tensor};
use rliv_sim::events::RoundEvents;
use rliv_sim::policy::{Policy, Request, WorldPeek};

use crate::dqn::{QAgent, QNet, Sample};
use crate::features::{ItemEnc, UserEnc};
use crate::nets::{vector, PairBatch};
use crate::BaselineConfig;

/// Mixed into CQL's seed for its parameters.
const CQL_SALT: u64 = 0xc0de_5e11_0000_0002;

/// `Q(s, a_logged)` of the samples (`[B]`) and the unweighted penalty
/// `mean_samples [logsumexp_{a in slate(s)} Q(s, a) - Q(s, a_logged)]`,
/// from one pass over the flattened slates (every `(step, i)` must have
/// `i < step.items.len()`, as [`crate::dqn::QLearner::update`] ensures).
pub fn cql_terms(q: &QNet, samples: &[Sample<'_>]) -> Result<(Tensor, Tensor)> {
    let width = samples
        .iter()
        .map(|(s, _)| s.items.len())
        .max()
        .unwrap_or(0);
    let (mut users, mut items): (Vec<&UserEnc>, Vec<&ItemEnc>) = (Vec::new(), Vec::new());
    let (mut pad, mut mask, mut logged) = (Vec::new(), Vec::new(), Vec::new());
    for (s, i) in samples {
        let start = items.len() as u32;
        users.extend(std::iter::repeat_n(&s.user, s.items.len()));
        items.extend(s.items.iter());
        for j in 0..width {
            let real = j < s.items.len();
            pad.push(if real { start + j as u32 } else { start });
            mask.push(if real { 0f32 } else { -1e9 });
        }
        logged.push(start + *i as u32);
    }
    let n = samples.len();
    if n == 0 || width == 0 {
        return Ok((vector(&[])?, Tensor::new(0f32, &Device::Cpu)?));
    }
    let q_all = q.q(&PairBatch::new(&users, &items)?)?;
    let padded = q_all
        .index_select(&Tensor::from_vec(pad, n * width, &Device::Cpu)?, 0)?
        .reshape((n, width))?;
    let lse = (padded + vector(&mask)?.reshape((n, width))?)?.log_sum_exp(1)?;
    let q_logged = q_all.index_select(&Tensor::from_vec(logged, n, &Device::Cpu)?, 0)?;
    let penalty = (lse - &q_logged)?.mean_all()?;
    Ok((q_logged, penalty))
}

/// The CQL baseline (name "cql").
pub struct CqlPolicy {
    /// History, buffer and networks (shared with DQN).
    pub agent: QAgent,
    /// Whether `rank` has been called (training is over).
    pub ranked: bool,
}

impl CqlPolicy {
    /// An untrained policy, deterministic per `seed`.
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<CqlPolicy> {
        Ok(CqlPolicy {
            agent: QAgent::new(cfg, seed, CQL_SALT)?,
            ranked: false,
        })
    }
}

impl Policy for CqlPolicy {
    fn name(&self) -> String {
        "cql".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        self.ranked = true;
        self.agent.rank(req, k)
    }

    fn end_round(&mut self, events: &RoundEvents) {
        self.agent.observe(events, !self.ranked);
        if !self.ranked {
            let alpha = self.agent.cfg.cql_alpha;
            let penalty = move |q: &QNet, s: &[Sample<'_>]| {
                let (q_sa, p) = cql_terms(q, s)?;
                Ok((q_sa, (p * alpha)?))
            };
            self.agent.train(Some(&penalty));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dqn::tests::{check_ranking, item, request, round, small_cfg, step, user};
    use crate::dqn::QLearner;
    use crate::nets::to_vec;
    use rliv_sim::policy::NoPeek;
    use rliv_sim::rng::Rng;

    #[test]
    fn the_penalty_is_the_slate_logsumexp_minus_the_logged_q() {
        let cfg = small_cfg();
        let q = QNet::new(&cfg, 4).expect("q");
        let mut rng = Rng::new(1);
        let a = step(
            user(&mut rng),
            (0..3).map(|_| item(&mut rng)).collect(),
            &[0.0; 3],
            None,
        );
        let b = step(user(&mut rng), vec![item(&mut rng)], &[0.0], None);
        let samples = [(&a, 2), (&b, 0), (&a, 0)];
        let (q_logged, penalty) = cql_terms(&q, &samples).expect("terms");
        let got = penalty.to_scalar::<f32>().expect("scalar");
        let want: f32 = samples
            .iter()
            .map(|(s, i)| {
                let v = q.scores(&s.user, &s.items).expect("scores");
                v.iter().map(|x| x.exp()).sum::<f32>().ln() - v[*i]
            })
            .sum::<f32>()
            / 3.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let q_a = q.scores(&a.user, &a.items).expect("a");
        let q_b = q.scores(&b.user, &b.items).expect("b");
        let logged = to_vec(&q_logged).expect("logged");
        assert_eq!(logged, vec![q_a[2], q_b[0], q_a[0]]);
    }

    #[test]
    fn the_penalty_lowers_unlogged_items_relative_to_dqn() {
        // A fixed buffer of 4 terminal steps with slates [A, B]; the data
        // only ever took A (watched 60 s): B is in the action set, unlogged.
        // (The policy samples every shown item; here the samples are fixed
        // to item 0 so that B is an action the data never took.)
        let cfg = small_cfg();
        let mut rng = Rng::new(2);
        let steps: Vec<_> = (0..4)
            .map(|_| {
                step(
                    user(&mut rng),
                    vec![item(&mut rng), item(&mut rng)],
                    &[60.0, 0.0],
                    None,
                )
            })
            .collect();
        let samples: Vec<Sample<'_>> = steps.iter().map(|s| (s, 0)).collect();
        let gap = |l: &QLearner| {
            let g: f32 = steps
                .iter()
                .map(|s| {
                    let q = l.online.scores(&s.user, &s.items).expect("q");
                    q[1] - q[0]
                })
                .sum();
            g / steps.len() as f32
        };
        let mut dqn = QLearner::new(&cfg, 8).expect("dqn");
        let mut cql = QLearner::new(&cfg, 8).expect("cql");
        let penalty = |q: &QNet, s: &[Sample<'_>]| cql_terms(q, s);
        for _ in 0..300 {
            dqn.update(&samples, None).expect("dqn update");
            cql.update(&samples, Some(&penalty)).expect("cql update");
        }
        let (g_dqn, g_cql) = (gap(&dqn), gap(&cql));
        assert!(g_cql < g_dqn - 1.0, "Q(B) - Q(A): cql {g_cql}, dqn {g_dqn}");
    }

    #[test]
    fn cql_stops_training_after_it_has_ranked() {
        let mut p = CqlPolicy::new(&small_cfg(), 3).expect("cql");
        p.end_round(&round(0));
        assert_eq!((p.agent.updates, p.agent.errors), (5, 0));
        let held = p.agent.buffer.len();
        assert!(held > 0);
        let req = request(1);
        p.rank(&req, 3, &NoPeek);
        let (u, items) = p.agent.history.encode_request(&req);
        let q_before = p.agent.learner.online.scores(&u, &items).expect("q");
        p.end_round(&round(1));
        assert_eq!(p.agent.updates, 5, "no updates after ranking");
        assert_eq!(p.agent.buffer.len(), held, "no new steps after ranking");
        assert_eq!(
            p.agent.learner.online.scores(&u, &items).expect("q"),
            q_before
        );
        let (_, items_now) = p.agent.history.encode_request(&req);
        assert_ne!(items_now, items, "the history is still refreshed");
    }

    #[test]
    fn cql_ranks_k_distinct_candidates_deterministically() {
        check_ranking(|| Box::new(CqlPolicy::new(&small_cfg(), 12).expect("cql")));
        assert_eq!(CqlPolicy::new(&small_cfg(), 12).expect("cql").name(), "cql");
    }
}
