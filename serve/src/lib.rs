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
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rliv_contract::prom::{family, metric};
use rliv_learner::checkpoint;
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_learner::Model;
use rliv_state::{PairKey, PairSnapshot, Store};
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
        for (key, value) in [
            ("max_candidates", self.max_candidates as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("reload_interval_ms", self.reload_interval_ms),
            ("catch_up_interval_ms", self.catch_up_interval_ms),
        ] {
            if value == 0 {
                return Err(format!("serve.{key} must be >= 1, got 0"));
            }
        }
        let host_port = self
            .addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !host_port {
            return Err(format!(
                "serve.addr must be HOST:PORT (e.g. \"127.0.0.1:8080\"), got {:?}",
                self.addr
            ));
        }
        Ok(())
    }
}

/// Bytes of an oversized `/rank` body read and thrown away before the 413 is
/// sent, as a multiple of `max_body_bytes`. A client that writes its whole
/// body before it reads (Python's urllib, for one) then receives the 413; had
/// the service closed the connection with the body unread, the client would
/// see a reset instead. A body declared longer than this is refused at once.
pub const DISCARD_FACTOR: usize = 4;

/// How long a stopping server waits for the requests in flight before it
/// closes their connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a lock whose holder may have panicked: the values behind the locks
/// here are replaced whole (an `Option<Arc<..>>`), never left half-written,
/// so a poisoned lock still holds a consistent value.
fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// See [`read_lock`].
fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
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
    pub job: RwLock<Option<Arc<dyn Figures>>>,
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
        read_lock(&self.model).clone()
    }

    /// The pair state, once it is open.
    pub fn pair_state(&self) -> Option<Arc<Store>> {
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

    fn counters(&self, user: u64, authors: &[u64]) -> Result<HashMap<u64, PairSnapshot>, String> {
        let store = self.pair_state();
        let mut out = HashMap::new();
        let Some(store) = store else {
            return Ok(out);
        };
        let keys: Vec<PairKey> = authors.iter().map(|a| PairKey::new(user, *a)).collect();
        let found = store.get_pairs(&keys).map_err(|e| e.to_string())?;
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
        let training = read_lock(&self.training).clone();
        if let Some(t) = training {
            t.render_prometheus(&mut out);
        }
        let job = read_lock(&self.job).clone();
        if let Some(j) = job {
            j.render(&mut out);
        }
        out
    }
}

/// A request body, read up to a limit.
enum BodyRead {
    Complete(Vec<u8>),
    /// Over the limit: read and thrown away up to the discard bound, or
    /// further than that (the rest is unread).
    TooLarge,
    /// The client went away or broke the framing.
    Failed(String),
}

/// Reads `body`, keeping at most `limit` bytes; past the limit it reads and
/// discards up to `discard` bytes in all, so that the client has sent its
/// body before it is answered (see [`DISCARD_FACTOR`]).
async fn read_body(mut body: Body, limit: usize, discard: usize) -> BodyRead {
    use axum::body::HttpBody;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => return BodyRead::Failed(e.to_string()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                seen = seen.saturating_add(data.len());
                if seen <= limit {
                    kept.extend_from_slice(&data);
                } else if seen > discard {
                    return BodyRead::TooLarge;
                } else if !kept.is_empty() {
                    kept = Vec::new();
                }
            }
        }
    }
    if seen > limit {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(kept)
    }
}

async fn rank(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let t = Instant::now();
    let limit = st.cfg.max_body_bytes;
    let discard = limit.saturating_mul(DISCARD_FACTOR);
    let too_large = |detail: String| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            2,
            format!("request body {detail}over {limit} bytes (serve.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // Whether to close the connection after the answer (the body was not read
    // to its end, or the client is gone).
    let mut close = true;
    let reply = match declared {
        // Refused before reading: the client waits for "100 Continue" and has
        // not sent the body, or the body is longer than is worth discarding.
        Some(n) if n > limit as u64 && (expects_continue || n > discard as u64) => {
            too_large(format!("of {n} bytes "))
        }
        _ => match read_body(body, limit, discard).await {
            BodyRead::Complete(bytes) => {
                close = false;
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
            BodyRead::TooLarge => too_large(String::new()),
            BodyRead::Failed(e) => error(
                StatusCode::BAD_REQUEST,
                1,
                format!("reading the request body: {e}"),
            ),
        },
    };
    st.record(&reply, t.elapsed());
    let mut response = (reply.status, axum::Json(reply.body)).into_response();
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let served = st.current();
    let body = serde_json::json!({
        "status": if served.is_some() { "ok" } else { "waiting_for_model" },
        "model_version": served.as_ref().map(|s| s.version),
        "pair_state": st.pair_state().is_some(),
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
            match s.pair_state() {
                Some(store) => {
                    if let Err(e) = store.catch_up() {
                        tracing::warn!("serve: catching up with the pair state: {e}");
                    }
                }
                None => match Store::open_secondary(&s.state_dir, &secondary) {
                    Ok(store) => *write_lock(&s.store) = Some(Arc::new(store)),
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

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid [serve] configuration: {0}")]
    Config(String),
    #[error("binding {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("starting the service: {0}")]
    Io(std::io::Error),
}

/// A running server (its own runtime on its own thread).
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    background: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `cfg.addr` and serves until [`Server::stop`] (or drop).
    pub fn start(
        cfg: ServeConfig,
        state_dir: &Path,
        checkpoints: &Path,
    ) -> Result<Server, ServeError> {
        cfg.validate().map_err(ServeError::Config)?;
        let st = AppState::new(cfg.clone(), state_dir, checkpoints);
        // A first attempt right away, so a ready model serves from the start.
        let _ = st.reload();
        let background = spawn_background(&st);
        let listener = std::net::TcpListener::bind(&cfg.addr)
            .map_err(|e| ServeError::Bind(cfg.addr.clone(), e))?;
        listener.set_nonblocking(true).map_err(ServeError::Io)?;
        let addr = listener.local_addr().map_err(ServeError::Io)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
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
                    // Both futures end when a stop is asked for (or the
                    // sender is gone): the server stops accepting and drains
                    // its requests in flight, for at most DRAIN_TIMEOUT.
                    let stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    };
                    let graceful = std::future::IntoFuture::into_future(
                        axum::serve(listener, app).with_graceful_shutdown(stopping(rx.clone())),
                    );
                    let deadline = async {
                        stopping(rx).await;
                        tokio::time::sleep(DRAIN_TIMEOUT).await;
                    };
                    tokio::select! {
                        r = graceful => if let Err(e) = r {
                            eprintln!("serve: {e}");
                        },
                        () = deadline => eprintln!(
                            "serve: requests still in flight after {DRAIN_TIMEOUT:?}: closing their connections"
                        ),
                    }
                });
                // Connections still open after the deadline are dropped here.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServeError::Io)?;
        Ok(Server {
            addr,
            state: st,
            shutdown: Some(tx),
            thread: Some(thread),
            background,
        })
    }

    /// Stops accepting, drains the requests in flight (for at most
    /// [`DRAIN_TIMEOUT`]) and stops the background threads.
    pub fn stop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for t in self.background.drain(..) {
            let _ = t.join();
        }
    }

    /// Serves until `wait` returns (it blocks until a stop is requested,
    /// e.g. by SIGTERM, and says by what), then drains and stops.
    pub fn run_until(mut self, wait: impl FnOnce() -> String) {
        let by = wait();
        self.stop();
        eprintln!("serve: stopped ({by})");
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
        let stats = rliv_learner::StepStats {
            loss: 2.5,
            td_error: vec![0.25, 1.5],
            ..Default::default()
        };
        *t.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((vec!["click", "watch"], stats));
        let mut text = String::new();
        t.render_prometheus(&mut text);
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
