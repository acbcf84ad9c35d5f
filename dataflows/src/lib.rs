//! `rliv-dataflows`: the streaming core of rliv.
//!
//! Exposures and delayed actions (JSONL, contract `docs/contract/EVENTS.md`)
//! flow through a timely dataflow keyed first by exposure `(request_id,
//! item_id)` for the label join, then by `(user_id, author_id)` for the pair
//! state, producing the paper's Adjacent State Approximation transitions
//! `(s_t, a, r_t, s_{t+1})`.
//!
//! - [`event`]: the contract's records, parsing and validation (with a
//!   schema-specific fast path in `fastjson`, falling back to serde_json).
//! - [`input`]: deterministic, resumable chunked reading of input files.
//! - [`join`]: the label join as plain logic; [`pairs`]: pair state and ASA.
//! - [`operators`]: the timely operators around them.
//! - [`job`]: the replay job and its committer (exactly-once pair state).
//! - [`kafka`]: Kafka topics as input (offsets committed with the state) and output.
//! - [`feed`]: the learner's durable input (the transition log in the state).

pub mod config;
pub mod event;
mod fastjson;
pub mod feed;
pub mod input;
pub mod job;
pub mod join;
pub mod kafka;
pub mod metrics;
pub mod operators;
pub mod pairs;
mod raw_bytes;
pub mod views;
mod wire;

pub use config::{JobConfigError, JoinConfig, ReplayConfig};
pub use job::{run_replay, Checkpoint, Progress, ReplayRequest, Summary};
pub use rliv_contract::failpoint;
