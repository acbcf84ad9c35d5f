//! DeepFM, the paper's "RankingModel" baseline: Huifeng Guo, Ruiming Tang,
//! Yunming Ye, Zhenguo Li and Xiuqiang He, "DeepFM: A Factorization-Machine
//! based Neural Network for CTR Prediction", IJCAI 2017. A supervised model
//! of the immediate feedback (no RL, no discounting).
//!
//! The fields are the 10 id fields of [`crate::features`] (5 user, 5 item),
//! each with an embedding `v_f` (dimension `cfg.embedding_dim`) from one
//! shared [`Fields`] table, and the 11 dense counters (user then item). The
//! output for a (user, item) pair is, per head `h`,
//!
//! `y_h = sum_f w_{f,h} + <a_h, dense> + b_h` (first order)
//! `    + 0.5 * sum_k [(sum_f v_fk)^2 - sum_f v_fk^2]` (FM, [`fm_second_order`])
//! `    + MLP_h([v_1 .. v_10, dense])` (deep part, `cfg.hidden`, ReLU),
//!
//! with the embeddings shared by the FM and the deep part, as in the paper.
//! Choices where the paper leaves freedom:
//! - two heads, not one: `h = 0` is the click logit (loss: binary cross
//!   entropy with logits, in its numerically stable form) and `h = 1` the
//!   watch time in units of `cfg.watch_scale` (60 s; loss: mean squared error
//!   against [`crate::reward`], the unconditional watch, so the head learns
//!   the expected watch `P(click) * E[watch | click]`). Loss = BCE + MSE;
//! - the first-order weights `w_{f,h}` are a second hashed table of width 2
//!   (one scalar per row and head); the dense counters enter the first order
//!   through one linear layer (with the bias `b_h`) and the deep part as
//!   they are; the FM term has no field of its own for them;
//! - the FM term is one scalar shared by both heads (the embeddings are
//!   shared anyway); the first order and the MLP's last layer are per head;
//! - candidates are ranked by the predicted watch (head 1): the expected
//!   watch time is what the paper's offline metrics reward (ranking by the
//!   click head would optimise CTR only); ties broken by random keys;
//! - training: `cfg.updates(shown)` Adam steps per round on
//!   `cfg.batch_size` shown items drawn uniformly from the buffer of logged
//!   steps, nets at `cfg.critic_lr`, both tables at `cfg.embedding_lr`.

use candle_core::{Module, Result, Tensor};
use candle_nn::Linear;
use rliv_sim::events::RoundEvents;
use rliv_sim::policy::{top_k_by, Policy, Request, WorldPeek};
use rliv_sim::rng::Rng;

use crate::features::{
    History, ItemEnc, StepBuffer, UserEnc, ITEM_DENSE, ITEM_FIELDS, USER_DENSE, USER_FIELDS,
};
use crate::nets::{to_vec, vector, Adam2, Fields, Mlp, PairBatch, Params};
use crate::BaselineConfig;

/// Mixed into the seed of the parameters (the tie keys use the seed itself).
const PARAM_SALT: u64 = 0xDEE9_F00D_2017_0001;
/// Id fields of a (user, item) pair.
const FIELDS: usize = USER_FIELDS + ITEM_FIELDS;
/// Dense features of a (user, item) pair.
const DENSE: usize = USER_DENSE + ITEM_DENSE;
/// Outputs: click logit, watch / watch_scale.
const HEADS: usize = 2;

/// The FM's pairwise term of each row of `emb` (`[B, F, K]`):
/// `0.5 * sum_k [(sum_f v_fk)^2 - sum_f v_fk^2] = sum_{i<j} <v_i, v_j>`, as `[B]`.
pub fn fm_second_order(emb: &Tensor) -> Result<Tensor> {
    let (_, f, k) = emb.dims3()?;
    let flat = emb.flatten_from(1)?;
    // sum_f v_fk as a product with F stacked identities (candle's sum over
    // a middle axis is several times slower than this, backward included).
    let stacked = Tensor::eye(k, emb.dtype(), emb.device())?.repeat((f, 1))?;
    let square_of_sum = flat.matmul(&stacked)?.sqr()?.sum(1)?;
    let sum_of_squares = flat.sqr()?.sum(1)?;
    (square_of_sum - sum_of_squares)? * 0.5
}

/// Mean of the binary cross entropy of `logits` against 0/1 `targets`,
/// as `max(x, 0) - x y + ln(1 + e^{-|x|})`.
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let soft = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    ((logits.relu()? - (logits * targets)?)? + soft)?.mean_all()
}

/// The DeepFM network: `[B, 2]` = (click logit, watch / watch_scale).
struct DeepFmNet {
    emb: Fields,
    first: Fields,
    dense: Linear,
    deep: Mlp,
}

impl DeepFmNet {
    fn new(p: &mut Params, rows: usize, dim: usize, hidden: &[usize]) -> Result<DeepFmNet> {
        Ok(DeepFmNet {
            emb: Fields::new(p, rows, dim)?,
            first: Fields::new(p, rows, HEADS)?,
            dense: p.linear(DENSE, HEADS)?,
            deep: p.mlp(FIELDS * dim + DENSE, hidden, HEADS)?,
        })
    }

    fn forward(&self, b: &PairBatch) -> Result<Tensor> {
        let ids = Tensor::cat(&[&b.user_ids, &b.item_ids], 1)?;
        let dense = Tensor::cat(&[&b.user_dense, &b.item_dense], 1)?;
        let v = self.emb.lookup(&ids)?;
        let first = (self.first.lookup(&ids)?.sum(1)? + self.dense.forward(&dense)?)?;
        let fm = fm_second_order(&v)?.unsqueeze(1)?;
        let deep = self
            .deep
            .forward(&Tensor::cat(&[&v.flatten_from(1)?, &dense], 1)?)?;
        (first + deep)?.broadcast_add(&fm)
    }
}

/// DeepFM ranking by predicted watch time; see the module docs.
pub struct DeepFmPolicy {
    cfg: BaselineConfig,
    history: History,
    buffer: StepBuffer,
    rng: Rng,
    net: DeepFmNet,
    opt: Adam2,
    /// Candle errors met (ranking fell back to a random order, or an update
    /// was skipped); the first is printed.
    pub errors: u64,
}

impl DeepFmPolicy {
    /// A fresh, untrained policy.
    pub fn new(cfg: &BaselineConfig, seed: u64) -> Result<DeepFmPolicy> {
        let history = History::new(cfg.id_rows, seed);
        let mut p = Params::new(seed ^ PARAM_SALT);
        let dim = cfg.embedding_dim.max(1);
        let net = DeepFmNet::new(&mut p, history.rows(), dim, &cfg.hidden)?;
        let (lr, emb_lr) = (cfg.critic_lr, cfg.embedding_lr);
        let opt = Adam2::new(p.net.clone(), lr, p.emb.clone(), emb_lr)?;
        Ok(DeepFmPolicy {
            cfg: cfg.clone(),
            history,
            buffer: StepBuffer::new(cfg.buffer_capacity),
            rng: Rng::new(seed),
            net,
            opt,
            errors: 0,
        })
    }

    /// Predicted click probability and watch (in `watch_scale` units) of
    /// each of `items` for `user`.
    pub fn predict(&self, user: &UserEnc, items: &[ItemEnc]) -> Result<(Vec<f32>, Vec<f32>)> {
        if items.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let out = self.net.forward(&PairBatch::for_user(user, items)?)?;
        let click = candle_nn::ops::sigmoid(&out.narrow(1, 0, 1)?)?;
        Ok((to_vec(&click)?, to_vec(&out.narrow(1, 1, 1)?)?))
    }

    fn scores(&self, req: &Request) -> Result<Vec<f64>> {
        let (user, items) = self.history.encode_request(req);
        let (_, watch) = self.predict(&user, &items)?;
        Ok(watch.into_iter().map(f64::from).collect())
    }

    /// One Adam step on a minibatch of shown items from the buffer.
    fn update(&mut self) -> Result<()> {
        let sample = self.buffer.sample_items(&mut self.rng, self.cfg.batch_size);
        let rows: Vec<_> = sample
            .iter()
            .filter_map(|&(s, i)| Some((&s.user, s.items.get(i)?, s.feedback.get(i)?)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let users: Vec<&UserEnc> = rows.iter().map(|r| r.0).collect();
        let items: Vec<&ItemEnc> = rows.iter().map(|r| r.1).collect();
        let click: Vec<f32> = rows.iter().map(|r| r.2.click).collect();
        let watch: Vec<f32> = rows.iter().map(|r| crate::reward(r.2, &self.cfg)).collect();
        let out = self.net.forward(&PairBatch::new(&users, &items)?)?;
        let bce = bce_with_logits(&out.narrow(1, 0, 1)?.squeeze(1)?, &vector(&click)?)?;
        let mse = (out.narrow(1, 1, 1)?.squeeze(1)? - vector(&watch)?)?
            .sqr()?
            .mean_all()?;
        self.opt.backward_step(&(bce + mse)?)
    }

    fn note(&mut self, e: candle_core::Error) {
        if self.errors == 0 {
            eprintln!("deepfm: {e}");
        }
        self.errors += 1;
    }
}

impl Policy for DeepFmPolicy {
    fn name(&self) -> String {
        "deepfm".into()
    }

    fn rank(&mut self, req: &Request, k: usize, _world: &dyn WorldPeek) -> Vec<usize> {
        let tie: Vec<u64> = req.candidates.iter().map(|_| self.rng.next_u64()).collect();
        match self.scores(req) {
            Ok(scores) if scores.len() == tie.len() => top_k_by(&scores, &tie, k),
            Ok(_) => top_k_by(&vec![0.0; tie.len()], &tie, k),
            Err(e) => {
                self.note(e);
                top_k_by(&vec![0.0; tie.len()], &tie, k)
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
    use candle_core::Device;
    use rliv_sim::events::{Action, ActionKind, Exposure};
    use rliv_sim::policy::{Candidate, NoPeek};

    const DAY_MS: i64 = 86_400_000;

    fn exposure(request_id: u64, item_id: u64, ts_ms: i64, position: u32) -> Exposure {
        Exposure {
            request_id,
            user_id: 7,
            item_id,
            author_id: item_id + 1,
            ts_ms,
            position,
            user_feats: vec![1, 0, 2, 1],
            item_feats: vec![item_id as u32 % 7, 1, 0],
        }
    }

    /// A click on `item` at `ts_ms`, then `w` seconds watched.
    fn watched(request_id: u64, item_id: u64, ts_ms: i64, w: f64) -> Vec<Action> {
        let a = |ts_ms, action, value| Action {
            request_id,
            user_id: 7,
            item_id,
            ts_ms,
            action,
            value,
        };
        let end = ts_ms + 1_000 + w as i64 * 1000;
        vec![
            a(ts_ms, ActionKind::Click, 1.0),
            a(end, ActionKind::Watch, w),
        ]
    }

    /// User 7, 8 requests a round, each showing items 100 and 200 (order
    /// alternating); `watch(q, item)` = the seconds watched (a click with
    /// each watch) in request `q`, or `None` for no click.
    fn round_with(r: u32, watch: impl Fn(u64, u64) -> Option<f64>) -> RoundEvents {
        let mut exposures = Vec::new();
        let mut actions = Vec::new();
        for q in 0..8u64 {
            let id = r as u64 * 100 + q;
            let ts = r as i64 * DAY_MS + q as i64 * 120_000;
            for (pos, item) in [(q % 2, 100), (1 - q % 2, 200)] {
                exposures.push(exposure(id, item, ts, pos as u32));
                if let Some(w) = watch(q, item) {
                    actions.extend(watched(id, item, ts + 1_000, w));
                }
            }
        }
        RoundEvents {
            round: r,
            exposures,
            actions,
        }
    }

    /// Item 100 is always watched 60 s, item 200 never clicked.
    fn round(r: u32) -> RoundEvents {
        round_with(r, |_, item| (item == 100).then_some(60.0))
    }

    fn request(id: u64, items: &[u64]) -> Request {
        Request {
            request_id: id,
            user_id: 7,
            user_feats: vec![1, 0, 2, 1],
            ts_ms: 10 * DAY_MS,
            candidates: items
                .iter()
                .map(|&i| Candidate {
                    item_id: i,
                    author_id: i + 1,
                    item_feats: vec![i as u32 % 7, 1, 0],
                })
                .collect(),
        }
    }

    fn cfg() -> BaselineConfig {
        BaselineConfig {
            batch_size: 64,
            hidden: vec![16, 16],
            embedding_dim: 8,
            id_rows: 512,
            updates_per_round: 100,
            buffer_capacity: 1000,
            ..BaselineConfig::default()
        }
    }

    #[test]
    fn fm_second_order_is_the_sum_of_pairwise_inner_products() {
        // Row 0: v1 = (1, 2), v2 = (3, -1), v3 = (0.5, 4):
        // <v1,v2> + <v1,v3> + <v2,v3> = 1 + 8.5 - 2.5 = 7.
        // Row 1: v1 = (2, 0), v2 = (-1, 1), v3 = (0, 0): -2.
        let emb = Tensor::from_vec(
            vec![
                1.0f32, 2.0, 3.0, -1.0, 0.5, 4.0, 2.0, 0.0, -1.0, 1.0, 0.0, 0.0,
            ],
            (2, 3, 2),
            &Device::Cpu,
        )
        .expect("emb");
        let fm = to_vec(&fm_second_order(&emb).expect("fm")).expect("vec");
        assert_eq!(fm.len(), 2);
        assert!((fm[0] - 7.0).abs() < 1e-5, "{fm:?}");
        assert!((fm[1] + 2.0).abs() < 1e-5, "{fm:?}");
    }

    #[test]
    fn the_stable_bce_matches_the_textbook_formula() {
        let x = vector(&[-3.0, 0.0, 2.0, 40.0]).expect("x");
        let y = vector(&[0.0, 1.0, 1.0, 0.0]).expect("y");
        let got = bce_with_logits(&x, &y)
            .expect("bce")
            .to_scalar::<f32>()
            .expect("s");
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let want = (-(1.0 - s(-3.0)).ln() - s(0.0).ln() - s(2.0).ln() + 40.0) / 4.0;
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn training_ranks_the_always_watched_item_first() {
        let mut p = DeepFmPolicy::new(&cfg(), 3).expect("policy");
        for r in 0..4 {
            p.end_round(&round(r));
        }
        assert_eq!(p.errors, 0);
        let req = request(999, &[200, 100]);
        let (user, items) = p.history.encode_request(&req);
        let (click, watch) = p.predict(&user, &items).expect("predict");
        assert!(watch[1] > 0.7 && watch[0] < 0.3, "watch {watch:?}");
        assert!(click[1] > 0.7 && click[0] < 0.3, "click {click:?}");
        assert_eq!(p.rank(&req, 2, &NoPeek), vec![1, 0]);
        assert_eq!(p.rank(&request(1000, &[100, 200]), 1, &NoPeek), vec![0]);
    }

    #[test]
    fn ranks_by_expected_watch_not_by_click_probability() {
        // Item 100: clicked every time, watched 3 s (0.05 min expected);
        // item 200: clicked every other time, watched 60 s (0.5 expected).
        let watch = |q: u64, item: u64| match item {
            100 => Some(3.0),
            _ => q.is_multiple_of(2).then_some(60.0),
        };
        let mut p = DeepFmPolicy::new(&cfg(), 5).expect("policy");
        for r in 0..4 {
            p.end_round(&round_with(r, watch));
        }
        let req = request(999, &[100, 200]);
        let (user, items) = p.history.encode_request(&req);
        let (click, watch) = p.predict(&user, &items).expect("predict");
        assert!(click[0] > click[1] + 0.2, "click {click:?}");
        assert!(watch[1] > watch[0] + 0.2, "watch {watch:?}");
        assert_eq!(p.rank(&req, 2, &NoPeek), vec![1, 0]);
    }

    fn valid(ranked: &[usize], k: usize, n: usize) -> bool {
        let mut s = ranked.to_vec();
        s.sort_unstable();
        s.dedup();
        ranked.len() == k && s.len() == k && ranked.iter().all(|&i| i < n)
    }

    #[test]
    fn ranks_k_distinct_candidates_before_and_after_training_deterministically() {
        let req = request(5, &[100, 200, 300, 400, 500]);
        let mut a = DeepFmPolicy::new(&cfg(), 11).expect("a");
        let mut b = DeepFmPolicy::new(&cfg(), 11).expect("b");
        let (ra, rb) = (a.rank(&req, 3, &NoPeek), b.rank(&req, 3, &NoPeek));
        assert!(valid(&ra, 3, 5), "{ra:?}");
        assert_eq!(ra, rb);
        assert!(a.rank(&request(6, &[]), 3, &NoPeek).is_empty());
        a.end_round(&round(0));
        b.end_round(&round(0));
        let (ra, rb) = (a.rank(&req, 3, &NoPeek), b.rank(&req, 3, &NoPeek));
        assert!(valid(&ra, 3, 5), "{ra:?}");
        assert_eq!(ra, rb);
        let (sa, sb) = (a.scores(&req).expect("sa"), b.scores(&req).expect("sb"));
        assert_eq!(sa, sb, "same seed, same events: same parameters");
        assert_eq!(a.name(), "deepfm");
        assert_eq!(a.errors, 0);
    }
}
