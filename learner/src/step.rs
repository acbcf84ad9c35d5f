//! What passes between the learner and an engine: one batch laid out for
//! the engines, the gradients they return, and the figures of one update.
//! A leaf module: the engines, the learner and the model all read it.

use crate::nets::StackParams;

/// The figures of one update (or one loss evaluation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Total loss of Eq. 10.
    pub loss: f32,
    /// Per tower (in `Model::labels` order): supervised reward loss (0 without the head).
    pub reward_loss: Vec<f32>,
    /// Per tower: the critic loss `sum_k huber(Q_k, y)`.
    pub critic_loss: Vec<f32>,
    /// Per tower: mean |Q_k - y| over the batch and k.
    pub td_error: Vec<f32>,
    /// Assistance gift BCE (`None` when the network is off).
    pub assist_loss: Option<f32>,
}

/// One batch, laid out for the engines.
pub struct BatchData<'a> {
    /// `H_t`, `(b, d)` row-major.
    pub x: &'a [f32],
    /// `H_{t+1, j}`, `(b * j, d)`, sample-major.
    pub xn: &'a [f32],
    pub b: usize,
    pub d: usize,
    pub j: usize,
    /// Scaled rewards, tower-major `(T, b)`.
    pub rewards: &'a [f32],
    /// Assistance labels (gift > 0), `(b)`.
    pub gift: &'a [f32],
}

/// Gradients of the loss with respect to every parameter and to `H_t`.
#[derive(Clone, Debug)]
pub struct Grads {
    pub towers: StackParams,
    pub assist: Option<StackParams>,
    /// dL/dH_t, `(b, d)`.
    pub dx: Vec<f32>,
}
