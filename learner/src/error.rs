//! What can go wrong in the learner: a refused setting, an engine that
//! cannot run, a step that cannot be taken, a tensor file that does not fit
//! the model. Checkpoint files have their own error (`CheckpointError`),
//! which wraps these where a file is involved.

/// A `[learner]` setting that [`crate::LearnerConfig::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("learner.{key} {rule}")]
pub struct InvalidSetting {
    /// The setting's name under `[learner]` (for example `gamma`).
    pub key: &'static str,
    /// What it must be, and what it was.
    pub rule: String,
}

impl InvalidSetting {
    pub(crate) fn new(key: &'static str, rule: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            key,
            rule: rule.into(),
        }
    }
}

/// Building an engine, or running one step or one scoring pass.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error(transparent)]
    Config(#[from] InvalidSetting),
    #[error("the fused engine runs on the CPU only, not {0:?}")]
    FusedOffCpu(String),
    #[error("unknown learner.engine {0:?} (expected \"auto\", \"fused\" or \"candle\")")]
    UnknownEngine(String),
    /// The candle engine (autograd, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The fused CPU kernels: an array shape that does not fit.
    #[error("fused engine: {0}")]
    Fused(#[from] ndarray::ShapeError),
    #[error("an empty batch")]
    EmptyBatch,
    #[error("the engine returned no gradients")]
    NoGradients,
    #[error(
        "the loss is not finite ({loss}) at step {step}: lower learner.lr or the reward scales"
    )]
    NonFiniteLoss { loss: f32, step: u64 },
}

/// A safetensors buffer that does not hold what the model needs.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("{0}")]
    Format(String),
    #[error("tensor `{name}` is {dtype}, rliv stores F32")]
    NotF32 { name: String, dtype: String },
    #[error("tensor `{0}` is missing")]
    Missing(String),
    #[error("tensor `{name}` has shape {got:?}, the configuration needs {need:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        need: Vec<usize>,
    },
}
