//! `LabelJoin`: attributes actions to exposures per the contract and emits
//! exactly one labeled interaction per exposure (see [`crate::join`]).

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::{AbortHandle, DeadLetter, Joined, Meta, Parsed, Side, Stash};
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
    fn label_join(
        self,
        cfg: JoinConfig,
        drain_at_end: bool,
        start: JoinStart,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Joined>>;
}

impl<'scope> LabelJoin<'scope> for Stream<'scope, u64, Vec<Parsed>> {
    fn label_join(
        self,
        cfg: JoinConfig,
        drain_at_end: bool,
        start: JoinStart,
        abort: AbortHandle,
    ) -> Stream<'scope, u64, Vec<Joined>> {
        let me = self.scope().index() as u64;
        let peers = self.scope().peers() as u64;
        let route = move |p: &Parsed| match p {
            Parsed::Exposure(e) => exposure_route(e.request_id, e.item_id),
            Parsed::Action(a) => exposure_route(a.request_id, a.item_id),
            Parsed::Meta(m) => u64::from(m.target),
            Parsed::Side(_) => me,
        };
        self.unary_frontier(Exchange::new(route), "LabelJoin", move |_cap, _info| {
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
            move |(input, frontier), output| {
                stash.absorb(input);
                for (cap, items) in stash.ready(frontier) {
                    let mut session = output.session(&cap);
                    let mut exposures = Vec::new();
                    let mut actions = Vec::new();
                    let mut meta = Meta::default();
                    for item in items {
                        match item {
                            Parsed::Exposure(e) => exposures.push(e),
                            Parsed::Action(a) => actions.push(a),
                            Parsed::Meta(m) => meta = m,
                            Parsed::Side(s) => session.give(Joined::Side(s)),
                        }
                    }
                    let mut out = JoinOutput::default();
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
                    if start.views {
                        session.give(Joined::Side(Side::Watermark(wm.current(lateness))));
                    }
                    session.give_iterator(out.interactions.into_iter().map(Joined::Interaction));
                    for r in out.rejected {
                        session.give(Joined::Side(Side::Dead(dead_letter(r, &cfg))));
                    }
                    if !out.counters.is_zero() {
                        session.give(Joined::Side(Side::Counts(out.counters)));
                    }
                    if meta.commit {
                        match encode_snapshot(&wm, &join.snapshot()) {
                            Ok(bytes) => {
                                session.give(Joined::Side(Side::Snapshot(me as u32, bytes)))
                            }
                            Err(e) => abort.raise(format!("encoding the window snapshot: {e}")),
                        }
                    }
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
