//! The replay job: reads input files through the dataflow into the pair
//! store, committing pair counters, input positions, window snapshots and
//! output lengths in one RocksDB `WriteBatch` per commit, so that a killed
//! job resumes to exactly the state of an uninterrupted one.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rliv_state::{Commit, PairKey, StateError, Store, StoreOptions};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::operator::source;

use crate::config::{JoinConfig, ReplayConfig};
use crate::event::{Source, Transition};
use crate::input::{
    expand_paths, Chunk, ChunkSource, InputError, Next, Reader, SourcePos, SourceReader,
};
use crate::metrics::{Counter, Counters};
use crate::operators::{
    decode_snapshot, Abort, DeadLetter, InputMark, JoinStart, LabelJoin, PairState, ParseChunks,
    Report, ReportSink, Side, TransitionBatch, TransitionOutputs,
};

const CHECKPOINT_KEY: &[u8] = b"job/checkpoint";
const WINDOW_PREFIX: &[u8] = b"job/window/";
const CHECKPOINT_VERSION: u32 = 1;

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

/// An output file and how many bytes of it are committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPos {
    pub path: String,
    pub len: u64,
}

/// The job's record in the `meta` column family, written with every commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The run's input files, exposures first.
    pub files: Vec<(Source, String)>,
    /// Next line to read, per source.
    pub positions: [SourcePos; 2],
    /// Next offset to read per Kafka partition (`"topic/partition"`), in
    /// the same batch as the counters it produced.
    #[serde(default)]
    pub offsets: std::collections::BTreeMap<String, i64>,
    /// Newest event time handed out per Kafka partition (restores the
    /// per-partition watermarks exactly).
    #[serde(default)]
    pub partition_ts: std::collections::BTreeMap<String, i64>,
    pub next_epoch: u64,
    /// The run read all of its input.
    pub finished: bool,
    /// Counters over every run on this state.
    pub counters: Counters,
    /// `counters` when this run started.
    pub run_start: Counters,
    pub transitions: Option<OutputPos>,
    pub dead_letters: OutputPos,
    /// Exposures still open (kept for the next run with `--keep-open`).
    pub open_exposures: u64,
    pub commits: u64,
    /// The transition log (the learner's durable input, see [`crate::feed`]):
    /// its oldest kept entry and its end (the next sequence number), both
    /// committed with the counters.
    #[serde(default)]
    pub log_start: u64,
    #[serde(default)]
    pub log_end: u64,
}

impl Checkpoint {
    /// The checkpoint a new input run starts from: after `previous` (a
    /// finished run on the same state, whose counters and epochs it
    /// continues) or on an empty state.
    fn new_run(
        previous: Option<Checkpoint>,
        files: Vec<(Source, String)>,
        transitions: Option<&Path>,
        dead_letters: &Path,
    ) -> Checkpoint {
        let (counters, next_epoch, open_exposures, commits, log) = match previous {
            Some(p) => (
                p.counters,
                p.next_epoch,
                p.open_exposures,
                p.commits,
                (p.log_start, p.log_end),
            ),
            None => (Counters::default(), 0, 0, 0, (0, 0)),
        };
        let output = |p: &Path| OutputPos {
            path: p.display().to_string(),
            len: 0,
        };
        Checkpoint {
            version: CHECKPOINT_VERSION,
            files,
            positions: Default::default(),
            offsets: Default::default(),
            partition_ts: Default::default(),
            next_epoch,
            finished: false,
            run_start: counters.clone(),
            counters,
            transitions: transitions.map(output),
            dead_letters: output(dead_letters),
            open_exposures,
            commits,
            log_start: log.0,
            log_end: log.1,
        }
    }

    pub fn load(store: &Store) -> Result<Option<Checkpoint>, JobError> {
        match store.get_meta(CHECKPOINT_KEY)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| JobError::State(StateError::Corrupt(format!("job checkpoint: {e}")))),
        }
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
    req.join.validate().map_err(JobError::Config)?;
    req.replay.validate().map_err(JobError::Config)?;
    let started = Instant::now();

    let kafka = req.kafka.clone();
    if let Some(k) = &kafka {
        k.cfg.validate().map_err(JobError::Config)?;
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

    let is_stream = |cp: &Checkpoint| {
        !cp.files.is_empty() && cp.files.iter().all(|(_, n)| n.starts_with("kafka:"))
    };
    let (mut cp, resumed, reopen) = match previous {
        Some(cp) if cp.version != CHECKPOINT_VERSION => {
            return Err(JobError::Resume(format!(
                "state was written by checkpoint format {} (this rliv reads {CHECKPOINT_VERSION})",
                cp.version
            )))
        }
        // A Kafka run continues the stream where the state stands.
        Some(cp) if kafka.is_some() && is_stream(&cp) => {
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
            &cp.offsets,
            &cp.partition_ts,
            start_epoch,
            req.replay.chunk_lines,
            req.replay.max_line_bytes,
            k.until_end,
        )?;
        r.progress = k.progress.clone();
        r.stop = k.stop.clone();
        r.start_lag_monitor(&k.cfg)?;
        cp.files = names.clone();
        file_names = names;
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
        pending_log: Vec::new(),
        pending_feed: Vec::new(),
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

/// The reader: on worker 0, hands out one chunk per epoch, at most
/// `max_inflight_chunks` ahead of the committer.
fn read_input<'scope>(
    scope: timely::dataflow::Scope<'scope, u64>,
    reader: Option<Box<dyn ChunkSource>>,
    cfg: ReplayConfig,
    tx: Sender<Report>,
    done_before: Arc<AtomicU64>,
    abort: Arc<Abort>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> timely::dataflow::Stream<'scope, u64, Vec<Chunk>> {
    source(scope, "ReadInput", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut reader = reader;
        let mut cap = match &reader {
            Some(r) => {
                let mut c = cap;
                c.downgrade(&r.next_epoch());
                Some(c)
            }
            None => None,
        };
        let commit_every = Duration::from_millis(cfg.commit_interval_ms);
        let mut last_commit = Instant::now();
        move |output| {
            let (Some(c), Some(r)) = (cap.as_mut(), reader.as_mut()) else {
                cap = None;
                return;
            };
            if abort.raised() {
                cap = None;
                return;
            }
            for _ in 0..4 {
                let epoch = r.next_epoch();
                if epoch >= done_before.load(Ordering::Acquire) + cfg.max_inflight_chunks as u64 {
                    activator.activate_after(Duration::from_micros(300));
                    return;
                }
                let stopping = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                let next = match if stopping { Ok(Next::End) } else { r.next() } {
                    Ok(next) => next,
                    Err(e) => {
                        abort.raise(e.to_string());
                        cap = None;
                        return;
                    }
                };
                let (chunk, last) = match next {
                    Next::Pending => {
                        // A live stream with nothing new: poll again shortly.
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    Next::Chunk(mut chunk) => {
                        chunk.commit = last_commit.elapsed() >= commit_every;
                        (chunk, false)
                    }
                    Next::End => {
                        let chunk = Chunk {
                            epoch,
                            commit: true,
                            last: true,
                            stopped: stopping,
                            exhausted_after: [r.exhausts_at_end() && !stopping; 2],
                            ..Chunk::default()
                        };
                        (chunk, true)
                    }
                };
                if chunk.commit {
                    last_commit = Instant::now();
                }
                let _ = tx.send(Report::Input(InputMark {
                    epoch,
                    positions: r.positions(),
                    commit: chunk.commit,
                    last,
                    stopped: chunk.stopped,
                }));
                c.downgrade(&epoch);
                output.session(c).give(chunk);
                if last {
                    cap = None;
                    reader = None;
                    return;
                }
                c.downgrade(&(epoch + 1));
            }
            activator.activate();
        }
    })
    .container::<Vec<_>>()
}

/// An append-only output file whose committed length is recorded.
struct OutputFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
}

impl OutputFile {
    /// Opens `path` cut back to `committed` bytes (what the last commit recorded).
    fn open(path: &Path, committed: u64) -> Result<OutputFile, JobError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| out_err(path, e))?;
        let actual = f.metadata().map_err(|e| out_err(path, e))?.len();
        if actual < committed {
            return Err(JobError::Resume(format!(
                "{} has {actual} bytes but the state's last commit recorded {committed}: it was changed or \
                 replaced since; restore it or start over with a new --state",
                path.display()
            )));
        }
        f.set_len(committed).map_err(|e| out_err(path, e))?;
        f.seek(SeekFrom::Start(committed))
            .map_err(|e| out_err(path, e))?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, f),
            len: committed,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), JobError> {
        self.out
            .write_all(bytes)
            .map_err(|e| out_err(&self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self, sync: bool) -> Result<(), JobError> {
        self.out.flush().map_err(|e| out_err(&self.path, e))?;
        if sync {
            self.out
                .get_ref()
                .sync_data()
                .map_err(|e| out_err(&self.path, e))?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct EpochAcc {
    transitions: Vec<TransitionBatch>,
    dead: Vec<DeadLetter>,
    puts: Vec<Vec<(PairKey, Vec<u8>)>>,
    snapshots: Vec<(u32, Vec<u8>)>,
    counters: Counters,
}

/// The single writer: puts epochs in order, writes the outputs, commits.
struct Committer {
    store: Arc<Store>,
    workers: usize,
    cp: Checkpoint,
    transitions: Option<OutputFile>,
    dead: OutputFile,
    file_names: Vec<(Source, String)>,
    /// The learner: fed each commit's transitions once they are durable.
    learner: Option<crate::feed::LearnerFeed>,
    /// Transitions go into the log (a learner is attached; stays on if it
    /// hangs up, so that a resumed learner gets them back).
    logging: bool,
    /// This commit's log entries and the transitions they hold.
    pending_log: Vec<(u64, Vec<u8>)>,
    pending_feed: Vec<(u64, Transition)>,
    durable_before: Arc<AtomicU64>,
    done_before: Arc<AtomicU64>,
    progress: Arc<Progress>,
    abort: Arc<Abort>,
    sync: bool,
    /// Pair values of the next commit (each worker flushes its dirty pairs at
    /// commit epochs; workers own disjoint pairs).
    pending_puts: Vec<(PairKey, Vec<u8>)>,
    epochs_done: u64,
    /// Kafka topics for transitions and dead letters (`rliv run`).
    sink: Option<crate::kafka::KafkaSink>,
}

impl Committer {
    fn run(&mut self, rx: Receiver<Report>) -> Result<(), JobError> {
        let mut marks: std::collections::BTreeMap<u64, InputMark> = Default::default();
        let mut accs: std::collections::BTreeMap<u64, EpochAcc> = Default::default();
        let mut before = vec![self.cp.next_epoch; self.workers];
        let mut failed: Option<JobError> = None;
        for msg in rx {
            match msg {
                Report::Input(m) => {
                    marks.insert(m.epoch, m);
                }
                Report::Epoch { epoch, items, .. } => {
                    let acc = accs.entry(epoch).or_default();
                    for item in items {
                        match item {
                            Side::Dead(d) => acc.dead.push(d),
                            Side::Counts(c) => acc.counters.merge(&c),
                            Side::Snapshot(w, s) => acc.snapshots.push((w, s)),
                            Side::Transitions(t) => acc.transitions.push(t),
                            Side::Puts(p) => acc.puts.push(p),
                        }
                    }
                }
                Report::Frontier { worker, before: b } => {
                    if let Some(slot) = before.get_mut(worker) {
                        *slot = (*slot).max(b);
                    }
                    let complete = before.iter().copied().min().unwrap_or(0);
                    loop {
                        let next_mark = marks.keys().next().copied().filter(|e| *e < complete);
                        let next_acc = accs.keys().next().copied().filter(|e| *e < complete);
                        let Some(epoch) = next_mark.into_iter().chain(next_acc).min() else {
                            break;
                        };
                        let mark = marks.remove(&epoch);
                        let acc = accs.remove(&epoch).unwrap_or_default();
                        if failed.is_none() && !self.abort.raised() {
                            if let Err(e) = self.finish_epoch(epoch, mark, acc) {
                                self.abort.raise(e.to_string());
                                failed = Some(e);
                            }
                        }
                        self.done_before.store(epoch + 1, Ordering::Release);
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn finish_epoch(
        &mut self,
        epoch: u64,
        mark: Option<InputMark>,
        mut acc: EpochAcc,
    ) -> Result<(), JobError> {
        self.write_transitions(std::mem::take(&mut acc.transitions))?;
        acc.dead
            .sort_by(|a, b| (a.origin, a.reason).cmp(&(b.origin, b.reason)));
        let mut line = Vec::new();
        for d in &acc.dead {
            line.clear();
            let (source, file) = self
                .file_names
                .get(d.origin.file as usize)
                .map_or(("", ""), |(s, p)| (s.name(), p.as_str()));
            let rec = DeadLetterLine {
                source,
                file,
                line: d.origin.line,
                reason: d.reason.name(),
                detail: &d.detail,
                raw: &d.raw,
            };
            serde_json::to_writer(&mut line, &rec).map_err(|e| JobError::Aborted(e.to_string()))?;
            if let Some((sink, topic)) = self
                .sink
                .as_ref()
                .and_then(|s| s.dead_letter_topic.as_deref().map(|t| (s, t)))
            {
                let key = format!("{}:{}", rec.file, rec.line);
                sink.send(topic, key.as_bytes(), &line)
                    .map_err(JobError::Aborted)?;
            }
            line.push(b'\n');
            self.dead.write(&line)?;
        }
        for batch in acc.puts {
            self.pending_puts.extend(batch);
        }
        self.cp.counters.merge(&acc.counters);
        self.epochs_done += 1;
        self.progress
            .lines
            .fetch_add(acc.counters.get(Counter::Lines), Ordering::Relaxed);
        self.progress.closed_exposures.fetch_add(
            acc.counters.get(Counter::ClosedExposures),
            Ordering::Relaxed,
        );
        self.progress
            .pairs
            .store(self.cp.counters.get(Counter::NewPairs), Ordering::Relaxed);
        self.progress
            .epochs
            .store(self.epochs_done, Ordering::Relaxed);
        self.progress
            .dead_letters
            .fetch_add(acc.dead.len() as u64, Ordering::Relaxed);
        self.progress
            .transitions
            .fetch_add(acc.counters.get(Counter::Transitions), Ordering::Relaxed);

        let Some(mark) = mark else { return Ok(()) };
        self.cp.next_epoch = epoch + 1;
        self.cp.positions = mark.positions.files.clone();
        self.cp.offsets = mark.positions.offsets.clone();
        self.cp.partition_ts = mark.positions.partition_ts.clone();
        if !mark.commit {
            return Ok(());
        }
        if acc.snapshots.len() != self.workers {
            return Err(JobError::Aborted(format!(
                "epoch {epoch}: {} of {} window snapshots arrived",
                acc.snapshots.len(),
                self.workers
            )));
        }
        self.cp.finished = mark.last && !mark.stopped;
        self.cp.commits += 1;
        // A snapshot that does not decode would be restored as an empty
        // window on resume: fail the commit instead of counting it as zero.
        let mut open = 0u64;
        for (w, s) in &acc.snapshots {
            let (_, j) = decode_snapshot(s).map_err(|e| {
                JobError::Aborted(format!(
                    "epoch {epoch}: worker {w}'s window snapshot does not decode: {e}"
                ))
            })?;
            open += j.open_exposures() as u64;
        }
        self.cp.open_exposures = open;
        let sync = self.sync;
        if let Some(t) = self.transitions.as_mut() {
            t.flush(sync)?;
            if let Some(pos) = self.cp.transitions.as_mut() {
                pos.len = t.len;
            }
        }
        self.dead.flush(sync)?;
        self.cp.dead_letters.len = self.dead.len;
        // Topics first, then the state: at-least-once for the topics.
        if let Some(sink) = &self.sink {
            sink.flush().map_err(JobError::Aborted)?;
        }

        let mut commit = Commit {
            meta_delete_prefixes: vec![WINDOW_PREFIX.to_vec()],
            ..Commit::default()
        };
        commit.pairs = std::mem::take(&mut self.pending_puts);
        acc.snapshots.sort_by_key(|(w, _)| *w);
        for (w, s) in acc.snapshots {
            let mut key = WINDOW_PREFIX.to_vec();
            key.extend_from_slice(format!("{w:05}").as_bytes());
            commit.meta_puts.push((key, s));
        }
        commit.log_puts = std::mem::take(&mut self.pending_log);
        if let Some(feed) = &self.learner {
            let cut = crate::feed::truncate_below(feed, self.cp.log_end);
            if cut > self.cp.log_start {
                commit.log_delete = Some(self.cp.log_start..cut);
                self.cp.log_start = cut;
            }
        }
        let cp = serde_json::to_vec(&self.cp).map_err(|e| JobError::Aborted(e.to_string()))?;
        commit.meta_puts.push((CHECKPOINT_KEY.to_vec(), cp));
        crate::failpoint::hit("job.before_commit");
        self.store.commit(commit)?;
        crate::failpoint::hit("job.after_commit");
        self.durable_before.store(epoch + 1, Ordering::Release);
        // Only now may the learner see them: a crash before this commit
        // replays them, and the learner must not have taken them yet.
        self.feed_committed();
        if let Some(sink) = &self.sink {
            sink.commit_offsets(&self.cp.offsets);
        }
        Ok(())
    }

    /// Writes one epoch's transitions in (user, author, ts, request, item)
    /// order, whatever the number of workers, and feeds the consumer.
    fn write_transitions(&mut self, mut batches: Vec<TransitionBatch>) -> Result<(), JobError> {
        let mut order: Vec<(usize, usize)> = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            order.extend((0..batch.keys.len()).map(|i| (b, i)));
        }
        if batches.len() > 1 {
            order.sort_unstable_by(|x, y| batches[x.0].keys[x.1].cmp(&batches[y.0].keys[y.1]));
        }
        if let Some((sink, topic)) = self
            .sink
            .as_ref()
            .and_then(|s| s.transitions_topic.as_deref().map(|t| (s, t)))
        {
            for &(b, i) in &order {
                let batch = &batches[b];
                let start = if i == 0 {
                    0
                } else {
                    batch.ends[i - 1] as usize
                };
                let line = &batch.lines[start..batch.ends[i] as usize];
                let (_, _, request, item) = batch.keys[i];
                let key = format!("{request}:{item}");
                sink.send(
                    topic,
                    key.as_bytes(),
                    line.strip_suffix(b"\n").unwrap_or(line),
                )
                .map_err(JobError::Aborted)?;
            }
        }
        if let Some(out) = self.transitions.as_mut() {
            for &(b, i) in &order {
                let batch = &batches[b];
                let start = if i == 0 {
                    0
                } else {
                    batch.ends[i - 1] as usize
                };
                out.write(&batch.lines[start..batch.ends[i] as usize])?;
            }
        }
        if self.logging {
            let mut records: Vec<Vec<Option<Transition>>> = batches
                .iter_mut()
                .map(|b| {
                    std::mem::take(&mut b.records)
                        .into_iter()
                        .map(Some)
                        .collect()
                })
                .collect();
            for (b, i) in order {
                if let Some(t) = records[b][i].take() {
                    let seq = self.cp.log_end;
                    let bytes = crate::feed::encode(&t)
                        .map_err(|e| JobError::Aborted(format!("encoding a transition: {e}")))?;
                    self.pending_log.push((seq, bytes));
                    self.pending_feed.push((seq, t));
                    // Committed with the next commit (the checkpoint is
                    // only written then).
                    self.cp.log_end = seq + 1;
                }
            }
        }
        Ok(())
    }

    /// Hands the learner the transitions the last commit made durable.
    fn feed_committed(&mut self) {
        let pending = std::mem::take(&mut self.pending_feed);
        let Some(feed) = &self.learner else { return };
        for (seq, t) in pending {
            if feed.tx.send(crate::feed::Fed::Logged(seq, t)).is_err() {
                // The learner hung up (it failed; the run reports it): keep
                // logging, so that a resumed learner gets these back.
                tracing::warn!("the learner stopped taking transitions at log entry {seq}");
                self.learner = None;
                break;
            }
        }
    }
}

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    source: &'a str,
    file: &'a str,
    line: u64,
    reason: &'a str,
    detail: &'a str,
    raw: &'a str,
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
