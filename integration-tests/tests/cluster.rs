//! Cluster mode (`--processes N --process I --hosts FILE`), driven through
//! the real binary with every process on 127.0.0.1: the same results as
//! one process, and exact resumption after a process is killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{cluster_args, host_file, ok, rliv_bin, run_cluster, s};

/// Settings under which every chunk is a commit (the failpoints count
/// commits deterministically) and several hundred epochs pass.
const ENV: [(&str, &str); 4] = [
    ("RLIV__REPLAY__COMMIT_INTERVAL_MS", "0"),
    ("RLIV__REPLAY__CHUNK_LINES", "700"),
    ("RLIV__STATE__SYNC_COMMITS", "false"),
    ("RLIV__REPLAY__CLUSTER_CONNECT_TIMEOUT_MS", "60000"),
];

struct Data {
    exposures: PathBuf,
    actions: PathBuf,
}

fn data(dir: &Path) -> Data {
    let out = dir.join("data");
    ok(Command::new(rliv_bin())
        .args(["gen", "--out", s(&out), "--exposures", "60000"])
        .output()
        .expect("gen"));
    // Bad lines, so that the dead letters have parse errors too.
    let exposures = out.join("exposures.jsonl");
    let mut text = std::fs::read_to_string(&exposures).expect("read");
    text.push_str("not json\n{\"request_id\":1}\n[1,2]\n");
    std::fs::write(&exposures, text).expect("write");
    Data {
        exposures,
        actions: out.join("actions.jsonl"),
    }
}

fn job_args(d: &Data, state: &Path, workers: usize) -> Vec<String> {
    vec![
        "replay".into(),
        "-q".into(),
        "--json".into(),
        "--exposures".into(),
        s(&d.exposures).into(),
        "--actions".into(),
        s(&d.actions).into(),
        "--state".into(),
        s(state).into(),
        "--transitions".into(),
        format!("{}.transitions.jsonl", s(state)),
        "--dead-letters".into(),
        format!("{}.dead.jsonl", s(state)),
        "-w".into(),
        workers.to_string(),
    ]
}

fn spawn(args: &[String], failpoint: Option<&str>) -> Child {
    let mut cmd = Command::new(rliv_bin());
    cmd.args(args)
        .envs(ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = failpoint {
        cmd.env("RLIV_FAILPOINT", f);
    }
    cmd.spawn().expect("spawn rliv")
}

/// Runs every process of a cluster (process `fail.0` with failpoint
/// `fail.1`); returns their outputs, process 0 first.
fn cluster(
    d: &Data,
    state: &Path,
    hosts: &Path,
    processes: usize,
    workers: usize,
    fail: Option<(usize, &str)>,
) -> Vec<Output> {
    run_cluster(processes, |i| {
        let mut args = job_args(d, state, workers);
        args.extend(cluster_args(processes, i, hosts));
        spawn(&args, fail.filter(|f| f.0 == i).map(|f| f.1))
    })
}

/// What a job produced: the dump, the transitions, the dead letters.
fn results(state: &Path) -> (String, Vec<u8>, Vec<u8>) {
    let dump = ok(Command::new(rliv_bin())
        .args(["dump", "--state", s(state)])
        .output()
        .expect("dump"));
    let read =
        |suffix: &str| std::fs::read(format!("{}.{suffix}", s(state))).expect("read an output");
    (
        String::from_utf8(dump.stdout).expect("utf-8"),
        read("transitions.jsonl"),
        read("dead.jsonl"),
    )
}

fn single(d: &Data, dir: &Path) -> (String, Vec<u8>, Vec<u8>) {
    let state = dir.join("single");
    let out = ok(Command::new(rliv_bin())
        .args(job_args(d, &state, 2))
        .envs(ENV)
        .output()
        .expect("replay"));
    assert!(!out.stdout.is_empty());
    results(&state)
}

fn assert_same(what: &str, got: &(String, Vec<u8>, Vec<u8>), want: &(String, Vec<u8>, Vec<u8>)) {
    assert!(
        got.0 == want.0,
        "{what}: the dump differs from one process's"
    );
    assert!(
        got.1 == want.1,
        "{what}: the transitions differ from one process's"
    );
    assert!(
        got.2 == want.2,
        "{what}: the dead letters differ from one process's"
    );
}

#[test]
fn two_processes_give_one_processs_dump_transitions_and_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = data(dir.path());
    let want = single(&d, dir.path());
    assert!(want.0.lines().count() > 10_000, "a real workload");
    assert!(
        String::from_utf8_lossy(&want.2).contains("malformed_json"),
        "parse errors among the dead letters"
    );
    for workers in [1, 2] {
        let state = dir.path().join(format!("cluster-2x{workers}"));
        let hosts = host_file(dir.path(), 2);
        let outs = cluster(&d, &state, &hosts, 2, workers, None);
        for (i, o) in outs.iter().enumerate() {
            assert!(
                o.status.success(),
                "2x{workers}: process {i} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            // --json: stdout is exactly one JSON summary (no connection chatter).
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
                panic!(
                    "process {i}'s stdout is not one JSON value: {e}: {:?}",
                    String::from_utf8_lossy(&o.stdout)
                )
            });
            assert_eq!(v["process"], i);
        }
        let got = results(&state);
        assert_same(&format!("2 processes x {workers} workers"), &got, &want);
        // Every pair is in the shard of its user's process.
        for p in 0..2 {
            let shard = ok(Command::new(rliv_bin())
                .args(["dump", "--state", s(&rliv_state::shard_dir(&state, p))])
                .output()
                .expect("dump a shard"));
            let text = String::from_utf8(shard.stdout).expect("utf-8");
            assert!(!text.is_empty(), "shard p{p} is empty");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                let user = v["user_id"].as_u64().expect("user_id");
                assert_eq!(rliv_state::user_process(user, 2), p, "{line}");
            }
        }
        // A second run on the finished state is a no-op on every process.
        let again = cluster(&d, &state, &host_file(dir.path(), 2), 2, workers, None);
        for o in &again {
            let v: serde_json::Value = serde_json::from_slice(&ok(o.clone()).stdout).expect("json");
            assert_eq!(v["up_to_date"], true);
        }
        assert_same("after a repeat", &results(&state), &want);
    }
}

#[test]
fn a_killed_process_stops_the_cluster_cleanly_and_a_restart_resumes_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = data(dir.path());
    let want = single(&d, dir.path());
    // (process, failpoint): a shard killed before and after its commit, and
    // process 0 killed between the shard commits and the commit point, after
    // it, and mid-way through its own shard's commits.
    let points = [
        (1, "shard.after_commit:7"),
        (1, "shard.before_commit:40"),
        (0, "job.before_commit:12"),
        (0, "job.after_commit:25"),
        (0, "shard.after_commit:60"),
    ];
    for (n, (victim, point)) in points.into_iter().enumerate() {
        let state = dir.path().join(format!("killed-{n}"));
        let outs = cluster(
            &d,
            &state,
            &host_file(dir.path(), 2),
            2,
            1,
            Some((victim, point)),
        );
        let killed = &outs[victim];
        assert!(
            !killed.status.success(),
            "{point}: process {victim} was not killed: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        let other = &outs[1 - victim];
        let err = String::from_utf8_lossy(&other.stderr);
        assert!(
            !err.contains("panicked at"),
            "{point}: a panic trace: {err}"
        );
        assert!(
            other.status.success() || err.contains("restart every process"),
            "{point}: process {} neither finished nor said what to do: {err}",
            1 - victim
        );
        if !other.status.success() {
            assert_eq!(other.status.code(), Some(1), "{point}: {err}");
        }
        let again = cluster(&d, &state, &host_file(dir.path(), 2), 2, 1, None);
        for (i, o) in again.iter().enumerate() {
            assert!(
                o.status.success(),
                "{point}: the restart of process {i} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert_same(
            &format!("killed at {point} on process {victim}"),
            &results(&state),
            &want,
        );
    }
}

#[test]
fn a_cluster_refuses_mismatched_processes_and_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = data(dir.path());
    let state = dir.path().join("c");
    let hosts = host_file(dir.path(), 2);
    // Different -w on the two processes: both refuse, with the reason.
    let mut a0 = job_args(&d, &state, 2);
    a0.extend(["--processes", "2", "--process", "0", "--hosts", s(&hosts)].map(String::from));
    let mut a1 = job_args(&d, &state, 1);
    a1.extend(["--processes", "2", "--process", "1", "--hosts", s(&hosts)].map(String::from));
    let (c1, c0) = (spawn(&a1, None), spawn(&a0, None));
    for (i, c) in [(0, c0), (1, c1)] {
        let o = c.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "process {i}: {err}");
        assert!(err.contains("-w 1"), "process {i}: {err}");
    }
    // A single-process state is not a cluster's, and the reverse.
    let single = dir.path().join("single");
    ok(Command::new(rliv_bin())
        .args(job_args(&d, &single, 1))
        .envs(ENV)
        .output()
        .expect("replay"));
    let mut a = job_args(&d, &single, 1);
    a.extend(["--processes", "2", "--process", "1", "--hosts", s(&hosts)].map(String::from));
    usage_error(&a, "single-process state");
    // A host file without enough lines is a usage error.
    let short = dir.path().join("short-hosts");
    std::fs::write(&short, "127.0.0.1:1\n").expect("write");
    let mut a = job_args(&d, &state, 1);
    a.extend(["--processes", "2", "--process", "0", "--hosts", s(&short)].map(String::from));
    usage_error(&a, "host:port lines");
}

/// Runs `args` alone: exit 2 with `needle` in the message.
fn usage_error(args: &[String], needle: &str) {
    let o = spawn(args, None).wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}
