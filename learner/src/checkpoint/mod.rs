//! Checkpoints: a directory `ckpt-<step>` per checkpoint with
//! - `model.safetensors`: online and target weights, embeddings; tensors named
//!   as a PyTorch user expects (`tower.watch.v1.0.weight`, shape `(out, in)`;
//!   `target.tower.watch.v1.0.weight`; `embedding.user.weight`; `assist_gift.0.bias`);
//! - `optimizer.safetensors`: Adam's moments, `<param>.exp_avg` / `<param>.exp_avg_sq`;
//! - `manifest.json`: format version, step, config, sampling state, input
//!   position, and the size and checksum of both files.
//!
//! A checkpoint is written into `ckpt-<step>.tmp`, each file fsynced, then the
//! directory is renamed (atomic) and the parent fsynced; the newest
//! `keep_checkpoints` are kept. Loading takes the newest checkpoint that
//! verifies, and reports each one it skipped with the file at fault.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::LearnerConfig;
use crate::learner::Learner;
use crate::model::Model;
use crate::rng::Rng;

mod tensors;

pub use tensors::{
    load_model_tensors, model_tensors, optimizer_tensors, parse_safetensors, HostTensor, TensorMap,
};
use tensors::{load_optimizer_tensors, save_tensors};

pub const FORMAT_VERSION: u32 = 1;

const MODEL_FILE: &str = "model.safetensors";
const OPTIM_FILE: &str = "optimizer.safetensors";
const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("no usable checkpoint in {dir}: {reasons}")]
    NoneUsable { dir: PathBuf, reasons: String },
    #[error("{0}")]
    Model(#[from] crate::LearnerError),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    /// 64-bit checksum of the bytes (SplitMix64 over 8-byte words).
    pub checksum: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub step: u64,
    /// What `/rank` reports as `model_version` (the step).
    pub model_version: u64,
    pub created_unix_ms: u64,
    pub config: LearnerConfig,
    pub rng: Rng,
    /// Where the learner stood in its input (free-form per input kind).
    pub input: serde_json::Value,
    pub files: HashMap<String, FileSum>,
}

pub fn checksum_bytes(bytes: &[u8]) -> String {
    let mut h = 0x6A09_E667_F3BC_C908u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = rliv_contract::mix64(h ^ u64::from_le_bytes(w));
    }
    for b in chunks.remainder() {
        h = rliv_contract::mix64(h ^ u64::from(*b));
    }
    format!("{h:016x}")
}

fn checksum_file(path: &Path) -> Result<FileSum, CheckpointError> {
    let mut f = File::open(path).map_err(|e| file_err(path, e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| file_err(path, e))?;
    Ok(FileSum {
        bytes: buf.len() as u64,
        checksum: checksum_bytes(&buf),
    })
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| file_err(dir, e))
}

pub fn dir_name(step: u64) -> String {
    format!("ckpt-{step:012}")
}

/// Writes a checkpoint of `l` into `dir` atomically and prunes old ones.
/// Returns its directory.
pub fn save(
    l: &mut Learner,
    dir: &Path,
    input: serde_json::Value,
) -> Result<PathBuf, CheckpointError> {
    // With the candle engine the newest parameters are on the device.
    l.sync()?;
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let final_dir = dir.join(dir_name(l.step));
    let tmp = dir.join(format!("{}.tmp", dir_name(l.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| file_err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| file_err(&tmp, e))?;
    let model_path = tmp.join(MODEL_FILE);
    let optim_path = tmp.join(OPTIM_FILE);
    save_tensors(
        model_tensors(&l.model).map_err(crate::LearnerError::from)?,
        &model_path,
    )?;
    save_tensors(
        optimizer_tensors(l).map_err(crate::LearnerError::from)?,
        &optim_path,
    )?;
    let mut files = HashMap::new();
    files.insert(MODEL_FILE.to_string(), checksum_file(&model_path)?);
    files.insert(OPTIM_FILE.to_string(), checksum_file(&optim_path)?);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        step: l.step,
        model_version: l.step,
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        config: l.model.cfg.clone(),
        rng: l.rng.clone(),
        input,
        files,
    };
    let mpath = tmp.join(MANIFEST);
    let mut f = File::create(&mpath).map_err(|e| file_err(&mpath, e))?;
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| file_err(&mpath, e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| file_err(&mpath, e))?;
    sync_dir(&tmp)?;
    rliv_contract::failpoint::hit("learner.checkpoint_write");
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| file_err(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| file_err(&final_dir, e))?;
    sync_dir(dir)?;
    prune(dir, l.model.cfg.keep_checkpoints)?;
    Ok(final_dir)
}

/// Rewrites the input position of the finished checkpoint `ckpt` (whose
/// model is unchanged: no update since it was written), atomically: the new
/// manifest is written beside the old one and renamed over it.
pub fn record_input(ckpt: &Path, input: serde_json::Value) -> Result<(), CheckpointError> {
    let mpath = ckpt.join(MANIFEST);
    let bytes = std::fs::read(&mpath).map_err(|e| file_err(&mpath, e))?;
    let mut manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| file_err(&mpath, e))?;
    manifest.input = input;
    let next = ckpt.join(format!("{MANIFEST}.new"));
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| file_err(&next, e))?;
    let mut f = File::create(&next).map_err(|e| file_err(&next, e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| file_err(&next, e))?;
    std::fs::rename(&next, &mpath).map_err(|e| file_err(&mpath, e))?;
    sync_dir(ckpt)
}

/// Checkpoint directories in `dir`, newest first (unfinished `.tmp` ones excluded).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(dir, e)),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ckpt-") && !n.ends_with(".tmp"))
        })
        .collect();
    out.sort();
    out.reverse();
    Ok(out)
}

fn prune(dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    for old in list(dir)?.into_iter().skip(keep.max(1)) {
        std::fs::remove_dir_all(&old).map_err(|e| file_err(&old, e))?;
    }
    remove_unfinished(dir)?;
    Ok(())
}

/// Removes the leftovers of interrupted checkpoint writes (`ckpt-*.tmp`)
/// in `dir`; returns how many. The one writer of a checkpoint directory
/// calls it when it starts (and after each checkpoint): a reader must not,
/// since a `.tmp` may be a write in progress.
pub fn remove_unfinished(dir: &Path) -> Result<usize, CheckpointError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(file_err(dir, e)),
    };
    let mut removed = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ckpt-") && n.ends_with(".tmp"))
        {
            std::fs::remove_dir_all(&p).map_err(|e| file_err(&p, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Reads and verifies a checkpoint's manifest and files; returns the manifest
/// and the verified model (and optimizer) tensor maps.
pub fn read(
    ckpt: &Path,
    with_optimizer: bool,
) -> Result<(Manifest, TensorMap, Option<TensorMap>), CheckpointError> {
    let mpath = ckpt.join(MANIFEST);
    let text = std::fs::read(&mpath).map_err(|e| file_err(&mpath, e))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| file_err(&mpath, format!("not a valid manifest: {e}")))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(file_err(
            &mpath,
            format!(
                "format version {} (this rliv reads {FORMAT_VERSION})",
                manifest.format_version
            ),
        ));
    }
    let load = |name: &str| -> Result<TensorMap, CheckpointError> {
        let path = ckpt.join(name);
        let want = manifest
            .files
            .get(name)
            .ok_or_else(|| file_err(&mpath, format!("does not list {name}")))?;
        let bytes = std::fs::read(&path).map_err(|e| file_err(&path, e))?;
        if bytes.len() as u64 != want.bytes {
            return Err(file_err(
                &path,
                format!(
                    "truncated or altered: {} bytes, manifest says {}",
                    bytes.len(),
                    want.bytes
                ),
            ));
        }
        if checksum_bytes(&bytes) != want.checksum {
            return Err(file_err(&path, "checksum mismatch: the file is corrupt"));
        }
        parse_safetensors(&bytes)
            .map_err(|e| file_err(&path, format!("not a valid safetensors file: {e}")))
    };
    let model = load(MODEL_FILE)?;
    let optim = if with_optimizer {
        Some(load(OPTIM_FILE)?)
    } else {
        None
    };
    Ok((manifest, model, optim))
}

/// A model (no optimizer) from the newest usable checkpoint in `dir`, with
/// the checkpoints skipped on the way (each with its reason).
pub fn load_newest_model(
    dir: &Path,
) -> Result<Option<(Model, Manifest, Vec<String>)>, CheckpointError> {
    newest_usable(dir, false, |ckpt, manifest, map, _| {
        let mut model = Model::for_inference(&manifest.config).map_err(CheckpointError::Model)?;
        load_model_tensors(&mut model, map).map_err(|e| file_err(&ckpt.join(MODEL_FILE), e))?;
        Ok(model)
    })
}

/// A learner restored from the newest usable checkpoint in `dir` (model,
/// targets, optimizer moments, step, sampling state), with the skipped ones.
/// `cfg` must describe the same model; training knobs (rates, cadence) come
/// from `cfg`, so a resumed run can change them.
pub fn resume(
    dir: &Path,
    cfg: &LearnerConfig,
) -> Result<Option<(Learner, Manifest, Vec<String>)>, CheckpointError> {
    newest_usable(dir, true, |ckpt, manifest, map, optim| {
        check_same_model(&manifest.config, cfg).map_err(|e| file_err(&ckpt.join(MANIFEST), e))?;
        // Reward scales measured by an earlier run are part of what the
        // model learned: keep them (a configured scale applies to new models).
        let mut cfg = cfg.clone();
        if cfg.auto_reward_scale && !manifest.config.auto_reward_scale {
            cfg.reward_scale = manifest.config.reward_scale;
            cfg.auto_reward_scale = false;
        }
        let mut l = Learner::new(&cfg).map_err(CheckpointError::Model)?;
        load_model_tensors(&mut l.model, map).map_err(|e| file_err(&ckpt.join(MODEL_FILE), e))?;
        if let Some(o) = optim {
            load_optimizer_tensors(&mut l, o).map_err(|e| file_err(&ckpt.join(OPTIM_FILE), e))?;
        }
        l.host_changed();
        l.step = manifest.step;
        l.rng = manifest.rng.clone();
        Ok(l)
    })
}

/// Builds a `T` from the newest checkpoint in `dir` that reads, verifies and
/// builds; returns it with the reasons each newer one was skipped. No
/// checkpoint at all is `Ok(None)`; only unusable ones is an error.
fn newest_usable<T>(
    dir: &Path,
    with_optimizer: bool,
    mut build: impl FnMut(
        &Path,
        &Manifest,
        &mut TensorMap,
        Option<&mut TensorMap>,
    ) -> Result<T, CheckpointError>,
) -> Result<Option<(T, Manifest, Vec<String>)>, CheckpointError> {
    let mut skipped = Vec::new();
    for ckpt in list(dir)? {
        let attempt = read(&ckpt, with_optimizer).and_then(|(manifest, mut map, mut optim)| {
            let t = build(&ckpt, &manifest, &mut map, optim.as_mut())?;
            Ok((t, manifest))
        });
        match attempt {
            Ok((t, manifest)) => return Ok(Some((t, manifest, skipped))),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    if skipped.is_empty() {
        Ok(None)
    } else {
        Err(CheckpointError::NoneUsable {
            dir: dir.to_path_buf(),
            reasons: skipped.join("; "),
        })
    }
}

/// The knobs that define the parameter set must match to resume.
fn check_same_model(saved: &LearnerConfig, now: &LearnerConfig) -> Result<(), String> {
    let key = |c: &LearnerConfig| {
        (
            c.embedding_dim,
            c.id_rows,
            c.feature_rows,
            c.counter_buckets,
            c.hash_seed,
            c.hidden.clone(),
            c.multi_task,
            c.target_label.clone(),
            c.supervised_head,
            c.assist_gift,
            c.derived_features,
            c.dense_features,
        )
    };
    if key(saved) != key(now) {
        return Err(format!(
            "was written with a different model shape ({:?}); the configuration now says {:?}",
            key(saved),
            key(now)
        ));
    }
    Ok(())
}
