//! Settings of the label join and the replay job (sections `[join]` and
//! `[replay]` of `configs/default.toml`, which documents each field).

use serde::{Deserialize, Serialize};

/// Attribution rules (contract "Label join").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinConfig {
    /// An action is attributed when `exposure.ts_ms <= action.ts_ms <= exposure.ts_ms + window_ms`.
    pub window_ms: i64,
    /// How far behind the newest event of a source an event may arrive and still count:
    /// the watermark of a source is its largest `ts_ms` seen minus this.
    pub allowed_lateness_ms: i64,
    /// How long after an exposure closes its identity is remembered, so that a
    /// straggling action is reported as `late_action` (not `orphan_action`) and a
    /// repeated exposure as a duplicate.
    pub late_retention_ms: i64,
}

impl Default for JoinConfig {
    fn default() -> Self {
        JoinConfig {
            window_ms: 30 * 60 * 1000,
            allowed_lateness_ms: 60 * 1000,
            late_retention_ms: 60 * 60 * 1000,
        }
    }
}

/// Why a `[join]` or `[replay]` section is refused (their `validate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobConfigError {
    /// A `[join]` duration below zero.
    #[error("join.{key} = {value} must be >= 0")]
    Negative { key: &'static str, value: i64 },
    /// A `[replay]` setting below its least value.
    #[error("replay.{key} must be >= {min}")]
    TooSmall { key: &'static str, min: usize },
}

impl JoinConfig {
    pub fn validate(&self) -> Result<(), JobConfigError> {
        for (key, value) in [
            ("window_ms", self.window_ms),
            ("allowed_lateness_ms", self.allowed_lateness_ms),
            ("late_retention_ms", self.late_retention_ms),
        ] {
            if value < 0 {
                return Err(JobConfigError::Negative { key, value });
            }
        }
        Ok(())
    }
}

/// How the replay job runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayConfig {
    /// Timely worker threads (`-w`).
    pub workers: usize,
    /// Lines per input chunk. A chunk is one timely epoch: the unit of parsing
    /// parallelism and of watermark progress. Results do not depend on it when
    /// events arrive within the allowed lateness.
    pub chunk_lines: usize,
    /// Longest accepted input line; longer lines are dead-lettered (`line_too_long`).
    pub max_line_bytes: usize,
    /// Wall-clock time between commits of pair state, window snapshot and input
    /// positions (one RocksDB WriteBatch each). A crash loses at most this much work.
    pub commit_interval_ms: u64,
    /// Chunks in flight between the reader and the committer: bounds memory.
    pub max_inflight_chunks: usize,
    /// Pair counters cached per worker in front of RocksDB.
    pub pair_cache_entries: usize,
    /// Capacity of the in-process transitions channel (the learner's feed);
    /// a full channel slows the job down instead of growing a buffer.
    pub transitions_channel_capacity: usize,
    /// At the end of the input, close every open exposure (a one-shot replay).
    /// With `false` (`--keep-open`) open exposures stay in the state and the next
    /// replay onto it continues them, as if the inputs were one stream.
    pub drain_at_end: bool,
    /// Cluster mode (`--processes N`): how long a process waits for its
    /// peers to come up and connect before it gives up with an error.
    pub cluster_connect_timeout_ms: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            workers: 2,
            chunk_lines: 2048,
            max_line_bytes: 1 << 20,
            commit_interval_ms: 1000,
            max_inflight_chunks: 64,
            pair_cache_entries: 2_000_000,
            transitions_channel_capacity: 65536,
            drain_at_end: true,
            cluster_connect_timeout_ms: 60_000,
        }
    }
}

impl ReplayConfig {
    pub fn validate(&self) -> Result<(), JobConfigError> {
        for (key, value, min) in [
            ("workers", self.workers, 1),
            ("chunk_lines", self.chunk_lines, 1),
            ("max_line_bytes", self.max_line_bytes, 64),
            ("max_inflight_chunks", self.max_inflight_chunks, 1),
            (
                "transitions_channel_capacity",
                self.transitions_channel_capacity,
                1,
            ),
        ] {
            if value < min {
                return Err(JobConfigError::TooSmall { key, min });
            }
        }
        Ok(())
    }
}
