//! Drive the real `rliv` binary in temporary directories.
//!
//! The binary is looked up beside the test executable's directory
//! (`target/<profile>/rliv`, built by `cargo build --bin rliv`) or taken from
//! `RLIV_BIN`.

mod common;

use common::{ok, rliv_bin};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The contract's examples, vendored into `docs/contract/` (kept identical
/// to the shared contract by `vendored_contract_is_the_shared_one`).
fn contract_examples() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.join("../docs/contract/examples")
}

/// Every file of `dir`, relative path -> bytes.
fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn vendored_contract_is_the_shared_one() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vendored = files_under(&here.join("../docs/contract"));
    assert!(
        vendored.contains_key(Path::new("EVENTS.md")),
        "docs/contract/EVENTS.md is missing"
    );
    assert!(vendored.contains_key(Path::new("examples/exposures.jsonl")));
    // Where the shared contract sits beside this checkout (the project's own
    // machines), the vendored copy must be byte-identical to it.
    let shared = here.join("../../shared/contract");
    if shared.join("EVENTS.md").exists() {
        let shared = files_under(&shared);
        for (name, bytes) in &shared {
            assert!(
                vendored.get(name) == Some(bytes),
                "docs/contract/{} differs from the shared contract: copy it again",
                name.display()
            );
        }
        for name in vendored.keys() {
            assert!(
                shared.contains_key(name),
                "docs/contract/{} is not in the shared contract",
                name.display()
            );
        }
    }
}

fn rliv(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(rliv_bin());
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run rliv")
}

fn dump(state: &Path) -> String {
    String::from_utf8(ok(rliv(&["dump", "--state", state.to_str().unwrap()], &[])).stdout).unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn contract_examples_give_the_documented_pairs_transition_and_dead_letters() {
    let ex = contract_examples();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let t = dir.path().join("t.jsonl");
    ok(rliv(
        &[
            "replay",
            "-q",
            "--exposures",
            ex.join("exposures.jsonl").to_str().unwrap(),
            "--actions",
            ex.join("actions.jsonl").to_str().unwrap(),
            ex.join("invalid.jsonl").to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--transitions",
            t.to_str().unwrap(),
        ],
        &[],
    ));
    let pairs = json_lines(&dump(&state));
    assert_eq!(pairs.len(), 2);
    let p = &pairs[0];
    assert_eq!(
        (p["user_id"].as_u64(), p["author_id"].as_u64()),
        (Some(10), Some(7))
    );
    for (k, v) in [
        ("exposures", 2),
        ("clicks", 2),
        ("watches", 1),
        ("follows", 1),
        ("gifts", 1),
    ] {
        assert_eq!(p[k].as_u64(), Some(v), "{k}");
    }
    assert_eq!(p["watch_sec_total"].as_f64(), Some(28.5));
    assert_eq!(p["gift_total"].as_f64(), Some(5.0));
    assert_eq!(p["first_ts_ms"].as_i64(), Some(1700000000000));
    assert_eq!(p["last_ts_ms"].as_i64(), Some(1700000600000));
    assert_eq!(pairs[1]["exposures"].as_u64(), Some(1));
    assert_eq!(pairs[1]["clicks"].as_u64(), Some(0));

    let transitions = json_lines(&std::fs::read_to_string(&t).unwrap());
    assert_eq!(transitions.len(), 3, "one per distinct exposure");
    let t2 = transitions.iter().find(|t| t["request_id"] == 2).unwrap();
    // The contract's five counters, and the additive fields it allows
    // (totals and the first/last closed exposure times before and after).
    assert_eq!(
        t2["state"],
        serde_json::json!({"exposures":1,"clicks":1,"watches":1,"follows":1,"gifts":0,
            "watch_sec_total":28.5,"gift_total":0,
            "first_ts_ms":1700000000000i64,"last_ts_ms":1700000000000i64})
    );
    assert_eq!(
        t2["next_state"],
        serde_json::json!({"exposures":2,"clicks":2,"watches":1,"follows":1,"gifts":1,
            "watch_sec_total":28.5,"gift_total":5,
            "first_ts_ms":1700000000000i64,"last_ts_ms":1700000600000i64})
    );
    assert_eq!(t2["reward"]["gift"].as_f64(), Some(5.0));

    let dead = json_lines(&std::fs::read_to_string(state.join("dead-letters.jsonl")).unwrap());
    let invalid: Vec<_> = dead
        .iter()
        .filter(|d| d["file"].as_str().unwrap().ends_with("invalid.jsonl"))
        .collect();
    assert_eq!(
        invalid.len(),
        7,
        "every invalid example line is dead-lettered"
    );
    let reasons: Vec<&str> = invalid
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_field",
            "wrong_type",
            "negative_watch",
            "unknown_action",
            "nonpositive_gift",
            "malformed_json",
            "out_of_range"
        ]
    );
    assert!(dead
        .iter()
        .any(|d| d["reason"] == "orphan_action" && d["line"] == 8));
    assert!(dead
        .iter()
        .any(|d| d["reason"] == "out_of_window" && d["line"] == 7));
}

#[test]
fn mixed_good_and_malformed_lines_every_good_line_counts_every_bad_line_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let exposures = dir.path().join("e.jsonl");
    let actions = dir.path().join("a.jsonl");
    let mut e = std::fs::File::create(&exposures).unwrap();
    let mut a = std::fs::File::create(&actions).unwrap();
    let mut bad_lines = Vec::new();
    let bad = [
        "{\"request_id\":1,",
        "[]",
        "{\"request_id\":1,\"user_id\":1,\"item_id\":1,\"ts_ms\":5}",
        "{\"request_id\":1,\"user_id\":1,\"item_id\":1,\"author_id\":true,\"ts_ms\":5}",
        "\u{0}\u{1}binary",
    ];
    let ts0 = 1_700_000_000_000i64;
    for i in 0..300u64 {
        let line = i + 1;
        if i % 7 == 3 {
            let b = bad[(i as usize / 7) % bad.len()];
            writeln!(e, "{b}").unwrap();
            bad_lines.push(line);
        } else {
            writeln!(
                e,
                "{{\"request_id\":{i},\"user_id\":{},\"item_id\":{i},\"author_id\":{},\"ts_ms\":{}}}",
                i % 5,
                i % 3,
                ts0 + i as i64 * 1000
            )
            .unwrap();
        }
        if i % 7 != 3 {
            writeln!(
                a,
                "{{\"request_id\":{i},\"user_id\":{},\"item_id\":{i},\"ts_ms\":{},\"action\":\"click\"}}",
                i % 5,
                ts0 + i as i64 * 1000 + 10
            )
            .unwrap();
        }
    }
    drop((e, a));
    let state = dir.path().join("state");
    let out = ok(rliv(
        &[
            "replay",
            "-q",
            "--json",
            "--exposures",
            exposures.to_str().unwrap(),
            "--actions",
            actions.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
        &[("RLIV__REPLAY__CHUNK_LINES", "16")],
    ));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let good = 300 - bad_lines.len() as u64;
    assert_eq!(summary["run"]["exposures_parsed"].as_u64(), Some(good));
    assert_eq!(summary["run"]["closed_exposures"].as_u64(), Some(good));
    assert_eq!(summary["run"]["attributed_actions"].as_u64(), Some(good));
    let pairs = json_lines(&dump(&state));
    let exposures_in_state: u64 = pairs.iter().map(|p| p["exposures"].as_u64().unwrap()).sum();
    let clicks_in_state: u64 = pairs.iter().map(|p| p["clicks"].as_u64().unwrap()).sum();
    assert_eq!((exposures_in_state, clicks_in_state), (good, good));
    let dead = json_lines(&std::fs::read_to_string(state.join("dead-letters.jsonl")).unwrap());
    let dead_lines: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().unwrap()).collect();
    assert_eq!(
        dead_lines, bad_lines,
        "each bad line, in order, with its line number"
    );
    assert!(dead
        .iter()
        .all(|d| d["file"].as_str().unwrap().ends_with("e.jsonl") && d["reason"].is_string()));
    let rejected: u64 = summary["run"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("rejected_"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(rejected, bad_lines.len() as u64);
}

#[test]
fn killed_replay_resumes_to_exactly_the_uninterrupted_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rliv(
        &[
            "gen",
            "--out",
            data.to_str().unwrap(),
            "--exposures",
            "300000",
            "--files",
            "3",
        ],
        &[],
    ));
    let env = [
        ("RLIV__REPLAY__COMMIT_INTERVAL_MS", "20"),
        ("RLIV__REPLAY__CHUNK_LINES", "2048"),
        ("RLIV__STATE__SYNC_COMMITS", "false"),
    ];
    let args = |state: &Path, t: &Path| -> Vec<String> {
        let d = data.to_str().unwrap();
        vec![
            "replay".into(),
            "-q".into(),
            "--exposures".into(),
            format!("{d}/exposures-000.jsonl"),
            format!("{d}/exposures-001.jsonl"),
            format!("{d}/exposures-002.jsonl"),
            "--actions".into(),
            format!("{d}/actions-000.jsonl"),
            format!("{d}/actions-001.jsonl"),
            format!("{d}/actions-002.jsonl"),
            "--state".into(),
            state.to_str().unwrap().into(),
            "--transitions".into(),
            t.to_str().unwrap().into(),
        ]
    };
    let whole_state = dir.path().join("whole");
    let whole_t = dir.path().join("whole.jsonl");
    let a: Vec<String> = args(&whole_state, &whole_t);
    let t0 = Instant::now();
    ok(rliv(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    ));
    let full = t0.elapsed();

    let state = dir.path().join("killed");
    let t = dir.path().join("killed.jsonl");
    let a: Vec<String> = args(&state, &t);
    let mut kills = 0;
    for fraction in [0.15, 0.35, 0.6] {
        let mut child = Command::new(rliv_bin())
            .args(&a)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(fraction).max(Duration::from_millis(30)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(
        kills > 0,
        "no run was killed mid-way: the test did not test anything"
    );
    let out = ok(rliv(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    ));
    assert!(out.status.success());
    assert_eq!(
        dump(&state),
        dump(&whole_state),
        "pair dump after {kills} kills"
    );
    assert_eq!(
        std::fs::read(&t).unwrap(),
        std::fs::read(&whole_t).unwrap(),
        "transitions file after {kills} kills"
    );
    assert_eq!(
        std::fs::read(state.join("dead-letters.jsonl")).unwrap(),
        std::fs::read(whole_state.join("dead-letters.jsonl")).unwrap()
    );
}

#[test]
fn new_files_continue_an_existing_state_and_a_repeat_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(rliv(
        &[
            "gen",
            "--out",
            data.to_str().unwrap(),
            "--exposures",
            "20000",
            "--files",
            "2",
        ],
        &[],
    ));
    let d = data.to_str().unwrap();
    let run = |state: &Path, e: &[String], a: &[String], extra: &[&str]| {
        let mut args: Vec<String> = vec!["replay".into(), "-q".into(), "--exposures".into()];
        args.extend(e.iter().cloned());
        args.push("--actions".into());
        args.extend(a.iter().cloned());
        args.push("--state".into());
        args.push(state.to_str().unwrap().into());
        args.extend(extra.iter().map(|s| s.to_string()));
        rliv(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    let e0 = vec![format!("{d}/exposures-000.jsonl")];
    let e1 = vec![format!("{d}/exposures-001.jsonl")];
    let a0 = vec![format!("{d}/actions-000.jsonl")];
    let a1 = vec![format!("{d}/actions-001.jsonl")];
    let both_e = [e0.clone(), e1.clone()].concat();
    let both_a = [a0.clone(), a1.clone()].concat();

    let one = dir.path().join("one");
    ok(run(&one, &both_e, &both_a, &[]));
    let two = dir.path().join("two");
    ok(run(&two, &e0, &a0, &["--keep-open"]));
    ok(run(&two, &e1, &a1, &[]));
    assert_eq!(
        dump(&two),
        dump(&one),
        "day 1 then day 2 equals both at once"
    );

    // Running the last command again is a no-op, not a second count.
    let again = ok(run(&two, &e1, &a1, &[]));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to do"));
    assert_eq!(dump(&two), dump(&one));
    // --allow-repeat really runs it: in event time those exposures are long
    // past their window, so they are reported late and the pairs stay as they are.
    let repeat = ok(run(&two, &e1, &a1, &["--allow-repeat", "--json"]));
    let summary: serde_json::Value = serde_json::from_slice(&repeat.stdout).unwrap();
    assert!(summary["run"]["late_exposures"].as_u64().unwrap() > 0);
    assert_eq!(summary["run"]["closed_exposures"].as_u64(), Some(0));
    assert_eq!(dump(&two), dump(&one));
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = rliv(
        &[
            "replay",
            "--exposures",
            dir.path().join("missing.jsonl").to_str().unwrap(),
            "--state",
            dir.path().join("s").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
}
