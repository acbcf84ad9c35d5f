//! The per-worker dataflow of the job, on one process or on a cluster's.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{JoinConfig, ReplayConfig};
use crate::input::ChunkSource;
use crate::operators::{
    Abort, JoinStart, LabelJoin, PairState, ParseChunks, Report, ReportSink, Side,
    TransitionOutputs, Views,
};

use super::reader::read_input;
use super::{shard, ClusterSpec, JobError};
use rliv_state::Store;

/// Everything a worker needs to build the job's dataflow.
pub(super) struct Wiring {
    /// Worker 0 of process 0 takes it (`None` elsewhere).
    pub(super) reader: Arc<Mutex<Option<Box<dyn ChunkSource>>>>,
    /// To process 0's committer (input marks, outputs, acknowledgements).
    pub(super) tx: crossbeam_channel::Sender<Report>,
    pub(super) store: Arc<Store>,
    pub(super) durable_before: Arc<AtomicU64>,
    pub(super) done_before: Arc<AtomicU64>,
    pub(super) cfg: ReplayConfig,
    pub(super) join_cfg: JoinConfig,
    pub(super) start: JoinStart,
    pub(super) stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub(super) abort: Arc<Abort>,
    pub(super) outputs: TransitionOutputs,
    pub(super) views: Option<crate::views::ViewsConfig>,
    pub(super) views_start: crate::operators::ViewsStart,
    pub(super) cluster: Option<ClusterWiring>,
}

/// Cluster mode: where a worker sends its shard's part, and the
/// acknowledgement edge (see `shard`).
pub(super) struct ClusterWiring {
    processes: usize,
    process: usize,
    threads: usize,
    shard_tx: crossbeam_channel::Sender<Report>,
    processed_before: Arc<AtomicU64>,
    /// The first local worker takes it.
    acks: Arc<Mutex<Option<AckReceiver>>>,
    start_epoch: u64,
}

pub(super) type ShardThread = std::thread::JoinHandle<Result<(), JobError>>;
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
pub(super) fn cluster_wiring(
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
pub(super) fn worker_body(
    w: Wiring,
) -> impl Fn(&mut timely::worker::Worker) + Send + Sync + 'static {
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
        let views = w.views.clone();
        let views_start = w.views_start.clone();
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
                .label_join(join_cfg, cfg.drain_at_end, processes, start, abort.clone())
                .pair_state(
                    store,
                    cfg.pair_cache_entries,
                    durable_before,
                    outputs,
                    views.clone(),
                    abort.clone(),
                );
            let sides = match views {
                Some(cfg) => sides.views(cfg, processes, views_start, abort),
                None => sides,
            };
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
                        let global = !matches!(
                            s,
                            Side::Puts(_) | Side::Snapshot(..) | Side::ViewsSnapshot(..)
                        );
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
