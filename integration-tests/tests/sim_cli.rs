//! `rliv sim` through the real binary on a tiny world: the outputs it
//! promises (summary, per-seed runs, paired comparisons, the learning-curve
//! PNG) are written and agree with each other, and a baseline's results are
//! the same on a second invocation (each seed is one deterministic world).

mod common;

use common::{ok, rliv_bin, s};
use std::path::Path;
use std::process::Command;

const ROUNDS: usize = 2;
const SEEDS: usize = 2;

fn sim(dir: &Path, out: &str) -> serde_json::Value {
    let world = dir.join("world.toml");
    std::fs::write(
        &world,
        "[world]\nn_users = 150\nn_authors = 30\nn_items = 200\n",
    )
    .expect("world");
    let out_dir = dir.join(out);
    let run = ok(Command::new(rliv_bin())
        .args([
            "sim",
            "-q",
            "--json",
            "--sim-config",
            s(&world),
            "--policies",
            "rliv,item_watch",
            "--seeds",
            &SEEDS.to_string(),
            "--warmup-rounds",
            "1",
            "--rounds",
            &ROUNDS.to_string(),
            "--out",
            s(&out_dir),
        ])
        .env("RLIV__LEARNER__ID_ROWS", "8192")
        .env("RLIV__LEARNER__FEATURE_ROWS", "1024")
        .output()
        .expect("rliv sim"));
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).expect("--json");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out_dir.join(name)).expect(name)).expect(name)
    };
    let summary = read("summary.json");
    assert_eq!(
        printed["summary"], summary,
        "--json prints what summary.json holds"
    );
    let png = std::fs::read(out_dir.join("learning_curve.png")).expect("learning_curve.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().expect("width")),
        u32::from_be_bytes(png[20..24].try_into().expect("height")),
    );
    assert_eq!((w, h), (1200, 500));
    serde_json::json!({"summary": summary, "runs": read("runs.json"), "paired": read("paired.json")})
}

#[test]
fn sim_writes_consistent_results_and_baselines_are_deterministic() {
    let t = tempfile::tempdir().expect("tmp");
    let first = sim(t.path(), "a");
    let summary = first["summary"].as_array().expect("summary list");
    let names: Vec<&str> = summary
        .iter()
        .filter_map(|p| p["policy"].as_str())
        .collect();
    assert_eq!(names, ["rliv", "item_watch"]);
    for p in summary {
        assert_eq!(p["seeds"].as_u64(), Some(SEEDS as u64), "{p}");
        assert_eq!(
            p["curve_session_length"].as_array().map(Vec::len),
            Some(ROUNDS),
            "{p}"
        );
    }
    let runs = first["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2 * SEEDS);
    for r in runs {
        let rounds = r["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), ROUNDS, "{}", r["policy"]);
        // The total is the sum of its days.
        let sessions: u64 = rounds.iter().filter_map(|m| m["sessions"].as_u64()).sum();
        assert_eq!(
            r["total"]["sessions"].as_u64(),
            Some(sessions),
            "{}",
            r["policy"]
        );
        assert!(sessions > 0);
    }
    // The learned policy trained: it has updates; the baseline none.
    let updates = |p: &str| {
        runs.iter()
            .filter(|r| r["policy"] == p)
            .map(|r| r["updates"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(updates("rliv") > 0);
    assert_eq!(updates("item_watch"), 0);
    // Paired comparisons: rliv against item_watch, per metric, over both seeds.
    let paired = first["paired"].as_array().expect("paired");
    assert!(paired
        .iter()
        .any(|x| x["policy"] == "rliv" && x["baseline"] == "item_watch" && x["seeds"] == SEEDS));

    // Same worlds again: the baseline's every figure repeats exactly.
    let second = sim(t.path(), "b");
    let baseline = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["policy"] == "item_watch")
            .map(|r| serde_json::json!([r["seed"], r["rounds"], r["total"]]))
            .collect()
    };
    assert_eq!(baseline(&first), baseline(&second));
}
