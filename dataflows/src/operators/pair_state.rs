//! `PairState`: applies closed interactions to the pair counters of this
//! worker's shard and emits ASA transitions, and at commit epochs the values
//! of the pairs changed since the previous commit.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::{AbortHandle, Bundle, Joined, Side, Stash, TransitionBatch};
use crate::pairs::{PairShard, PairSource};

/// What the pair operator produces besides the pair values.
#[derive(Copy, Clone, Debug)]
pub struct TransitionOutputs {
    /// Format JSON lines (a transitions file is written).
    pub lines: bool,
    /// Keep the records (an in-process consumer is attached).
    pub records: bool,
}

pub trait PairState<'scope> {
    /// Applies interactions bundled for the worker that owns their pair
    /// ([`pair_worker`], by the label join); `durable_before` is the
    /// committer's "every epoch below this is in RocksDB".
    fn pair_state<S: PairSource + Send + Sync + 'static>(
        self,
        source: Arc<S>,
        cache_entries: usize,
        durable_before: Arc<AtomicU64>,
        outputs: TransitionOutputs,
        views: Option<crate::views::ViewsConfig>,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Side>>;
}

impl<'scope> PairState<'scope> for Stream<'scope, u64, Vec<Bundle<Joined>>> {
    fn pair_state<S: PairSource + Send + Sync + 'static>(
        self,
        source: Arc<S>,
        cache_entries: usize,
        durable_before: Arc<AtomicU64>,
        outputs: TransitionOutputs,
        views: Option<crate::views::ViewsConfig>,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Side>> {
        // The join bundled its output by pair worker (`pair_worker`).
        let pact = Exchange::new(|b: &Bundle<Joined>| b.to);
        self.unary_frontier(pact, "PairState", move |_cap, _info| {
            let mut shard = PairShard::new(source, cache_entries, durable_before);
            let mut stash = Stash::new();
            move |(input, frontier), output| {
                stash.absorb(input);
                for (cap, bundles) in stash.ready(frontier) {
                    let epoch = *cap.time();
                    let mut session = output.session(&cap);
                    let mut batch = Vec::with_capacity(bundles.iter().map(|b| b.items.len()).sum());
                    // The join sends its window snapshot at commit epochs only:
                    // that is when the changed pairs must go to the committer.
                    let mut commit = false;
                    for item in bundles.into_iter().flat_map(|b| b.items) {
                        match item {
                            Joined::Interaction(i) => batch.push(i),
                            Joined::Side(s) => {
                                commit |= matches!(s, Side::Snapshot(..));
                                session.give(s)
                            }
                        }
                    }
                    if abort.raised() {
                        continue;
                    }
                    if !batch.is_empty() {
                        // Nobody reads transitions: do not build, format or move them.
                        let transitions = outputs.lines || outputs.records;
                        match shard.apply_epoch_with(epoch, batch, transitions, views.as_ref()) {
                            Ok(applied) => {
                                if !applied.facts.is_empty() {
                                    session.give(Side::ViewFacts(applied.facts));
                                }
                                if transitions {
                                    session.give(Side::Transitions(batch_of(
                                        applied.transitions,
                                        outputs,
                                    )));
                                }
                                session.give(Side::Counts(applied.counters));
                            }
                            Err(e) => {
                                abort.raise(format!("reading pair state: {e}"));
                                continue;
                            }
                        }
                    }
                    if commit && shard.dirty() > 0 {
                        session.give(Side::Puts(shard.flush()));
                    }
                }
            }
        })
        .container::<Vec<_>>()
    }
}

/// The global worker index that owns `pair` on `processes` processes of
/// `threads` workers each (timely numbers process `p`'s workers
/// `p * threads ..`): in cluster mode a pair lives on the process of its
/// user ([`rliv_state::user_process`]) and on the worker of its pair hash
/// within that process. With one process: the pair hash over the workers.
pub fn pair_worker(pair: rliv_state::PairKey, processes: usize, threads: u64) -> u64 {
    pair.process(processes) as u64 * threads + pair.shard_hash() % threads
}

fn batch_of(
    transitions: Vec<crate::event::Transition>,
    outputs: TransitionOutputs,
) -> TransitionBatch {
    let mut b = TransitionBatch {
        keys: Vec::with_capacity(transitions.len()),
        ..Default::default()
    };
    if outputs.lines {
        b.lines.reserve(transitions.len() * 260);
        b.ends.reserve(transitions.len());
    }
    for t in &transitions {
        b.keys.push((
            rliv_state::PairKey::new(t.user_id, t.author_id),
            t.ts_ms,
            t.request_id,
            t.item_id,
        ));
        if outputs.lines {
            t.write_jsonl(&mut b.lines);
            b.ends.push(b.lines.len() as u32);
        }
    }
    if outputs.records {
        b.records = transitions;
    }
    b
}
