//! `Views`: the live relationship metrics (see [`crate::views`]) as
//! differential dataflow views over the pair operator's facts.
//!
//! ```text
//! PairState ─Pipeline─> ViewInputs ─┬ sides (passed on) ───────────────────────────┐
//!   (facts, watermark)              └ (ViewInput, epoch, ±n) ─> count / distinct /  ├─> committer
//!                                       reduce (keyed by author) ─> ViewChanges ────┘
//! ```
//!
//! The view inputs carry a commit epoch as their time (the facts of the
//! epochs between two commits go in together, at the second), so the views
//! of a commit are complete when the frontier passes it, like every other
//! output of the job, and the arrangements inside `count`, `distinct` and
//! `reduce` compact as the epochs advance: with the facts retracted at their
//! event-time expiry, their size follows the windows, not the history.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Concat, Partition};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

use super::{AbortHandle, Side, Stash};
use crate::views::{ViewInput, ViewKey, ViewsConfig, ViewsState};

/// What the views start from: the committed live facts, with the index of
/// the worker that wrote them (every worker's on one process; this
/// process's workers' in a cluster, whose layout cannot change).
#[derive(Clone, Default)]
pub struct ViewsStart {
    pub snapshots: Vec<(u32, Vec<u8>)>,
}

pub trait Views<'scope> {
    /// Turns the facts and watermarks among `self` into the views' changes,
    /// passes every other side on, and adds this worker's live facts at
    /// commit epochs (`Side::ViewsSnapshot`). `processes` places pairs as
    /// the pair operator does (for a restore onto any number of workers).
    fn views(
        self,
        cfg: ViewsConfig,
        processes: usize,
        start: ViewsStart,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Side>>;
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Out {
    Side(Side),
    Input(ViewInput, u64, isize),
}

impl<'scope> Views<'scope> for Stream<'scope, u64, Vec<Side>> {
    fn views(
        self,
        cfg: ViewsConfig,
        processes: usize,
        start: ViewsStart,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Side>> {
        let me = self.scope().index() as u64;
        let peers = self.scope().peers() as u64;
        let threads = (peers / processes.max(1) as u64).max(1);
        let out = self.unary_frontier(Pipeline, "ViewInputs", move |_cap, _info| {
            let mut state = ViewsState::default();
            // The view inputs not yet handed to differential (the committed
            // facts first).
            let mut pending: Vec<(ViewInput, i64)> = Vec::new();
            for (writer, blob) in &start.snapshots {
                // Facts of a pair go to the pair's worker; a writer's partial
                // sums per author (revenue, fans) all go to one worker.
                let mine = u64::from(*writer) % peers == me;
                let r = state.restore(
                    blob,
                    |p| super::pair_state::pair_worker(p, processes, threads) == me,
                    |_| mine,
                    me == 0,
                    &mut pending,
                );
                if let Err(e) = r {
                    abort.raise(format!("the views' committed state does not decode: {e}"));
                }
            }
            let mut stash = Stash::new();
            move |(input, frontier), output| {
                stash.absorb(input);
                for (cap, items) in stash.ready(frontier) {
                    let epoch = *cap.time();
                    let mut session = output.session(&cap);
                    let mut facts = Vec::new();
                    let mut now = None;
                    let mut commit = false;
                    for item in items {
                        match item {
                            Side::ViewFacts(f) => facts.extend(f),
                            Side::Watermark(w) => now = Some(w),
                            other => {
                                commit |= matches!(other, Side::Snapshot(..));
                                session.give(Out::Side(other));
                            }
                        }
                    }
                    state.epoch(&cfg, facts, now, me == 0, &mut pending);
                    // The views advance at commit epochs only: the table is
                    // read and persisted there, and differential's work per
                    // distinct time (a batch per arrangement) would
                    // otherwise be paid at every input chunk.
                    if commit {
                        consolidate(&mut pending);
                        for (v, d) in pending.drain(..) {
                            session.give(Out::Input(v, epoch, d as isize));
                        }
                    }
                    if commit {
                        match state.encode() {
                            Ok(bytes) => {
                                session.give(Out::Side(Side::ViewsSnapshot(me as u32, bytes)))
                            }
                            Err(e) => abort.raise(format!("encoding the views' state: {e}")),
                        }
                    }
                }
            }
        });
        let mut parts = out
            .container::<Vec<Out>>()
            .partition::<timely::container::CapacityContainerBuilder<Vec<Out>>, _, _>(2, |o| {
                (u64::from(matches!(o, Out::Input(..))), o)
            });
        let inputs = parts.pop();
        let sides = parts.pop();
        let (Some(sides), Some(inputs)) = (sides, inputs) else {
            unreachable!("partition returns the streams it was asked for")
        };
        let sides = sides.flat_map(|o| match o {
            Out::Side(s) => Some(s),
            Out::Input(..) => None,
        });
        let inputs: VecCollection<'scope, u64, ViewInput, isize> = inputs
            .flat_map(|o| match o {
                Out::Input(v, t, d) => Some((v, t, d)),
                Out::Side(_) => None,
            })
            .as_collection();
        let changes = view_changes(inputs);
        sides.concat(changes)
    }
}

/// Sums the diffs of equal records and drops those that cancel.
fn consolidate(v: &mut Vec<(ViewInput, i64)>) {
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(ViewInput, i64)> = Vec::with_capacity(v.len());
    for (k, d) in v.drain(..) {
        match out.last_mut() {
            Some((last, n)) if *last == k => *n += d,
            _ => out.push((k, d)),
        }
    }
    out.retain(|(_, d)| *d != 0);
    *v = out;
}

/// `reduce` logic: the sum of the amounts with their multiplicities.
fn sum_milli<K>(_: &K, vals: &[(&i64, isize)], out: &mut Vec<(i64, isize)>) {
    let s: i64 = vals.iter().map(|(m, n)| **m * *n as i64).sum();
    out.push((s, 1));
}

/// The views over their inputs, as `Side::ViewChanges` at each epoch.
fn view_changes<'scope>(
    input: VecCollection<'scope, u64, ViewInput, isize>,
) -> Stream<'scope, u64, Vec<Side>> {
    let deep = input.clone().flat_map(|v| match v {
        ViewInput::Deep(a, u) => Some((a, u)),
        _ => None,
    });
    let deep_by_author = deep
        .clone()
        .map(|(a, _)| a)
        .count()
        .map(|(a, n)| (ViewKey::DeepPairs(a), n as i64));
    let deep_total = deep
        .map(|_| ())
        .count()
        .map(|((), n)| (ViewKey::DeepPairsTotal, n as i64));
    let gifted = input
        .clone()
        .flat_map(|v| match v {
            ViewInput::Gift(a, u) => Some((a, u)),
            _ => None,
        })
        .distinct();
    let gifted_by_author = gifted
        .clone()
        .map(|(a, _)| a)
        .count()
        .map(|(a, n)| (ViewKey::WeeklyGiftedUsers(a), n as i64));
    let gifted_total = gifted
        .map(|(_, u)| u)
        .distinct()
        .map(|_| ())
        .count()
        .map(|((), n)| (ViewKey::WeeklyGiftedUsersTotal, n as i64));
    let revenue = input.clone().flat_map(|v| match v {
        ViewInput::Revenue(a, m) => Some((a, m)),
        _ => None,
    });
    let revenue_by_author = revenue
        .clone()
        .reduce(sum_milli)
        .map(|(a, s)| (ViewKey::RevenueMilli(a), s));
    let revenue_total = revenue
        .map(|(_, m)| ((), m))
        .reduce(sum_milli)
        .map(|((), s)| (ViewKey::RevenueMilliTotal, s));
    let fans = input.clone().flat_map(|v| match v {
        ViewInput::Fan(a, d) => Some((a, d)),
        _ => None,
    });
    let fans_by_day = fans
        .clone()
        .count()
        .map(|((a, d), n)| (ViewKey::NewFans(a, d), n as i64));
    let fans_total = fans
        .map(|_| ())
        .count()
        .map(|((), n)| (ViewKey::NewFansTotal, n as i64));
    let now = input.flat_map(|v| match v {
        ViewInput::Now(t) => Some((ViewKey::AsOfMs, t)),
        _ => None,
    });
    let all = deep_by_author
        .concat(deep_total)
        .concat(gifted_by_author)
        .concat(gifted_total)
        .concat(revenue_by_author)
        .concat(revenue_total)
        .concat(fans_by_day)
        .concat(fans_total)
        .concat(now);
    all.inner
        .unary(Pipeline, "ViewChanges", |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut by_time: std::collections::BTreeMap<u64, Vec<(ViewKey, i64, i64)>> =
                        Default::default();
                    for ((k, v), t, d) in data.drain(..) {
                        by_time.entry(t).or_default().push((k, v, d as i64));
                    }
                    for (t, changes) in by_time {
                        output
                            .session(&cap.delayed(&t, 0))
                            .give(Side::ViewChanges(changes));
                    }
                });
            }
        })
        .container::<Vec<Side>>()
}
