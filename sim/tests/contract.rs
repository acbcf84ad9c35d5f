//! The emitted events obey the wire contract (EVENTS.md).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rliv_sim::policies::OraclePolicy;
use rliv_sim::{ActionKind, RoundEvents, RoundReport, SimConfig, Simulator};

const WINDOW: i64 = 1_800_000;

fn reports() -> (SimConfig, Vec<RoundReport>) {
    let mut cfg = SimConfig::default();
    cfg.world.n_users = 500;
    // More duplicates than by default, so the test sees them.
    cfg.events.dup_exposure_frac = 0.01;
    cfg.events.dup_action_frac = 0.01;
    let mut sim = Simulator::new(cfg.clone(), 3).expect("valid config");
    let reports = (0..2).map(|_| sim.run_round(&mut OraclePolicy)).collect();
    (cfg, reports)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rliv-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn actions_match_exposures_within_the_window() {
    let (cfg, reports) = reports();
    let mut follows: HashSet<(u64, u64)> = HashSet::new();
    let mut prev_end = i64::MIN;
    for r in &reports {
        let ev = &r.events;
        assert!(ev.exposures.len() > 10_000 && ev.actions.len() > 5_000);
        let mut by_key: HashMap<(u64, u64), &rliv_sim::Exposure> = HashMap::new();
        let mut positions: HashMap<u64, (u64, Vec<u32>)> = HashMap::new();
        let mut dup_exposures = 0;
        for e in &ev.exposures {
            assert!(e.ts_ms >= r.start_ms && e.ts_ms < r.end_ms && e.ts_ms > prev_end);
            assert_eq!(e.user_feats.len(), 4);
            assert_eq!(e.item_feats.len(), 3);
            if let Some(old) = by_key.insert((e.request_id, e.item_id), e) {
                assert_eq!(
                    old, e,
                    "a repeated (request_id, item_id) is an identical duplicate"
                );
                dup_exposures += 1;
                continue;
            }
            let p = positions.entry(e.request_id).or_insert((e.user_id, vec![]));
            assert_eq!(p.0, e.user_id, "a request belongs to one user");
            p.1.push(e.position);
        }
        assert!(dup_exposures > 0);
        for (_, (_, mut pos)) in positions {
            pos.sort_unstable();
            // A prefix of the slate: the user may leave mid-slate.
            assert_eq!(pos, (0..pos.len() as u32).collect::<Vec<_>>());
            assert!(pos.len() <= cfg.session.k);
        }
        let mut seen: HashSet<(u64, u64, ActionKind, i64, u64)> = HashSet::new();
        let mut kinds: HashMap<(u64, u64), Vec<ActionKind>> = HashMap::new();
        let mut dup_actions = 0;
        for a in &ev.actions {
            let e = by_key
                .get(&(a.request_id, a.item_id))
                .unwrap_or_else(|| panic!("orphan action {a:?}"));
            assert_eq!(a.user_id, e.user_id);
            assert!(
                a.ts_ms >= e.ts_ms && a.ts_ms <= e.ts_ms + WINDOW,
                "{a:?} vs {e:?}"
            );
            assert!(a.ts_ms < r.end_ms);
            match a.action {
                ActionKind::Click | ActionKind::Follow => assert_eq!(a.value, 1.0),
                ActionKind::Watch => assert!(a.value >= 0.0 && a.value <= 180.0),
                ActionKind::Gift => assert!(a.value > 0.0),
            }
            if !seen.insert((
                a.request_id,
                a.item_id,
                a.action,
                a.ts_ms,
                a.value.to_bits(),
            )) {
                dup_actions += 1;
                continue;
            }
            kinds
                .entry((a.request_id, a.item_id))
                .or_default()
                .push(a.action);
            if a.action == ActionKind::Follow {
                assert!(
                    follows.insert((a.user_id, e.author_id)),
                    "one follow per pair"
                );
            }
        }
        assert!(dup_actions > 0 && dup_actions < ev.actions.len() / 20);
        for (_, k) in kinds {
            let count = |x| k.iter().filter(|&&y| y == x).count();
            assert_eq!(
                count(ActionKind::Click),
                1,
                "an acted-on exposure was clicked once"
            );
            assert_eq!(count(ActionKind::Watch), 1, "every click has one watch");
            assert!(count(ActionKind::Follow) <= 1 && count(ActionKind::Gift) <= 1);
        }
        prev_end = ev
            .exposures
            .iter()
            .map(|e| e.ts_ms)
            .chain(ev.actions.iter().map(|a| a.ts_ms))
            .max()
            .unwrap_or(prev_end);
    }
}

#[test]
fn files_are_sorted_and_use_the_contract_field_names() {
    let (_, reports) = reports();
    let base = temp_dir("files");
    for r in &reports {
        let dir = r.write_events(&base).expect("write");
        assert!(dir.ends_with(format!("round_{:04}", r.round)));
        for (file, keys) in [
            (
                "exposures.jsonl",
                &[
                    "request_id",
                    "user_id",
                    "item_id",
                    "author_id",
                    "ts_ms",
                    "position",
                    "user_feats",
                    "item_feats",
                ][..],
            ),
            (
                "actions.jsonl",
                &[
                    "request_id",
                    "user_id",
                    "item_id",
                    "ts_ms",
                    "action",
                    "value",
                ][..],
            ),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).expect("read");
            let mut last = i64::MIN;
            let mut lines = 0;
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json line");
                let obj = v.as_object().expect("object");
                let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
                let mut want = keys.to_vec();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want);
                let ts = obj["ts_ms"].as_i64().expect("ts_ms is an integer");
                assert!(ts >= last, "{file} is sorted by ts_ms");
                last = ts;
                if let Some(a) = obj.get("action") {
                    let a = a.as_str().expect("action is a string");
                    assert!(["click", "watch", "follow", "gift"].contains(&a));
                }
                lines += 1;
            }
            assert!(lines > 0);
        }
        let back = RoundEvents::read_dir(&dir, r.round).expect("read back");
        assert_eq!(
            back, r.events,
            "the files hold exactly the in-memory events"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
