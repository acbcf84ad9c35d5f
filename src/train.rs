//! `rliv train` and `rliv replay --train`: starting (or resuming) a learner,
//! feeding it, and reporting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rliv_dataflows::feed::{Fed, LearnerFeed};
use rliv_learner::checkpoint;
use rliv_learner::trainer::{self, TrainOptions, TrainProgress, TrainSummary};
use rliv_learner::{Learner, LearnerConfig};

/// Raised for bad arguments (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A fresh learner, or with `resume` the newest usable checkpoint in `dir`;
/// returns it with the manifest's input position (if resumed).
pub fn start(
    cfg: &LearnerConfig,
    dir: &Path,
    resume: bool,
) -> Result<(Learner, Option<serde_json::Value>)> {
    // This process is the directory's writer: an interrupted write (a kill
    // during a checkpoint) left a `.tmp` that no one will finish.
    let removed = checkpoint::remove_unfinished(dir)?;
    if removed > 0 {
        eprintln!(
            "learner: removed {removed} unfinished checkpoint(s) in {}",
            dir.display()
        );
    }
    let existing = checkpoint::list(dir)?;
    if !resume {
        if let Some(newest) = existing.first() {
            return Err(UsageError(format!(
                "{} already holds checkpoints (newest {}); pass --resume to continue from it, or use another directory",
                dir.display(),
                newest.display()
            ))
            .into());
        }
        let l = Learner::new(cfg).map_err(anyhow::Error::msg)?;
        return Ok((l, None));
    }
    match checkpoint::resume(dir, cfg)? {
        Some((l, manifest, skipped)) => {
            for s in skipped {
                eprintln!("rliv: warning: skipped a checkpoint: {s}");
            }
            eprintln!(
                "learner: resumed from step {} ({})",
                manifest.step,
                dir.join(checkpoint::dir_name(manifest.step)).display()
            );
            Ok((l, Some(manifest.input)))
        }
        None => {
            eprintln!(
                "learner: no checkpoint in {} yet; starting fresh",
                dir.display()
            );
            Ok((Learner::new(cfg).map_err(anyhow::Error::msg)?, None))
        }
    }
}

pub fn describe(l: &Learner) -> String {
    let s = l.sizes();
    format!(
        "learner: {} engine, towers {:?}, batch {}, {:.1}M embedding + {:.0}k net parameters ({:.0} MiB weights, {:.0} MiB Adam moments)",
        l.engine_name(),
        l.tower_names(),
        l.cfg().batch_size,
        s.embedding_params as f64 / 1e6,
        s.net_params as f64 / 1e3,
        s.bytes as f64 / (1 << 20) as f64,
        s.optimizer_bytes as f64 / (1 << 20) as f64,
    )
}

pub fn print_summary(s: &TrainSummary) {
    let td: Vec<String> = match &s.last {
        Some(st) => s
            .towers
            .iter()
            .zip(&st.td_error)
            .map(|(n, e)| format!("{n}={e:.4}"))
            .collect(),
        None => vec!["-".into()],
    };
    eprintln!(
        "train: {} transitions{}, {} updates in {:.1}s ({:.1} updates/s, {:.0} samples/s), last td error {}, {} checkpoints{}",
        s.received,
        if s.refilled > 0 {
            format!(" (buffer refilled with {})", s.refilled)
        } else {
            String::new()
        },
        s.updates,
        s.seconds,
        s.updates_per_s,
        s.samples_per_s,
        td.join(" "),
        s.checkpoints_written,
        s.last_checkpoint
            .as_ref()
            .map(|p| format!(", newest {}", p.display()))
            .unwrap_or_default()
    );
}

/// `rliv train --transitions FILE --checkpoints DIR`.
pub fn train_file(
    cfg: &LearnerConfig,
    transitions: &Path,
    checkpoints: &Path,
    resume: bool,
    extra_updates: u64,
    dead_letters: Option<PathBuf>,
    quiet: bool,
    progress: &TrainProgress,
) -> Result<()> {
    if !transitions.exists() {
        return Err(UsageError(format!(
            "{}: no such transitions file",
            transitions.display()
        ))
        .into());
    }
    let (mut learner, input) = start(cfg, checkpoints, resume)?;
    let path_str = transitions.display().to_string();
    let skip =
        match &input {
            Some(v) if v.get("kind").and_then(|k| k.as_str()) == Some("file") => {
                if v.get("path").and_then(|p| p.as_str()) != Some(path_str.as_str()) {
                    bail!(UsageError(format!(
                    "the checkpoint was trained on {}, not {path_str}; resume with the same file",
                    v.get("path").and_then(|p| p.as_str()).unwrap_or("another input")
                )));
                }
                v.get("transitions").and_then(|t| t.as_u64()).unwrap_or(0)
            }
            _ => 0,
        };
    if !quiet {
        eprintln!("{}", describe(&learner));
    }
    std::fs::create_dir_all(checkpoints)
        .with_context(|| format!("creating {}", checkpoints.display()))?;
    let dead_path = dead_letters.unwrap_or_else(|| checkpoints.join("dead-letters.jsonl"));
    let (tx, rx) = crossbeam_channel::bounded(cfg.batch_size.max(1024) * 4);
    // A resumed run refills the sample buffer with the newest transitions it
    // had consumed (the buffer itself is not checkpointed).
    let mut ring = rliv_learner::buffer::Ring::new(cfg.buffer_capacity);
    if skip > 0 {
        let mut refill = |t: rliv_dataflows::event::Transition| {
            let s = learner.sample(&t);
            ring.push(s);
        };
        rliv_learner::input::read_file(
            transitions,
            skip,
            &mut |_| false,
            &mut refill,
            &mut std::io::sink(),
        )
        .with_context(|| format!("reading {}", transitions.display()))?;
    }
    let reader_path = transitions.to_path_buf();
    let reader_dead = dead_path.clone();
    let reader = std::thread::Builder::new()
        .name("rliv-read-transitions".into())
        .spawn(move || -> Result<rliv_learner::input::ReadStats> {
            let mut dead = std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&reader_dead)
                    .with_context(|| format!("opening {}", reader_dead.display()))?,
            );
            let mut send = |t| tx.send(Fed::New(t)).is_ok();
            let stats = rliv_learner::input::read_file(
                &reader_path,
                skip,
                &mut send,
                &mut |_| {},
                &mut dead,
            )
            .with_context(|| format!("reading {}", reader_path.display()))?;
            std::io::Write::flush(&mut dead)?;
            Ok(stats)
        })?;
    let base = skip;
    let opts = TrainOptions {
        checkpoints: Some(checkpoints.to_path_buf()),
        extra_updates,
        input_position: Box::new(
            move |received, _| serde_json::json!({"kind": "file", "path": path_str, "transitions": base + received}),
        ),
        log_position: None,
        checkpointed: None,
        log: !quiet,
    };
    let summary = trainer::run_with(&mut learner, ring, rx, &opts, progress)?;
    let stats = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the transitions reader panicked"))??;
    if skip > 0 {
        eprintln!(
            "train: the first {skip} transitions were trained on before the checkpoint: they refilled the buffer only"
        );
    }
    if stats.bad > 0 {
        eprintln!(
            "train: {} bad lines in {} (dead letters: {})",
            stats.bad,
            transitions.display(),
            dead_path.display()
        );
    }
    print_summary(&summary);
    Ok(())
}

/// A learner thread fed by a replay (`rliv replay --train`).
pub struct Attached {
    pub handle: std::thread::JoinHandle<Result<(Learner, TrainSummary), trainer::TrainError>>,
    pub progress: Arc<TrainProgress>,
}

pub fn attach(
    cfg: &LearnerConfig,
    checkpoints: &Path,
    resume: bool,
    state: &Path,
    channel_capacity: usize,
    quiet: bool,
) -> Result<(Attached, LearnerFeed)> {
    let (learner, input) = start(cfg, checkpoints, resume)?;
    if !quiet {
        eprintln!("{}", describe(&learner));
    }
    let prior = input.as_ref().and_then(|v| {
        v.get("transitions")
            .and_then(|t| t.as_u64())
            .map(|t| (t, v.get("log_position").and_then(|p| p.as_u64())))
    });
    let base = prior.map_or(0, |(t, _)| t);
    // The log position the checkpoint covers. A checkpoint of a replay from
    // before the transition log has none: it takes the log from where it stands.
    let consumed = match prior {
        Some((_, Some(p))) => Some(p),
        Some((_, None)) => {
            eprintln!("learner: the checkpoint records no transition log position (written by an older rliv); it takes only what the log still holds");
            None
        }
        None => None,
    };
    let state_str = state.display().to_string();
    let (tx, rx) = crossbeam_channel::bounded(channel_capacity.max(1));
    let progress = Arc::new(TrainProgress::default());
    let checkpointed = Arc::new(std::sync::atomic::AtomicU64::new(consumed.unwrap_or(0)));
    let opts = TrainOptions {
        checkpoints: Some(checkpoints.to_path_buf()),
        extra_updates: 0,
        input_position: Box::new(
            move |received, log| serde_json::json!({"kind": "replay", "state": state_str, "transitions": base + received, "log_position": log}),
        ),
        log_position: consumed,
        checkpointed: Some(checkpointed.clone()),
        log: !quiet,
    };
    let handle = trainer::spawn(learner, rx, opts, progress.clone())?;
    let feed = LearnerFeed {
        tx,
        consumed,
        refill: cfg.buffer_capacity as u64,
        checkpointed,
    };
    Ok((Attached { handle, progress }, feed))
}
