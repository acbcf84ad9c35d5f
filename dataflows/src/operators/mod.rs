//! The timely operators of the replay dataflow, one per file, each an
//! extension trait on `Stream`:
//!
//! ```text
//! chunks ─Exchange(epoch)─> Parse ─Exchange(request,item | meta: every worker)─> LabelJoin
//!        ─Exchange(user,author)─> PairState ─Pipeline─> [Views] ─> Sink ─> committer thread
//! ```
//!
//! The two keyed exchanges carry one batch per destination worker and epoch
//! ([`ParsedBundle`], then [`Bundle`]): the sender splits an epoch's records
//! by destination itself.
//!
//! Timestamps are epochs (one input chunk each). Every operator buffers an
//! epoch until its input frontier passes it, then processes it as a whole, so
//! results do not depend on the interleaving of workers.

mod label_join;
mod pair_state;
mod parse;
mod sink;
mod views;

pub use label_join::LabelJoin;
pub use label_join::{decode_snapshot, encode_snapshot, JoinStart, SnapshotError};
pub use pair_state::PairState;
pub use pair_state::TransitionOutputs;
pub use parse::{parse_chunk, parse_worker, ParseChunks};

pub use sink::{InputMark, Report, ReportSink};
pub use views::{Views, ViewsStart};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rliv_state::PairKey;
use serde::{Deserialize, Serialize};
use timely::communication::Pull;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use crate::event::{exposure_route, Action, Exposure, Interaction, Origin, Source, Transition};
use crate::metrics::{Counters, Reason};

/// Per-epoch facts of one input chunk, sent by the parser to every join worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The join worker this copy is for.
    pub target: u32,
    pub source: Option<Source>,
    /// Largest `ts_ms` of the chunk's valid records.
    pub max_ts: Option<i64>,
    pub exhausted_after: [bool; 2],
    pub commit: bool,
    pub last: bool,
    /// The run stops here before its input ended (no drain).
    #[serde(default)]
    pub stopped: bool,
}

/// Records bound for one worker, moved across an exchange as one record: the
/// exchange then moves one small header per batch instead of every record,
/// and allocates one buffer per batch instead of one per few dozen records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bundle<T> {
    /// The destination worker (global index).
    pub to: u64,
    pub items: Vec<T>,
}

/// Builds the bundles of one epoch record by record.
pub(crate) struct Bundler<T, R> {
    parts: Vec<Vec<T>>,
    route: R,
}

impl<T, R: Fn(&T) -> u64> Bundler<T, R> {
    /// `expected`: about how many records will come (sizes the buffers).
    pub(crate) fn new(peers: usize, expected: usize, route: R) -> Self {
        let peers = peers.max(1);
        let guess = expected / peers + expected / (4 * peers) + 8;
        Bundler {
            parts: (0..peers).map(|_| Vec::with_capacity(guess)).collect(),
            route,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        let to = ((self.route)(&item) % self.parts.len() as u64) as usize;
        if let Some(part) = self.parts.get_mut(to) {
            part.push(item);
        }
    }

    pub(crate) fn finish(self) -> Vec<Bundle<T>> {
        self.parts
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(to, items)| Bundle {
                to: to as u64,
                items,
            })
            .collect()
    }
}

/// One chunk's parsed records bound for one join worker, by kind, each kind
/// in input order: the join takes the two record vectors as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedBundle {
    /// The destination worker (global index).
    pub to: u64,
    pub exposures: Vec<Exposure>,
    pub actions: Vec<Action>,
    pub meta: Meta,
    /// Dead letters and counts: they stay on the parsing worker.
    pub sides: Vec<Side>,
}

/// Splits one chunk's records into one [`ParsedBundle`] per join worker: an
/// exposure or action goes to the worker of its identity
/// ([`exposure_route`]), side records to the parsing worker.
pub struct ParsedBundler {
    parts: Vec<ParsedBundle>,
    me: usize,
}

impl ParsedBundler {
    /// `me`: the parsing worker; `lines`: about how many records of
    /// `source` will come (a chunk holds one source).
    pub fn new(peers: usize, me: usize, source: Option<Source>, lines: usize) -> Self {
        let peers = peers.max(1);
        let guess = lines / peers + lines / (4 * peers) + 8;
        let room = |s: Source| if source == Some(s) { guess } else { 0 };
        ParsedBundler {
            parts: (0..peers)
                .map(|to| ParsedBundle {
                    to: to as u64,
                    exposures: Vec::with_capacity(room(Source::Exposures)),
                    actions: Vec::with_capacity(room(Source::Actions)),
                    ..ParsedBundle::default()
                })
                .collect(),
            me: me % peers,
        }
    }

    fn part(&mut self, request_id: u64, item_id: u64) -> Option<&mut ParsedBundle> {
        let n = self.parts.len() as u64;
        self.parts
            .get_mut((exposure_route(request_id, item_id) % n) as usize)
    }

    /// An exposure, to the worker of its identity (input order is kept).
    pub fn exposure(&mut self, e: Exposure) {
        if let Some(p) = self.part(e.request_id, e.item_id) {
            p.exposures.push(e);
        }
    }

    /// An action, to the worker of its exposure's identity.
    pub fn action(&mut self, a: Action) {
        if let Some(p) = self.part(a.request_id, a.item_id) {
            p.actions.push(a);
        }
    }

    /// A side record (dead letter, counts): it stays on the parsing worker.
    pub fn side(&mut self, s: Side) {
        if let Some(p) = self.parts.get_mut(self.me) {
            p.sides.push(s);
        }
    }

    /// One bundle per join worker, each with its copy of `meta`.
    pub fn finish(mut self, meta: Meta) -> Vec<ParsedBundle> {
        for p in &mut self.parts {
            p.meta = Meta {
                target: p.to as u32,
                ..meta.clone()
            };
        }
        self.parts
    }
}

/// A record that is not joined, with where it came from and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub origin: Origin,
    pub reason: Reason,
    pub detail: String,
    /// The input line (parse errors) or the record re-encoded as JSON.
    pub raw: String,
}

/// Transitions of one epoch on one worker, sorted by `keys`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransitionBatch {
    /// (pair, ts_ms, request_id, item_id) of each transition.
    pub keys: Vec<(PairKey, i64, u64, u64)>,
    /// JSON lines, when a transitions file is written; line `i` ends at `ends[i]`.
    #[serde(with = "crate::raw_bytes")]
    pub lines: Vec<u8>,
    pub ends: Vec<u32>,
    /// The records, when an in-process consumer is attached.
    pub records: Vec<Transition>,
}

/// Side outputs that travel with the data to the sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Side {
    Dead(DeadLetter),
    Counts(Counters),
    /// A join worker's window snapshot (bincode), at commit epochs.
    Snapshot(u32, #[serde(with = "crate::raw_bytes")] Vec<u8>),
    Transitions(TransitionBatch),
    /// New pair values (encoded) of one epoch on one worker.
    Puts(Vec<(PairKey, Vec<u8>)>),
    /// What an epoch's interactions tell the views (pair operator -> views).
    ViewFacts(Vec<crate::views::ViewFact>),
    /// The watermark after an epoch (join -> views, on the same worker).
    Watermark(i64),
    /// A views worker's live facts (bincode), at commit epochs.
    ViewsSnapshot(u32, #[serde(with = "crate::raw_bytes")] Vec<u8>),
    /// Changes of the views' table: (row, value, +1 / -1).
    ViewChanges(Vec<(crate::views::ViewKey, i64, i64)>),
}

/// Output of the label join.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Joined {
    Interaction(Interaction),
    Side(Side),
}

/// What the operators share with the job: an abort flag and the first error.
#[derive(Default)]
pub struct Abort {
    flag: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Abort {
    pub fn raise(&self, msg: impl Into<String>) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert_with(|| msg.into());
        }
        self.flag.store(true, Ordering::SeqCst);
    }
    pub fn raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
}

pub type AbortHandle = Arc<Abort>;

/// Data buffered per epoch until the input frontier passes it.
pub(crate) struct Stash<D> {
    map: BTreeMap<u64, (Capability<u64>, Vec<D>)>,
}

impl<D> Stash<D> {
    pub(crate) fn new() -> Self {
        Stash {
            map: BTreeMap::new(),
        }
    }

    pub(crate) fn absorb<P: Pull<Message<u64, Vec<D>>>>(
        &mut self,
        input: &mut InputHandleCore<u64, Vec<D>, P>,
    ) {
        input.for_each(|cap, data| {
            if let Some(t) = cap.least().copied() {
                let entry = self
                    .map
                    .entry(t)
                    .or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                entry.1.append(data);
            }
        });
    }

    /// Epochs the frontier has passed, in order.
    pub(crate) fn ready(
        &mut self,
        frontier: &MutableAntichain<u64>,
    ) -> Vec<(Capability<u64>, Vec<D>)> {
        let mut out = Vec::new();
        while let Some((&t, _)) = self.map.first_key_value() {
            if frontier.frontier().less_equal(&t) {
                break;
            }
            if let Some((_, v)) = self.map.pop_first() {
                out.push(v);
            }
        }
        out
    }
}
