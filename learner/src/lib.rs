//! `rliv-learner`: the multi-task critic learner of RLIV-UA (paper Sections
//! 3.2-3.3, Table 1) in Candle, and the one scoring path of rliv.
//!
//! - [`model`]: embeddings, towers (reward head + two value nets each), target
//!   towers, assistance gift net; [`Model::score`](model::Model::score) scores candidates.
//! - [`learner`]: one TD update (Eq. 5-10); [`nets`]: parameters of stacks of
//!   MLPs, Huber, BCE, Adam; [`embed`]: hashed embedding tables with lazy Adam.
//! - [`engine`]: the loss, its gradients and the update, by the fused CPU
//!   kernels ([`fused`]) or by candle's autograd on any candle device
//!   ([`autograd`], with the training state resident there: [`resident`]).
//! - [`buffer`]: the real-time sample buffer; [`trainer`]: streaming training
//!   from a channel with checkpoints on a cadence; [`checkpoint`]: safetensors
//!   checkpoints written atomically; [`visible`]: each transition's `s_t` as
//!   a ranking request could have seen it.

pub mod autograd;
pub mod bench;
pub mod buffer;
pub mod checkpoint;
pub mod config;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fused;
pub mod input;
pub mod learner;
pub mod model;
pub mod nets;
pub mod resident;
pub mod rng;
mod score;
pub mod step;
pub mod trainer;
pub mod visible;

pub use config::LearnerConfig;
pub use error::{InvalidSetting, LearnerError, TensorError};
pub use learner::{Learner, StepStats};
pub use model::{Liv, Model};

/// The compute device: CPU, or CUDA device 0 with the `cuda` feature.
pub fn device(name: &str) -> candle_core::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        #[cfg(feature = "cuda")]
        "cuda" => candle_core::Device::new_cuda(0),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(candle_core::Error::msg(
            "this rliv was built without the `cuda` feature (cargo build --features rliv-learner/cuda)",
        )),
        other => Err(candle_core::Error::msg(format!(
            "unknown device {other:?} (expected \"cpu\" or \"cuda\")"
        ))),
    }
}
