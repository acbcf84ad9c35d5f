//! The live relationship metrics (`[views]`, `rliv views`) against a
//! brute-force recomputation from the job's transitions, at 1, 2 and 3
//! workers, on two processes, and across a kill and resume.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ok, rliv_bin, s};
use serde_json::Value;

const DAY: i64 = 86_400_000;
/// Short windows over the generated week, so that pairs stop being deep,
/// gifts leave the window and fan days are dropped within the run.
const MIN_WATCHES: u64 = 2;
const DEEP_DAYS: i64 = 1;
const GIFT_DAYS: i64 = 1;
const FAN_DAYS: i64 = 2;

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("RLIV__VIEWS__DEEP_MIN_WATCHES", MIN_WATCHES.to_string()),
        ("RLIV__VIEWS__DEEP_RECENT_DAYS", DEEP_DAYS.to_string()),
        ("RLIV__VIEWS__GIFT_WINDOW_DAYS", GIFT_DAYS.to_string()),
        ("RLIV__VIEWS__FANS_KEEP_DAYS", FAN_DAYS.to_string()),
        ("RLIV__REPLAY__COMMIT_INTERVAL_MS", "0".into()),
        ("RLIV__REPLAY__CHUNK_LINES", "900".into()),
        ("RLIV__STATE__SYNC_COMMITS", "false".into()),
    ]
}

fn rliv(args: &[String], failpoint: Option<&str>) -> Output {
    let mut c = Command::new(rliv_bin());
    c.args(args).envs(env());
    if let Some(f) = failpoint {
        c.env("RLIV_FAILPOINT", f);
    }
    c.output().expect("run rliv")
}

fn data(dir: &Path, seed: u64) -> PathBuf {
    let out = dir.join(format!("data-{seed}"));
    ok(Command::new(rliv_bin())
        .args([
            "gen",
            "--out",
            s(&out),
            "--exposures",
            "40000",
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .expect("gen"));
    out
}

fn replay_args(data: &Path, state: &Path, workers: usize) -> Vec<String> {
    vec![
        "replay".into(),
        "-q".into(),
        "--exposures".into(),
        s(&data.join("exposures.jsonl")).into(),
        "--actions".into(),
        s(&data.join("actions.jsonl")).into(),
        "--state".into(),
        s(state).into(),
        "--transitions".into(),
        format!("{}.transitions.jsonl", s(state)),
        "-w".into(),
        workers.to_string(),
    ]
}

/// The views as `rliv views` prints them: totals and per-author lines.
#[derive(Debug, PartialEq)]
struct Views {
    as_of: i64,
    totals: [i64; 4],
    /// author -> (deep pairs, weekly gifted users, revenue, fans by day)
    authors: BTreeMap<u64, (i64, i64, i64, Vec<(i64, i64)>)>,
}

fn printed(state: &Path) -> Views {
    let out = ok(Command::new(rliv_bin())
        .args(["views", "--state", s(state)])
        .output()
        .expect("views"));
    let mut lines = std::str::from_utf8(&out.stdout).expect("utf-8").lines();
    let t: Value = serde_json::from_str(lines.next().expect("a totals line")).expect("json");
    let t = &t["totals"];
    let n = |v: &Value, k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"));
    let mut authors = BTreeMap::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).expect("json");
        let fans: Vec<(i64, i64)> = v["new_fans"]
            .as_array()
            .expect("new_fans")
            .iter()
            .map(|p| (p[0].as_i64().expect("day"), p[1].as_i64().expect("n")))
            .collect();
        let row = (
            n(&v, "deep_pairs"),
            n(&v, "weekly_gifted_users"),
            n(&v, "revenue_milli"),
            fans,
        );
        if row != (0, 0, 0, Vec::new()) {
            authors.insert(v["author_id"].as_u64().expect("author_id"), row);
        }
    }
    Views {
        as_of: n(t, "as_of_ms"),
        totals: [
            n(t, "deep_pairs"),
            n(t, "weekly_gifted_users"),
            n(t, "revenue_milli"),
            n(t, "new_fans"),
        ],
        authors,
    }
}

/// What the views must be at `as_of`, from the transitions alone.
fn brute_force(transitions: &Path, as_of: i64) -> (Views, [usize; 3]) {
    let text = std::fs::read_to_string(transitions).expect("transitions");
    // The pair's latest transition (its counters only grow) and every gift and first follow.
    let mut last: BTreeMap<(u64, u64), (u64, bool, i64)> = BTreeMap::new();
    let mut gifts: Vec<(u64, u64, i64, i64)> = Vec::new();
    let mut fans: Vec<(u64, i64)> = Vec::new();
    for l in text.lines() {
        let t: Value = serde_json::from_str(l).expect("transition");
        let (u, a, ts) = (
            t["user_id"].as_u64().expect("user"),
            t["author_id"].as_u64().expect("author"),
            t["ts_ms"].as_i64().expect("ts"),
        );
        let next = &t["next_state"];
        let exposures = next["exposures"].as_u64().expect("exposures");
        let candidate = next["follows"].as_u64().expect("follows") > 0
            && next["watches"].as_u64().expect("watches") >= MIN_WATCHES;
        let last_ts = next["last_ts_ms"].as_i64().unwrap_or(ts).max(ts);
        let e = last.entry((u, a)).or_insert((0, false, 0));
        if exposures >= e.0 {
            *e = (exposures, candidate, last_ts);
        }
        let gift = t["reward"]["gift"].as_f64().expect("gift");
        if gift > 0.0 {
            gifts.push((u, a, ts, (gift * 1000.0).round() as i64));
        }
        if t["state"]["follows"].as_u64() == Some(0) && next["follows"].as_u64() > Some(0) {
            fans.push((a, ts.div_euclid(DAY)));
        }
    }
    let mut authors: BTreeMap<u64, (i64, i64, i64, Vec<(i64, i64)>)> = BTreeMap::new();
    let mut expired = [0usize; 3];
    let mut deep_total = 0;
    for ((_, a), (_, candidate, last_ts)) in &last {
        if *candidate {
            if last_ts + DEEP_DAYS * DAY >= as_of {
                authors.entry(*a).or_default().0 += 1;
                deep_total += 1;
            } else {
                expired[0] += 1;
            }
        }
    }
    let mut weekly: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut weekly_users = BTreeSet::new();
    let mut revenue_total = 0;
    for (u, a, ts, m) in &gifts {
        authors.entry(*a).or_default().2 += m;
        revenue_total += m;
        if ts + GIFT_DAYS * DAY >= as_of {
            weekly.entry(*a).or_default().insert(*u);
            weekly_users.insert(*u);
        } else {
            expired[1] += 1;
        }
    }
    for (a, users) in weekly {
        authors.entry(a).or_default().1 = users.len() as i64;
    }
    let mut by_day: BTreeMap<(u64, i64), i64> = BTreeMap::new();
    let mut fans_total = 0;
    for (a, day) in fans {
        if (day + 1) * DAY + FAN_DAYS * DAY >= as_of {
            *by_day.entry((a, day)).or_default() += 1;
            fans_total += 1;
        } else {
            expired[2] += 1;
        }
    }
    for ((a, day), n) in by_day {
        authors.entry(a).or_default().3.push((day, n));
    }
    authors.retain(|_, r| *r != (0, 0, 0, Vec::new()));
    let views = Views {
        as_of,
        totals: [
            deep_total,
            weekly_users.len() as i64,
            revenue_total,
            fans_total,
        ],
        authors,
    };
    (views, expired)
}

fn assert_views_match(state: &Path, what: &str) -> Views {
    let got = printed(state);
    let (want, expired) = brute_force(
        Path::new(&format!("{}.transitions.jsonl", s(state))),
        got.as_of,
    );
    assert!(
        got.totals[0] > 0 && got.totals[1] > 0 && got.totals[3] > 0,
        "{what}: empty views {got:?}"
    );
    assert!(
        expired.iter().all(|n| *n > 0),
        "{what}: the run must retract deep pairs, gifts and fan days (retracted: {expired:?})"
    );
    assert_eq!(got.totals, want.totals, "{what}: totals");
    assert!(
        got.authors == want.authors,
        "{what}: per-author views differ"
    );
    got
}

#[test]
fn the_views_equal_a_recomputation_from_the_transitions_at_any_worker_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seed in [7, 8] {
        let d = data(dir.path(), seed);
        let mut first: Option<Views> = None;
        for workers in [1, 2, 3] {
            let state = dir.path().join(format!("s{seed}-w{workers}"));
            ok(rliv(&replay_args(&d, &state, workers), None));
            let v = assert_views_match(&state, &format!("seed {seed}, {workers} workers"));
            match &first {
                None => first = Some(v),
                Some(f) => assert_eq!(&v, f, "seed {seed}: {workers} workers differ from 1"),
            }
        }
    }
}

#[test]
fn a_killed_run_resumes_its_views_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = data(dir.path(), 9);
    let whole = dir.path().join("whole");
    ok(rliv(&replay_args(&d, &whole, 2), None));
    let want = assert_views_match(&whole, "uninterrupted");
    // The second resume runs on 3 workers: the live facts are spread anew.
    for (point, resume_workers) in [("job.before_commit:15", 2), ("job.after_commit:40", 3)] {
        let state = dir.path().join(point.replace([':', '.'], "-"));
        let killed = rliv(&replay_args(&d, &state, 2), Some(point));
        assert!(!killed.status.success(), "{point}: not killed");
        ok(rliv(&replay_args(&d, &state, resume_workers), None));
        let got = assert_views_match(&state, &format!("resumed after {point}"));
        assert_eq!(got, want, "{point}: the resumed views differ");
    }
}

#[test]
fn a_cluster_keeps_the_same_views_and_resumes_them_after_a_killed_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = data(dir.path(), 10);
    let single = dir.path().join("single");
    ok(rliv(&replay_args(&d, &single, 2), None));
    let want = printed(&single);
    let run = |state: &Path, fail: Option<(usize, &str)>| -> Vec<Output> {
        let hosts = common::host_file(dir.path(), 2);
        common::run_cluster(2, |i| {
            let mut args = replay_args(&d, state, 1);
            args.extend(common::cluster_args(2, i, &hosts));
            let mut c = Command::new(rliv_bin());
            c.args(&args)
                .envs(env())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some((_, f)) = fail.filter(|f| f.0 == i) {
                c.env("RLIV_FAILPOINT", f);
            }
            c.spawn().expect("spawn")
        })
    };
    let state = dir.path().join("cluster");
    let outs = run(&state, Some((1, "shard.after_commit:30")));
    assert!(
        outs.iter().any(|o| !o.status.success()),
        "nothing was killed"
    );
    for o in run(&state, None) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let got = assert_views_match(&state, "cluster after a killed shard");
    assert_eq!(got, want, "2 processes differ from one");
}
