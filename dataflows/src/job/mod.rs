//! The replay job: reads input files through the dataflow into the pair
//! store, committing pair counters, input positions, window snapshots and
//! output lengths in one RocksDB `WriteBatch` per commit, so that a killed
//! job resumes to exactly the state of an uninterrupted one.
//!
//! Why one file over 400 lines: this is the job's assembly (the resume
//! decision, the timely dataflow and the wiring of its inputs and outputs);
//! its parts already live in `checkpoint`, `committer`, `output` and
//! `reader`.

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
use crate::operators::{
    Abort, JoinStart, LabelJoin, PairState, ParseChunks, Report, ReportSink, Side,
    TransitionOutputs,
};

mod checkpoint;
mod cluster;
mod committer;
mod output;
mod reader;
mod shard;

pub use checkpoint::{Checkpoint, OutputPos};
use checkpoint::{CHECKPOINT_VERSION, WINDOW_PREFIX};
pub use cluster::ClusterSpec;
use committer::{Committer, ShardAcks};
use output::OutputFile;
use reader::read_input;

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
    let started = Instant::now();
    let cluster_spec = req.cluster.clone();
    if let Some(spec) = cluster_spec.as_ref().filter(|s| s.process != 0) {
        return run_peer(req.clone(), spec.clone(), started);
    }
    let decided = decide(&req, started);
    // Process 0 tells the others how to start, or why not, before it returns an error.
    let mut sockets = None;
    if let Some(spec) = &cluster_spec {
        let start = match &decided {
            Ok(Decided::Run(s)) => cluster::Start::Go {
                committed_before: s.cp.next_epoch,
                last_commit: s.last_commit,
                reopen: s.reopen,
                inflight: req.replay.max_inflight_chunks as u64,
                lines: transition_outputs(&req).lines,
                records: transition_outputs(&req).records,
            },
            Ok(Decided::UpToDate(_)) => cluster::Start::UpToDate,
            Err(e) => cluster::Start::Refused(e.to_string()),
        };
        let (s, _) = cluster::connect(
            spec,
            req.replay.workers,
            &cluster::shape(&req.join, &req.replay),
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
    let snapshots: Vec<Vec<u8>> = match &shard_start {
        Some(s) => s.snapshots.clone(),
        None => store
            .meta_with_prefix(WINDOW_PREFIX)?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
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

    let mut committer = Committer {
        store: store.clone(),
        // Cluster mode: worker 0 alone reports (every worker's outputs go there).
        workers: if cluster_spec.is_some() { 1 } else { workers },
        cp,
        transitions: transitions_out,
        dead: dead_out,
        file_names: file_names.clone(),
        learner: req.learner.clone(),
        logging: req.learner.is_some(),
        pending: Vec::new(),
        durable_before: if cluster_spec.is_some() {
            Arc::new(AtomicU64::new(start_epoch))
        } else {
            durable_before.clone()
        },
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
            Box::new(Reader::new(readers, start_epoch))
        }
    };
    let start = JoinStart {
        snapshots,
        reopen,
        watermark: progress.watermark_ms.clone(),
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

/// Everything a worker needs to build the job's dataflow.
struct Wiring {
    /// Worker 0 of process 0 takes it (`None` elsewhere).
    reader: Arc<Mutex<Option<Box<dyn ChunkSource>>>>,
    /// To process 0's committer (input marks, outputs, acknowledgements).
    tx: crossbeam_channel::Sender<Report>,
    store: Arc<Store>,
    durable_before: Arc<AtomicU64>,
    done_before: Arc<AtomicU64>,
    cfg: ReplayConfig,
    join_cfg: JoinConfig,
    start: JoinStart,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    abort: Arc<Abort>,
    outputs: TransitionOutputs,
    cluster: Option<ClusterWiring>,
}

/// Cluster mode: where a worker sends its shard's part, and the
/// acknowledgement edge (see `shard`).
struct ClusterWiring {
    processes: usize,
    process: usize,
    threads: usize,
    shard_tx: crossbeam_channel::Sender<Report>,
    processed_before: Arc<AtomicU64>,
    /// The first local worker takes it.
    acks: Arc<Mutex<Option<AckReceiver>>>,
    start_epoch: u64,
}

type ShardThread = std::thread::JoinHandle<Result<(), JobError>>;
/// (commit epoch, open exposures) of this process's shard commits.
type AckReceiver = crossbeam_channel::Receiver<(u64, u64)>;

/// One worker's part of [`ClusterWiring`].
struct WorkerCluster {
    processes: usize,
    process: usize,
    shard_tx: crossbeam_channel::Sender<Report>,
    processed_before: Arc<AtomicU64>,
    /// The first worker of the process sends the acknowledgements.
    first: bool,
    acks: Option<AckReceiver>,
    start_epoch: u64,
}

/// Starts this process's shard committer and returns the workers' side of it.
fn cluster_wiring(
    spec: &ClusterSpec,
    threads: usize,
    inflight: u64,
    start_epoch: u64,
    wiring: &Wiring,
    shard_start: &shard::ShardStart,
) -> Result<(ClusterWiring, ShardThread), JobError> {
    let (shard_tx, shard_rx) = crossbeam_channel::unbounded::<Report>();
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
    let processed_before = Arc::new(AtomicU64::new(start_epoch));
    let committer = shard::ShardCommitter::new(
        wiring.store.clone(),
        threads,
        inflight,
        wiring.durable_before.clone(),
        processed_before.clone(),
        ack_tx,
        wiring.abort.clone(),
        start_epoch,
        shard_start,
    );
    let thread = std::thread::Builder::new()
        .name("rliv-shard-committer".into())
        .spawn(move || committer.run(shard_rx))
        .map_err(|e| JobError::Aborted(format!("starting the shard committer: {e}")))?;
    Ok((
        ClusterWiring {
            processes: spec.processes,
            process: spec.process,
            threads,
            shard_tx,
            processed_before,
            acks: Arc::new(Mutex::new(Some(ack_rx))),
            start_epoch,
        },
        thread,
    ))
}

/// The per-worker body: builds the dataflow, runs it to the end.
///
/// ```text
/// chunks -> Parse -> LabelJoin -> PairState -> sides ─> committer           (one process)
///                                             sides ─┬ pairs, windows ─> shard committer   (cluster)
///                                                    └ outputs ─Exchange(0)─> committer (process 0)
/// shard commits ─> acknowledgements ─Exchange(0)─> committer (process 0)    (cluster)
/// ```
fn worker_body(w: Wiring) -> impl Fn(&mut timely::worker::Worker) + Send + Sync + 'static {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::core::Partition;
    use timely::dataflow::operators::generic::Operator;
    use timely::dataflow::operators::Exchange as _;

    move |worker| {
        let index = worker.index();
        // Worker 0 takes the reader; a poisoned lock still holds it.
        let reader = if index == 0 {
            w.reader.lock().unwrap_or_else(|e| e.into_inner()).take()
        } else {
            None
        };
        let tx = w.tx.clone();
        let abort = w.abort.clone();
        let store = w.store.clone();
        let durable_before = w.durable_before.clone();
        let done_before = w.done_before.clone();
        let cfg = w.cfg.clone();
        let join_cfg = w.join_cfg.clone();
        let start = w.start.clone();
        let stop = w.stop.clone();
        let outputs = w.outputs;
        let cluster = w.cluster.as_ref().map(|c| {
            let first = index % c.threads == 0;
            let acks = if first {
                c.acks.lock().unwrap_or_else(|e| e.into_inner()).take()
            } else {
                None
            };
            WorkerCluster {
                processes: c.processes,
                process: c.process,
                shard_tx: c.shard_tx.clone(),
                processed_before: c.processed_before.clone(),
                first,
                acks,
                start_epoch: c.start_epoch,
            }
        });
        worker.dataflow::<u64, _, _>(move |scope| {
            let chunks = read_input(
                scope,
                reader,
                cfg.clone(),
                tx.clone(),
                done_before,
                abort.clone(),
                stop.clone(),
            );
            let processes = cluster.as_ref().map_or(1, |c| c.processes);
            let sides = chunks
                .parse_chunks()
                .label_join(join_cfg, cfg.drain_at_end, start, abort.clone())
                .pair_state(
                    processes,
                    store,
                    cfg.pair_cache_entries,
                    durable_before,
                    outputs,
                    abort,
                );
            let Some(c) = cluster else {
                sides.report_to(tx);
                return;
            };
            // Pairs and windows stay in this process's shard; every output
            // goes to process 0's committer, which writes them in order.
            let mut parts = sides
                .partition::<timely::container::CapacityContainerBuilder<Vec<Side>>, _, _>(
                    2,
                    |s| {
                        let global = !matches!(s, Side::Puts(_) | Side::Snapshot(..));
                        (u64::from(global), s)
                    },
                );
            if let (Some(global), Some(local)) = (parts.pop(), parts.pop()) {
                local.report_to(c.shard_tx);
                let global = global.exchange(|_| 0);
                if index == 0 {
                    global.report_to(tx.clone());
                } else {
                    global.sink(Pipeline, "NoOutputsHere", |(input, _)| {
                        input.for_each(|_, _| {});
                    });
                }
            }
            shard::acknowledgements(
                scope,
                c.first,
                c.process,
                c.start_epoch,
                c.processed_before,
                c.acks,
                (index == 0).then(|| tx.clone()),
            );
        });
        while worker.has_dataflows() {
            worker.step_or_park(Some(Duration::from_millis(50)));
        }
    }
}

/// Cluster mode, process `I > 0`: its shard's part of the job. Process 0
/// holds the checkpoint, reads the input and writes the outputs.
fn run_peer(req: ReplayRequest, spec: ClusterSpec, started: Instant) -> Result<Summary, JobError> {
    if req.state_dir.join("CURRENT").exists() {
        return Err(JobError::Resume(format!(
            "{} holds a single-process state: a cluster run needs its own --state directory",
            req.state_dir.display()
        )));
    }
    let workers = req.replay.workers;
    let store = Arc::new(Store::open(
        &rliv_state::shard_dir(&req.state_dir, spec.process),
        &req.store,
    )?);
    let (sockets, start) = cluster::connect(
        &spec,
        workers,
        &cluster::shape(&req.join, &req.replay),
        None,
        Duration::from_millis(req.replay.cluster_connect_timeout_ms),
    )?;
    let summary = |up_to_date: bool, resumed: bool| Summary {
        run: Counters::default().to_map(),
        pairs_total: 0,
        open_exposures: 0,
        resumed,
        up_to_date,
        finished: true,
        epochs: 0,
        commits: 0,
        elapsed_s: started.elapsed().as_secs_f64(),
        events_per_s: 0.0,
        peak_rss_bytes: peak_rss_bytes(),
        workers,
        dead_letters: String::new(),
        process: Some(spec.process),
    };
    let (committed_before, last_commit, reopen, inflight, outputs) = match start {
        cluster::Start::Go {
            committed_before,
            last_commit,
            reopen,
            inflight,
            lines,
            records,
        } => (
            committed_before,
            last_commit,
            reopen,
            inflight,
            TransitionOutputs { lines, records },
        ),
        cluster::Start::UpToDate => return Ok(summary(true, false)),
        cluster::Start::Refused(msg) => {
            return Err(JobError::Resume(format!(
                "process 0 did not start the job: {msg}"
            )))
        }
    };
    let shard_start = shard::prepare(
        &store,
        spec.process,
        spec.processes,
        workers,
        committed_before,
        last_commit,
    )?;
    let abort = Arc::new(Abort::default());
    let progress = req.progress.clone().unwrap_or_default();
    // Only process 0 has the job's committer: nothing is sent here.
    let (tx, rx) = crossbeam_channel::unbounded::<Report>();
    drop(rx);
    let mut wiring = Wiring {
        reader: Arc::new(Mutex::new(None)),
        tx,
        store,
        durable_before: Arc::new(AtomicU64::new(committed_before)),
        done_before: Arc::new(AtomicU64::new(committed_before)),
        cfg: req.replay.clone(),
        join_cfg: req.join.clone(),
        start: JoinStart {
            snapshots: shard_start.snapshots.clone(),
            reopen,
            watermark: progress.watermark_ms.clone(),
        },
        stop: None,
        abort: abort.clone(),
        outputs,
        cluster: None,
    };
    let (c, thread) = cluster_wiring(
        &spec,
        workers,
        inflight,
        committed_before,
        &wiring,
        &shard_start,
    )?;
    wiring.cluster = Some(c);
    cluster::exit_on_panic(spec.process);
    // Only process 0 can stop the cluster at a chunk boundary (it reads the
    // input): a stop request here ends this process at once, which stops
    // the others as a lost peer; every commit stays consistent.
    let stop = req
        .stop
        .clone()
        .or_else(|| req.kafka.as_ref().map(|k| k.stop.clone()));
    if let Some(stop) = stop {
        let process = spec.process;
        std::thread::Builder::new()
            .name("rliv-peer-stop".into())
            .spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    eprintln!(
                        "rliv: process {process}: stopped by a signal; the other processes stop too. \
                         To stop a cluster at a chunk boundary, signal process 0. Restart every process to resume."
                    );
                    std::process::exit(143);
                }
                std::thread::sleep(Duration::from_millis(50));
            })
            .map_err(|e| JobError::Aborted(format!("starting the stop watcher: {e}")))?;
    }
    let guards = cluster::execute(sockets, spec.process, workers, worker_body(wiring))?;
    for r in guards.join() {
        if let Err(e) = r {
            abort.raise(format!("a worker failed: {e}"));
        }
    }
    if let Err(e) = thread
        .join()
        .map_err(|_| JobError::Aborted("the shard committer panicked".into()))?
    {
        abort.raise(e.to_string());
    }
    if let Some(e) = abort.error() {
        return Err(JobError::Aborted(e));
    }
    Ok(summary(false, last_commit.is_some()))
}
