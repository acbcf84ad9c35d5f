//! Criterion benches of the streaming core's per-record work: parsing,
//! the label join and the pair-state update (ASA).
//!
//! Run: `CARGO_TARGET_DIR=~/.cache/rliv/target cargo bench -p rliv-dataflows --bench operators`
//! End-to-end figures (RocksDB included): `rliv bench replay`, `rliv bench state`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rliv_dataflows::event::{Action, ActionKind, Exposure, Origin, Source};
use rliv_dataflows::input::Chunk;
use rliv_dataflows::join::{JoinOutput, JoinState};
use rliv_dataflows::operators::{parse_chunk, ParsedBundler};
use rliv_dataflows::pairs::{NoPairs, PairShard};
use rliv_dataflows::JoinConfig;

const N: u64 = 16_384;
const T0: i64 = 1_700_000_000_000;

fn exposures() -> Vec<Exposure> {
    (0..N)
        .map(|i| Exposure {
            request_id: i / 6,
            item_id: i,
            ts_ms: T0 + i as i64 * 100,
            user_id: i % 2000,
            author_id: (i * 7919) % 500,
            position: (i % 6) as u32,
            user_feats: [1, 2, 3][..].into(),
            item_feats: [4, 5][..].into(),
            origin: Origin::default(),
        })
        .collect()
}

fn actions() -> Vec<Action> {
    (0..N)
        .map(|i| Action {
            request_id: i / 6,
            item_id: i,
            ts_ms: T0 + i as i64 * 100 + 5_000,
            kind: if i % 3 == 0 {
                ActionKind::Click
            } else {
                ActionKind::Watch
            },
            value: 12.5,
            user_id: i % 2000,
            origin: Origin::default(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("operators");
    g.throughput(Throughput::Elements(N));

    let mut data = Vec::new();
    for e in exposures() {
        data.extend_from_slice(
            format!(
                "{{\"request_id\":{},\"user_id\":{},\"item_id\":{},\"author_id\":{},\"ts_ms\":{},\"position\":{},\"user_feats\":[1,2,3],\"item_feats\":[4,5]}}\n",
                e.request_id, e.user_id, e.item_id, e.author_id, e.ts_ms, e.position
            )
            .as_bytes(),
        );
    }
    let chunk = Chunk {
        source: Some(Source::Exposures),
        first_line: 1,
        data,
        ..Chunk::default()
    };
    g.bench_function("parse_exposures_16k", |b| {
        b.iter(|| {
            // As the job does: straight into per-join-worker bundles.
            let mut out = ParsedBundler::new(2, 0, chunk.source, chunk.data.len() / 100);
            let meta = parse_chunk(&chunk, &mut out);
            out.finish(meta)
        })
    });

    g.bench_function("label_join_16k_exposures_16k_actions", |b| {
        b.iter_batched(
            || {
                (
                    JoinState::new(JoinConfig::default()),
                    exposures(),
                    actions(),
                )
            },
            |(mut j, e, a)| {
                let mut out = JoinOutput::default();
                j.process_epoch(i64::MIN, e, a, &mut out);
                j.advance(i64::MAX, true, &mut out);
                out
            },
            BatchSize::LargeInput,
        )
    });

    let mut j = JoinState::new(JoinConfig::default());
    let mut out = JoinOutput::default();
    j.process_epoch(i64::MIN, exposures(), actions(), &mut out);
    j.advance(i64::MAX, true, &mut out);
    let interactions = out.interactions;
    g.bench_function("pair_state_16k_interactions", |b| {
        b.iter_batched(
            || {
                (
                    PairShard::new(Arc::new(NoPairs), 1 << 20, Arc::new(AtomicU64::new(0))),
                    interactions.clone(),
                )
            },
            |(mut shard, batch)| shard.apply_epoch(1, batch),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
