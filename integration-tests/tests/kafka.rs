//! `rliv run` against a real Kafka-protocol broker: Tansu, started by each
//! test on a free loopback port with its own sqlite storage.
//!
//! The broker binary is `RLIV_TANSU`, or `~/.cache/rliv/tools/bin/tansu`
//! (`scripts/install-tansu.sh` builds it; `scripts/test.sh` runs that first).

mod common;

use common::{newest_manifest, rliv_bin, s, FAST_LEARNER};
use rliv::tansu::Broker;
use rliv_dataflows::metrics::Counter;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(broker: &Broker, prefix: &str) -> Env {
        let t = |name: &str| format!("{prefix}-{name}");
        Env {
            vars: vec![
                ("RLIV_KAFKA_BROKERS".into(), broker.addr()),
                ("RLIV__KAFKA__EXPOSURES_TOPIC".into(), t("exposures")),
                ("RLIV__KAFKA__ACTIONS_TOPIC".into(), t("actions")),
                ("RLIV__KAFKA__TRANSITIONS_TOPIC".into(), t("transitions")),
                ("RLIV__KAFKA__DEAD_LETTER_TOPIC".into(), t("dead-letters")),
                ("RLIV__KAFKA__GROUP_ID".into(), t("group")),
                ("RLIV__REPLAY__COMMIT_INTERVAL_MS".into(), "20".into()),
                ("RLIV__STATE__SYNC_COMMITS".into(), "false".into()),
            ],
        }
    }

    fn topic(&self, name: &str) -> String {
        let key = format!(
            "RLIV__KAFKA__{}_TOPIC",
            name.to_ascii_uppercase().replace('-', "_")
        );
        self.vars
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .expect("topic")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rliv_bin());
        c.args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run rliv")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rliv {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Generates a log and loads it into fresh topics with `partitions` partitions.
fn load(env: &Env, dir: &Path, partitions: u32, exposures: u32) -> PathBuf {
    let log = dir.join("log");
    if !log.join("exposures.jsonl").exists() {
        env.ok(&[
            "gen",
            "--out",
            s(&log),
            "--exposures",
            &exposures.to_string(),
        ]);
    }
    env.ok(&[
        "kafka",
        "create-topics",
        "--partitions",
        &partitions.to_string(),
    ]);
    env.ok(&[
        "kafka",
        "produce",
        "--topic",
        &env.topic("exposures"),
        "--file",
        s(&log.join("exposures.jsonl")),
    ]);
    env.ok(&[
        "kafka",
        "produce",
        "--topic",
        &env.topic("actions"),
        "--file",
        s(&log.join("actions.jsonl")),
    ]);
    log
}

fn dump(env: &Env, state: &Path) -> String {
    String::from_utf8(env.ok(&["dump", "--state", s(state)]).stdout).expect("utf-8")
}

/// Equal dumps, or a short report of where they differ.
fn assert_same_dump(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    let first = g
        .iter()
        .zip(&w)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(w.len()));
    let differing = g.iter().zip(&w).filter(|(a, b)| a != b).count();
    panic!(
        "{what}: dumps differ ({} vs {} pairs, {differing} differing lines); first at line {first}:\n  got  {}\n  want {}",
        g.len(),
        w.len(),
        g.get(first).unwrap_or(&"(none)"),
        w.get(first).unwrap_or(&"(none)")
    );
}

/// `rliv run` to the end of the topics.
fn run_args(state: &Path, workers: u32) -> Vec<String> {
    ["run", "-q", "--until-end", "--state", s(state), "-w"]
        .map(String::from)
        .into_iter()
        .chain([workers.to_string()])
        .collect()
}

fn run_to_end(env: &Env, state: &Path, workers: u32) {
    env.ok(&run_args(state, workers)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
}

#[test]
fn killed_runs_resume_to_exactly_the_uninterrupted_pair_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let env = Env::new(&broker, "kill");
    load(&env, dir.path(), 2, 60_000);
    let whole = dir.path().join("whole");
    let t0 = Instant::now();
    run_to_end(&env, &whole, 2);
    let full = t0.elapsed();
    let reference = dump(&env, &whole);
    assert!(reference.lines().count() > 1000);

    let state = dir.path().join("killed");
    let mut kills = 0;
    for fraction in [0.2, 0.4, 0.6, 0.8] {
        let mut child = env
            .cmd(&["run", "-q", "--until-end", "--state", s(&state), "-w", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(full.mul_f64(fraction).max(Duration::from_millis(50)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(
        kills > 0,
        "no run was killed mid-way: the test did not test anything"
    );
    run_to_end(&env, &state, 2);
    assert_same_dump(
        &dump(&env, &state),
        &reference,
        &format!("pair dump after {kills} kills"),
    );
    // The dead letters (file) are exactly once too.
    let read =
        |p: &Path| std::fs::read_to_string(p.join("dead-letters.jsonl")).expect("dead letters");
    assert_same_dump(&read(&state), &read(&whole), "dead-letter file after kills");
}

#[test]
fn partitions_and_workers_do_not_change_the_dump() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    // Without the generator's deliberately late actions (delivered after their
    // window closed): how those are classified depends on how far the other
    // stream had progressed, which partitioning changes. Everything within the
    // allowed lateness must come out the same (the contract's guarantee).
    let no_late = ("RLIV__GEN__LATE_RATE".to_string(), "0.0".to_string());
    let mut one = Env::new(&broker, "one");
    one.vars.push(no_late.clone());
    load(&one, dir.path(), 1, 20_000);
    let mut two = Env::new(&broker, "two");
    two.vars.push(no_late);
    load(&two, dir.path(), 2, 20_000);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    // Drained at the end: an `--until-end` run leaves the watermark at its
    // slowest partition's newest event, so without draining, the exposures
    // open at the end differ with the partition count (by design).
    for (env, state, n) in [(&one, &a, 1u32), (&two, &b, 2)] {
        let w = n.to_string();
        env.ok(&[
            "run",
            "-q",
            "--until-end",
            "--drain-at-end",
            "--state",
            s(state),
            "-w",
            &w,
        ]);
    }
    let da = dump(&one, &a);
    assert!(da.lines().count() > 100);
    assert_same_dump(
        &dump(&two, &b),
        &da,
        "2 partitions x 2 workers vs 1 partition x 1 worker",
    );
}

/// The job's counters over every run on `state`, by name (from `rliv status`).
fn counters(env: &Env, state: &Path) -> Vec<(String, u64)> {
    let out = env.ok(&["status", "--state", s(state)]);
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
    let values = cp["counters"].as_array().expect("counters array");
    Counter::ALL
        .iter()
        .zip(values)
        .map(|(c, v)| (c.name().to_string(), v.as_u64().expect("u64 counter")))
        .collect()
}

/// The same counters, or a report naming the ones that differ (late and
/// orphan actions, late exposures, ... are among them).
fn assert_same_counters(got: &[(String, u64)], want: &[(String, u64)], what: &str) {
    let differing: Vec<String> = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g != w)
        .map(|((name, g), (_, w))| format!("{name}: got {g}, want {w}"))
        .collect();
    assert!(
        differing.is_empty() && got.len() == want.len(),
        "{what}: counters differ: {}",
        differing.join(", ")
    );
    let get = |name: &str| want.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert!(
        get("closed_exposures").unwrap_or(0) > 0,
        "{what}: nothing was closed: the test did not test anything"
    );
}

/// A running `rliv run`, its stderr read on a thread (so librdkafka's
/// warnings while the broker is down can never fill the pipe and stall it).
struct Running {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(env: &Env, args: &[&str]) -> Running {
        let mut child = env
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rliv");
        let mut pipe = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        Running {
            child,
            stderr: Some(stderr),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// Waits (at most `limit`) and fails with its stderr unless it succeeded.
    fn finish(mut self, limit: Duration, what: &str) {
        let t = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: the run did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        assert!(status.success(), "{what}: the run failed ({status}): {err}");
    }
}

/// The next offsets the state has committed, summed over partitions (0
/// before the first commit).
fn committed_offsets(env: &Env, state: &Path) -> i64 {
    if !state.exists() {
        return 0;
    }
    let out = env.run(&["status", "--state", s(state)]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|cp| {
            cp["offsets"]
                .as_object()
                .map(|o| o.values().filter_map(|v| v.as_i64()).sum())
        })
        .unwrap_or(0)
}

/// Runs `--until-end` on `state` while the broker goes down `outages` times:
/// the first `first_after` into the run, each later one as soon as the run
/// has committed progress again after the previous restart. Checks the dump
/// and every counter (late, orphan, duplicates, ...) against an uninterrupted
/// run on the same topics.
fn restarts_lose_and_double_nothing(prefix: &str, exposures: u32, outages: usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let env = Env::new(&broker, prefix);
    load(&env, dir.path(), 2, exposures);
    let whole = dir.path().join("whole");
    run_to_end(&env, &whole, 2);
    let reference = dump(&env, &whole);
    let reference_counters = counters(&env, &whole);

    let state = dir.path().join("restarted");
    let mut run = Running::start(
        &env,
        &["run", "-q", "--until-end", "--state", s(&state), "-w", "2"],
    );
    std::thread::sleep(Duration::from_millis(300));
    for outage in 0..outages {
        if outage > 0 {
            // Down again once the run is consuming again after the restart.
            let before = committed_offsets(&env, &state);
            let t = Instant::now();
            while committed_offsets(&env, &state) == before && run.running() {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "the run made no progress after the broker came back"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            run.running(),
            "the run ended before outage {} of {outages}: the test did not test anything",
            outage + 1
        );
        broker.stop();
        std::thread::sleep(Duration::from_millis(1500));
        broker.restart().expect("restart tansu");
    }
    run.finish(Duration::from_secs(180), "across broker restarts");
    let what = format!("{outages} broker restart(s) mid-run");
    assert_same_dump(&dump(&env, &state), &reference, &what);
    assert_same_counters(&counters(&env, &state), &reference_counters, &what);
}

#[test]
fn a_killed_run_with_training_gives_the_learner_every_transition_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let mut env = Env::new(&broker, "learn");
    for (k, v) in FAST_LEARNER {
        env.vars.push((k.to_string(), v.to_string()));
    }
    load(&env, dir.path(), 2, 20_000);
    let args = |state: &Path, ck: &Path| -> Vec<String> {
        [
            "run",
            "-q",
            "--json",
            "--until-end",
            "--drain-at-end",
            "--state",
            s(state),
            "-w",
            "2",
            "--train",
            "--checkpoints",
            s(ck),
            "--resume",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let (whole, whole_ck) = (dir.path().join("whole"), dir.path().join("whole-ck"));
    let a = args(&whole, &whole_ck);
    let out = env.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run --json");
    let total = summary["run"]["transitions"].as_u64().expect("transitions");
    assert!(total > 15_000, "{summary}");
    assert_eq!(
        newest_manifest(&whole_ck).expect("a checkpoint")["input"]["transitions"].as_u64(),
        Some(total)
    );

    let (state, ck) = (dir.path().join("killed"), dir.path().join("killed-ck"));
    let a = args(&state, &ck);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // Each point is reached whatever the kill before it left: a run
    // without a checkpoint writes one; every run commits and ends its input.
    for point in [
        "learner.checkpoint_write:1",
        "learner.after_checkpoint:1",
        "job.after_commit:2",
        "learner.input_ended:1",
    ] {
        let out = env
            .cmd(&a)
            .env("RLIV_FAILPOINT", point)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(&format!("failpoint {point}")),
            "the failpoint {point} was not reached ({}): {err}",
            out.status
        );
    }
    let out = env.ok(&a);
    let m = newest_manifest(&ck).expect("a checkpoint");
    assert_eq!(
        m["input"]["transitions"].as_u64(),
        Some(total),
        "transitions the learner took across 4 kills: {m}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(m["input"]["log_position"].as_u64(), Some(total), "{m}");
    assert_same_dump(
        &dump(&env, &state),
        &dump(&env, &whole),
        "pair dump across learner kills",
    );
}

#[test]
fn a_broker_restart_mid_run_loses_and_doubles_nothing() {
    restarts_lose_and_double_nothing("restart", 60_000, 1);
}

#[test]
fn two_broker_restarts_in_one_run_lose_and_double_nothing() {
    restarts_lose_and_double_nothing("restart2", 150_000, 2);
}

/// Splits a JSONL file sorted by `ts_ms` at the event times `bounds`.
fn split_by_ts(file: &Path, bounds: &[i64], out: &Path, name: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).expect("read log");
    let mut slices = vec![String::new(); bounds.len() + 1];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ts = serde_json::from_str::<serde_json::Value>(line).expect("log line")["ts_ms"]
            .as_i64()
            .expect("ts_ms");
        let i = bounds.partition_point(|b| *b <= ts);
        slices[i].push_str(line);
        slices[i].push('\n');
    }
    slices
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let p = out.join(format!("{name}-{i:03}.jsonl"));
            std::fs::write(&p, text).expect("write slice");
            p
        })
        .collect()
}

#[test]
fn a_producer_writing_through_a_broker_restart_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    // As in the partition test: without deliberately late actions, whose
    // classification depends on how far the other stream had got when they
    // arrived, so on production timing. Everything within the allowed
    // lateness must come out as if the topics had been written first.
    let mut env = Env::new(&broker, "producing");
    env.vars
        .push(("RLIV__GEN__LATE_RATE".to_string(), "0.0".to_string()));
    let log = dir.path().join("log");
    env.ok(&["gen", "--out", s(&log), "--exposures", "60000"]);
    env.ok(&["kafka", "create-topics", "--partitions", "2"]);
    // Slices of the log in event-time order, produced one after another by
    // separate producer processes: production spans seconds.
    let text = std::fs::read_to_string(log.join("exposures.jsonl")).expect("exposures");
    let ts: Vec<i64> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("line")["ts_ms"]
                .as_i64()
                .expect("ts")
        })
        .collect();
    let bounds: Vec<i64> = (1..16).map(|i| ts[i * ts.len() / 16]).collect();
    let slices = dir.path().join("slices");
    std::fs::create_dir_all(&slices).expect("mkdir");
    let ex = split_by_ts(&log.join("exposures.jsonl"), &bounds, &slices, "exposures");
    let ac = split_by_ts(&log.join("actions.jsonl"), &bounds, &slices, "actions");
    let producer_env = Env {
        vars: env.vars.clone(),
    };
    let (ex_topic, ac_topic) = (env.topic("exposures"), env.topic("actions"));
    // The run starts once the first slice is in: a partition that has never
    // delivered anything holds no watermark (it says nothing about time).
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let producer = std::thread::spawn(move || {
        for (e, a) in ex.iter().zip(&ac) {
            producer_env.ok(&["kafka", "produce", "--topic", &ex_topic, "--file", s(e)]);
            producer_env.ok(&["kafka", "produce", "--topic", &ac_topic, "--file", s(a)]);
            let _ = first_tx.send(());
        }
    });
    first_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the first slice was produced");

    let state = dir.path().join("live");
    let args = ["run", "-q", "--until-end", "--state", s(&state), "-w", "2"];
    let mut run = Running::start(&env, &args);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !producer.is_finished(),
        "production ended before the broker went down: the test did not test anything"
    );
    broker.stop();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart().expect("restart tansu");
    // `--until-end` ends a run whenever it has caught up with the producer:
    // run again (a resume) until the producer is done, then once more.
    loop {
        let producing = !producer.is_finished();
        run.finish(Duration::from_secs(180), "while producing");
        if !producing {
            break;
        }
        run = Running::start(&env, &args);
    }
    producer.join().expect("producer thread");

    let whole = dir.path().join("whole");
    run_to_end(&env, &whole, 2);
    assert_same_dump(
        &dump(&env, &state),
        &dump(&env, &whole),
        "pair dump with a producer writing through a broker restart",
    );
    assert_same_counters(
        &counters(&env, &state),
        &counters(&env, &whole),
        "counters with a producer writing through a broker restart",
    );
}

#[test]
fn bad_messages_are_counted_and_dead_lettered_and_good_ones_processed() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let env = Env::new(&broker, "bad");
    env.ok(&["kafka", "create-topics", "--partitions", "2"]);
    let exposures = dir.path().join("e.jsonl");
    let actions = dir.path().join("a.jsonl");
    std::fs::write(
        &exposures,
        concat!(
            r#"{"request_id":1,"user_id":10,"item_id":100,"author_id":7,"ts_ms":1000}"#,
            "\n",
            "not json\n",
            r#"{"request_id":2,"user_id":10,"item_id":101,"ts_ms":2000}"#,
            "\n",
            r#"{"request_id":3,"user_id":11,"item_id":102,"author_id":8,"ts_ms":3000}"#,
            "\n",
        ),
    )
    .expect("write");
    std::fs::write(
        &actions,
        concat!(
            r#"{"request_id":1,"user_id":10,"item_id":100,"ts_ms":1500,"action":"click"}"#,
            "\n",
            r#"{"request_id":"x","user_id":10,"item_id":100,"ts_ms":1500,"action":"click"}"#,
            "\n",
            r#"{"request_id":3,"user_id":11,"item_id":102,"ts_ms":3100,"action":"watch","value":4.5}"#,
            "\n",
        ),
    )
    .expect("write");
    env.ok(&[
        "kafka",
        "produce",
        "--topic",
        &env.topic("exposures"),
        "--file",
        s(&exposures),
    ]);
    env.ok(&[
        "kafka",
        "produce",
        "--topic",
        &env.topic("actions"),
        "--file",
        s(&actions),
    ]);
    let state = dir.path().join("state");
    env.ok(&[
        "run",
        "-q",
        "--until-end",
        "--drain-at-end",
        "--state",
        s(&state),
        "--json",
    ]);
    let pairs = dump(&env, &state);
    assert!(
        pairs.contains(r#""user_id":10,"author_id":7,"exposures":1,"clicks":1"#),
        "{pairs}"
    );
    assert!(
        pairs.contains(r#""user_id":11,"author_id":8,"exposures":1,"clicks":0,"watches":1"#),
        "{pairs}"
    );
    let topic = String::from_utf8(
        env.ok(&["kafka", "consume", "--topic", &env.topic("dead_letter")])
            .stdout,
    )
    .expect("utf-8");
    let reasons: Vec<String> = topic
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["reason"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let mut sorted = reasons.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["malformed_json", "missing_field", "wrong_type"],
        "{topic}"
    );
    // The group's committed offsets (for monitoring) are at the partitions' ends.
    let offsets = String::from_utf8(env.ok(&["kafka", "offsets"]).stdout).expect("utf-8");
    let rows: Vec<serde_json::Value> = offsets
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 4, "{offsets}");
    for r in &rows {
        assert_eq!(r["committed"], r["end"], "{offsets}");
        assert_eq!(r["lag"], 0, "{offsets}");
    }
    // The transitions topic holds one transition per closed exposure.
    let transitions = String::from_utf8(
        env.ok(&["kafka", "consume", "--topic", &env.topic("transitions")])
            .stdout,
    )
    .expect("utf-8");
    assert_eq!(transitions.lines().count(), 2, "{transitions}");
}

/// A small deterministic generator for the fault schedule.
struct Faults(u64);

impl Faults {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Fault injection: each round runs the job on the same topics while, at
/// random points drawn from `RLIV_CHAOS_SEED`, the run is SIGKILLed or the
/// broker is restarted (up to four faults), then finishes the run and checks
/// the dump and every counter against the uninterrupted run. The default
/// test command runs `RLIV_CHAOS_ROUNDS` = 2 rounds; `scripts/chaos.sh`
/// runs more. Reports rounds, faults and failures; fails if any round does.
#[test]
fn chaos_kills_and_broker_restarts_at_random_points() {
    let rounds: u64 = std::env::var("RLIV_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("RLIV_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let env = Env::new(&broker, "chaos");
    load(&env, dir.path(), 2, 60_000);
    let whole = dir.path().join("whole");
    run_to_end(&env, &whole, 2);
    let reference = dump(&env, &whole);
    let reference_counters = counters(&env, &whole);
    let args = |state: &Path| -> Vec<String> {
        ["run", "-q", "--until-end", "--state", s(state), "-w", "2"]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let mut failures = Vec::new();
    let (mut kills, mut restarts) = (0, 0);
    for round in 0..rounds {
        let mut rng = Faults(seed.wrapping_mul(1_000_003).wrapping_add(round));
        let state = dir.path().join(format!("round-{round}"));
        let a = args(&state);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut run = Running::start(&env, &a);
        for _ in 0..rng.between(1, 4) {
            std::thread::sleep(Duration::from_millis(rng.between(50, 1500)));
            if !run.running() {
                break;
            }
            if rng.next() % 2 == 0 {
                let _ = run.child.kill();
                let _ = run.child.wait();
                kills += 1;
                run = Running::start(&env, &a);
            } else {
                broker.stop();
                std::thread::sleep(Duration::from_millis(rng.between(200, 2000)));
                broker.restart().expect("restart tansu");
                restarts += 1;
            }
        }
        run.finish(Duration::from_secs(180), &format!("chaos round {round}"));
        let got = dump(&env, &state);
        let got_counters = counters(&env, &state);
        if got != reference {
            failures.push(format!("round {round}: the pair dump differs"));
        } else if got_counters != reference_counters {
            failures.push(format!("round {round}: the counters differ"));
        }
    }
    eprintln!(
        "chaos (seed {seed}): {rounds} rounds, {kills} kills, {restarts} broker restarts, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "chaos: {}", failures.join("; "));
}

/// Every process of a cluster `rliv run --until-end` (process `fail.0` with
/// failpoint `fail.1`); their outputs, process 0 first.
fn cluster_run(
    env: &Env,
    dir: &Path,
    state: &Path,
    workers: u32,
    fail: Option<(usize, &str)>,
) -> Vec<Output> {
    let hosts = common::host_file(dir, 2);
    common::run_cluster(2, |i| {
        let mut args = run_args(state, workers);
        args.extend(common::cluster_args(2, i, &hosts));
        let mut c = env.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if fail.is_some() {
            // Every chunk a commit, so the failpoint's count of commits does
            // not depend on how fast the run goes (commits are timed).
            c.env("RLIV__REPLAY__COMMIT_INTERVAL_MS", "0");
        }
        if let Some((_, point)) = fail.filter(|f| f.0 == i) {
            c.env("RLIV_FAILPOINT", point);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    })
}

#[test]
fn a_cluster_run_on_kafka_matches_one_process_and_resumes_exactly_after_a_kill() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let env = Env::new(&broker, "cluster");
    load(&env, dir.path(), 2, 30_000);
    let whole = dir.path().join("whole");
    run_to_end(&env, &whole, 2);
    let reference = dump(&env, &whole);
    assert!(reference.lines().count() > 1000);
    let read =
        |p: &Path| std::fs::read_to_string(p.join("dead-letters.jsonl")).expect("dead letters");

    for workers in [1, 2] {
        let state = dir.path().join(format!("cluster-{workers}"));
        for (i, o) in cluster_run(&env, dir.path(), &state, workers, None)
            .iter()
            .enumerate()
        {
            assert!(
                o.status.success(),
                "2x{workers}: process {i}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let what = format!("2 processes x {workers} workers");
        assert_same_dump(&dump(&env, &state), &reference, &what);
        assert_same_dump(
            &read(&state),
            &read(&whole),
            &format!("dead letters of {what}"),
        );
    }

    // Process 1 killed after one of its shard commits, then both restarted.
    let killed = dir.path().join("killed");
    let outs = cluster_run(
        &env,
        dir.path(),
        &killed,
        1,
        Some((1, "shard.after_commit:3")),
    );
    assert!(!outs[1].status.success(), "process 1 was not killed");
    let err = String::from_utf8_lossy(&outs[0].stderr);
    assert!(!err.contains("panicked at"), "a panic trace: {err}");
    for (i, o) in cluster_run(&env, dir.path(), &killed, 1, None)
        .iter()
        .enumerate()
    {
        assert!(
            o.status.success(),
            "restart of process {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_same_dump(&dump(&env, &killed), &reference, "after a killed process");
    assert_same_dump(
        &read(&killed),
        &read(&whole),
        "dead letters after a killed process",
    );
}
