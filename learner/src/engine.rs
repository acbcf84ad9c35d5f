//! The two interchangeable ways to train and score: the fused CPU kernels
//! (default on CPU; parameters and Adam on the host) and candle (any candle
//! device: CPU, or CUDA with the `cuda` feature; while training, parameters
//! and Adam live on the device, `resident.rs`). Both compute the same loss,
//! gradients and updates, and read and write the same checkpoints.

use crate::error::LearnerError;
use crate::fused::FusedEngine;
use crate::model::Model;
use crate::resident::CandleEngine;
pub use crate::step::{BatchData, Grads};

pub enum Engine {
    Fused(FusedEngine),
    Candle(CandleEngine),
}

impl Engine {
    /// `name`: "fused" or "candle"; `device`: "cpu" or "cuda" (candle only).
    pub fn new(name: &str, device: &str, threads: usize) -> Result<Engine, LearnerError> {
        match (name, device) {
            ("auto", "cpu") | ("fused", "cpu") => Ok(Engine::Fused(FusedEngine::new(threads))),
            ("fused", other) => Err(LearnerError::FusedOffCpu(other.to_string())),
            ("auto", dev) | ("candle", dev) => {
                let dev = crate::device(dev)?;
                Ok(Engine::Candle(CandleEngine::new(dev)))
            }
            (other, _) => Err(LearnerError::UnknownEngine(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Fused(_) => "fused",
            Engine::Candle(_) => "candle",
        }
    }

    /// Online Q values `(T, 2, b)` of `x` `(b, d)`, tower-major.
    pub fn q_values(
        &mut self,
        model: &Model,
        x: &[f32],
        b: usize,
    ) -> Result<Vec<f32>, LearnerError> {
        match self {
            Engine::Fused(f) => f.q_values(model, x, b),
            Engine::Candle(c) => Ok(c.q_values(model, x, b)?),
        }
    }
}
