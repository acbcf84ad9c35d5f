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
    Abort, JoinStart, LabelJoin, PairState, ParseChunks, Report, ReportSink, TransitionOutputs,
};

mod checkpoint;
mod committer;
mod output;
mod reader;

pub use checkpoint::{Checkpoint, OutputPos};
use checkpoint::{CHECKPOINT_VERSION, WINDOW_PREFIX};
use committer::Committer;
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
}

/// Runs a replay to the end of its input.
pub fn run_replay(req: ReplayRequest) -> Result<Summary, JobError> {
    req.join
        .validate()
        .map_err(|e| JobError::Config(e.to_string()))?;
    req.replay
        .validate()
        .map_err(|e| JobError::Config(e.to_string()))?;
    let started = Instant::now();

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
    let mut file_names: Vec<(Source, String)> = files
        .iter()
        .map(|(s, p)| (*s, p.display().to_string()))
        .collect();

    let store = Arc::new(Store::open(&req.state_dir, &req.store)?);
    let previous = Checkpoint::load(&store)?;
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

    let (mut cp, resumed, reopen) = match previous {
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
                return Ok(Summary {
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
                });
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
    let snapshots: Vec<Vec<u8>> = store
        .meta_with_prefix(WINDOW_PREFIX)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();

    let transitions_out = match &req.transitions {
        Some(p) => Some(OutputFile::open(
            p,
            cp.transitions.as_ref().map_or(0, |t| t.len),
        )?),
        None => None,
    };
    let dead_out = OutputFile::open(Path::new(&cp.dead_letters.path), cp.dead_letters.len)?;

    let workers = req.replay.workers;
    let start_epoch = cp.next_epoch;
    let start_positions = cp.positions.clone();
    let abort = Arc::new(Abort::default());
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
        workers,
        cp,
        transitions: transitions_out,
        dead: dead_out,
        file_names: file_names.clone(),
        learner: req.learner.clone(),
        logging: req.learner.is_some(),
        pending: Vec::new(),
        durable_before: durable_before.clone(),
        done_before: done_before.clone(),
        progress: progress.clone(),
        abort: abort.clone(),
        sync: req.store.sync_commits,
        pending_puts: Vec::new(),
        epochs_done: 0,
        sink,
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
    let reader = Arc::new(Mutex::new(Some(reader)));

    let cfg = req.replay.clone();
    let join_cfg = req.join.clone();
    let outputs = TransitionOutputs {
        lines: req.transitions.is_some()
            || kafka
                .as_ref()
                .is_some_and(|k| !k.cfg.transitions_topic.is_empty()),
        records: req.learner.is_some(),
    };
    let start = JoinStart {
        snapshots,
        reopen,
        watermark: progress.watermark_ms.clone(),
    };
    let worker_abort = abort.clone();
    let stop = req.stop.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        // Worker 0 takes the reader; a poisoned lock still holds it.
        let reader = if index == 0 {
            reader.lock().unwrap_or_else(|e| e.into_inner()).take()
        } else {
            None
        };
        let tx = tx.clone();
        let abort = worker_abort.clone();
        let store = store.clone();
        let durable_before = durable_before.clone();
        let done_before = done_before.clone();
        let cfg = cfg.clone();
        let join_cfg = join_cfg.clone();
        let start = start.clone();
        let stop = stop.clone();
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
            chunks
                .parse_chunks()
                .label_join(join_cfg, cfg.drain_at_end, start, abort.clone())
                .pair_state(
                    store,
                    cfg.pair_cache_entries,
                    durable_before,
                    outputs,
                    abort,
                )
                .report_to(tx);
        });
        while worker.has_dataflows() {
            worker.step_or_park(Some(Duration::from_millis(50)));
        }
    })
    .map_err(JobError::Aborted)?;
    let results = guards.join();
    for r in results {
        if let Err(e) = r {
            abort.raise(format!("a worker failed: {e}"));
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
