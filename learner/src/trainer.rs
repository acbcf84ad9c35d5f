//! Streaming training: transitions arrive on a bounded channel (from the
//! replay's dataflow or from a transitions file), fill the real-time sample
//! buffer, and the learner runs `updates_per_transition` TD updates per new
//! transition, checkpointing on a fixed cadence.
//!
//! The learner drains the channel between updates, so the dataflow waits on
//! it only through the channel's own backpressure: when training cannot keep
//! up with the configured ratio, the channel fills and the replay slows down
//! to the learner's pace (the ratio is honoured, nothing is dropped).
//!
//! Why one file over 400 lines: the training loop, its exactly-once input
//! bookkeeping (log positions, refills) and its checkpoint cadence are one
//! state machine over the same `Run`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rliv_contract::prom::{family, metric};
use rliv_contract::Fed;
use rliv_contract::Transition;

use crate::buffer::Ring;
use crate::checkpoint;
use crate::learner::{Learner, StepStats};

/// Live figures of a training run (progress line, `/metrics`).
#[derive(Default)]
pub struct TrainProgress {
    pub received: AtomicU64,
    /// Transitions the buffer was refilled with on start (already trained on).
    pub refilled: AtomicU64,
    pub updates: AtomicU64,
    pub buffer_len: AtomicU64,
    pub buffer_capacity: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Step of the newest checkpoint written.
    pub checkpoint_step: AtomicU64,
    /// The last update's figures, with tower names.
    pub last: Mutex<Option<(Vec<&'static str>, StepStats)>>,
}

impl TrainProgress {
    /// This run's figures in the Prometheus text format (`/metrics`).
    pub fn render_prometheus(&self, out: &mut String) {
        let t = self;
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
            "rliv_learner_refilled_total",
            "counter",
            "Logged transitions that refilled the sample buffer on start (already trained on).",
            load(&t.refilled),
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
        // The learner replaces `last` whole: a poisoned lock still holds a
        // consistent value.
        let last = t.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((towers, stats)) = last {
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
}

pub struct TrainOptions {
    /// Where checkpoints go (none: no checkpoints).
    pub checkpoints: Option<PathBuf>,
    /// Updates drawn from the buffer after the input ended.
    pub extra_updates: u64,
    /// The input position recorded in each checkpoint's manifest, given the
    /// number of transitions received so far and the transition log position
    /// (the next sequence number wanted; `None` without a log).
    pub input_position: Box<dyn Fn(u64, Option<u64>) -> serde_json::Value + Send>,
    /// The log position the resumed checkpoint covers (`None`: a fresh
    /// learner, or an input without a log).
    pub log_position: Option<u64>,
    /// Set to the log position of each checkpoint once it is written (the
    /// job truncates the log behind it).
    pub checkpointed: Option<Arc<AtomicU64>>,
    /// Print a progress line every `log_every_secs`.
    pub log: bool,
}

#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub received: u64,
    /// Transitions that refilled the buffer on start.
    pub refilled: u64,
    pub updates: u64,
    pub seconds: f64,
    pub updates_per_s: f64,
    pub samples_per_s: f64,
    pub checkpoints_written: u64,
    pub last_checkpoint: Option<PathBuf>,
    pub last: Option<StepStats>,
    pub towers: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training: {0}")]
    Step(#[from] crate::LearnerError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("the learner's input: {0}")]
    Input(String),
}

struct Run<'a> {
    learner: &'a mut Learner,
    opts: &'a TrainOptions,
    progress: &'a TrainProgress,
    ring: Ring,
    updates: u64,
    received: u64,
    refilled: u64,
    /// The next transition log entry wanted.
    log_position: Option<u64>,
    owed: f64,
    last: Option<StepStats>,
    last_ckpt: Instant,
    last_ckpt_step: u64,
    /// (received, log position) the newest checkpoint records.
    recorded: Option<(u64, Option<u64>)>,
    last_log: Instant,
    log_updates: u64,
    written: u64,
    last_path: Option<PathBuf>,
}

impl Run<'_> {
    fn take(&mut self, msg: Fed) -> Result<(), TrainError> {
        match msg {
            Fed::Refill(t) => {
                let s = self.learner.sample(&t);
                self.ring.push(s);
                self.refilled += 1;
                self.progress
                    .refilled
                    .store(self.refilled, Ordering::Relaxed);
            }
            Fed::New(t) => self.push(&t),
            Fed::Logged(seq, t) => {
                // Exactly once: the log's entries arrive in order, each once.
                if let Some(want) = self.log_position {
                    if seq != want {
                        return Err(TrainError::Input(format!(
                            "expected transition log entry {want}, got {seq}"
                        )));
                    }
                }
                self.log_position = Some(seq + 1);
                self.push(&t);
            }
        }
        Ok(())
    }

    fn push(&mut self, t: &Transition) {
        let s = self.learner.sample(t);
        self.ring.push(s);
        self.received += 1;
        self.owed += self.learner.cfg().update_ratio();
        self.progress
            .received
            .store(self.received, Ordering::Relaxed);
        self.progress
            .buffer_len
            .store(self.ring.len() as u64, Ordering::Relaxed);
    }

    fn update(&mut self) -> Result<(), TrainError> {
        if self.learner.measure_reward_scale(&self.ring) {
            let s = self.learner.cfg().reward_scale;
            tracing::info!(
                "learner: reward scales measured on {} samples: click {:.4} watch {:.4} follow {:.4} gift {:.4}",
                self.ring.len(),
                s.click,
                s.watch,
                s.follow,
                s.gift
            );
        }
        let stats = self
            .learner
            .train_from(&self.ring)
            .map_err(TrainError::Step)?;
        self.updates += 1;
        self.progress.updates.store(self.updates, Ordering::Relaxed);
        if let Ok(mut l) = self.progress.last.lock() {
            *l = Some((self.learner.tower_names(), stats.clone()));
        }
        self.last = Some(stats);
        let cfg = self.learner.cfg();
        let by_updates = cfg.checkpoint_every_updates > 0
            && self.learner.step - self.last_ckpt_step >= cfg.checkpoint_every_updates;
        let by_time = cfg.checkpoint_every_secs > 0
            && self.last_ckpt.elapsed() >= Duration::from_secs(cfg.checkpoint_every_secs);
        if by_updates || by_time {
            self.checkpoint()?;
        }
        self.maybe_log(false);
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), TrainError> {
        let Some(dir) = self.opts.checkpoints.as_ref() else {
            return Ok(());
        };
        let covers = (self.received, self.log_position);
        let input = (self.opts.input_position)(self.received, self.log_position);
        let path = if self.learner.step == self.last_ckpt_step {
            // No update since this step's checkpoint: the model is the same,
            // only the input it covers may have moved.
            if self.recorded == Some(covers) {
                return Ok(());
            }
            let existing = dir.join(checkpoint::dir_name(self.learner.step));
            if !existing.join("manifest.json").exists() {
                // A fresh learner without an update: nothing to keep yet
                // (what it received comes back on the next start).
                return Ok(());
            }
            checkpoint::record_input(&existing, input)?;
            existing
        } else {
            checkpoint::save(self.learner, dir, input)?
        };
        self.recorded = Some(covers);
        rliv_contract::failpoint::hit("learner.after_checkpoint");
        if let (Some(at), Some(pos)) = (&self.opts.checkpointed, self.log_position) {
            at.store(pos, Ordering::Release);
        }
        self.written += 1;
        self.last_ckpt = Instant::now();
        self.last_ckpt_step = self.learner.step;
        self.progress
            .checkpoints
            .store(self.written, Ordering::Relaxed);
        self.progress
            .checkpoint_step
            .store(self.learner.step, Ordering::Relaxed);
        tracing::info!("checkpoint {}", path.display());
        self.last_path = Some(path);
        Ok(())
    }

    fn maybe_log(&mut self, force: bool) {
        let every = Duration::from_secs(self.learner.cfg().log_every_secs.max(1));
        let dt = self.last_log.elapsed();
        if !self.opts.log || (!force && dt < every) {
            return;
        }
        let rate = (self.updates - self.log_updates) as f64 / dt.as_secs_f64().max(1e-9);
        let td: Vec<String> = match &self.last {
            Some(s) => self
                .learner
                .tower_names()
                .iter()
                .zip(&s.td_error)
                .map(|(n, e)| format!("{n}={e:.3}"))
                .collect(),
            None => vec!["-".into()],
        };
        eprintln!(
            "learner: step {} | {:.1} updates/s ({:.0} samples/s) | td error {} | loss {} | buffer {}/{} | received {}",
            self.learner.step,
            rate,
            rate * self.learner.cfg().batch_size as f64,
            td.join(" "),
            self.last.as_ref().map_or("-".into(), |s| format!("{:.4}", s.loss)),
            self.ring.len(),
            self.ring.capacity(),
            self.received
        );
        self.last_log = Instant::now();
        self.log_updates = self.updates;
    }
}

/// Trains from `rx` until it disconnects (and the owed and extra updates are
/// done), then writes a final checkpoint. `progress` is updated as it goes.
pub fn run(
    learner: &mut Learner,
    rx: Receiver<Fed>,
    opts: &TrainOptions,
    progress: &TrainProgress,
) -> Result<TrainSummary, TrainError> {
    let ring = Ring::new(learner.cfg().buffer_capacity);
    run_with(learner, ring, rx, opts, progress)
}

/// [`run`] with a sample buffer already holding samples (a resumed run
/// refills it from the input it had consumed: the buffer is not checkpointed).
pub fn run_with(
    learner: &mut Learner,
    ring: Ring,
    rx: Receiver<Fed>,
    opts: &TrainOptions,
    progress: &TrainProgress,
) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let cfg = learner.cfg().clone();
    progress
        .buffer_capacity
        .store(cfg.buffer_capacity as u64, Ordering::Relaxed);
    let start_step = learner.step;
    let mut run = Run {
        ring,
        learner,
        opts,
        progress,
        updates: 0,
        received: 0,
        refilled: 0,
        log_position: opts.log_position,
        owed: 0.0,
        last: None,
        last_ckpt: Instant::now(),
        last_ckpt_step: start_step,
        recorded: None,
        last_log: Instant::now(),
        log_updates: 0,
        written: 0,
        last_path: None,
    };
    let min_buffer = cfg.min_buffer.min(cfg.buffer_capacity).max(1);
    let mut open = true;
    while open {
        let ready = run.owed >= 1.0 && run.ring.len() >= min_buffer;
        let wait = if ready {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match rx.recv_timeout(wait) {
            Ok(m) => run.take(m)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        // Drain what is waiting (bounded, so updates keep their ratio).
        for _ in 0..8192 {
            match rx.try_recv() {
                Ok(m) => run.take(m)?,
                Err(_) => break,
            }
        }
        if run.owed >= 1.0 && run.ring.len() >= min_buffer {
            run.update()?;
            run.owed -= 1.0;
        }
        run.maybe_log(false);
    }
    // The input ended: do the updates it still owes (whatever the buffer
    // holds: nothing more will come), then the extra ones.
    if !run.ring.is_empty() {
        while run.owed >= 1.0 {
            run.update()?;
            run.owed -= 1.0;
        }
        for _ in 0..opts.extra_updates {
            run.update()?;
        }
    }
    rliv_contract::failpoint::hit("learner.input_ended");
    // The final checkpoint covers all the input taken, updates or not (a
    // fresh learner without an update writes none).
    if run.updates > 0 || run.received > 0 {
        run.checkpoint()?;
    }
    run.maybe_log(true);
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainSummary {
        received: run.received,
        refilled: run.refilled,
        updates: run.updates,
        seconds,
        updates_per_s: run.updates as f64 / seconds.max(1e-9),
        samples_per_s: run.updates as f64 * cfg.batch_size as f64 / seconds.max(1e-9),
        checkpoints_written: run.written,
        last_checkpoint: run.last_path,
        towers: run.learner.tower_names(),
        last: run.last,
    })
}

/// Starts [`run`] on its own thread; the thread hands the learner back with
/// the summary when the channel's senders are gone and training finished.
pub fn spawn(
    mut learner: Learner,
    rx: Receiver<Fed>,
    opts: TrainOptions,
    progress: Arc<TrainProgress>,
) -> std::io::Result<std::thread::JoinHandle<Result<(Learner, TrainSummary), TrainError>>> {
    std::thread::Builder::new()
        .name("rliv-learner".into())
        .spawn(move || {
            let summary = run(&mut learner, rx, &opts, &progress)?;
            Ok((learner, summary))
        })
}
