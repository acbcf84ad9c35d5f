//! The service's shared state and `POST /rank`: the candidates' pair
//! counters read from the pair state, one batched scoring pass, the top `k`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::config::*;
use axum::http::StatusCode;
use rliv_learner::checkpoint;
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::Model;
use rliv_state::{PairSnapshot, StateError};
use serde::Deserialize;

use crate::counters::{ErrorKind, Metrics, BUCKETS};
use crate::shards::PairShards;

/// Reads a lock whose holder may have panicked: the values behind the locks
/// here are replaced whole (an `Option<Arc<..>>`), never left half-written,
/// so a poisoned lock still holds a consistent value.
pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// See [`read_lock`].
pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[derive(Deserialize)]
struct RankRequest {
    user_id: u64,
    #[serde(default)]
    user_feats: Option<Vec<u32>>,
    #[serde(default)]
    k: Option<u64>,
    /// The request's event time (ms); the service's clock when absent.
    #[serde(default)]
    ts_ms: Option<i64>,
    candidates: Vec<Candidate>,
}

#[derive(Deserialize)]
struct Candidate {
    item_id: u64,
    author_id: u64,
    #[serde(default)]
    item_feats: Option<Vec<u32>>,
}

/// The model being served and where it came from.
pub struct Served {
    pub model: Model,
    pub version: u64,
    pub dir: PathBuf,
}

/// Why a model could not be reloaded, the pair state read, or a scoring
/// engine made.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    /// Listing or loading the checkpoint directory.
    #[error("{0}")]
    Checkpoint(checkpoint::CheckpointError),
    /// Reading the candidates' pair counters.
    #[error("{0}")]
    PairState(StateError),
    /// Making a scoring engine for the model's device.
    #[error("{0}")]
    Engine(rliv_learner::LearnerError),
}
pub struct AppState {
    pub cfg: ServeConfig,
    pub checkpoints: PathBuf,
    pub state_dir: PathBuf,
    pub model: RwLock<Option<Arc<Served>>>,
    /// The pair state (every store of the state directory), once it is open.
    pub store: RwLock<Option<Arc<PairShards>>>,
    pub metrics: Metrics,
    pub stop: AtomicBool,
    /// The learner training in this process, if any (its figures go to /metrics).
    pub training: RwLock<Option<Arc<rliv_learner::trainer::TrainProgress>>>,
    /// The job running in this process, if any, and its Kafka input.
    pub job: RwLock<Option<Arc<dyn Figures>>>,
    /// Scoring engines kept between requests (each keeps its workspaces):
    /// a request takes one, or makes one when all are in use, and puts it
    /// back. At most as many as requests ever ran at once.
    engines: std::sync::Mutex<Vec<(String, Engine)>>,
}

/// Figures of something else running in this process (a replay or Kafka
/// job), rendered into `/metrics` by their own crate in the Prometheus text
/// format.
pub trait Figures: Send + Sync {
    fn render(&self, out: &mut String);
}

/// A response status with a JSON body.
pub struct Reply {
    pub status: StatusCode,
    pub body: serde_json::Value,
    kind: Option<ErrorKind>,
}

pub(crate) fn error(status: StatusCode, kind: ErrorKind, msg: impl Into<String>) -> Reply {
    Reply {
        status,
        body: serde_json::json!({ "error": msg.into() }),
        kind: Some(kind),
    }
}

impl AppState {
    pub fn new(cfg: ServeConfig, state_dir: &Path, checkpoints: &Path) -> Arc<AppState> {
        Arc::new(AppState {
            cfg,
            checkpoints: checkpoints.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            model: RwLock::new(None),
            store: RwLock::new(None),
            metrics: Metrics::default(),
            stop: AtomicBool::new(false),
            training: RwLock::new(None),
            job: RwLock::new(None),
            engines: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// An engine for `device`: a kept one, or a new one.
    fn take_engine(&self, device: &str) -> Result<Engine, RankError> {
        let mut pool = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pool.iter().position(|(d, _)| d == device) {
            return Ok(pool.swap_remove(i).1);
        }
        drop(pool);
        Engine::new("auto", device, self.cfg.scoring_threads.max(1)).map_err(RankError::Engine)
    }

    fn put_engine(&self, device: &str, engine: Engine) {
        let mut pool = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        pool.push((device.to_string(), engine));
    }

    pub fn current(&self) -> Option<Arc<Served>> {
        read_lock(&self.model).clone()
    }

    /// The pair state, once it is open.
    pub fn pair_state(&self) -> Option<Arc<PairShards>> {
        read_lock(&self.store).clone()
    }

    /// Installs `served` (tests and the reloader).
    pub fn install(&self, served: Served) {
        *write_lock(&self.model) = Some(Arc::new(served));
    }

    /// Reports the learner training in this process on /metrics.
    pub fn set_training(&self, training: Option<Arc<rliv_learner::trainer::TrainProgress>>) {
        *write_lock(&self.training) = training;
    }

    /// Reports the job running in this process on /metrics.
    pub fn set_job(&self, job: Option<Arc<dyn Figures>>) {
        *write_lock(&self.job) = job;
    }

    /// Loads the newest usable checkpoint if it is not the one being served.
    /// Returns whether a new model was installed.
    pub fn reload(&self) -> Result<bool, RankError> {
        let newest = checkpoint::list(&self.checkpoints).map_err(RankError::Checkpoint)?;
        let Some(newest) = newest.first() else {
            return Ok(false);
        };
        if self.current().is_some_and(|s| &s.dir == newest) {
            return Ok(false);
        }
        match checkpoint::load_newest_model(&self.checkpoints).map_err(RankError::Checkpoint)? {
            Some((model, manifest, skipped)) => {
                for s in &skipped {
                    tracing::warn!("serve: skipped a checkpoint: {s}");
                }
                let dir = self.checkpoints.join(checkpoint::dir_name(manifest.step));
                if self.current().is_some_and(|s| s.dir == dir) {
                    return Ok(false);
                }
                self.install(Served {
                    model,
                    version: manifest.model_version,
                    dir,
                });
                self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The counters of `user`'s pairs with `authors` that the pair state
    /// holds (none while it is not open): one multi-get on the user's shard.
    pub(crate) fn counters(
        &self,
        user: u64,
        authors: &[u64],
    ) -> Result<HashMap<u64, PairSnapshot>, RankError> {
        let mut out = HashMap::new();
        let Some(shards) = self.pair_state() else {
            return Ok(out);
        };
        let found = shards
            .get_pairs(user, authors)
            .map_err(RankError::PairState)?;
        for (a, c) in authors.iter().zip(found) {
            if let Some(c) = c {
                out.insert(*a, PairSnapshot::from(&c));
            }
        }
        Ok(out)
    }

    /// Handles one `/rank` body: parse, validate, read pair state, score, top k.
    pub fn rank(&self, body: &[u8]) -> Reply {
        let req: RankRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_syntax() || e.is_eof() {
                    ErrorKind::BadJson
                } else {
                    ErrorKind::BadRequest
                };
                return error(
                    StatusCode::BAD_REQUEST,
                    kind,
                    format!("invalid request: {e}"),
                );
            }
        };
        if req.candidates.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                "`candidates` is empty",
            );
        }
        if req.candidates.len() > self.cfg.max_candidates {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooManyCandidates,
                format!(
                    "{} candidates: at most {} per request (serve.max_candidates)",
                    req.candidates.len(),
                    self.cfg.max_candidates
                ),
            );
        }
        if req.k == Some(0) {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                "`k` must be >= 1",
            );
        }
        let Some(served) = self.current() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::NotReady,
                format!(
                    "no model loaded yet: waiting for a checkpoint in {}",
                    self.checkpoints.display()
                ),
            );
        };
        let mut authors: Vec<u64> = req.candidates.iter().map(|c| c.author_id).collect();
        authors.sort_unstable();
        authors.dedup();
        let counts = match self.counters(req.user_id, &authors) {
            Ok(c) => c,
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::NotReady,
                    format!("reading pair state: {e}"),
                )
            }
        };
        let user_feats = req.user_feats.as_deref().unwrap_or(&[]);
        // Recency is computed at the request's event time (a replayed or
        // simulated request sends it), else at the service's clock.
        let ts_ms = req.ts_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let inputs: Vec<PairInput<'_>> = req
            .candidates
            .iter()
            .map(|c| PairInput {
                user_id: req.user_id,
                author_id: c.author_id,
                item_id: c.item_id,
                user_feats,
                item_feats: c.item_feats.as_deref().unwrap_or(&[]),
                state: counts.get(&c.author_id).copied().unwrap_or_default(),
                ts_ms,
            })
            .collect();
        let t = Instant::now();
        let device = &served.model.cfg.device;
        let mut engine = match self.take_engine(device) {
            Ok(e) => e,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Internal,
                    e.to_string(),
                )
            }
        };
        let scored = served.model.score(&mut engine, &inputs);
        self.put_engine(device, engine);
        let livs = match scored {
            Ok(l) => l,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Internal,
                    e.to_string(),
                )
            }
        };
        self.metrics
            .scoring_sum_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.metrics
            .candidates
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..livs.len()).collect();
        let key = |i: usize| {
            let s = livs[i].score;
            if s.is_nan() {
                f32::NEG_INFINITY
            } else {
                s
            }
        };
        // Best first; ties keep the request's order.
        order.sort_by(|a, b| key(*b).total_cmp(&key(*a)).then(a.cmp(b)));
        let k = req.k.map_or(order.len(), |k| (k as usize).min(order.len()));
        let names = rliv_learner::config::LABELS;
        let items: Vec<serde_json::Value> = order[..k]
            .iter()
            .map(|&i| {
                let c = &req.candidates[i];
                let mut liv = serde_json::Map::new();
                for (l, v) in livs[i].towers.iter().enumerate() {
                    if let Some(v) = v {
                        liv.insert(names[l].into(), serde_json::json!(v));
                    }
                }
                serde_json::json!({
                    "item_id": c.item_id,
                    "author_id": c.author_id,
                    "score": livs[i].score,
                    "liv": liv,
                })
            })
            .collect();
        Reply {
            status: StatusCode::OK,
            body: serde_json::json!({ "model_version": served.version, "items": items }),
            kind: None,
        }
    }

    pub(crate) fn record(&self, reply: &Reply, elapsed: Duration) {
        let m = &self.metrics;
        m.requests.fetch_add(1, Ordering::Relaxed);
        match reply.kind {
            None => {
                m.ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(k) => {
                m.errors[k.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
        let s = elapsed.as_secs_f64();
        for (b, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                m.latency[b].fetch_add(1, Ordering::Relaxed);
            }
        }
        m.latency_sum_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}
