//! The replay job against a tiny in-memory reference model of the contract,
//! over random event sets delivered in random orders within the allowed
//! lateness, at 1, 2 and 3 workers: identical transitions, identical dump.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use rliv_dataflows::{run_replay, JoinConfig, ReplayConfig, ReplayRequest};
use rliv_state::{Store, StoreOptions};

const WINDOW: i64 = 1_000;
const LATENESS: i64 = 200;

#[derive(Clone, Debug)]
struct Exp {
    req: u64,
    item: u64,
    user: u64,
    author: u64,
    ts: i64,
    feats: Vec<u32>,
}

#[derive(Clone, Debug)]
struct Act {
    req: u64,
    item: u64,
    user: u64,
    ts: i64,
    kind: &'static str,
    value: f64,
}

const KINDS: [&str; 4] = ["click", "watch", "follow", "gift"];

/// The contract, written as directly as possible.
fn reference(exps: &[Exp], acts: &[Act]) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    // Exposures: the first of each (request_id, item_id) counts.
    let mut by_key: BTreeMap<(u64, u64), &Exp> = BTreeMap::new();
    for e in exps {
        by_key.entry((e.req, e.item)).or_insert(e);
    }
    // Rewards per exposure from its attributed, deduplicated actions.
    let mut labeled = Vec::new();
    for (key, e) in &by_key {
        let mut seen: Vec<(i64, usize, u64)> = Vec::new();
        for a in acts {
            if (a.req, a.item) == *key && a.user == e.user && e.ts <= a.ts && a.ts <= e.ts + WINDOW
            {
                let id = (
                    a.ts,
                    KINDS.iter().position(|k| *k == a.kind).unwrap(),
                    a.value.to_bits(),
                );
                if !seen.contains(&id) {
                    seen.push(id);
                }
            }
        }
        seen.sort();
        let (mut click, mut watch, mut follow, mut gift) = (0.0, 0.0, 0.0, 0.0);
        for (_, kind, bits) in seen {
            let v = f64::from_bits(bits);
            match kind {
                0 => click = 1.0,
                1 => watch += v,
                2 => follow = 1.0,
                _ => gift += v,
            }
        }
        labeled.push((*e, [click, watch, follow, gift]));
    }
    // Pairs: interactions in (ts, request_id, item_id) order, Eq. 4.
    labeled.sort_by_key(|(e, _)| (e.user, e.author, e.ts, e.req, e.item));
    let mut pairs: BTreeMap<(u64, u64), ([u64; 5], f64, f64, i64, i64)> = BTreeMap::new();
    let mut transitions = Vec::new();
    // A transition's state: the counters and the additive fields (totals,
    // first and last closed exposure times; 0 before the pair's first).
    let snapshot = |p: &([u64; 5], f64, f64, i64, i64)| {
        let c = &p.0;
        let (first, last) = if c[0] == 0 { (0, 0) } else { (p.3, p.4) };
        serde_json::json!({"exposures": c[0], "clicks": c[1], "watches": c[2], "follows": c[3], "gifts": c[4],
            "watch_sec_total": p.1, "gift_total": p.2, "first_ts_ms": first, "last_ts_ms": last})
    };
    for (e, r) in labeled {
        let p = pairs
            .entry((e.user, e.author))
            .or_insert(([0; 5], 0.0, 0.0, e.ts, e.ts));
        let before = snapshot(p);
        p.0[0] += 1;
        for i in 0..4 {
            if r[i] > 0.0 {
                p.0[i + 1] += 1;
            }
        }
        p.1 += r[1];
        p.2 += r[3];
        p.4 = e.ts;
        transitions.push(serde_json::json!({
            "request_id": e.req, "user_id": e.user, "author_id": e.author, "item_id": e.item, "ts_ms": e.ts,
            "user_feats": e.feats, "item_feats": [],
            "state": before,
            "reward": {"click": r[0], "watch": r[1], "follow": r[2], "gift": r[3]},
            "next_state": snapshot(p),
        }));
    }
    let dump = pairs
        .into_iter()
        .map(|((u, a), (c, w, g, first, last))| {
            serde_json::json!({
                "user_id": u, "author_id": a, "exposures": c[0], "clicks": c[1], "watches": c[2],
                "follows": c[3], "gifts": c[4], "watch_sec_total": w, "gift_total": g,
                "first_ts_ms": first, "last_ts_ms": last,
            })
        })
        .collect();
    (transitions, dump)
}

/// Writes events in arrival order: by `ts + jitter`, jitter in [0, LATENESS).
fn write_arrivals(path: &Path, mut lines: Vec<(i64, String)>) {
    lines.sort_by_key(|(at, _)| *at);
    let mut f = std::fs::File::create(path).unwrap();
    for (_, l) in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn exp_line(e: &Exp) -> String {
    serde_json::json!({"request_id": e.req, "user_id": e.user, "item_id": e.item, "author_id": e.author,
        "ts_ms": e.ts, "user_feats": e.feats})
    .to_string()
}

fn act_line(a: &Act) -> String {
    serde_json::json!({"request_id": a.req, "user_id": a.user, "item_id": a.item, "ts_ms": a.ts,
        "action": a.kind, "value": a.value})
    .to_string()
}

/// JSON numbers compared by value (`1` and `1.0` are the same number).
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Transitions come out epoch by epoch; within a pair they are in the
/// contract's order. Compare them in (user, author, ts, request, item) order.
fn sorted(mut v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let key = |t: &serde_json::Value| {
        ["user_id", "author_id", "ts_ms", "request_id", "item_id"]
            .map(|k| t[k].as_f64().unwrap_or(0.0) as i64)
    };
    v.sort_by_key(key);
    v
}

fn to_values(bytes: &[u8]) -> Vec<serde_json::Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| normalize(serde_json::from_slice(l).unwrap()))
        .collect()
}

fn replay(
    dir: &Path,
    workers: usize,
    chunk_lines: usize,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, Vec<u8>) {
    let state = dir.join(format!("state-{workers}"));
    let tpath = dir.join(format!("t-{workers}.jsonl"));
    let mut req = ReplayRequest::new(
        vec![dir.join("e.jsonl")],
        vec![dir.join("a.jsonl")],
        state.clone(),
    );
    req.transitions = Some(tpath.clone());
    req.join = JoinConfig {
        window_ms: WINDOW,
        allowed_lateness_ms: LATENESS,
        late_retention_ms: WINDOW,
    };
    req.replay = ReplayConfig {
        workers,
        chunk_lines,
        commit_interval_ms: 0,
        ..ReplayConfig::default()
    };
    req.store = StoreOptions {
        sync_commits: false,
        block_cache_mb: 8,
        ..StoreOptions::default()
    };
    run_replay(req).unwrap();
    let bytes = std::fs::read(&tpath).unwrap();
    let store = Store::open_read_only(&state).unwrap();
    let mut dump = Vec::new();
    for item in store.scan_pairs(None).unwrap() {
        let (k, c) = item.unwrap();
        rliv_state::json::write_pair_jsonl(&mut dump, &k, &c);
    }
    (sorted(to_values(&bytes)), to_values(&dump), bytes)
}

fn events() -> impl Strategy<Value = (Vec<Exp>, Vec<Act>, Vec<i64>, Vec<i64>)> {
    let exp = (
        0u64..12,
        0u64..3,
        0u64..3,
        0u64..3,
        0i64..5_000,
        proptest::collection::vec(0u32..4, 0..3),
    );
    proptest::collection::vec(exp, 1..25).prop_flat_map(|raw| {
        // One exposure per (request, item): fields derive from the key, so
        // repeats of a key are exact duplicates (the contract's duplicates).
        let exps: Vec<Exp> = raw
            .iter()
            .map(|(req, item, _, _, _, _)| {
                let (_, _, user, author, ts, feats) = raw
                    .iter()
                    .find(|r| r.0 == *req && r.1 == *item)
                    .cloned()
                    .unwrap();
                Exp {
                    req: *req,
                    item: *item,
                    user,
                    author,
                    ts: 1_000_000 + ts,
                    feats,
                }
            })
            .collect();
        let n = exps.len();
        let act = (0..n + 2, 0usize..4, -100i64..1_300, 0u32..6, any::<bool>());
        (Just(exps), proptest::collection::vec(act, 0..40)).prop_flat_map(|(exps, raw_acts)| {
            let acts: Vec<Act> = raw_acts
                .iter()
                .map(|(i, k, dt, v, wrong_user)| match exps.get(*i) {
                    Some(e) => Act {
                        req: e.req,
                        item: e.item,
                        user: if *wrong_user && *v == 0 {
                            e.user + 7
                        } else {
                            e.user
                        },
                        ts: e.ts + dt,
                        kind: KINDS[*k],
                        value: if *k == 3 {
                            0.5 + f64::from(*v)
                        } else {
                            f64::from(*v) * 0.1
                        },
                    },
                    // An orphan.
                    None => Act {
                        req: 900 + *i as u64,
                        item: 1,
                        user: 1,
                        ts: 1_000_000 + dt,
                        kind: "click",
                        value: 1.0,
                    },
                })
                .collect();
            let ne = exps.len();
            let na = acts.len();
            (
                Just(exps),
                Just(acts.clone()),
                proptest::collection::vec(0i64..LATENESS, ne),
                proptest::collection::vec(0i64..LATENESS, na),
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn replay_matches_the_reference_model_at_1_2_3_workers(
        (exps, acts, ej, aj) in events(),
        chunk_lines in 1usize..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_arrivals(&dir.path().join("e.jsonl"), exps.iter().zip(&ej).map(|(e, j)| (e.ts + j, exp_line(e))).collect());
        // Duplicated actions are written twice, each with its own delay.
        let mut lines: Vec<(i64, String)> = acts.iter().zip(&aj).map(|(a, j)| (a.ts + j, act_line(a))).collect();
        if let Some((a, j)) = acts.first().zip(aj.last()) {
            lines.push((a.ts + j, act_line(a)));
        }
        write_arrivals(&dir.path().join("a.jsonl"), lines);
        let (want_t, want_d) = reference(&exps, &acts);
        let want_t = sorted(want_t.into_iter().map(normalize).collect());
        let want_d: Vec<_> = want_d.into_iter().map(normalize).collect();
        let mut first_bytes = None;
        for workers in 1..=3 {
            let (t, d, bytes) = replay(dir.path(), workers, chunk_lines);
            prop_assert_eq!(&t, &want_t, "transitions at {} workers", workers);
            prop_assert_eq!(&d, &want_d, "dump at {} workers", workers);
            // Byte-identical output whatever the worker count.
            match &first_bytes {
                None => first_bytes = Some(bytes),
                Some(b) => prop_assert!(b == &bytes, "transition file differs at {} workers", workers),
            }
        }
    }
}
