//! The job's persisted record: input positions, counters, output lengths
//! and the transition log's bounds, written in every commit (`meta`
//! column family), and how a new run starts from the previous one.

use std::collections::BTreeMap;
use std::path::Path;

use rliv_state::{StateError, Store};
use serde::{Deserialize, Serialize};

use crate::event::Source;
use crate::input::{InputName, Positions, SourcePos};
use crate::kafka::TopicPartition;
use crate::metrics::Counters;

use super::JobError;

pub(super) const CHECKPOINT_KEY: &[u8] = b"job/checkpoint";
pub(super) const WINDOW_PREFIX: &[u8] = b"job/window/";
/// The views' live facts per worker (single process; a cluster keeps them in its shards).
pub(super) const VIEWS_STATE_PREFIX: &[u8] = b"job/views/";
/// The views' table as of the last commit (`rliv views`).
pub const VIEWS_TABLE_KEY: &[u8] = b"views/table";
pub(super) const CHECKPOINT_VERSION: u32 = 1;

/// An output file and how many bytes of it are committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPos {
    pub path: String,
    pub len: u64,
}

/// The job's record in the `meta` column family, written with every commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The run's input files, exposures first.
    pub files: Vec<(Source, String)>,
    /// Next line to read, per source.
    pub positions: [SourcePos; 2],
    /// Next offset to read per Kafka partition (`"topic/partition"`), in
    /// the same batch as the counters it produced.
    #[serde(default)]
    pub offsets: std::collections::BTreeMap<String, i64>,
    /// Newest event time handed out per Kafka partition (restores the
    /// per-partition watermarks exactly).
    #[serde(default)]
    pub partition_ts: std::collections::BTreeMap<String, i64>,
    pub next_epoch: u64,
    /// The run read all of its input.
    pub finished: bool,
    /// Counters over every run on this state.
    pub counters: Counters,
    /// `counters` when this run started.
    pub run_start: Counters,
    pub transitions: Option<OutputPos>,
    pub dead_letters: OutputPos,
    /// Exposures still open (kept for the next run with `--keep-open`).
    pub open_exposures: u64,
    pub commits: u64,
    /// The transition log (the learner's durable input, see [`crate::feed`]):
    /// its oldest kept entry and its end (the next sequence number), both
    /// committed with the counters.
    #[serde(default)]
    pub log_start: u64,
    #[serde(default)]
    pub log_end: u64,
}

impl Checkpoint {
    /// The checkpoint a new input run starts from: after `previous` (a
    /// finished run on the same state, whose counters and epochs it
    /// continues) or on an empty state.
    pub(super) fn new_run(
        previous: Option<Checkpoint>,
        files: Vec<(Source, String)>,
        transitions: Option<&Path>,
        dead_letters: &Path,
    ) -> Checkpoint {
        let (counters, next_epoch, open_exposures, commits, log) = match previous {
            Some(p) => (
                p.counters,
                p.next_epoch,
                p.open_exposures,
                p.commits,
                (p.log_start, p.log_end),
            ),
            None => (Counters::default(), 0, 0, 0, (0, 0)),
        };
        let output = |p: &Path| OutputPos {
            path: p.display().to_string(),
            len: 0,
        };
        Checkpoint {
            version: CHECKPOINT_VERSION,
            files,
            positions: Default::default(),
            offsets: Default::default(),
            partition_ts: Default::default(),
            next_epoch,
            finished: false,
            run_start: counters.clone(),
            counters,
            transitions: transitions.map(output),
            dead_letters: output(dead_letters),
            open_exposures,
            commits,
            log_start: log.0,
            log_end: log.1,
        }
    }

    /// Whether this is a run on Kafka topics (its file table lists partitions only).
    pub(super) fn is_stream(&self) -> bool {
        !self.files.is_empty()
            && self
                .files
                .iter()
                .all(|(_, n)| InputName::parse(n).is_kafka())
    }

    /// `offsets`, keyed by partition (keys that are not `topic/partition`
    /// name no partition and are left out).
    pub(super) fn kafka_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        by_partition(&self.offsets)
    }

    /// `partition_ts`, keyed by partition (see [`Self::kafka_offsets`]).
    pub(super) fn kafka_partition_ts(&self) -> BTreeMap<TopicPartition, i64> {
        by_partition(&self.partition_ts)
    }

    /// Records where a Kafka input stands, keys in their persisted text form.
    pub(super) fn set_kafka_positions(&mut self, positions: &Positions) {
        self.offsets = by_name(&positions.offsets);
        self.partition_ts = by_name(&positions.partition_ts);
    }

    pub fn load(store: &Store) -> Result<Option<Checkpoint>, JobError> {
        match store.get_meta(CHECKPOINT_KEY)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| JobError::State(StateError::Corrupt(format!("job checkpoint: {e}")))),
        }
    }
}

fn by_partition(named: &BTreeMap<String, i64>) -> BTreeMap<TopicPartition, i64> {
    named
        .iter()
        .filter_map(|(name, v)| Some((name.parse().ok()?, *v)))
        .collect()
}

fn by_name(typed: &BTreeMap<TopicPartition, i64>) -> BTreeMap<String, i64> {
    typed.iter().map(|(tp, v)| (tp.to_string(), *v)).collect()
}

/// The views' table of a state as of its last commit (`None`: no views yet),
/// rows in key order.
pub fn load_views(store: &Store) -> Result<Option<Vec<(crate::views::ViewKey, i64)>>, JobError> {
    match store.get_meta(VIEWS_TABLE_KEY)? {
        None => Ok(None),
        Some(bytes) => bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map(|(rows, _)| Some(rows))
            .map_err(|e| JobError::State(StateError::Corrupt(format!("views table: {e}")))),
    }
}
