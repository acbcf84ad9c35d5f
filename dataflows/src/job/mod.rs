//! The replay job: reads input files through the dataflow into the pair
//! store, committing pair counters, input positions, window snapshots and
//! output lengths in one RocksDB `WriteBatch` per commit, so that a killed
//! job resumes to exactly the state of an uninterrupted one.
//!
//! In cluster mode (`--processes N`) process 0 runs this job with its
//! reader, committer and outputs, the other processes run `peer`, and each
//! process keeps its own shard of the pairs (`shard`, whose module
//! documentation states the commit protocol; `cluster` connects them).
//!
//! Why one file over 400 lines: this is the job's assembly (the resume
//! decision and the wiring of its inputs and outputs); its parts live in
//! `checkpoint`, `committer`, `dataflow`, `output`, `reader` and, for cluster
//! mode, `cluster`, `peer` and `shard`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rliv_state::{StateError, Store, StoreOptions};
use serde::Serialize;

use crate::config::{JoinConfig, ReplayConfig};
use crate::event::Source;
use crate::input::{expand_paths, ChunkSource, InputError, Reader, SourceReader};
use crate::metrics::{Counter, Counters};
use crate::operators::{Abort, JoinStart, Report, TransitionOutputs};

mod checkpoint;
mod cluster;
mod committer;
mod dataflow;
mod output;
mod peer;
mod reader;
mod shard;

pub use checkpoint::{load_views, Checkpoint, OutputPos, VIEWS_TABLE_KEY};
use checkpoint::{CHECKPOINT_VERSION, VIEWS_STATE_PREFIX, WINDOW_PREFIX};
pub use cluster::ClusterSpec;
use committer::{Committer, ShardAcks};
use dataflow::{cluster_wiring, worker_body, Wiring};
use output::OutputFile;
use peer::run_peer;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Resume(String),
    #[error("{path}: {err}")]
    Output { path: PathBuf, err: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the job stopped: {0}")]
    Aborted(String),
}

fn out_err(path: &Path, err: std::io::Error) -> JobError {
    JobError::Output {
        path: path.to_path_buf(),
        err,
    }
}

/// Live figures for a progress display.
#[derive(Default, Debug)]
pub struct Progress {
    pub lines: AtomicU64,
    pub closed_exposures: AtomicU64,
    pub pairs: AtomicU64,
    pub epochs: AtomicU64,
    /// Dead letters written by this process.
    pub dead_letters: AtomicU64,
    /// Transitions emitted by this process.
    pub transitions: AtomicU64,
    /// The event-time watermark of the label join (ms; i64::MIN before any input).
    pub watermark_ms: Arc<std::sync::atomic::AtomicI64>,
    /// The views' totals (see [`crate::views`]): deep pairs, weekly gifted
    /// users, revenue (thousandths), new fans over the kept days.
    pub views_deep_pairs: std::sync::atomic::AtomicI64,
    pub views_weekly_gifted_users: std::sync::atomic::AtomicI64,
    pub views_revenue_milli: std::sync::atomic::AtomicI64,
    pub views_new_fans: std::sync::atomic::AtomicI64,
}

impl Progress {
    /// Publishes the totals of the views' table.
    pub fn set_views(&self, t: &crate::views::ViewTable) {
        use crate::views::ViewKey;
        for (slot, key) in [
            (&self.views_deep_pairs, ViewKey::DeepPairsTotal),
            (
                &self.views_weekly_gifted_users,
                ViewKey::WeeklyGiftedUsersTotal,
            ),
            (&self.views_revenue_milli, ViewKey::RevenueMilliTotal),
            (&self.views_new_fans, ViewKey::NewFansTotal),
        ] {
            slot.store(t.get(key), Ordering::Relaxed);
        }
    }
}

/// Everything a replay needs.
#[derive(Clone)]
pub struct ReplayRequest {
    pub exposures: Vec<PathBuf>,
    pub actions: Vec<PathBuf>,
    pub state_dir: PathBuf,
    pub transitions: Option<PathBuf>,
    /// Defaults to `STATE/dead-letters.jsonl`.
    pub dead_letters: Option<PathBuf>,
    pub join: JoinConfig,
    pub replay: ReplayConfig,
    pub store: StoreOptions,
    /// Replay files that this state already finished replaying.
    pub allow_repeat: bool,
    /// An in-process learner (`--train`): the job logs its transitions in
    /// the state and feeds it (bounded: it slows the job when full).
    pub learner: Option<crate::feed::LearnerFeed>,
    pub progress: Option<Arc<Progress>>,
    /// Read Kafka topics instead of files (`rliv run`).
    pub kafka: Option<KafkaRun>,
    /// Set to stop a file replay at the next chunk boundary: it commits
    /// there, unfinished, and the same command resumes it.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Cluster mode: this process's place in a job over several processes
    /// (`--processes N --process I --hosts FILE`); `None` runs on one.
    pub cluster: Option<ClusterSpec>,
    /// The live relationship metrics (`[views]`).
    pub views: crate::views::ViewsConfig,
}

/// A run on Kafka topics.
#[derive(Clone, Debug)]
pub struct KafkaRun {
    pub cfg: crate::kafka::KafkaConfig,
    /// Stop once every partition is at its end (tests, catching up); a live
    /// run goes on until it is stopped.
    pub until_end: bool,
    /// Live figures (lag, messages) of the input.
    pub progress: Arc<crate::kafka::KafkaProgress>,
    /// Set to stop a live run at the next chunk boundary (the state stays consistent).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ReplayRequest {
    pub fn new(exposures: Vec<PathBuf>, actions: Vec<PathBuf>, state_dir: PathBuf) -> Self {
        ReplayRequest {
            exposures,
            actions,
            state_dir,
            transitions: None,
            dead_letters: None,
            join: JoinConfig::default(),
            replay: ReplayConfig::default(),
            store: StoreOptions::default(),
            allow_repeat: false,
            learner: None,
            progress: None,
            kafka: None,
            stop: None,
            cluster: None,
            views: crate::views::ViewsConfig::default(),
        }
    }
}

/// What a finished replay reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// This run's counters (across restarts of the same run).
    pub run: std::collections::BTreeMap<&'static str, u64>,
    pub pairs_total: u64,
    pub open_exposures: u64,
    pub resumed: bool,
    /// The state had already finished exactly these inputs: nothing was done
    /// (`--allow-repeat` replays them again).
    pub up_to_date: bool,
    /// The run read all of its input (false: it was stopped, and the same
    /// command resumes it).
    pub finished: bool,
    pub epochs: u64,
    pub commits: u64,
    /// Wall time of this process's part of the run.
    pub elapsed_s: f64,
    /// Input lines per second in this process.
    pub events_per_s: f64,
    pub peak_rss_bytes: u64,
    pub workers: usize,
    pub dead_letters: String,
    /// Cluster mode: this process's index (process 0 reports the job's
    /// figures; the others their own part: elapsed time, peak RSS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<usize>,
}

/// Runs a replay to the end of its input (in cluster mode: this process's part of it).
pub fn run_replay(req: ReplayRequest) -> Result<Summary, JobError> {
    req.join
        .validate()
        .map_err(|e| JobError::Config(e.to_string()))?;
    req.replay
        .validate()
        .map_err(|e| JobError::Config(e.to_string()))?;
    req.views.validate().map_err(JobError::Config)?;
    let started = Instant::now();
    let cluster_spec = req.cluster.clone();
    if let Some(spec) = cluster_spec.as_ref().filter(|s| s.process != 0) {
        return run_peer(req.clone(), spec.clone(), started);
    }
    let decided = decide(&req, started);
    // Process 0 tells the others how to start, or why not, before it returns an error.
    let mut sockets = None;
    if let Some(spec) = &cluster_spec {
        let outputs = transition_outputs(&req);
        let start = match &decided {
            Ok(Decided::Run(s)) => cluster::Start::Go {
                committed_before: s.cp.next_epoch,
                last_commit: s.last_commit,
                reopen: s.reopen,
                inflight: req.replay.max_inflight_chunks as u64,
                lines: outputs.lines,
                records: outputs.records,
            },
            Ok(Decided::UpToDate(_)) => cluster::Start::UpToDate,
            Err(e) => cluster::Start::Refused(e.to_string()),
        };
        let (s, _) = cluster::connect(
            spec,
            req.replay.workers,
            &cluster::shape(&req.join, &req.replay, &req.views),
            Some(start),
            Duration::from_millis(req.replay.cluster_connect_timeout_ms),
        )?;
        sockets = Some(s);
    }
    let setup = match decided? {
        Decided::UpToDate(summary) => return Ok(summary),
        Decided::Run(s) => *s,
    };
    let Setup {
        kafka,
        files,
        mut file_names,
        store,
        mut cp,
        resumed,
        reopen,
        last_commit,
    } = setup;
    let workers = req.replay.workers;
    // Cluster mode: this process's shard, brought to the last global commit.
    let shard_start = match &cluster_spec {
        Some(spec) => Some(shard::prepare(
            &store,
            spec.process,
            spec.processes,
            workers,
            cp.next_epoch,
            last_commit,
        )?),
        None => None,
    };
    // The join's windows, and the views' facts by writer.
    type Blobs = Vec<Vec<u8>>;
    let (snapshots, views_snapshots): (Blobs, Vec<(u32, Vec<u8>)>) = match &shard_start {
        Some(s) => (s.snapshots.clone(), s.views.clone()),
        None => {
            let windows = store
                .meta_with_prefix(WINDOW_PREFIX)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let mut views = Vec::new();
            for (k, v) in store.meta_with_prefix(VIEWS_STATE_PREFIX)? {
                let w = std::str::from_utf8(&k[VIEWS_STATE_PREFIX.len()..])
                    .ok()
                    .and_then(|w| w.parse::<u32>().ok())
                    .ok_or_else(|| {
                        JobError::State(StateError::Corrupt(format!("views state key {k:?}")))
                    })?;
                views.push((w, v));
            }
            (windows, views)
        }
    };

    let transitions_out = match &req.transitions {
        Some(p) => Some(OutputFile::open(
            p,
            cp.transitions.as_ref().map_or(0, |t| t.len),
        )?),
        None => None,
    };
    let dead_out = OutputFile::open(Path::new(&cp.dead_letters.path), cp.dead_letters.len)?;

    let start_epoch = cp.next_epoch;
    let start_positions = cp.positions.clone();
    let abort = Arc::new(Abort::default());
    // Single process: the committer's "every epoch below is in RocksDB"
    // (the pair caches may evict). Cluster mode: the shard committer's.
    let durable_before = Arc::new(AtomicU64::new(start_epoch));
    let done_before = Arc::new(AtomicU64::new(start_epoch));
    let progress = req.progress.clone().unwrap_or_default();
    progress
        .pairs
        .store(cp.counters.get(Counter::NewPairs), Ordering::Relaxed);
    let (tx, rx) = crossbeam_channel::unbounded::<Report>();

    // Kafka: connect at the stored offsets; the partitions are the file table.
    let mut kafka_reader = None;
    let mut sink = None;
    if let Some(k) = &kafka {
        let (mut r, names) = crate::kafka::KafkaReader::connect(
            &k.cfg,
            &cp.kafka_offsets(),
            &cp.kafka_partition_ts(),
            start_epoch,
            req.replay.chunk_lines,
            req.replay.max_line_bytes,
            k.until_end,
        )?;
        r.progress = k.progress.clone();
        r.stop = k.stop.clone();
        r.start_lag_monitor(&k.cfg)?;
        file_names = names.iter().map(|(s, n)| (*s, n.to_string())).collect();
        cp.files = file_names.clone();
        kafka_reader = Some(r);
        sink = Some(crate::kafka::KafkaSink::new(&k.cfg)?);
    }

    let committer_durable_before = if cluster_spec.is_some() {
        Arc::new(AtomicU64::new(start_epoch))
    } else {
        durable_before.clone()
    };
    let mut committer = Committer {
        // Cluster mode: worker 0 alone reports (every worker's outputs go there).
        workers: if cluster_spec.is_some() { 1 } else { workers },
        cp,
        transitions: transitions_out,
        dead: dead_out,
        file_names: file_names.clone(),
        learner: req.learner.clone(),
        logging: req.learner.is_some(),
        pending: Vec::new(),
        done_before: done_before.clone(),
        progress: progress.clone(),
        abort: abort.clone(),
        sync: req.store.sync_commits,
        pending_puts: Vec::new(),
        epochs_done: 0,
        sink,
        cluster: cluster_spec.as_ref().map(|c| ShardAcks {
            processes: c.processes,
            before: start_epoch,
            acks: Default::default(),
        }),
        views: Default::default(),
        views_dirty: false,
        writer: committer::CommitWriter::start(store.clone(), committer_durable_before)?,
        in_flight: None,
    };
    let committer_thread = std::thread::Builder::new()
        .name("rliv-committer".into())
        .spawn(move || committer.run(rx).map(|()| committer.cp))
        .map_err(|e| JobError::Aborted(format!("starting the committer: {e}")))?;

    let reader: Box<dyn ChunkSource> = match kafka_reader.take() {
        Some(k) => Box::new(k),
        None => {
            let mut readers = Vec::new();
            for (i, s) in Source::ALL.iter().enumerate() {
                let list: Vec<(u32, PathBuf)> = files
                    .iter()
                    .enumerate()
                    .filter(|(_, (src, _))| src == s)
                    .map(|(idx, (_, p))| (idx as u32, p.clone()))
                    .collect();
                let pos = start_positions[i].clone();
                readers.push(SourceReader::new(
                    *s,
                    list,
                    pos,
                    req.replay.chunk_lines,
                    req.replay.max_line_bytes,
                ));
            }
            Box::new(Reader::new(readers, start_epoch).with_lead(req.join.window_ms))
        }
    };
    let start = JoinStart {
        snapshots,
        reopen,
        watermark: progress.watermark_ms.clone(),
        views: req.views.enabled,
    };
    let mut wiring = Wiring {
        reader: Arc::new(Mutex::new(Some(reader))),
        tx,
        store,
        durable_before,
        done_before,
        cfg: req.replay.clone(),
        join_cfg: req.join.clone(),
        start,
        stop: req.stop.clone(),
        abort: abort.clone(),
        outputs: transition_outputs(&req),
        views: req.views.enabled.then(|| req.views.clone()),
        views_start: crate::operators::ViewsStart {
            snapshots: views_snapshots,
        },
        cluster: None,
    };
    let shard = match (&cluster_spec, sockets, &shard_start) {
        (Some(spec), Some(sockets), Some(shard_start)) => {
            let (c, t) = cluster_wiring(
                spec,
                workers,
                req.replay.max_inflight_chunks as u64,
                start_epoch,
                &wiring,
                shard_start,
            )?;
            wiring.cluster = Some(c);
            Some((sockets, t))
        }
        _ => None,
    };
    let body = worker_body(wiring);
    let (guards, shard_thread) = match shard {
        Some((sockets, t)) => {
            cluster::exit_on_panic(0);
            (cluster::execute(sockets, 0, workers, body)?, Some(t))
        }
        None => (
            timely::execute(timely::Config::process(workers), body).map_err(JobError::Aborted)?,
            None,
        ),
    };
    let results = guards.join();
    for r in results {
        if let Err(e) = r {
            abort.raise(format!("a worker failed: {e}"));
        }
    }
    if let Some(t) = shard_thread {
        if let Err(e) = t
            .join()
            .map_err(|_| JobError::Aborted("the shard committer panicked".into()))?
        {
            abort.raise(e.to_string());
        }
    }
    let cp = committer_thread
        .join()
        .map_err(|_| JobError::Aborted("the committer thread panicked".into()))??;
    if let Some(e) = abort.error() {
        return Err(JobError::Aborted(e));
    }

    let run = cp.counters.since(&cp.run_start);
    let elapsed = started.elapsed().as_secs_f64();
    let lines_here = progress.lines.load(Ordering::Relaxed);
    Ok(Summary {
        run: run.to_map(),
        pairs_total: cp.counters.get(Counter::NewPairs),
        open_exposures: cp.open_exposures,
        resumed,
        up_to_date: false,
        finished: cp.finished,
        epochs: cp.next_epoch,
        commits: cp.commits,
        elapsed_s: elapsed,
        events_per_s: if elapsed > 0.0 {
            lines_here as f64 / elapsed
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
        workers,
        dead_letters: cp.dead_letters.path.clone(),
        process: cluster_spec.as_ref().map(|c| c.process),
    })
}

fn describe(files: &[(Source, String)]) -> String {
    let mut names: Vec<&str> = files.iter().map(|(_, p)| p.as_str()).take(3).collect();
    if files.len() > 3 {
        names.push("...");
    }
    names.join(", ")
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 if unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What process 0 (or a single process) found in its state and inputs.
enum Decided {
    Run(Box<Setup>),
    /// The state already finished exactly these inputs.
    UpToDate(Summary),
}

struct Setup {
    kafka: Option<KafkaRun>,
    files: Vec<(Source, PathBuf)>,
    file_names: Vec<(Source, String)>,
    store: Arc<Store>,
    cp: Checkpoint,
    resumed: bool,
    reopen: bool,
    /// The newest committed epoch of the state (`None`: nothing committed).
    last_commit: Option<u64>,
}

fn transition_outputs(req: &ReplayRequest) -> TransitionOutputs {
    TransitionOutputs {
        lines: req.transitions.is_some()
            || req
                .kafka
                .as_ref()
                .is_some_and(|k| !k.cfg.transitions_topic.is_empty()),
        records: req.learner.is_some(),
    }
}

/// Opens the state, feeds the learner its backlog and decides how this run
/// starts: resume, continue, refuse, or nothing to do.
fn decide(req: &ReplayRequest, started: Instant) -> Result<Decided, JobError> {
    let kafka = req.kafka.clone();
    if let Some(k) = &kafka {
        k.cfg
            .validate()
            .map_err(|e| JobError::Config(e.to_string()))?;
    }
    let mut files: Vec<(Source, PathBuf)> = Vec::new();
    if kafka.is_none() {
        for p in expand_paths(&req.exposures)? {
            files.push((Source::Exposures, p));
        }
        for p in expand_paths(&req.actions)? {
            files.push((Source::Actions, p));
        }
    }
    let file_names: Vec<(Source, String)> = files
        .iter()
        .map(|(s, p)| (*s, p.display().to_string()))
        .collect();

    let store_dir = match &req.cluster {
        Some(spec) => {
            if req.state_dir.join("CURRENT").exists() {
                return Err(JobError::Resume(format!(
                    "{} holds a single-process state: a cluster run needs its own --state directory",
                    req.state_dir.display()
                )));
            }
            rliv_state::shard_dir(&req.state_dir, spec.process)
        }
        None => {
            if let Ok(rliv_state::Layout::Cluster(_)) = rliv_state::Layout::of(&req.state_dir) {
                return Err(JobError::Resume(format!(
                    "{} holds a cluster's shards: run it with its --processes/--process/--hosts",
                    req.state_dir.display()
                )));
            }
            req.state_dir.clone()
        }
    };
    let store = Arc::new(Store::open(&store_dir, &req.store)?);
    let previous = Checkpoint::load(&store)?;
    let last_commit = previous.as_ref().map(|p| p.next_epoch.saturating_sub(1));
    // The learner first gets what the state committed that its checkpoint
    // does not cover (and its buffer's refill), whatever this run then does.
    if let Some(feed) = &req.learner {
        let (start, end) = previous
            .as_ref()
            .map_or((0, 0), |cp| (cp.log_start, cp.log_end));
        let b = crate::feed::send_backlog(&store, feed, start, end)
            .map_err(|e| JobError::Resume(format!("the learner's input: {e}")))?;
        if b.refilled > 0 || b.resent > 0 {
            tracing::info!(
                "transition log: refilled the learner's buffer with {} transitions; resent {} committed after its checkpoint (from entry {})",
                b.refilled,
                b.resent,
                b.from
            );
        }
    }
    let dead_path = req
        .dead_letters
        .clone()
        .unwrap_or_else(|| req.state_dir.join("dead-letters.jsonl"));

    let (cp, resumed, reopen) = match previous {
        Some(cp) if cp.version != CHECKPOINT_VERSION => {
            return Err(JobError::Resume(format!(
                "state was written by checkpoint format {} (this rliv reads {CHECKPOINT_VERSION})",
                cp.version
            )))
        }
        // A Kafka run continues the stream where the state stands.
        Some(cp) if kafka.is_some() && cp.is_stream() => {
            let finished = cp.finished;
            (cp, true, finished)
        }
        Some(cp) if kafka.is_some() && cp.finished => {
            // A finished file replay (a backfill) continued by the live stream.
            let next = Checkpoint::new_run(Some(cp), Vec::new(), req.transitions.as_deref(), &dead_path);
            (next, false, true)
        }
        Some(cp) if kafka.is_some() => {
            return Err(JobError::Resume(format!(
                "{} holds an unfinished file replay ({}); finish it with `rliv replay` first, or use a new --state",
                req.state_dir.display(),
                describe(&cp.files)
            )))
        }
        Some(cp) if !cp.finished => {
            if cp.files != file_names {
                return Err(JobError::Resume(format!(
                    "{} holds an unfinished replay of other inputs ({}); run it again with the same \
                     --exposures/--actions to resume it, or use a new --state directory",
                    req.state_dir.display(),
                    describe(&cp.files)
                )));
            }
            let want = req.transitions.as_ref().map(|p| p.display().to_string());
            if cp.transitions.as_ref().map(|t| t.path.clone()) != want {
                return Err(JobError::Resume(format!(
                    "the unfinished replay in {} wrote transitions to {:?}; resume it with the same --transitions",
                    req.state_dir.display(),
                    cp.transitions.as_ref().map(|t| t.path.as_str()).unwrap_or("(none)")
                )));
            }
            (cp, true, false)
        }
        Some(cp) => {
            if cp.files == file_names && !req.allow_repeat {
                // Re-running a finished replay is a no-op (idempotent), not a second count.
                return Ok(Decided::UpToDate(Summary {
                    run: Counters::default().to_map(),
                    pairs_total: cp.counters.get(Counter::NewPairs),
                    open_exposures: cp.open_exposures,
                    resumed: false,
                    up_to_date: true,
                    finished: true,
                    epochs: cp.next_epoch,
                    commits: cp.commits,
                    elapsed_s: started.elapsed().as_secs_f64(),
                    events_per_s: 0.0,
                    peak_rss_bytes: peak_rss_bytes(),
                    workers: req.replay.workers,
                    dead_letters: cp.dead_letters.path.clone(),
                    process: req.cluster.as_ref().map(|c| c.process),
                }));
            }
            let next = Checkpoint::new_run(
                Some(cp),
                file_names.clone(),
                req.transitions.as_deref(),
                &dead_path,
            );
            (next, false, true)
        }
        None => (
            Checkpoint::new_run(
                None,
                file_names.clone(),
                req.transitions.as_deref(),
                &dead_path,
            ),
            false,
            false,
        ),
    };
    Ok(Decided::Run(Box::new(Setup {
        kafka,
        files,
        file_names,
        store,
        cp,
        resumed,
        reopen,
        last_commit,
    })))
}
