//! `rliv run` against a real Kafka-protocol broker: Tansu, started by each
//! test on a free loopback port with its own sqlite storage.
//!
//! The broker binary is `RLIV_TANSU`, or `~/.cache/rliv/tools/bin/tansu`
//! (`scripts/install-tansu.sh` builds it; `scripts/test.sh` runs that first).

mod common;

use common::{rliv_bin, s};
use rliv::tansu::Broker;
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

fn run_to_end(env: &Env, state: &Path, workers: u32) {
    env.ok(&[
        "run",
        "-q",
        "--until-end",
        "--state",
        s(state),
        "-w",
        &workers.to_string(),
    ]);
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
    run_to_end(&one, &a, 1);
    run_to_end(&two, &b, 2);
    let da = dump(&one, &a);
    assert!(da.lines().count() > 100);
    assert_same_dump(
        &dump(&two, &b),
        &da,
        "2 partitions x 2 workers vs 1 partition x 1 worker",
    );
}

#[test]
fn a_broker_restart_mid_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(&dir.path().join("broker")).expect("start tansu");
    let env = Env::new(&broker, "restart");
    load(&env, dir.path(), 2, 60_000);
    let whole = dir.path().join("whole");
    run_to_end(&env, &whole, 2);
    let reference = dump(&env, &whole);

    let state = dir.path().join("restarted");
    let mut child = env
        .cmd(&["run", "-q", "--until-end", "--state", s(&state), "-w", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the run ended before the broker went down: the test did not test anything"
    );
    broker.stop();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart().expect("restart tansu");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the run did not finish after the broker came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        status.success(),
        "run failed across the broker restart: {err}"
    );
    assert_same_dump(
        &dump(&env, &state),
        &reference,
        "pair dump across a broker restart",
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
