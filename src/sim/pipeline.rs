//! The learned LIV in the closed loop: [`RlivPolicy`] ranks with the newest
//! checkpoint on the committed pair state (the service's scoring path), and
//! [`Pipeline`] replays each simulated day's events into the state and the
//! learner, as `rliv replay --train --resume` does in a daily deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rliv_dataflows::{run_replay, ReplayRequest};
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::trainer::{self, TrainOptions, TrainProgress};
use rliv_learner::{checkpoint, Learner, LearnerConfig, Model};
use rliv_sim::policy::top_k_by;
use rliv_sim::{Policy, Request, RoundEvents, WorldPeek};
use rliv_state::{FastMap, PairSnapshot, Store};

use crate::config::Config;

/// The learned LIV as a policy: the newest checkpoint scored through
/// `Model::score` (the service's path) on the pair state as committed.
pub struct RlivPolicy {
    name: String,
    model: Option<Model>,
    engine: Engine,
    pairs: FastMap<(u64, u64), PairSnapshot>,
    tie: u64,
    inputs_time: f64,
    requests: u64,
}

impl RlivPolicy {
    pub fn new(name: &str) -> Result<RlivPolicy> {
        Ok(RlivPolicy {
            name: name.to_string(),
            model: None,
            engine: Engine::new("auto", "cpu", 1).map_err(anyhow::Error::msg)?,
            pairs: FastMap::default(),
            tie: 0x5EED,
            inputs_time: 0.0,
            requests: 0,
        })
    }

    /// Loads the newest checkpoint in `checkpoints` and the pair state in
    /// `state` (the whole pair table: what a service reading the committed
    /// state sees until the next round is replayed).
    pub fn refresh(&mut self, checkpoints: &Path, state: &Path) -> Result<()> {
        let (model, _, _) = checkpoint::load_newest_model(checkpoints)?
            .ok_or_else(|| anyhow!("no usable checkpoint in {}", checkpoints.display()))?;
        self.model = Some(model);
        let store = Store::open_read_only(state)?;
        self.pairs.clear();
        for item in store.scan_pairs(None)? {
            let (k, c) = item?;
            self.pairs
                .insert((k.user_id, k.author_id), PairSnapshot::from(&c));
        }
        Ok(())
    }
}

impl Policy for RlivPolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn rank(&mut self, req: &Request, k: usize, _: &dyn WorldPeek) -> Vec<usize> {
        let started = std::time::Instant::now();
        self.tie = rliv_state::mix64(self.tie ^ req.request_id);
        let ties: Vec<u64> = (0..req.candidates.len() as u64)
            .map(|i| rliv_state::mix64(self.tie ^ i))
            .collect();
        let Some(model) = &self.model else {
            return top_k_by(&vec![0.0; req.candidates.len()], &ties, k);
        };
        let inputs: Vec<PairInput<'_>> = req
            .candidates
            .iter()
            .map(|c| PairInput {
                user_id: req.user_id,
                author_id: c.author_id,
                item_id: c.item_id,
                user_feats: &req.user_feats,
                item_feats: &c.item_feats,
                state: self
                    .pairs
                    .get(&(req.user_id, c.author_id))
                    .copied()
                    .unwrap_or_default(),
                ts_ms: req.ts_ms,
            })
            .collect();
        let scores: Vec<f64> = match model.score(&mut self.engine, &inputs) {
            Ok(l) => l.iter().map(|x| f64::from(x.score)).collect(),
            Err(e) => {
                tracing::warn!("sim: scoring failed ({e}); ranking at random");
                vec![0.0; req.candidates.len()]
            }
        };
        self.inputs_time += started.elapsed().as_secs_f64();
        self.requests += 1;
        top_k_by(&scores, &ties, k)
    }
}

/// The learner's side of one policy run: a state directory and checkpoints
/// that every round's events are replayed into, as `rliv replay --train
/// --resume` would.
pub(crate) struct Pipeline {
    cfg: Config,
    pub(crate) state: PathBuf,
    pub(crate) checkpoints: PathBuf,
    events: PathBuf,
    pub(crate) updates: u64,
    quiet: bool,
}

impl Pipeline {
    pub(crate) fn new(cfg: Config, dir: &Path, quiet: bool) -> Result<Pipeline> {
        let p = Pipeline {
            cfg,
            state: dir.join("state"),
            checkpoints: dir.join("checkpoints"),
            events: dir.join("events"),
            updates: 0,
            quiet,
        };
        for d in [&p.checkpoints, &p.events] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(p)
    }

    /// Replays one round's events into the state and trains on their
    /// transitions (resuming the learner from its newest checkpoint).
    pub(crate) fn ingest(&mut self, events: &RoundEvents) -> Result<()> {
        let dir = self.events.join(format!("round_{:04}", events.round));
        events
            .write_dir(&dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        let lcfg: &LearnerConfig = &self.cfg.learner;
        let (learner, consumed) = match checkpoint::resume(&self.checkpoints, lcfg)? {
            Some((l, m, _)) => (l, m.input.get("log_position").and_then(|p| p.as_u64())),
            None => (Learner::new(lcfg).map_err(anyhow::Error::msg)?, None),
        };
        let (tx, rx) =
            crossbeam_channel::bounded(self.cfg.replay.transitions_channel_capacity.max(1));
        // Each round resumes the learner: the transition log refills its
        // buffer, as in a continuous deployment that restarts daily.
        let checkpointed = Arc::new(std::sync::atomic::AtomicU64::new(consumed.unwrap_or(0)));
        let opts = TrainOptions {
            checkpoints: Some(self.checkpoints.clone()),
            extra_updates: 0,
            input_position: Box::new(
                |received, log| serde_json::json!({"kind": "sim", "transitions": received, "log_position": log}),
            ),
            log_position: consumed,
            checkpointed: Some(checkpointed.clone()),
            log: false,
        };
        let handle = trainer::spawn(learner, rx, opts, Arc::new(TrainProgress::default()))?;
        let mut req = ReplayRequest::new(
            vec![dir.join("exposures.jsonl")],
            vec![dir.join("actions.jsonl")],
            self.state.clone(),
        );
        req.join = self.cfg.join.clone();
        req.replay = self.cfg.replay.clone();
        req.store = self.cfg.state.clone();
        req.learner = Some(rliv_dataflows::feed::LearnerFeed {
            tx,
            consumed,
            refill: lcfg.buffer_capacity as u64,
            checkpointed,
        });
        let replayed = run_replay(req);
        let trained = handle
            .join()
            .map_err(|_| anyhow!("the learner thread panicked"))?;
        replayed.with_context(|| format!("replaying {}", dir.display()))?;
        let (_, summary) = trained.context("training")?;
        self.updates += summary.updates;
        if !self.quiet {
            eprintln!(
                "  round {}: {} transitions, {} updates",
                events.round, summary.received, summary.updates
            );
        }
        Ok(())
    }
}
