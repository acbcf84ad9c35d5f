//! Events in the wire format of `EVENTS.md`: exposures and actions, kept in
//! memory per round and written as JSON Lines.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SimError;

/// One item shown to one user in one request (contract: `exposures`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// The ranking request that showed the item.
    pub request_id: u64,
    /// The user.
    pub user_id: u64,
    /// The item.
    pub item_id: u64,
    /// The item's author.
    pub author_id: u64,
    /// When the item came on screen (Unix ms).
    pub ts_ms: i64,
    /// 0-based slot in the slate.
    pub position: u32,
    /// Static categorical user features.
    pub user_feats: Vec<u32>,
    /// Static categorical item features.
    pub item_feats: Vec<u32>,
}

/// The kind of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Clicked (started watching); value 1.
    Click,
    /// Watched; value = seconds.
    Watch,
    /// Followed the author; value 1.
    Follow,
    /// Sent a gift; value = amount.
    Gift,
}

/// Delayed feedback on one exposure (contract: `actions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Request of the exposure.
    pub request_id: u64,
    /// User of the exposure.
    pub user_id: u64,
    /// Item of the exposure.
    pub item_id: u64,
    /// When the action happened (Unix ms).
    pub ts_ms: i64,
    /// What happened.
    pub action: ActionKind,
    /// Seconds for `watch`, amount for `gift`, 1 otherwise.
    #[serde(default = "one")]
    pub value: f64,
}

fn one() -> f64 {
    1.0
}

/// The events of one round, each list sorted by `ts_ms` (ties in emission
/// order). Duplicates (identical lines) are included, as on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundEvents {
    /// 0-based round number.
    pub round: u32,
    /// Exposures sorted by ts_ms.
    pub exposures: Vec<Exposure>,
    /// Actions sorted by ts_ms.
    pub actions: Vec<Action>,
}

/// Name of the exposures file in a round directory.
pub const EXPOSURES_FILE: &str = "exposures.jsonl";
/// Name of the actions file in a round directory.
pub const ACTIONS_FILE: &str = "actions.jsonl";

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), SimError> {
    let mut w = BufWriter::new(File::create(path)?);
    for r in rows {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, SimError> {
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push(serde_json::from_str(&line)?);
        }
    }
    Ok(out)
}

impl RoundEvents {
    /// Sorts both lists by ts_ms (stable: ties keep emission order).
    pub fn sort(&mut self) {
        self.exposures.sort_by_key(|e| e.ts_ms);
        self.actions.sort_by_key(|a| a.ts_ms);
    }

    /// Writes `dir/exposures.jsonl` and `dir/actions.jsonl` (creating `dir`).
    pub fn write_dir(&self, dir: &Path) -> Result<(), SimError> {
        std::fs::create_dir_all(dir)?;
        write_jsonl(&dir.join(EXPOSURES_FILE), &self.exposures)?;
        write_jsonl(&dir.join(ACTIONS_FILE), &self.actions)
    }

    /// Reads a directory written by [`RoundEvents::write_dir`].
    pub fn read_dir(dir: &Path, round: u32) -> Result<Self, SimError> {
        Ok(RoundEvents {
            round,
            exposures: read_jsonl(&dir.join(EXPOSURES_FILE))?,
            actions: read_jsonl(&dir.join(ACTIONS_FILE))?,
        })
    }
}
