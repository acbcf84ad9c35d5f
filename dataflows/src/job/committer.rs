//! The single writer: finishes epochs in order, writes the outputs, the
//! transition log and the pair counters in one commit, then feeds the learner.
//!
//! The RocksDB write of a commit runs on a thread of its own ([`CommitWriter`]),
//! one commit at a time and in order: while it runs, the committer goes on
//! finishing the next epochs, so the reader keeps handing out chunks and the
//! workers do not wait for the disk. What depends on a commit being durable
//! (the pair cache's `durable_before`, the learner's feed, the consumer
//! group's offsets) happens once its write returns. In cluster mode, and for
//! the last commit of a run, the committer waits for the write at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rliv_state::{Commit, PairKey, StateError, Store};
use serde::Serialize;

use crate::event::{Source, Transition};
use crate::metrics::{Counter, Counters};
use crate::operators::{
    decode_snapshot, Abort, DeadLetter, InputMark, Report, Side, TransitionBatch,
};

use super::checkpoint::*;
use super::output::OutputFile;
use super::*;

#[derive(Default)]
struct EpochAcc {
    transitions: Vec<TransitionBatch>,
    dead: Vec<DeadLetter>,
    puts: Vec<Vec<(PairKey, Vec<u8>)>>,
    snapshots: Vec<(u32, Vec<u8>)>,
    views: Vec<(u32, Vec<u8>)>,
    view_changes: Vec<(crate::views::ViewKey, i64, i64)>,
    counters: Counters,
}

/// The single writer: puts epochs in order, writes the outputs, commits.
pub(super) struct Committer {
    pub(super) workers: usize,
    pub(super) cp: Checkpoint,
    pub(super) transitions: Option<OutputFile>,
    pub(super) dead: OutputFile,
    pub(super) file_names: Vec<(Source, String)>,
    /// The learner: fed each commit's transitions once they are durable.
    pub(super) learner: Option<crate::feed::LearnerFeed>,
    /// Transitions go into the log (a learner is attached; stays on if it
    /// hangs up, so that a resumed learner gets them back).
    pub(super) logging: bool,
    /// The transitions since the last commit: log entries
    /// `cp.log_end - pending.len() .. cp.log_end`, written with the next commit.
    pub(super) pending: Vec<Transition>,
    pub(super) done_before: Arc<AtomicU64>,
    pub(super) progress: Arc<Progress>,
    pub(super) abort: Arc<Abort>,
    pub(super) sync: bool,
    /// Pair values of the next commit (each worker flushes its dirty pairs at
    /// commit epochs; workers own disjoint pairs).
    pub(super) pending_puts: Vec<(PairKey, Vec<u8>)>,
    pub(super) epochs_done: u64,
    /// Kafka topics for transitions and dead letters (`rliv run`).
    pub(super) sink: Option<crate::kafka::KafkaSink>,
    /// Cluster mode: the shards' acknowledgements (the pairs and windows
    /// live in the shards; this committer writes the commit point).
    pub(super) cluster: Option<ShardAcks>,
    /// The views' table (rebuilt by every run from the views' committed
    /// facts), and whether it changed since the last commit.
    pub(super) views: crate::views::ViewTable,
    pub(super) views_dirty: bool,
    /// Writes the commits.
    pub(super) writer: CommitWriter,
    /// The commit being written, if any.
    pub(super) in_flight: Option<InFlight>,
}

/// What waits for a commit's write: the transitions it made durable (log
/// entries from `first_seq`) and the input offsets it covers.
pub(super) struct InFlight {
    epoch: u64,
    first_seq: u64,
    pending: Vec<Transition>,
    offsets: std::collections::BTreeMap<crate::kafka::partition::TopicPartition, i64>,
}

/// The thread that writes commits to RocksDB, one at a time and in order.
pub(super) struct CommitWriter {
    tx: Option<Sender<(u64, Commit)>>,
    done: Receiver<(u64, Result<(), StateError>)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl CommitWriter {
    /// Sets `durable_before` past each commit it has written.
    pub(super) fn start(
        store: Arc<Store>,
        durable_before: Arc<AtomicU64>,
    ) -> Result<CommitWriter, JobError> {
        // One commit queued at most: the committer waits for the previous
        // write before it hands over the next.
        let (tx, rx) = crossbeam_channel::bounded::<(u64, Commit)>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("rliv-writer".into())
            .spawn(move || {
                for (epoch, commit) in rx {
                    crate::failpoint::hit("job.before_commit");
                    let written = store.commit(commit);
                    if written.is_ok() {
                        crate::failpoint::hit("job.after_commit");
                        durable_before.store(epoch + 1, Ordering::Release);
                    }
                    if done_tx.send((epoch, written)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| JobError::Aborted(format!("starting the commit writer: {e}")))?;
        Ok(CommitWriter {
            tx: Some(tx),
            done,
            handle: Some(handle),
        })
    }

    fn send(&self, epoch: u64, commit: Commit) -> Result<(), JobError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send((epoch, commit)).ok())
            .ok_or_else(|| JobError::Aborted("the commit writer stopped".into()))
    }
}

impl Drop for CommitWriter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            // A panic there was reported by the panic hook already.
            let _ = h.join();
        }
    }
}

/// What process 0's committer knows of the shards (see `shard`).
pub(super) struct ShardAcks {
    pub(super) processes: usize,
    /// Every shard has processed every epoch below it.
    pub(super) before: u64,
    /// (process, open exposures) per acknowledged commit epoch.
    pub(super) acks: std::collections::BTreeMap<u64, Vec<(usize, u64)>>,
}

impl Committer {
    pub(super) fn run(&mut self, rx: Receiver<Report>) -> Result<(), JobError> {
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
                            Side::ViewsSnapshot(w, s) => acc.views.push((w, s)),
                            Side::ViewChanges(c) => acc.view_changes.extend(c),
                            // Consumed by the views operator.
                            Side::ViewFacts(_) | Side::Watermark(_) => {}
                        }
                    }
                }
                Report::Ack {
                    process,
                    epoch,
                    open,
                } => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.acks.entry(epoch).or_default().push((process, open));
                    }
                }
                Report::Frontier { .. } | Report::Acked { .. } => {
                    match msg {
                        Report::Frontier { worker, before: b } => {
                            if let Some(slot) = before.get_mut(worker) {
                                *slot = (*slot).max(b);
                            }
                        }
                        Report::Acked { before: b } => {
                            if let Some(c) = self.cluster.as_mut() {
                                c.before = c.before.max(b);
                            }
                        }
                        _ => {}
                    }
                    let mut complete = before.iter().copied().min().unwrap_or(0);
                    if let Some(c) = &self.cluster {
                        // An epoch is finished here only once every shard
                        // has committed it (when it is a commit epoch).
                        complete = complete.min(c.before);
                    }
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
                        // Not past a failure: the cluster's shards prune
                        // their pre-images behind this (see `shard`).
                        if failed.is_none() {
                            self.done_before.store(epoch + 1, Ordering::Release);
                        }
                    }
                }
            }
        }
        // The run's state is durable only once the last write returned.
        let last = self.wait_write();
        match failed {
            Some(e) => Err(e),
            None => last,
        }
    }

    /// Finishes the commit being written, if its write has returned (or,
    /// with `block`, once it does): the pair cache may drop what it covered,
    /// the learner gets its transitions, the consumer group its offsets.
    fn collect_write(&mut self, block: bool) -> Result<(), JobError> {
        let Some(f) = &self.in_flight else {
            return Ok(());
        };
        let (epoch, written) = if block {
            self.writer
                .done
                .recv()
                .map_err(|_| JobError::Aborted("the commit writer stopped".into()))?
        } else {
            match self.writer.done.try_recv() {
                Ok(r) => r,
                Err(crossbeam_channel::TryRecvError::Empty) => return Ok(()),
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(JobError::Aborted("the commit writer stopped".into()))
                }
            }
        };
        if epoch != f.epoch {
            return Err(JobError::Aborted(format!(
                "the commit writer answered for epoch {epoch}, not {}",
                f.epoch
            )));
        }
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        written?;
        self.feed_committed(f.first_seq, f.pending);
        if let Some(sink) = &self.sink {
            sink.commit_offsets(&f.offsets);
        }
        Ok(())
    }

    /// Waits for the commit being written, if any.
    fn wait_write(&mut self) -> Result<(), JobError> {
        self.collect_write(true)
    }

    fn finish_epoch(
        &mut self,
        epoch: u64,
        mark: Option<InputMark>,
        mut acc: EpochAcc,
    ) -> Result<(), JobError> {
        // A write that failed stops the run here, at the latest.
        self.collect_write(false)?;
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
                    .map_err(|e| JobError::Aborted(e.to_string()))?;
            }
            line.push(b'\n');
            self.dead.write(&line)?;
        }
        for batch in acc.puts {
            self.pending_puts.extend(batch);
        }
        self.cp.counters.merge(&acc.counters);
        if !acc.view_changes.is_empty() {
            self.views.apply(&acc.view_changes);
            self.views_dirty = true;
            self.progress.set_views(&self.views);
        }
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
        self.cp.set_kafka_positions(&mark.positions);
        if !mark.commit {
            return Ok(());
        }
        // One commit is written at a time.
        self.wait_write()?;
        if let Some(c) = self.cluster.as_mut() {
            let acks = c.acks.remove(&epoch).unwrap_or_default();
            let mut from: Vec<usize> = acks.iter().map(|(p, _)| *p).collect();
            from.sort_unstable();
            from.dedup();
            if from.len() != c.processes || acks.len() != c.processes {
                return Err(JobError::Aborted(format!(
                    "epoch {epoch}: shard commits arrived from processes {from:?} of {}",
                    c.processes
                )));
            }
            // Older entries cannot be used any more.
            c.acks.retain(|e, _| *e > epoch);
            self.cp.open_exposures = acks.iter().map(|(_, o)| o).sum();
        } else if acc.snapshots.len() != self.workers {
            return Err(JobError::Aborted(format!(
                "epoch {epoch}: {} of {} window snapshots arrived",
                acc.snapshots.len(),
                self.workers
            )));
        }
        self.cp.finished = mark.last && !mark.stopped;
        self.cp.commits += 1;
        if self.cluster.is_none() {
            self.cp.open_exposures = open_exposures(epoch, &acc.snapshots)?;
        }
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
            sink.flush().map_err(|e| JobError::Aborted(e.to_string()))?;
        }

        let mut commit = Commit {
            meta_delete_prefixes: vec![WINDOW_PREFIX.to_vec(), VIEWS_STATE_PREFIX.to_vec()],
            ..Commit::default()
        };
        commit.pairs = std::mem::take(&mut self.pending_puts);
        acc.snapshots.sort_by_key(|(w, _)| *w);
        for (w, s) in acc.snapshots {
            let mut key = WINDOW_PREFIX.to_vec();
            key.extend_from_slice(format!("{w:05}").as_bytes());
            commit.meta_puts.push((key, s));
        }
        acc.views.sort_by_key(|(w, _)| *w);
        for (w, s) in acc.views {
            let mut key = VIEWS_STATE_PREFIX.to_vec();
            key.extend_from_slice(format!("{w:05}").as_bytes());
            commit.meta_puts.push((key, s));
        }
        if self.views_dirty {
            let rows = self.views.sorted();
            let bytes = bincode::serde::encode_to_vec(&rows, bincode::config::standard())
                .map_err(|e| JobError::Aborted(format!("encoding the views' table: {e}")))?;
            commit.meta_puts.push((VIEWS_TABLE_KEY.to_vec(), bytes));
            self.views_dirty = false;
        }
        let first = self.cp.log_end - self.pending.len() as u64;
        for (seq, t) in (first..).zip(&self.pending) {
            let bytes = crate::feed::encode(t)
                .map_err(|e| JobError::Aborted(format!("encoding a transition: {e}")))?;
            commit.log_puts.push((seq, bytes));
        }
        if let Some(feed) = &self.learner {
            let cut = crate::feed::truncate_below(feed, self.cp.log_end);
            if cut > self.cp.log_start {
                commit.log_delete = Some(self.cp.log_start..cut);
                self.cp.log_start = cut;
            }
        }
        let cp = serde_json::to_vec(&self.cp).map_err(|e| JobError::Aborted(e.to_string()))?;
        commit.meta_puts.push((CHECKPOINT_KEY.to_vec(), cp));
        // The learner may see these transitions only once the commit is
        // durable: a crash before it replays them, and the learner must not
        // have taken them yet.
        let pending = std::mem::take(&mut self.pending);
        self.in_flight = Some(InFlight {
            epoch,
            first_seq: self.cp.log_end - pending.len() as u64,
            pending,
            offsets: mark.positions.offsets.clone(),
        });
        self.writer.send(epoch, commit)?;
        // Cluster mode: the reader's bound and the shards' pruning count on
        // `done_before` meaning committed. The last commit ends the run.
        if self.cluster.is_some() || mark.last {
            self.wait_write()?;
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
                .map_err(|e| JobError::Aborted(e.to_string()))?;
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
                    self.pending.push(t);
                    // Durable with the next commit (the checkpoint is only
                    // written then).
                    self.cp.log_end += 1;
                }
            }
        }
        Ok(())
    }

    /// Hands the learner the transitions a commit made durable (log entries
    /// from `first`).
    fn feed_committed(&mut self, first: u64, pending: Vec<Transition>) {
        let Some(feed) = &self.learner else { return };
        for (seq, t) in (first..).zip(pending) {
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

/// The exposures open in a commit's window snapshots. A snapshot that does
/// not decode would be restored as an empty window on resume: the commit
/// fails instead of counting it as zero.
pub(super) fn open_exposures(epoch: u64, snapshots: &[(u32, Vec<u8>)]) -> Result<u64, JobError> {
    let mut open = 0u64;
    for (w, s) in snapshots {
        let (_, j) = decode_snapshot(s).map_err(|e| {
            JobError::Aborted(format!(
                "epoch {epoch}: worker {w}'s window snapshot does not decode: {e}"
            ))
        })?;
        open += j.open_exposures() as u64;
    }
    Ok(open)
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
