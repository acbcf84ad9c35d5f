//! `LabelJoin`: attributes actions to exposures per the contract and emits
//! exactly one labeled interaction per exposure (see [`crate::join`]).

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::pair_state::pair_worker;
use super::{AbortHandle, Bundle, Bundler, DeadLetter, Joined, ParsedBundle, Side, Stash};
use crate::config::JoinConfig;
use crate::event::{exposure_route, Action, Exposure, Source};
use crate::join::{JoinOutput, JoinSnapshot, JoinState, Rejected, Watermark};
use crate::metrics::Reason;

/// What a join worker starts from: the window snapshots of the last commit.
#[derive(Clone, Default)]
pub struct JoinStart {
    /// Every worker's snapshot blob of the last commit (any worker count).
    pub snapshots: Vec<Vec<u8>>,
    /// A new input run: sources that were exhausted are read again.
    pub reopen: bool,
    /// Where worker 0 publishes the watermark after each epoch (progress, metrics).
    pub watermark: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Send the watermark after each epoch to this worker's views (`Side::Watermark`).
    pub views: bool,
}

/// Why a window snapshot could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Encode(bincode::error::EncodeError),
    #[error("window snapshot does not decode: {0}")]
    Decode(bincode::error::DecodeError),
}

/// Encodes a worker's window and the watermark for a commit.
pub fn encode_snapshot(wm: &Watermark, snap: &JoinSnapshot) -> Result<Vec<u8>, SnapshotError> {
    bincode::serde::encode_to_vec((wm, snap), bincode::config::standard())
        .map_err(SnapshotError::Encode)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<(Watermark, JoinSnapshot), SnapshotError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(SnapshotError::Decode)
}

pub trait LabelJoin<'scope> {
    /// Joins exposures and actions routed by `(request_id, item_id)`.
    /// Its output is bundled by the pair worker of each interaction
    /// ([`super::pair_state::pair_worker`] over `processes`); side records
    /// stay on this worker.
    fn label_join(
        self,
        cfg: JoinConfig,
        drain_at_end: bool,
        processes: usize,
        start: JoinStart,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Bundle<Joined>>>;
}

impl<'scope> LabelJoin<'scope> for Stream<'scope, u64, Vec<ParsedBundle>> {
    fn label_join(
        self,
        cfg: JoinConfig,
        drain_at_end: bool,
        processes: usize,
        start: JoinStart,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Bundle<Joined>>> {
        let me = self.scope().index() as u64;
        let peers = self.scope().peers() as u64;
        let processes = processes.max(1);
        let threads = (peers as usize / processes).max(1) as u64;
        let pair_route = move |j: &Joined| match j {
            Joined::Interaction(i) => pair_worker(i.exposure.pair(), processes, threads),
            Joined::Side(_) => me,
        };
        let pact = Exchange::new(|b: &ParsedBundle| b.to);
        self.unary_frontier(pact, "LabelJoin", move |_cap, _info| {
            let lateness = cfg.allowed_lateness_ms;
            let mut join = JoinState::new(cfg.clone());
            let mut wm = Watermark::default();
            for (i, blob) in start.snapshots.iter().enumerate() {
                match decode_snapshot(blob) {
                    Ok((w, snap)) => {
                        if i == 0 {
                            wm = w;
                        }
                        join.restore(snap, |(r, it)| exposure_route(r, it) % peers == me);
                    }
                    Err(e) => abort.raise(e.to_string()),
                }
            }
            if start.reopen {
                wm.reopen();
            }
            let mut stash = Stash::new();
            // Kept across epochs, so its buffers are allocated once.
            let mut out = JoinOutput::default();
            move |(input, frontier), output| {
                stash.absorb(input);
                for (cap, bundles) in stash.ready(frontier) {
                    let mut session = output.session(&cap);
                    // One chunk, parsed by one worker, is one bundle per
                    // join worker; more are merged in the order they came.
                    let mut bundles = bundles.into_iter();
                    let Some(mut epoch) = bundles.next() else {
                        continue;
                    };
                    for b in bundles {
                        epoch.exposures.extend(b.exposures);
                        epoch.actions.extend(b.actions);
                        epoch.sides.extend(b.sides);
                        epoch.meta = b.meta;
                    }
                    let ParsedBundle {
                        exposures,
                        actions,
                        meta,
                        sides,
                        ..
                    } = epoch;
                    join.process_epoch(wm.current(lateness), exposures, actions, &mut out);
                    if let Some(source) = meta.source {
                        wm.observe(source, meta.max_ts, false);
                    }
                    for s in Source::ALL {
                        wm.observe(s, None, meta.exhausted_after[s as usize]);
                    }
                    join.advance(
                        wm.current(lateness),
                        meta.last && drain_at_end && !meta.stopped,
                        &mut out,
                    );
                    if me == 0 {
                        start
                            .watermark
                            .store(wm.current(lateness), std::sync::atomic::Ordering::Relaxed);
                    }
                    // Records go straight into their pair worker's bundle.
                    let expected = sides.len() + out.interactions.len() + out.rejected.len() + 3;
                    let mut sent = Bundler::new(peers as usize, expected, pair_route);
                    for s in sides {
                        sent.push(Joined::Side(s));
                    }
                    if start.views {
                        sent.push(Joined::Side(Side::Watermark(wm.current(lateness))));
                    }
                    for i in out.interactions.drain(..) {
                        sent.push(Joined::Interaction(i));
                    }
                    for r in out.rejected.drain(..) {
                        sent.push(Joined::Side(Side::Dead(dead_letter(r, &cfg))));
                    }
                    let counters = std::mem::take(&mut out.counters);
                    if !counters.is_zero() {
                        sent.push(Joined::Side(Side::Counts(counters)));
                    }
                    if meta.commit {
                        match encode_snapshot(&wm, &join.snapshot()) {
                            Ok(bytes) => sent.push(Joined::Side(Side::Snapshot(me as u32, bytes))),
                            Err(e) => abort.raise(format!("encoding the window snapshot: {e}")),
                        }
                    }
                    session.give_iterator(sent.finish().into_iter());
                }
            }
        })
        .container::<Vec<_>>()
    }
}

fn dead_letter(r: Rejected, cfg: &JoinConfig) -> DeadLetter {
    match r {
        Rejected::Exposure(reason, e) => DeadLetter {
            origin: e.origin,
            reason,
            detail: format!(
                "exposure ({}, {}) at ts_ms {} arrived after its window closed (window_ms {}, allowed_lateness_ms {})",
                e.request_id, e.item_id, e.ts_ms, cfg.window_ms, cfg.allowed_lateness_ms
            ),
            raw: exposure_json(&e),
        },
        Rejected::Action(reason, a) => {
            let detail = match reason {
                Reason::LateAction => format!("exposure ({}, {}) had already closed", a.request_id, a.item_id),
                Reason::OrphanAction => format!("no exposure ({}, {}) arrived in time", a.request_id, a.item_id),
                Reason::OutOfWindow => format!(
                    "ts_ms {} is outside [exposure.ts_ms, exposure.ts_ms + {}] of exposure ({}, {})",
                    a.ts_ms, cfg.window_ms, a.request_id, a.item_id
                ),
                Reason::UserMismatch => {
                    format!("user_id {} differs from exposure ({}, {})'s", a.user_id, a.request_id, a.item_id)
                }
                other => other.name().to_string(),
            };
            DeadLetter { origin: a.origin, reason, detail, raw: action_json(&a) }
        }
    }
}

fn exposure_json(e: &Exposure) -> String {
    serde_json::json!({
        "request_id": e.request_id, "user_id": e.user_id, "item_id": e.item_id, "author_id": e.author_id,
        "ts_ms": e.ts_ms, "position": e.position, "user_feats": e.user_feats, "item_feats": e.item_feats,
    })
    .to_string()
}

fn action_json(a: &Action) -> String {
    serde_json::json!({
        "request_id": a.request_id, "user_id": a.user_id, "item_id": a.item_id, "ts_ms": a.ts_ms,
        "action": a.kind.name(), "value": a.value,
    })
    .to_string()
}
