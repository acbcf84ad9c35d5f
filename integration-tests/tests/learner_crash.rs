//! The learner's input is exactly once across crashes: `rliv replay --train`
//! is killed (SIGKILL, through `RLIV_FAILPOINT`) before the first state
//! commit, between a commit and the learner's first checkpoint, during a
//! checkpoint write, right after one, and after the input ended; the same
//! command with `--resume` then finishes. Every transition of the
//! uninterrupted run must reach the learner's final checkpoint exactly once
//! (the checkpoint counts them and records the transition log position), a
//! checkpoint must exist at the end, and the sample buffer must be refilled
//! from the log.

mod common;

use common::{newest_manifest, ok, rliv_bin, s, FAST_LEARNER};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Frequent state commits, beside `FAST_LEARNER`.
const SMALL: &[(&str, &str)] = &[("RLIV__REPLAY__COMMIT_INTERVAL_MS", "20")];
const REFILL: u64 = 3000;

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// Transitions of the uninterrupted run.
    total: u64,
}

fn rliv(args: &[&str], failpoint: Option<&str>) -> Output {
    let mut cmd = Command::new(rliv_bin());
    cmd.args(args);
    for (k, v) in FAST_LEARNER.iter().chain(SMALL) {
        cmd.env(k, v);
    }
    match failpoint {
        Some(f) => cmd.env("RLIV_FAILPOINT", f),
        None => cmd.env_remove("RLIV_FAILPOINT"),
    };
    cmd.output().expect("run rliv")
}

fn replay_args(w: &World, state: &Path, ck: &Path) -> Vec<String> {
    let (ex, ac) = (
        w.root.join("log/exposures.jsonl"),
        w.root.join("log/actions.jsonl"),
    );
    [
        "replay",
        "-q",
        "--json",
        "--exposures",
        s(&ex),
        "--actions",
        s(&ac),
        "--state",
        s(state),
        "--train",
        "--checkpoints",
        s(ck),
        "--resume",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn unfinished(ck: &Path) -> usize {
    std::fs::read_dir(ck).map_or(0, |rd| {
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    })
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().to_path_buf();
    ok(rliv(
        &["gen", "--out", s(&root.join("log")), "--exposures", "20000"],
        None,
    ));
    let mut w = World {
        _dir: dir,
        root,
        total: 0,
    };
    // The uninterrupted run: its transition count is what every crashed
    // chain must deliver, and its own learner must have taken all of them.
    let (st, ck) = (w.root.join("ref-state"), w.root.join("ref-ck"));
    let out = ok(rliv(&strs(&replay_args(&w, &st, &ck)), None));
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("replay --json summary");
    w.total = summary["run"]["transitions"].as_u64().expect("transitions");
    assert!(w.total > 15_000, "{summary}");
    let m = newest_manifest(&ck).expect("the uninterrupted run wrote a checkpoint");
    assert_eq!(m["input"]["transitions"].as_u64(), Some(w.total), "{m}");
    assert_eq!(m["input"]["log_position"].as_u64(), Some(w.total), "{m}");
    w
}

/// Runs the replay killed at each of `points` in turn (each run resumes the
/// one before), then to its end, and checks what the learner got.
fn crash_chain(w: &World, name: &str, points: &[&str]) {
    let (st, ck) = (
        w.root.join(format!("{name}-state")),
        w.root.join(format!("{name}-ck")),
    );
    let args = replay_args(w, &st, &ck);
    for p in points {
        let out = rliv(&strs(&args), Some(p));
        assert!(
            !out.status.success(),
            "{name}: the failpoint {p} was never reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("failpoint {p}")), "{name}: {err}");
    }
    let before = newest_manifest(&ck);
    let left = unfinished(&ck);
    let out = ok(rliv(&strs(&args), None));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if left > 0 {
        assert!(
            err.contains("removed"),
            "{name}: unfinished checkpoints: {err}"
        );
    }
    assert_eq!(unfinished(&ck), 0, "{name}: a .tmp checkpoint is left");
    // The buffer is refilled with the (at most REFILL) logged transitions
    // before the resumed checkpoint's position.
    let consumed = before
        .as_ref()
        .and_then(|m| m["input"]["log_position"].as_u64())
        .unwrap_or(0);
    let want_refill = consumed.min(REFILL);
    if want_refill > 0 {
        assert!(
            err.contains(&format!("buffer refilled with {want_refill})")),
            "{name}: resumed at log position {consumed}: {err}"
        );
    } else {
        assert!(!err.contains("buffer refilled"), "{name}: {err}");
    }
    let m =
        newest_manifest(&ck).unwrap_or_else(|| panic!("{name}: no checkpoint at the end: {err}"));
    assert_eq!(
        m["input"]["log_position"].as_u64(),
        Some(w.total),
        "{name}: log position of the final checkpoint: {m}\n{err}"
    );
    assert_eq!(
        m["input"]["transitions"].as_u64(),
        Some(w.total),
        "{name}: transitions the learner took (exactly once each): {m}\n{err}"
    );
}

#[test]
fn every_transition_reaches_the_learner_exactly_once_across_kills() {
    let w = world();
    // Before the first state commit: nothing durable on either side.
    crash_chain(&w, "before-first-commit", &["job.before_commit:1"]);
    // The state committed twice; the learner has no checkpoint yet.
    crash_chain(&w, "after-commit", &["job.after_commit:2"]);
    // During the learner's first checkpoint write (a .tmp is left behind).
    crash_chain(&w, "checkpoint-write", &["learner.checkpoint_write:1"]);
    // Right after a checkpoint: the resumed learner refills its buffer.
    crash_chain(&w, "after-checkpoint", &["learner.after_checkpoint:2"]);
    // After the input ended: the state is finished, the learner is not.
    crash_chain(&w, "input-ended", &["learner.input_ended:1"]);
    // Several kills in a row, each run resuming the one before.
    crash_chain(
        &w,
        "chain",
        &[
            "job.after_commit:3",
            "learner.checkpoint_write:2",
            "learner.after_checkpoint:1",
            "learner.input_ended:1",
        ],
    );
}
