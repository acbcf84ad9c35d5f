//! One TD update of the multi-task critic (paper Eq. 5-10) and the state that
//! survives between updates: the model, the optimizer moments, the step and
//! the sampling random generator.

use crate::buffer::{RecentItems, Ring, Sample};
use crate::config::LearnerConfig;
use crate::embed::{Lookup, PairInput};
use crate::engine::Engine;
use crate::error::LearnerError;
use crate::model::{Liv, Model, ModelSizes};
use crate::nets::{AdamParams, AdamState};
use crate::resident::UpdateParams;
use crate::rng::Rng;
pub use crate::step::StepStats;
use crate::step::{BatchData, Grads};
use crate::visible::Visibility;
use rliv_contract::Transition;

pub struct Learner {
    /// The parameters on the host. With the candle engine the newest ones
    /// live on its device between updates: read them through
    /// [`Learner::model`], which brings them back first.
    pub(crate) model: Model,
    engine: Engine,
    pub(crate) tower_adam: AdamState,
    pub(crate) assist_adam: Option<AdamState>,
    /// Updates done.
    pub step: u64,
    pub rng: Rng,
    pub recent: RecentItems,
    /// Rebuilds each transition's `s_t` as a ranking request saw it.
    pub visibility: Visibility,
    bufs: Bufs,
    /// The device holds updates the host copy does not have yet.
    host_stale: bool,
}

/// What a batch is built and run for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The loss alone.
    Loss,
    /// The loss and its gradients, every input as scoring sees it.
    Gradients,
    /// A training step's gradients: with id dropout.
    Train,
}

/// Batch buffers, reused across steps.
#[derive(Default)]
struct Bufs {
    lookup: Lookup,
    next: Lookup,
    x: Vec<f32>,
    xn: Vec<f32>,
    rewards: Vec<f32>,
    gift: Vec<f32>,
}

impl Learner {
    /// A fresh learner; `engine`: "auto", "fused" or "candle"; `device`: "cpu" or "cuda".
    pub fn new(cfg: &LearnerConfig) -> Result<Learner, LearnerError> {
        let model = Model::new(cfg)?;
        let engine = Engine::new(&cfg.engine, &cfg.device, cfg.threads())?;
        let tower_adam = AdamState::new(&model.towers);
        let assist_adam = model.assist.as_ref().map(AdamState::new);
        Ok(Learner {
            model,
            engine,
            tower_adam,
            assist_adam,
            step: 0,
            rng: Rng::new(cfg.seed ^ 0xB0A7),
            recent: RecentItems::new(cfg.next_items),
            visibility: Visibility::new(cfg.visible_lag_ms),
            bufs: Bufs::default(),
            host_stale: false,
        })
    }

    /// The model with its newest parameters (brought back from the device
    /// when the candle engine trained since the last read).
    pub fn model(&mut self) -> Result<&Model, LearnerError> {
        self.sync()?;
        Ok(&self.model)
    }

    /// The model with its newest parameters, taking the learner apart.
    pub fn into_model(mut self) -> Result<Model, LearnerError> {
        self.sync()?;
        Ok(self.model)
    }

    /// The model, to change its parameters: the device copy (if any) is
    /// dropped and rebuilt from the host on the next update.
    pub fn model_mut(&mut self) -> Result<&mut Model, LearnerError> {
        self.sync()?;
        self.host_changed();
        Ok(&mut self.model)
    }

    /// Brings the device's parameters and optimizer moments back to the
    /// host (nothing to do for the fused engine or when they are there).
    pub fn sync(&mut self) -> Result<(), LearnerError> {
        if !self.host_stale {
            return Ok(());
        }
        if let Engine::Candle(c) = &self.engine {
            if let Some(r) = &c.resident {
                r.download(
                    &mut self.model,
                    &mut self.tower_adam,
                    self.assist_adam.as_mut(),
                )?;
            }
        }
        self.host_stale = false;
        Ok(())
    }

    /// The host parameters changed (a checkpoint was loaded into them):
    /// the device copy is rebuilt from them on the next update.
    pub(crate) fn host_changed(&mut self) {
        if let Engine::Candle(c) = &mut self.engine {
            c.resident = None;
        }
        self.host_stale = false;
    }

    /// The engine in use ("fused" or "candle").
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Tower names for logs: `click`, `watch`, ...
    pub fn tower_names(&self) -> Vec<&'static str> {
        self.model.tower_names()
    }

    /// Parameter counts and bytes (they do not change with training).
    pub fn sizes(&self) -> ModelSizes {
        self.model.sizes()
    }

    /// Scores candidates with the newest parameters ([`Model::score`]).
    pub fn score(&mut self, inputs: &[PairInput<'_>]) -> Result<Vec<Liv>, LearnerError> {
        self.sync()?;
        self.model.score(&mut self.engine, inputs)
    }

    pub fn cfg(&self) -> &LearnerConfig {
        &self.model.cfg
    }

    /// The sample of a new transition (its `s_t` as a request could see
    /// it: [`Visibility`]), its item recorded as a recent item of its author.
    pub fn sample(&mut self, t: &Transition) -> Sample {
        let visible = self.visibility.visible(t);
        let s = Sample::new(t, visible);
        self.observe(&s);
        s
    }

    /// Records a new transition's item as a recent item of its author.
    pub fn observe(&mut self, s: &Sample) {
        self.recent.observe(s.author_id, s.item_id, &s.item_feats);
    }

    /// Builds the batch; for a [`Pass::Train`], with id dropout (`user_id_dropout`).
    fn fill(&mut self, samples: &[&Sample], pass: Pass) {
        let m = &self.model;
        let p_drop = if pass == Pass::Train {
            m.cfg.user_id_dropout
        } else {
            0.0
        };
        let rng = &mut self.rng;
        let bufs = &mut self.bufs;
        bufs.lookup.clear();
        bufs.next.clear();
        let b = samples.len();
        let t = m.labels.len();
        let scale = m.cfg.reward_scale.as_array();
        bufs.rewards.clear();
        bufs.rewards.resize(t * b, 0.0);
        bufs.gift.clear();
        for (i, s) in samples.iter().enumerate() {
            // Draws only when dropout is on: off, the batch sampling's
            // stream of numbers is what it always was.
            let keep_user = p_drop == 0.0 || rng.uniform(0.0, 1.0) >= p_drop as f32;
            m.emb
                .push_with(&mut bufs.lookup, &s.input(), None, keep_user);
            let nx = s.next_input();
            self.recent.candidates(s, |item, feats| {
                m.emb.push(&mut bufs.next, &nx, Some((item, feats)))
            });
            for (k, &label) in m.labels.iter().enumerate() {
                bufs.rewards[k * b + i] = s.reward[label] * scale[label] as f32;
            }
            bufs.gift.push(if s.reward[3] > 0.0 { 1.0 } else { 0.0 });
        }
    }

    fn run(
        &mut self,
        samples: &[&Sample],
        pass: Pass,
    ) -> Result<(StepStats, Option<Grads>), LearnerError> {
        if samples.is_empty() {
            return Err(LearnerError::EmptyBatch);
        }
        self.fill(samples, pass);
        let b = samples.len();
        let bufs = &mut self.bufs;
        let m = &self.model;
        match &mut self.engine {
            Engine::Fused(f) => {
                m.emb.gather(&bufs.lookup, &mut bufs.x);
                m.emb.gather(&bufs.next, &mut bufs.xn);
                let data = BatchData {
                    x: &bufs.x,
                    xn: &bufs.xn,
                    b,
                    d: m.emb.input_dim(),
                    j: bufs.next.len() / b,
                    rewards: &bufs.rewards,
                    gift: &bufs.gift,
                };
                f.loss_and_grads(m, &data, pass != Pass::Loss)
            }
            Engine::Candle(c) => {
                let r = c.resident(m, &self.tower_adam, self.assist_adam.as_ref())?;
                Ok(r.evaluate(
                    m,
                    &bufs.lookup,
                    &bufs.next,
                    &bufs.rewards,
                    &bufs.gift,
                    pass != Pass::Loss,
                )?)
            }
        }
    }

    /// The loss of `samples` under the current parameters, without updating.
    pub fn evaluate(&mut self, samples: &[&Sample]) -> Result<StepStats, LearnerError> {
        Ok(self.run(samples, Pass::Loss)?.0)
    }

    /// Gradients of the loss on `samples` (tests compare the engines with it).
    pub fn gradients(&mut self, samples: &[&Sample]) -> Result<(StepStats, Grads), LearnerError> {
        let (s, g) = self.run(samples, Pass::Gradients)?;
        Ok((s, g.ok_or(LearnerError::NoGradients)?))
    }

    /// One TD update on `samples`: Adam on the towers and the assistance net,
    /// lazy Adam on the embedding rows the batch used, then the soft update
    /// of the target towers.
    pub fn train_step(&mut self, samples: &[&Sample]) -> Result<StepStats, LearnerError> {
        if matches!(self.engine, Engine::Candle(_)) {
            return self.train_step_resident(samples);
        }
        let (stats, g) = self.run(samples, Pass::Train)?;
        let g = g.ok_or(LearnerError::NoGradients)?;
        if !stats.loss.is_finite() {
            return Err(LearnerError::NonFiniteLoss {
                loss: stats.loss,
                step: self.step,
            });
        }
        self.step += 1;
        let cfg = &self.model.cfg;
        let (hp, emb_hp) = adam_params(cfg);
        let tau = cfg.tau as f32;
        self.tower_adam
            .step(&mut self.model.towers, &g.towers, self.step, &hp);
        if let (Some(p), Some(opt), Some(ga)) = (
            self.model.assist.as_mut(),
            self.assist_adam.as_mut(),
            g.assist.as_ref(),
        ) {
            opt.step(p, ga, self.step, &hp);
        }
        self.model.emb.adam_step(
            &self.bufs.lookup,
            &g.dx,
            self.step,
            &emb_hp,
            cfg.embedding_weight_decay,
        );
        self.model.target.soft_update_from(&self.model.towers, tau);
        Ok(stats)
    }

    /// [`Learner::train_step`] on the candle engine's device: the whole
    /// update runs there, the host copy is left behind until read.
    fn train_step_resident(&mut self, samples: &[&Sample]) -> Result<StepStats, LearnerError> {
        if samples.is_empty() {
            return Err(LearnerError::EmptyBatch);
        }
        self.fill(samples, Pass::Train);
        let cfg = &self.model.cfg;
        let (nets, embeddings) = adam_params(cfg);
        let up = UpdateParams {
            step: self.step + 1,
            nets,
            embeddings,
            decay: cfg.embedding_weight_decay,
            tau: cfg.tau,
        };
        // `train_step` comes here with the candle engine only.
        let Engine::Candle(c) = &mut self.engine else {
            return Err(LearnerError::NoGradients);
        };
        let r = c.resident(&self.model, &self.tower_adam, self.assist_adam.as_ref())?;
        let b = &self.bufs;
        let stats = r.train(&self.model, &b.lookup, &b.next, &b.rewards, &b.gift, &up)?;
        if !stats.loss.is_finite() {
            return Err(LearnerError::NonFiniteLoss {
                loss: stats.loss,
                step: self.step,
            });
        }
        self.step += 1;
        self.host_stale = true;
        Ok(stats)
    }

    /// With `auto_reward_scale`, sets each label's reward scale to 1 / the
    /// root mean square of its rewards in `buffer` (labels with no reward
    /// there keep theirs) and switches the measurement off, so that it
    /// happens once per model. Returns whether it did.
    pub fn measure_reward_scale(&mut self, buffer: &Ring) -> bool {
        if !self.model.cfg.auto_reward_scale || buffer.is_empty() {
            return false;
        }
        let mut sq = [0.0f64; 4];
        for s in buffer.iter() {
            for (acc, r) in sq.iter_mut().zip(s.reward) {
                *acc += f64::from(r) * f64::from(r);
            }
        }
        let n = buffer.len() as f64;
        let mut scale = self.model.cfg.reward_scale.as_array();
        for (l, acc) in sq.iter().enumerate() {
            let rms = (acc / n).sqrt();
            if rms.is_finite() && rms > 0.0 {
                scale[l] = 1.0 / rms;
            }
        }
        let cfg = &mut self.model.cfg;
        cfg.reward_scale = crate::config::PerLabel {
            click: scale[0],
            watch: scale[1],
            follow: scale[2],
            gift: scale[3],
        };
        cfg.auto_reward_scale = false;
        true
    }

    /// Draws `batch_size` samples uniformly from `buffer` and trains on them.
    pub fn train_from(&mut self, buffer: &Ring) -> Result<StepStats, LearnerError> {
        let n = self.model.cfg.batch_size;
        let samples = buffer.sample(&mut self.rng, n);
        self.train_step(&samples)
    }
}

/// Adam's hyperparameters for the nets and for the embedding rows.
fn adam_params(cfg: &LearnerConfig) -> (AdamParams, AdamParams) {
    let nets = AdamParams {
        lr: cfg.lr,
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        eps: cfg.adam_eps,
    };
    let embeddings = AdamParams {
        lr: cfg.embedding_lr,
        ..nets
    };
    (nets, embeddings)
}
