//! Checkpoint tensors: safetensors parsing without a device, and the
//! mapping between the model's and the optimizer's parameters and named
//! tensors in PyTorch's layout.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::{file_err, CheckpointError};
use crate::config::LABELS;
use crate::embed::TABLES;
use crate::error::TensorError;
use crate::learner::Learner;
use crate::model::{net_names, Model};
use crate::nets::StackParams;

/// A loaded tensor: shape and f32 values (row-major).
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub type TensorMap = HashMap<String, HostTensor>;

/// Parses a safetensors buffer (F32 tensors) without going through a device.
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorMap, TensorError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| TensorError::Format(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(TensorError::NotF32 {
                name,
                dtype: format!("{:?}", view.dtype()),
            });
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Plain per-net tensors of a stack, PyTorch layout (`weight` is `(out, in)`).
fn stack_tensors(
    prefix: &str,
    names: &[String],
    p: &StackParams,
    suffix: &str,
    out: &mut Vec<(String, Tensor)>,
) -> candle_core::Result<()> {
    for (n, name) in names.iter().enumerate() {
        for l in 0..p.layers() {
            let (i, o) = (p.dims[l], p.dims[l + 1]);
            let w = Tensor::from_slice(p.w_net(l, n), (i, o), &Device::Cpu)?
                .t()?
                .contiguous()?;
            out.push((format!("{prefix}{name}.{l}.weight{suffix}"), w));
            let b = Tensor::from_slice(p.b_net(l, n), o, &Device::Cpu)?;
            out.push((format!("{prefix}{name}.{l}.bias{suffix}"), b));
        }
    }
    Ok(())
}

fn tower_net_names(model: &Model) -> Vec<String> {
    let kinds = net_names(model.cfg.supervised_head);
    model
        .labels
        .iter()
        .flat_map(|l| {
            kinds
                .iter()
                .map(move |k| format!("tower.{}.{k}", LABELS[*l]))
        })
        .collect()
}

const ASSIST: &str = "assist_gift";

/// The model's tensors under their checkpoint names.
pub fn model_tensors(model: &Model) -> candle_core::Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    let d = model.emb.dim;
    for (name, t) in TABLES.iter().zip(&model.emb.tables) {
        out.push((
            format!("embedding.{name}.weight"),
            Tensor::from_slice(&t.weight, (t.rows, d), &Device::Cpu)?,
        ));
    }
    let names = tower_net_names(model);
    stack_tensors("", &names, &model.towers, "", &mut out)?;
    stack_tensors("target.", &names, &model.target, "", &mut out)?;
    if let Some(a) = &model.assist {
        stack_tensors("", &[ASSIST.to_string()], a, "", &mut out)?;
    }
    Ok(out)
}

/// Adam's moments under `<param>.exp_avg` / `<param>.exp_avg_sq`.
pub fn optimizer_tensors(l: &Learner) -> candle_core::Result<Vec<(String, Tensor)>> {
    let model = &l.model;
    let mut out = Vec::new();
    let d = model.emb.dim;
    for (name, t) in TABLES.iter().zip(&model.emb.tables) {
        out.push((
            format!("embedding.{name}.weight.exp_avg"),
            Tensor::from_slice(&t.m, (t.rows, d), &Device::Cpu)?,
        ));
        out.push((
            format!("embedding.{name}.weight.exp_avg_sq"),
            Tensor::from_slice(&t.v, (t.rows, d), &Device::Cpu)?,
        ));
    }
    let names = tower_net_names(model);
    stack_tensors("", &names, &l.tower_adam.m, ".exp_avg", &mut out)?;
    stack_tensors("", &names, &l.tower_adam.v, ".exp_avg_sq", &mut out)?;
    if let Some(a) = &l.assist_adam {
        stack_tensors("", &[ASSIST.to_string()], &a.m, ".exp_avg", &mut out)?;
        stack_tensors("", &[ASSIST.to_string()], &a.v, ".exp_avg_sq", &mut out)?;
    }
    Ok(out)
}

/// Fills the stack `p` from per-net tensors (`weight` stored `(out, in)`).
fn take_stack(
    map: &TensorMap,
    prefix: &str,
    names: &[String],
    suffix: &str,
    p: &mut StackParams,
) -> Result<(), TensorError> {
    let get = |key: &str| map.get(key).ok_or_else(|| TensorError::Missing(key.into()));
    for (n, name) in names.iter().enumerate() {
        for l in 0..p.layers() {
            let (i, o) = (p.dims[l], p.dims[l + 1]);
            let wk = format!("{prefix}{name}.{l}.weight{suffix}");
            let w = get(&wk)?;
            if w.shape != [o, i] {
                return Err(shape_error(&wk, &w.shape, &[o, i]));
            }
            let dst = &mut p.w[l][n * i * o..(n + 1) * i * o];
            for r in 0..o {
                for c in 0..i {
                    dst[c * o + r] = w.data[r * i + c];
                }
            }
            let bk = format!("{prefix}{name}.{l}.bias{suffix}");
            let b = get(&bk)?;
            if b.shape != [o] {
                return Err(shape_error(&bk, &b.shape, &[o]));
            }
            p.b[l][n * o..(n + 1) * o].copy_from_slice(&b.data);
        }
    }
    Ok(())
}

fn shape_error(name: &str, got: &[usize], need: &[usize]) -> TensorError {
    TensorError::Shape {
        name: name.into(),
        got: got.to_vec(),
        need: need.to_vec(),
    }
}

fn take_table(
    map: &mut TensorMap,
    key: &str,
    rows: usize,
    dim: usize,
) -> Result<Vec<f32>, TensorError> {
    let t = map
        .remove(key)
        .ok_or_else(|| TensorError::Missing(key.into()))?;
    if t.shape != [rows, dim] {
        return Err(shape_error(key, &t.shape, &[rows, dim]));
    }
    Ok(t.data)
}

/// Fills `model` from a model tensor map.
pub fn load_model_tensors(model: &mut Model, map: &mut TensorMap) -> Result<(), TensorError> {
    let d = model.emb.dim;
    for (name, t) in TABLES.iter().zip(model.emb.tables.iter_mut()) {
        t.weight = take_table(map, &format!("embedding.{name}.weight"), t.rows, d)?;
    }
    let names = tower_net_names(model);
    take_stack(map, "", &names, "", &mut model.towers)?;
    take_stack(map, "target.", &names, "", &mut model.target)?;
    if let Some(a) = model.assist.as_mut() {
        take_stack(map, "", &[ASSIST.to_string()], "", a)?;
    }
    Ok(())
}

pub(super) fn load_optimizer_tensors(
    l: &mut Learner,
    map: &mut TensorMap,
) -> Result<(), TensorError> {
    let d = l.model.emb.dim;
    for (name, t) in TABLES.iter().zip(l.model.emb.tables.iter_mut()) {
        t.m = take_table(map, &format!("embedding.{name}.weight.exp_avg"), t.rows, d)?;
        t.v = take_table(
            map,
            &format!("embedding.{name}.weight.exp_avg_sq"),
            t.rows,
            d,
        )?;
    }
    let names = tower_net_names(&l.model);
    take_stack(map, "", &names, ".exp_avg", &mut l.tower_adam.m)?;
    take_stack(map, "", &names, ".exp_avg_sq", &mut l.tower_adam.v)?;
    if let Some(a) = l.assist_adam.as_mut() {
        take_stack(map, "", &[ASSIST.to_string()], ".exp_avg", &mut a.m)?;
        take_stack(map, "", &[ASSIST.to_string()], ".exp_avg_sq", &mut a.v)?;
    }
    Ok(())
}

pub(super) fn save_tensors(
    tensors: Vec<(String, Tensor)>,
    path: &Path,
) -> Result<(), CheckpointError> {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path).map_err(|e| file_err(path, e))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| file_err(path, e))
}
