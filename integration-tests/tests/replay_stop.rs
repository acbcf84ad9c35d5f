//! SIGTERM stops `rliv replay` gracefully: it commits at the next chunk
//! boundary, exits 0 reporting that it stopped before the end of its input,
//! and the same command resumes it to exactly the pair state of an
//! uninterrupted replay.

mod common;

use common::{ok, rliv_bin, s};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn replay_cmd(log: &Path, state: &Path) -> Command {
    let mut c = Command::new(rliv_bin());
    c.args([
        "replay",
        "-q",
        "--json",
        "--exposures",
        s(&log.join("exposures.jsonl")),
        "--actions",
        s(&log.join("actions.jsonl")),
        "--state",
        s(state),
        "-w",
        "2",
    ])
    .env("RLIV__REPLAY__COMMIT_INTERVAL_MS", "20");
    c
}

fn dump(state: &Path) -> Vec<u8> {
    ok(Command::new(rliv_bin())
        .args(["dump", "--state", s(state)])
        .output()
        .expect("dump"))
    .stdout
}

#[test]
fn sigterm_stops_a_replay_at_a_commit_and_the_same_command_resumes_it() {
    let t = tempfile::tempdir().expect("tmp");
    let log = t.path().join("log");
    ok(Command::new(rliv_bin())
        .args(["gen", "--out", s(&log), "--exposures", "300000"])
        .output()
        .expect("gen"));
    let whole = t.path().join("whole");
    let out = ok(replay_cmd(&log, &whole).output().expect("replay"));
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");

    let state = t.path().join("stopped");
    let child = replay_cmd(&log, &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The store exists once the replay has installed its handlers and
    // opened it: stop it then, well before its end.
    let t0 = Instant::now();
    while !state.join("CURRENT").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the replay never opened its state"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "a stopped replay exits 0: {} {err}",
        out.status
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(
        summary["finished"].as_bool(),
        Some(false),
        "the replay ended before the signal: the test did not test anything: {summary}"
    );

    // The same command resumes it; a third run has nothing to do.
    let out = ok(replay_cmd(&log, &state).output().expect("resume"));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(summary["resumed"].as_bool(), Some(true), "{summary}");
    assert_eq!(summary["finished"].as_bool(), Some(true), "{summary}");
    // Every counter (late, orphan, duplicates, ...) as without the stop.
    assert_eq!(
        summary["run"], reference["run"],
        "counters after a stop and resume"
    );
    assert!(
        dump(&state) == dump(&whole),
        "the stopped-and-resumed replay's pair dump differs from the uninterrupted one"
    );
    let out = ok(replay_cmd(&log, &state).output().expect("again"));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(summary["up_to_date"].as_bool(), Some(true), "{summary}");
}
