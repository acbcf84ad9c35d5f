//! The ranking service: `POST /rank`, `GET /healthz`, `GET /metrics`.
//!
//! Each request reads the candidates' pair counters from the pair state (a
//! RocksDB secondary instance that catches up with the writer every
//! `catch_up_interval_ms`), scores every candidate in one batched forward
//! pass of the one scoring path (`Model::score`), and returns the top `k`.
//! A reloader thread watches the checkpoint directory and swaps in a new model
//! as soon as it verifies; requests in flight keep the model they started
//! with (an `Arc`), so a reload never fails or stalls them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rliv_learner::checkpoint;
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::Model;
use rliv_state::{PairKey, StateCounts, Store};
use serde::{Deserialize, Serialize};

/// Section `[serve]` of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Listen address. Loopback by default: expose it deliberately.
    pub addr: String,
    /// Most candidates in one request (more: 413).
    pub max_candidates: usize,
    /// Largest request body in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// How often the checkpoint directory is checked for a newer model.
    pub reload_interval_ms: u64,
    /// How often the pair-state reader catches up with the writer.
    pub catch_up_interval_ms: u64,
    /// Threads one request's forward pass uses (the towers are split over them).
    pub scoring_threads: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: "127.0.0.1:8080".into(),
            max_candidates: 1000,
            max_body_bytes: 1 << 20,
            reload_interval_ms: 250,
            catch_up_interval_ms: 500,
            scoring_threads: 2,
        }
    }
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_candidates == 0 || self.max_body_bytes == 0 {
            return Err("serve.max_candidates and serve.max_body_bytes must be >= 1".into());
        }
        if self.reload_interval_ms == 0 || self.catch_up_interval_ms == 0 {
            return Err(
                "serve.reload_interval_ms and serve.catch_up_interval_ms must be >= 1".into(),
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RankRequest {
    user_id: u64,
    #[serde(default)]
    user_feats: Option<Vec<u32>>,
    #[serde(default)]
    k: Option<u64>,
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

const ERROR_KINDS: [&str; 6] = [
    "bad_json",
    "bad_request",
    "body_too_large",
    "too_many_candidates",
    "not_ready",
    "internal",
];
/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: AtomicU64,
    ok: AtomicU64,
    errors: [AtomicU64; 6],
    latency: [AtomicU64; 12],
    latency_sum_ns: AtomicU64,
    scoring_sum_ns: AtomicU64,
    candidates: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

pub struct AppState {
    pub cfg: ServeConfig,
    pub checkpoints: PathBuf,
    pub state_dir: PathBuf,
    pub model: RwLock<Option<Arc<Served>>>,
    pub store: RwLock<Option<Arc<Store>>>,
    pub metrics: Metrics,
    pub stop: AtomicBool,
    /// The learner training in this process, if any (its figures go to /metrics).
    pub training: RwLock<Option<Arc<rliv_learner::trainer::TrainProgress>>>,
    /// The job running in this process, if any, and its Kafka input.
    pub job: RwLock<Option<JobFigures>>,
}

/// Live figures of a replay or Kafka run in the same process.
#[derive(Clone)]
pub struct JobFigures {
    pub progress: Arc<rliv_dataflows::Progress>,
    pub kafka: Option<Arc<rliv_dataflows::kafka::KafkaProgress>>,
}

/// A response status with a JSON body.
pub struct Reply {
    pub status: StatusCode,
    pub body: serde_json::Value,
    kind: Option<usize>,
}

fn error(status: StatusCode, kind: usize, msg: impl Into<String>) -> Reply {
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
        })
    }

    pub fn current(&self) -> Option<Arc<Served>> {
        self.model.read().ok().and_then(|m| m.clone())
    }

    /// Installs `served` (tests and the reloader).
    pub fn install(&self, served: Served) {
        if let Ok(mut m) = self.model.write() {
            *m = Some(Arc::new(served));
        }
    }

    /// Loads the newest usable checkpoint if it is not the one being served.
    /// Returns whether a new model was installed.
    pub fn reload(&self) -> Result<bool, String> {
        let newest = checkpoint::list(&self.checkpoints).map_err(|e| e.to_string())?;
        let Some(newest) = newest.first() else {
            return Ok(false);
        };
        if self.current().is_some_and(|s| &s.dir == newest) {
            return Ok(false);
        }
        match checkpoint::load_newest_model(&self.checkpoints).map_err(|e| e.to_string())? {
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

    fn counters(&self, user: u64, authors: &[u64]) -> Result<HashMap<u64, StateCounts>, String> {
        let store = self.store.read().ok().and_then(|s| s.clone());
        let mut out = HashMap::new();
        let Some(store) = store else {
            return Ok(out);
        };
        let keys: Vec<PairKey> = authors.iter().map(|a| PairKey::new(user, *a)).collect();
        let found = store.get_pairs(&keys).map_err(|e| e.to_string())?;
        for (a, c) in authors.iter().zip(found) {
            if let Some(c) = c {
                out.insert(*a, c.counts);
            }
        }
        Ok(out)
    }

    /// Handles one `/rank` body: parse, validate, read pair state, score, top k.
    pub fn rank(&self, body: &[u8]) -> Reply {
        let req: RankRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_syntax() || e.is_eof() { 0 } else { 1 };
                return error(
                    StatusCode::BAD_REQUEST,
                    kind,
                    format!("invalid request: {e}"),
                );
            }
        };
        if req.candidates.is_empty() {
            return error(StatusCode::BAD_REQUEST, 1, "`candidates` is empty");
        }
        if req.candidates.len() > self.cfg.max_candidates {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                3,
                format!(
                    "{} candidates: at most {} per request (serve.max_candidates)",
                    req.candidates.len(),
                    self.cfg.max_candidates
                ),
            );
        }
        if req.k == Some(0) {
            return error(StatusCode::BAD_REQUEST, 1, "`k` must be >= 1");
        }
        let Some(served) = self.current() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                4,
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
                    4,
                    format!("reading pair state: {e}"),
                )
            }
        };
        let user_feats = req.user_feats.as_deref().unwrap_or(&[]);
        let inputs: Vec<PairInput<'_>> = req
            .candidates
            .iter()
            .map(|c| PairInput {
                user_id: req.user_id,
                author_id: c.author_id,
                item_id: c.item_id,
                user_feats,
                item_feats: c.item_feats.as_deref().unwrap_or(&[]),
                counts: counts.get(&c.author_id).copied().unwrap_or_default(),
            })
            .collect();
        let t = Instant::now();
        let mut engine = match Engine::new(
            "auto",
            &served.model.cfg.device,
            self.cfg.scoring_threads.max(1),
        ) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 5, e),
        };
        let livs = match served.model.score(&mut engine, &inputs) {
            Ok(l) => l,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, 5, e),
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

    fn record(&self, reply: &Reply, elapsed: Duration) {
        let m = &self.metrics;
        m.requests.fetch_add(1, Ordering::Relaxed);
        match reply.kind {
            None => {
                m.ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(k) => {
                m.errors[k].fetch_add(1, Ordering::Relaxed);
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

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let requests = load(&m.requests);
        let mut out = String::new();
        metric(
            &mut out,
            "rliv_rank_requests_total",
            "counter",
            "/rank requests handled.",
            requests,
        );
        family(
            &mut out,
            "rliv_rank_errors_total",
            "counter",
            "/rank requests refused, by kind.",
        );
        for (k, name) in ERROR_KINDS.iter().enumerate() {
            out += &format!(
                "rliv_rank_errors_total{{kind=\"{name}\"}} {}\n",
                load(&m.errors[k])
            );
        }
        family(
            &mut out,
            "rliv_rank_latency_seconds",
            "histogram",
            "/rank latency in the handler.",
        );
        for (b, bound) in BUCKETS.iter().enumerate() {
            out += &format!(
                "rliv_rank_latency_seconds_bucket{{le=\"{bound}\"}} {}\n",
                load(&m.latency[b])
            );
        }
        out += &format!("rliv_rank_latency_seconds_bucket{{le=\"+Inf\"}} {requests}\n");
        out += &format!(
            "rliv_rank_latency_seconds_sum {}\nrliv_rank_latency_seconds_count {requests}\n",
            load(&m.latency_sum_ns) as f64 / 1e9
        );
        let secs = |a: &AtomicU64| load(a) as f64 / 1e9;
        let version = self.current().map_or(0, |s| s.version);
        metric(
            &mut out,
            "rliv_rank_scoring_seconds_total",
            "counter",
            "Time spent in the model's forward pass.",
            secs(&m.scoring_sum_ns),
        );
        metric(
            &mut out,
            "rliv_rank_candidates_total",
            "counter",
            "Candidates scored.",
            load(&m.candidates),
        );
        metric(
            &mut out,
            "rliv_model_version",
            "gauge",
            "Step of the model being served (0: none).",
            version,
        );
        metric(
            &mut out,
            "rliv_model_reloads_total",
            "counter",
            "Models loaded from the checkpoint directory.",
            load(&m.reloads),
        );
        metric(
            &mut out,
            "rliv_model_reload_failures_total",
            "counter",
            "Checkpoint directory scans that failed.",
            load(&m.reload_failures),
        );
        if let Some(t) = self.training.read().ok().and_then(|t| t.clone()) {
            training_metrics(&mut out, &t);
        }
        if let Some(j) = self.job.read().ok().and_then(|j| j.clone()) {
            job_metrics(&mut out, &j);
        }
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A metric family with one unlabeled sample.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    out.push_str(&format!("{name} {value}\n"));
}

fn job_metrics(out: &mut String, j: &JobFigures) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let p = &j.progress;
    metric(
        out,
        "rliv_job_events_total",
        "counter",
        "Input events (lines or messages) processed.",
        load(&p.lines),
    );
    metric(
        out,
        "rliv_job_closed_exposures_total",
        "counter",
        "Exposures closed by the label join.",
        load(&p.closed_exposures),
    );
    metric(
        out,
        "rliv_job_transitions_total",
        "counter",
        "ASA transitions emitted.",
        load(&p.transitions),
    );
    metric(
        out,
        "rliv_job_dead_letters_total",
        "counter",
        "Records dead-lettered (bad input, late, orphan, ...).",
        load(&p.dead_letters),
    );
    metric(
        out,
        "rliv_job_pairs",
        "gauge",
        "Pairs in the state.",
        load(&p.pairs),
    );
    let wm = p.watermark_ms.load(Ordering::Relaxed);
    if wm > i64::MIN / 2 {
        metric(
            out,
            "rliv_job_watermark_ms",
            "gauge",
            "Event-time watermark of the label join.",
            wm,
        );
    }
    if let Some(k) = &j.kafka {
        metric(
            out,
            "rliv_kafka_lag_messages",
            "gauge",
            "Messages behind the partitions' ends.",
            load(&k.lag),
        );
        metric(
            out,
            "rliv_kafka_messages_total",
            "counter",
            "Messages consumed.",
            load(&k.messages),
        );
        metric(
            out,
            "rliv_kafka_errors_total",
            "counter",
            "Consumer errors (reconnects, ...).",
            load(&k.errors),
        );
    }
}

fn training_metrics(out: &mut String, t: &rliv_learner::trainer::TrainProgress) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    metric(
        out,
        "rliv_learner_updates_total",
        "counter",
        "TD updates done in this run.",
        load(&t.updates),
    );
    metric(
        out,
        "rliv_learner_transitions_total",
        "counter",
        "Transitions received by the learner.",
        load(&t.received),
    );
    metric(
        out,
        "rliv_learner_buffer_samples",
        "gauge",
        "Samples in the buffer.",
        load(&t.buffer_len),
    );
    metric(
        out,
        "rliv_learner_buffer_capacity",
        "gauge",
        "Capacity of the sample buffer.",
        load(&t.buffer_capacity),
    );
    metric(
        out,
        "rliv_learner_checkpoints_total",
        "counter",
        "Checkpoints written.",
        load(&t.checkpoints),
    );
    if let Some((towers, stats)) = t.last.lock().ok().and_then(|l| l.clone()) {
        family(
            out,
            "rliv_learner_td_error",
            "gauge",
            "Mean |Q - y| of the last update, per tower.",
        );
        for (name, e) in towers.iter().zip(&stats.td_error) {
            out.push_str(&format!("rliv_learner_td_error{{tower=\"{name}\"}} {e}\n"));
        }
        metric(
            out,
            "rliv_learner_loss",
            "gauge",
            "Loss of the last update.",
            stats.loss,
        );
    }
}

async fn rank(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let t = Instant::now();
    let reply = match axum::body::to_bytes(body, st.cfg.max_body_bytes).await {
        Ok(bytes) => {
            let st2 = st.clone();
            // Scoring is CPU work: keep it off the async workers.
            match tokio::task::spawn_blocking(move || st2.rank(&bytes)).await {
                Ok(r) => r,
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    5,
                    format!("scoring task: {e}"),
                ),
            }
        }
        Err(_) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            2,
            format!(
                "request body over {} bytes (serve.max_body_bytes)",
                st.cfg.max_body_bytes
            ),
        ),
    };
    st.record(&reply, t.elapsed());
    (reply.status, axum::Json(reply.body)).into_response()
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let served = st.current();
    let body = serde_json::json!({
        "status": if served.is_some() { "ok" } else { "waiting_for_model" },
        "model_version": served.as_ref().map(|s| s.version),
        "pair_state": st.store.read().map(|s| s.is_some()).unwrap_or(false),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics_text(),
    )
        .into_response()
}

pub fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/rank", post(rank))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(st)
}

/// Background threads: the model reloader and the pair-state catch-up (which
/// also opens the pair state once it exists).
pub fn spawn_background(st: &Arc<AppState>) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    let s = st.clone();
    handles.push(std::thread::spawn(move || {
        let mut last_error = String::new();
        while !s.stop.load(Ordering::Relaxed) {
            match s.reload() {
                Ok(true) => {
                    if let Some(m) = s.current() {
                        eprintln!(
                            "serve: model version {} from {}",
                            m.version,
                            m.dir.display()
                        );
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    s.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                    // Say it once per distinct problem, not every interval.
                    if e != last_error {
                        eprintln!("serve: reloading the model: {e}");
                        last_error = e;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(s.cfg.reload_interval_ms));
        }
    }));
    let s = st.clone();
    handles.push(std::thread::spawn(move || {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let secondary = std::env::temp_dir().join(format!(
            "rliv-serve-secondary-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        let mut warned = false;
        while !s.stop.load(Ordering::Relaxed) {
            let current = s.store.read().ok().and_then(|g| g.clone());
            match current {
                Some(store) => {
                    if let Err(e) = store.catch_up() {
                        tracing::warn!("serve: catching up with the pair state: {e}");
                    }
                }
                None => match Store::open_secondary(&s.state_dir, &secondary) {
                    Ok(store) => {
                        if let Ok(mut g) = s.store.write() {
                            *g = Some(Arc::new(store));
                        }
                    }
                    Err(e) => {
                        if !warned {
                            eprintln!("serve: pair state not readable yet ({e}); unknown pairs score with zero counters");
                            warned = true;
                        }
                    }
                },
            }
            std::thread::sleep(Duration::from_millis(s.cfg.catch_up_interval_ms));
        }
        let _ = std::fs::remove_dir_all(&secondary);
    }));
    handles
}

/// A running server (its own runtime on its own thread).
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    background: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `cfg.addr` and serves until [`Server::stop`] (or drop).
    pub fn start(cfg: ServeConfig, state_dir: &Path, checkpoints: &Path) -> anyhow::Result<Server> {
        cfg.validate().map_err(anyhow::Error::msg)?;
        let st = AppState::new(cfg.clone(), state_dir, checkpoints);
        // A first attempt right away, so a ready model serves from the start.
        let _ = st.reload();
        let background = spawn_background(&st);
        let listener = std::net::TcpListener::bind(&cfg.addr)
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.addr))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(st.clone());
        let thread = std::thread::Builder::new()
            .name("rliv-serve".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("serve: starting the runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("serve: {e}");
                            return;
                        }
                    };
                    let shutdown = async {
                        let _ = rx.await;
                    };
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        eprintln!("serve: {e}");
                    }
                });
            })?;
        Ok(Server {
            addr,
            state: st,
            shutdown: Some(tx),
            thread: Some(thread),
            background,
        })
    }

    pub fn stop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for t in self.background.drain(..) {
            let _ = t.join();
        }
    }

    /// Blocks until the process gets Ctrl-C / SIGTERM, then stops.
    pub fn wait_for_signal(mut self) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
            }
            let _ = tx.send(());
        });
        let _ = rx.recv();
        let _ = waiter.join();
        self.stop();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_figures_appear_on_metrics() {
        let t = rliv_learner::trainer::TrainProgress::default();
        t.updates.store(12, Ordering::Relaxed);
        t.buffer_len.store(300, Ordering::Relaxed);
        if let Ok(mut l) = t.last.lock() {
            let stats = rliv_learner::StepStats {
                loss: 2.5,
                td_error: vec![0.25, 1.5],
                ..Default::default()
            };
            *l = Some((vec!["click", "watch"], stats));
        }
        let mut text = String::new();
        training_metrics(&mut text, &t);
        assert!(text.contains("rliv_learner_updates_total 12\n"), "{text}");
        assert!(text.contains("rliv_learner_buffer_samples 300\n"), "{text}");
        assert!(
            text.contains("rliv_learner_td_error{tower=\"watch\"} 1.5\n"),
            "{text}"
        );
        assert!(text.contains("rliv_learner_loss 2.5\n"), "{text}");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let st = AppState::new(
            ServeConfig {
                max_candidates: 2,
                ..ServeConfig::default()
            },
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        let cases: &[(&[u8], u16, &str)] = &[
            (b"{", 400, "EOF"),
            (br#"{"candidates":[]}"#, 400, "user_id"),
            (br#"{"user_id":1,"candidates":[]}"#, 400, "empty"),
            (br#"{"user_id":1,"k":0,"candidates":[{"item_id":1,"author_id":1}]}"#, 400, "`k`"),
            (br#"{"user_id":1,"candidates":[{"item_id":1,"author_id":"a"}]}"#, 400, "expected u64"),
            (br#"{"user_id":1,"candidates":[{"item_id":1,"author_id":1},{"item_id":1,"author_id":1},{"item_id":1,"author_id":1}]}"#, 413, "at most 2"),
        ];
        for (body, status, needle) in cases {
            let r = st.rank(body);
            assert_eq!(
                r.status.as_u16(),
                *status,
                "{}",
                String::from_utf8_lossy(body)
            );
            let msg = r.body["error"].as_str().unwrap_or_default().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
