//! Cluster mode: each process's own pair state (`STATE/p{I}`) and the
//! commit protocol that keeps the shards and process 0's job checkpoint
//! exactly in step.
//!
//! # The protocol
//! Epochs are input chunks; some are commit epochs (the reader marks them,
//! every join worker snapshots its window there, every pair worker flushes
//! its changed pairs there).
//! 1. **Shard commit.** When every local worker has passed commit epoch
//!    `E`, the process's shard committer writes, in one RocksDB batch of its
//!    own store: the changed pairs, their *pre-images* (the values they
//!    replace, or "absent"), its workers' window snapshots for `E`, and
//!    its record. Then it acknowledges `E` (with its open-exposure count)
//!    to worker 0 along a dataflow edge.
//! 2. **Global commit.** Process 0's committer finishes `E` (outputs,
//!    counters, input positions, transition log, job checkpoint with
//!    `next_epoch = E + 1`) only after the acknowledgements of `E` from
//!    every process: the frontier of the acknowledgement stream has passed
//!    `E`. This batch is the commit point of `E` for the whole cluster.
//! 3. **Restart.** Process 0 reads `G`, the checkpoint's `next_epoch`, and
//!    sends it to every process when they connect. Each shard undoes its
//!    commits at `E >= G` (newest first: their pre-images restore the values
//!    of the last global commit), drops their windows, and restores its
//!    workers' windows of `G - 1`, which it must hold (step 2 waited for it).
//!
//! Why nothing is lost or doubled: after step 3 every shard's pairs and
//! windows, and process 0's positions, outputs and counters, are those of
//! the same epoch `G - 1`, which is what an uninterrupted run had there;
//! the reader resumes at `G`. A crash between a shard commit and the global
//! commit is undone by the pre-images; a crash before the shard commit
//! loses nothing that was committed.
//!
//! Pruning: pre-images and old windows are dropped once their epoch is
//! globally committed. A shard does not hear of global commits; it knows
//! a bound instead: the reader hands out epoch `e` only when process 0 has
//! finished every epoch up to `e - max_inflight_chunks`, so at a shard
//! commit of `E`, every commit epoch `<= E - max_inflight_chunks` is
//! globally committed (process 0 sends its `max_inflight_chunks`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rliv_state::{Commit, PairKey, Store};
use serde::{Deserialize, Serialize};

use super::JobError;
use crate::operators::{Abort, Report, Side};

const SHARD_KEY: &[u8] = b"job/shard";
const UNDO_PREFIX: &[u8] = b"job/undo/";
const WINDOW_PREFIX: &[u8] = b"job/shard-window/";
/// The views' live facts of the shard's workers, per commit epoch (as the windows).
const VIEWS_PREFIX: &[u8] = b"job/shard-views/";
const SHARD_VERSION: u32 = 1;

/// A shard's record of itself (in its `meta` column family).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct ShardRecord {
    version: u32,
    process: usize,
    processes: usize,
    threads: usize,
}

fn undo_key(epoch: u64) -> Vec<u8> {
    let mut k = UNDO_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn window_epoch_prefix(epoch: u64) -> Vec<u8> {
    let mut k = WINDOW_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn window_key(epoch: u64, worker: u32) -> Vec<u8> {
    let mut k = window_epoch_prefix(epoch);
    k.extend_from_slice(&worker.to_be_bytes());
    k
}

fn views_epoch_prefix(epoch: u64) -> Vec<u8> {
    let mut k = VIEWS_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn views_key(epoch: u64, worker: u32) -> Vec<u8> {
    let mut k = views_epoch_prefix(epoch);
    k.extend_from_slice(&worker.to_be_bytes());
    k
}

fn epoch_of(key: &[u8], prefix: &[u8]) -> Result<u64, JobError> {
    key.get(prefix.len()..prefix.len() + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(format!("meta key {key:?}")))
}

fn corrupt(msg: String) -> JobError {
    JobError::State(rliv_state::StateError::Corrupt(format!(
        "cluster shard: {msg}"
    )))
}

type Undo = Vec<(PairKey, Option<Vec<u8>>)>;
type MetaEntry = (Vec<u8>, Vec<u8>);

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A shard ready to run: its workers' windows of the last global commit.
pub(super) struct ShardStart {
    pub(super) snapshots: Vec<Vec<u8>>,
    /// Its workers' views facts of the last global commit, by writer.
    pub(super) views: Vec<(u32, Vec<u8>)>,
    /// Commit epochs of the windows kept (oldest first).
    windows: Vec<u64>,
    /// Commit epochs with pre-images kept.
    undos: Vec<u64>,
}

/// Brings this process's shard to the last global commit (`committed_before`
/// is the job checkpoint's `next_epoch`, `last_commit` its newest commit
/// epoch): checks that it is this process's shard of this cluster shape,
/// undoes newer commits, and returns the windows to restore.
pub(super) fn prepare(
    store: &Store,
    process: usize,
    processes: usize,
    threads: usize,
    committed_before: u64,
    last_commit: Option<u64>,
) -> Result<ShardStart, JobError> {
    let me = ShardRecord {
        version: SHARD_VERSION,
        process,
        processes,
        threads,
    };
    let dir = store.path().display().to_string();
    match store.get_meta(SHARD_KEY)? {
        Some(bytes) => {
            let rec: ShardRecord = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(format!("{dir}: shard record: {e}")))?;
            if rec != me {
                return Err(JobError::Resume(format!(
                    "{dir} is process {} of {} with -w {} (record version {}); this is process {process} of {processes} with -w {threads}: \
                     restart the cluster with its original --processes, --process and -w (changing them needs a new --state)",
                    rec.process, rec.processes, rec.threads, rec.version
                )));
            }
        }
        None if last_commit.is_some() => {
            return Err(JobError::Resume(format!(
                "{dir} is empty but the cluster committed up to epoch {}: this process's shard is missing \
                 (mount or restore it; or start over with a new --state)",
                committed_before.saturating_sub(1)
            )))
        }
        None => {}
    }
    // Undo the shard commits the cluster never committed, newest first: the
    // oldest pre-image of a pair is its value at the last global commit.
    let mut undos: Vec<(u64, Vec<u8>)> = Vec::new();
    for (k, v) in store.meta_with_prefix(UNDO_PREFIX)? {
        undos.push((epoch_of(&k, UNDO_PREFIX)?, v));
    }
    undos.sort_by_key(|(e, _)| std::cmp::Reverse(*e));
    let mut restore: BTreeMap<PairKey, Option<Vec<u8>>> = BTreeMap::new();
    let mut commit = Commit::default();
    let mut undone = Vec::new();
    let mut kept_undos = Vec::new();
    for (epoch, blob) in &undos {
        if *epoch < committed_before {
            kept_undos.push(*epoch);
            continue;
        }
        let (pre, _): (Undo, usize) = bincode::serde::decode_from_slice(blob, bincode_cfg())
            .map_err(|e| corrupt(format!("{dir}: pre-images of epoch {epoch}: {e}")))?;
        for (k, v) in pre {
            restore.insert(k, v);
        }
        commit.meta_delete_prefixes.push(undo_key(*epoch));
        undone.push(*epoch);
    }
    let mut windows: BTreeMap<u64, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
    for (k, v) in store.meta_with_prefix(WINDOW_PREFIX)? {
        let epoch = epoch_of(&k, WINDOW_PREFIX)?;
        if epoch >= committed_before {
            commit.meta_delete_prefixes.push(window_epoch_prefix(epoch));
            continue;
        }
        let w = k
            .get(WINDOW_PREFIX.len() + 8..)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt(format!("{dir}: window key {k:?}")))?;
        windows.entry(epoch).or_default().push((w, v));
    }
    // Per epoch: the (key, facts) of each worker.
    let mut views: BTreeMap<u64, Vec<MetaEntry>> = BTreeMap::new();
    for (k, v) in store.meta_with_prefix(VIEWS_PREFIX)? {
        let epoch = epoch_of(&k, VIEWS_PREFIX)?;
        if epoch >= committed_before {
            commit.meta_delete_prefixes.push(views_epoch_prefix(epoch));
        } else {
            views.entry(epoch).or_default().push((k, v));
        }
    }
    commit.meta_delete_prefixes.dedup();
    let newest = windows.keys().next_back().copied();
    if newest != last_commit {
        return Err(JobError::Resume(format!(
            "{dir}: the newest window this shard holds is of epoch {newest:?}, the cluster's last commit is epoch {last_commit:?}: \
             the shard does not belong to this state (or was restored from another time)"
        )));
    }
    for (k, v) in restore {
        match v {
            Some(v) => commit.pairs.push((k, v)),
            None => commit.pair_deletes.push(k),
        }
    }
    if !undone.is_empty() || !commit.meta_delete_prefixes.is_empty() {
        tracing::info!(
            "{dir}: rolled back {} pairs of the commits at epochs {undone:?}, which the cluster had not committed",
            commit.pairs.len() + commit.pair_deletes.len()
        );
    }
    commit.meta_puts.push((
        SHARD_KEY.to_vec(),
        serde_json::to_vec(&me).map_err(|e| JobError::Aborted(e.to_string()))?,
    ));
    store.commit(commit)?;
    let snapshots = match newest {
        Some(e) => {
            let mut w = windows.remove(&e).unwrap_or_default();
            w.sort_by_key(|(w, _)| *w);
            if w.len() != threads {
                return Err(corrupt(format!(
                    "{dir}: {} window snapshots at epoch {e} for {threads} workers",
                    w.len()
                )));
            }
            w.into_iter().map(|(_, s)| s).collect()
        }
        None => Vec::new(),
    };
    // Keys sort by worker within an epoch.
    let mut kept_views = Vec::new();
    for (k, v) in newest.and_then(|e| views.remove(&e)).unwrap_or_default() {
        let w = k
            .get(VIEWS_PREFIX.len() + 8..)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt(format!("{dir}: views key {k:?}")))?;
        kept_views.push((w, v));
    }
    kept_undos.sort_unstable();
    let mut kept_windows: Vec<u64> = windows.keys().copied().collect();
    kept_windows.extend(newest);
    Ok(ShardStart {
        snapshots,
        views: kept_views,
        windows: kept_windows,
        undos: kept_undos,
    })
}

#[derive(Default)]
struct EpochAcc {
    puts: Vec<(PairKey, Vec<u8>)>,
    snapshots: Vec<(u32, Vec<u8>)>,
    views: Vec<(u32, Vec<u8>)>,
}

/// One process's committer of its shard (see the protocol above).
pub(super) struct ShardCommitter {
    pub(super) store: Arc<Store>,
    pub(super) threads: usize,
    /// Process 0's `max_inflight_chunks`: the pruning horizon.
    pub(super) inflight: u64,
    /// Every epoch below it is in this shard's RocksDB (the pair caches may evict).
    pub(super) durable_before: Arc<AtomicU64>,
    /// Every epoch below it is processed here (the acknowledgement stream's frontier).
    pub(super) processed_before: Arc<AtomicU64>,
    /// (commit epoch, open exposures) of each shard commit, for the acknowledgement stream.
    pub(super) acks: Sender<(u64, u64)>,
    pub(super) abort: Arc<Abort>,
    pub(super) start_epoch: u64,
    windows: Vec<u64>,
    undos: Vec<u64>,
}

impl ShardCommitter {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        store: Arc<Store>,
        threads: usize,
        inflight: u64,
        durable_before: Arc<AtomicU64>,
        processed_before: Arc<AtomicU64>,
        acks: Sender<(u64, u64)>,
        abort: Arc<Abort>,
        start_epoch: u64,
        start: &ShardStart,
    ) -> Self {
        ShardCommitter {
            store,
            threads,
            inflight,
            durable_before,
            processed_before,
            acks,
            abort,
            start_epoch,
            windows: start.windows.clone(),
            undos: start.undos.clone(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Report>) -> Result<(), JobError> {
        let mut accs: BTreeMap<u64, EpochAcc> = BTreeMap::new();
        let mut before = vec![self.start_epoch; self.threads];
        let mut failed: Option<JobError> = None;
        for msg in rx {
            match msg {
                Report::Epoch { epoch, items, .. } => {
                    let acc = accs.entry(epoch).or_default();
                    for item in items {
                        match item {
                            Side::Puts(p) => acc.puts.extend(p),
                            Side::Snapshot(w, s) => acc.snapshots.push((w, s)),
                            Side::ViewsSnapshot(w, s) => acc.views.push((w, s)),
                            _ => {}
                        }
                    }
                }
                Report::Frontier { worker, before: b } => {
                    if let Some(slot) = before.get_mut(worker % self.threads) {
                        *slot = (*slot).max(b);
                    }
                    let complete = before.iter().copied().min().unwrap_or(0);
                    while let Some((&epoch, _)) = accs.first_key_value() {
                        if epoch >= complete {
                            break;
                        }
                        let Some((_, acc)) = accs.pop_first() else {
                            break;
                        };
                        if failed.is_none() && !self.abort.raised() && !acc.snapshots.is_empty() {
                            if let Err(e) = self.commit(epoch, acc) {
                                self.abort.raise(e.to_string());
                                failed = Some(e);
                            }
                        }
                    }
                    if failed.is_none() {
                        self.processed_before.fetch_max(complete, Ordering::AcqRel);
                    }
                }
                _ => {}
            }
        }
        // The dataflow is over: release the acknowledgement stream.
        self.processed_before.store(u64::MAX, Ordering::Release);
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn commit(&mut self, epoch: u64, mut acc: EpochAcc) -> Result<(), JobError> {
        if acc.snapshots.len() != self.threads {
            return Err(JobError::Aborted(format!(
                "epoch {epoch}: {} of {} window snapshots arrived at this shard",
                acc.snapshots.len(),
                self.threads
            )));
        }
        let open = super::committer::open_exposures(epoch, &acc.snapshots)?;
        acc.puts.sort_unstable_by_key(|(k, _)| *k);
        let keys: Vec<PairKey> = acc.puts.iter().map(|(k, _)| *k).collect();
        let pre = self.store.get_pairs_raw(&keys)?;
        let undo: Undo = keys.into_iter().zip(pre).collect();
        let undo = bincode::serde::encode_to_vec(&undo, bincode_cfg())
            .map_err(|e| JobError::Aborted(format!("encoding pre-images: {e}")))?;
        let mut commit = Commit {
            pairs: acc.puts,
            ..Commit::default()
        };
        commit.meta_puts.push((undo_key(epoch), undo));
        for (w, s) in acc.snapshots {
            commit.meta_puts.push((window_key(epoch, w), s));
        }
        for (w, s) in acc.views {
            commit.meta_puts.push((views_key(epoch, w), s));
        }
        // Globally committed for sure (see "Pruning" above).
        if let Some(horizon) = epoch.checked_sub(self.inflight) {
            while self.undos.first().is_some_and(|e| *e <= horizon) {
                let e = self.undos.remove(0);
                commit.meta_delete_prefixes.push(undo_key(e));
            }
            // Keep the newest window at or below the horizon, drop older ones.
            while self.windows.len() > 1 && self.windows[1] <= horizon {
                let e = self.windows.remove(0);
                commit.meta_delete_prefixes.push(window_epoch_prefix(e));
                commit.meta_delete_prefixes.push(views_epoch_prefix(e));
            }
        }
        crate::failpoint::hit("shard.before_commit");
        self.store.commit(commit)?;
        crate::failpoint::hit("shard.after_commit");
        self.undos.push(epoch);
        self.windows.push(epoch);
        self.durable_before.store(epoch + 1, Ordering::Release);
        // The acknowledgement source outlives this send (it waits for
        // `processed_before`); if it is gone, the job is aborting.
        let _ = self.acks.send((epoch, open));
        Ok(())
    }
}

/// The acknowledgement edge (process-local worker 0 of every process to
/// global worker 0): one `(process, epoch, open exposures)` record per
/// shard commit, at time `epoch`; its frontier tells process 0 that every
/// shard has processed every epoch below it.
pub(super) fn acknowledgements<'scope>(
    scope: timely::dataflow::Scope<'scope, u64>,
    active: bool,
    process: usize,
    start_epoch: u64,
    processed_before: Arc<AtomicU64>,
    acks: Option<Receiver<(u64, u64)>>,
    global: Option<Sender<Report>>,
) {
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::generic::operator::source;
    use timely::dataflow::operators::generic::Operator;

    let stream = source(scope, "ShardAcks", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = if active {
            let mut c = cap;
            c.downgrade(&start_epoch);
            Some(c)
        } else {
            None
        };
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let before = processed_before.load(Ordering::Acquire);
            if let Some(rx) = &acks {
                for (epoch, open) in rx.try_iter() {
                    output
                        .session(&c.delayed(&epoch))
                        .give((process as u64, epoch, open));
                }
            }
            if before == u64::MAX {
                cap = None;
                return;
            }
            if before > *c.time() {
                c.downgrade(&before);
            }
            activator.activate_after(std::time::Duration::from_millis(1));
        }
    })
    .container::<Vec<(u64, u64, u64)>>();
    let mut reported = start_epoch;
    stream.sink(
        Exchange::new(|_| 0),
        "ShardAcksToCommitter",
        move |(input, frontier)| {
            input.for_each(|_, data| {
                if let Some(tx) = &global {
                    for (process, epoch, open) in data.drain(..) {
                        let _ = tx.send(Report::Ack {
                            process: process as usize,
                            epoch,
                            open,
                        });
                    }
                }
            });
            let before = frontier
                .frontier()
                .iter()
                .copied()
                .min()
                .unwrap_or(u64::MAX);
            if before > reported {
                reported = before;
                if let Some(tx) = &global {
                    let _ = tx.send(Report::Acked { before });
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rliv_state::StoreOptions;

    fn opts() -> StoreOptions {
        StoreOptions {
            sync_commits: false,
            ..StoreOptions::default()
        }
    }

    fn committer(
        store: Arc<Store>,
        start: &ShardStart,
        inflight: u64,
    ) -> (ShardCommitter, Receiver<(u64, u64)>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let c = ShardCommitter::new(
            store,
            1,
            inflight,
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            tx,
            Arc::new(Abort::default()),
            0,
            start,
        );
        (c, rx)
    }

    fn snapshot() -> Vec<u8> {
        crate::operators::encode_snapshot(&Default::default(), &Default::default()).expect("encode")
    }

    fn commit_at(c: &mut ShardCommitter, epoch: u64, puts: &[(u64, u8)]) {
        let acc = EpochAcc {
            puts: puts
                .iter()
                .map(|(u, v)| (PairKey::new(*u, 1), vec![*v]))
                .collect(),
            snapshots: vec![(0, snapshot())],
            views: vec![(0, vec![epoch as u8])],
        };
        c.commit(epoch, acc).expect("commit");
    }

    fn pairs(store: &Store) -> Vec<(u64, Option<Vec<u8>>)> {
        let keys: Vec<PairKey> = (1..=3).map(|u| PairKey::new(u, 1)).collect();
        let raw = store.get_pairs_raw(&keys).expect("get");
        (1..=3).zip(raw).collect()
    }

    #[test]
    fn commits_the_cluster_never_made_are_rolled_back_to_the_last_global_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), &opts()).expect("open"));
        let start = prepare(&store, 1, 2, 1, 0, None).expect("fresh shard");
        let (mut c, acks) = committer(store.clone(), &start, 64);
        commit_at(&mut c, 3, &[(1, 10), (2, 20)]);
        commit_at(&mut c, 5, &[(1, 11), (3, 30)]);
        commit_at(&mut c, 8, &[(1, 12), (2, 21)]);
        assert_eq!(
            acks.try_iter().map(|(e, _)| e).collect::<Vec<_>>(),
            vec![3, 5, 8]
        );
        drop(c);
        // The cluster committed epoch 3 only (next_epoch 4): 5 and 8 are undone.
        let s = prepare(&store, 1, 2, 1, 4, Some(3)).expect("rollback");
        assert_eq!(s.snapshots.len(), 1);
        assert_eq!(
            pairs(&store),
            vec![(1, Some(vec![10])), (2, Some(vec![20])), (3, None)]
        );
        // Rolling back is idempotent (a crash during the restart).
        prepare(&store, 1, 2, 1, 4, Some(3)).expect("again");
        assert_eq!(pairs(&store)[0], (1, Some(vec![10])));
        // A shard that lacks the cluster's last commit is refused.
        let e = prepare(&store, 1, 2, 1, 9, Some(8))
            .err()
            .expect("missing 8");
        assert!(e.to_string().contains("epoch Some(3)"), "{e}");
        // So is another process's or another shape's shard.
        let e = prepare(&store, 0, 2, 1, 4, Some(3))
            .err()
            .expect("process 0");
        assert!(e.to_string().contains("process 1 of 2"), "{e}");
    }

    #[test]
    fn pre_images_and_windows_are_pruned_behind_the_inflight_horizon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), &opts()).expect("open"));
        let start = prepare(&store, 0, 2, 1, 0, None).expect("fresh");
        let (mut c, _acks) = committer(store.clone(), &start, 4);
        for e in [1, 3, 5, 7, 9, 11] {
            commit_at(&mut c, e, &[(1, e as u8)]);
        }
        // At epoch 11 every commit epoch <= 7 is global: pre-images of 1..=7
        // are gone; windows keep 7 (the newest global one) and newer.
        let undo: Vec<u64> = store
            .meta_with_prefix(UNDO_PREFIX)
            .expect("meta")
            .iter()
            .map(|(k, _)| epoch_of(k, UNDO_PREFIX).expect("epoch"))
            .collect();
        assert_eq!(undo, vec![9, 11]);
        let win: Vec<u64> = store
            .meta_with_prefix(WINDOW_PREFIX)
            .expect("meta")
            .iter()
            .map(|(k, _)| epoch_of(k, WINDOW_PREFIX).expect("epoch"))
            .collect();
        assert_eq!(win, vec![7, 9, 11]);
        drop(c);
        // A restart at global 8 (last commit 7) rolls 9 and 11 back.
        prepare(&store, 0, 2, 1, 8, Some(7)).expect("rollback");
        assert_eq!(pairs(&store)[0], (1, Some(vec![7])));
    }
}
