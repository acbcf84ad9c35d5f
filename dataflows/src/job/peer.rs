//! Cluster mode, processes `1..N`: a shard's part of the job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rliv_state::Store;

use super::dataflow::{cluster_wiring, worker_body, Wiring};
use super::{cluster, peak_rss_bytes, shard, ClusterSpec, JobError, ReplayRequest, Summary};
use crate::metrics::Counters;
use crate::operators::{Abort, JoinStart, Report, TransitionOutputs};

/// Cluster mode, process `I > 0`: its shard's part of the job. Process 0
/// holds the checkpoint, reads the input and writes the outputs.
pub(super) fn run_peer(
    req: ReplayRequest,
    spec: ClusterSpec,
    started: Instant,
) -> Result<Summary, JobError> {
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
        &cluster::shape(&req.join, &req.replay, &req.views),
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
            views: req.views.enabled,
        },
        stop: None,
        abort: abort.clone(),
        outputs,
        views: req.views.enabled.then(|| req.views.clone()),
        views_start: crate::operators::ViewsStart {
            snapshots: shard_start.views.clone(),
        },
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
