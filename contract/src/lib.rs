//! `rliv-contract`: the wire contract (`docs/contract/EVENTS.md`) as types,
//! the leaf every other rliv crate builds on.
//!
//! - [`counters`]: the pair key, the pair's counters `f_ua` and totals, their
//!   compact encoding (the state's values) and the per-label rewards.
//! - [`transition`]: the ASA transition `(s_t, a, r_t, s_{t+1})` and the
//!   messages a job sends its in-process learner.
//! - [`json`]: the contract's JSON writers (dump lines, transitions).
//! - [`hash`]: the fast hash maps used on hot paths.
//! - [`prom`]: the Prometheus text format every crate renders its figures in.
//! - [`failpoint`]: crash points for the fault-injection tests.
//!
//! No storage, no dataflow, no network: the learner and the service depend
//! on this crate, not on the job's.

pub mod counters;
pub mod failpoint;
pub mod hash;
pub mod json;
pub mod prom;
pub mod transition;

pub use counters::{
    mix64, put_varint, user_process, PairCounters, PairKey, PairSnapshot, Rewards, StateCounts,
};
pub use hash::{FastMap, FastSet};
pub use transition::{Feats, Fed, Transition};

/// A value that does not decode (a damaged pair value, a bad varint).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);
