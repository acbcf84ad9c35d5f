//! `rliv-state`: the RocksDB pair store of rliv.
//!
//! Pair counters `f_ua` live in column family `pairs`, keyed by
//! `user_id ++ author_id` big-endian so a dump is sorted by (user, author) and
//! a user's pairs are one prefix scan. The job's input positions, counters and
//! window snapshots live in column family `meta` and are written in the same
//! `WriteBatch` as the pair counters they produced ([`Commit`]).

mod layout;
mod store;

// The pair's types are the contract's: re-exported so that the store's users
// see one set of names.
pub use layout::{shard_dir, Layout};
pub use rliv_contract::{hash, json};
pub use rliv_contract::{
    mix64, put_varint, user_process, FastMap, FastSet, PairCounters, PairKey, PairSnapshot,
    Rewards, StateCounts,
};
pub use store::{Commit, Store, StoreOptions};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store at {0}: {1}")]
    Open(PathBuf, String),
    #[error("{0} is not an rliv state directory (no RocksDB CURRENT file)")]
    NotAStore(PathBuf),
    #[error("state store I/O at {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error("invalid state configuration: {0}")]
    Config(String),
}

impl From<rliv_contract::DecodeError> for StateError {
    fn from(e: rliv_contract::DecodeError) -> Self {
        StateError::Corrupt(e.0)
    }
}

impl StateError {
    fn open(path: &std::path::Path, e: rocksdb::Error) -> Self {
        let msg = e.to_string();
        let hint = if msg.contains("lock") {
            " (is another `rliv replay` writing to it? `rliv dump` opens it read-only)"
        } else {
            ""
        };
        StateError::Open(path.to_path_buf(), format!("{msg}{hint}"))
    }

    fn at(self, key: PairKey) -> Self {
        match self {
            StateError::Corrupt(m) => {
                StateError::Corrupt(format!("pair ({}, {}): {m}", key.user_id, key.author_id))
            }
            other => other,
        }
    }
}
