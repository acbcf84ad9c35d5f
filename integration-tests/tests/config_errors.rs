//! Configuration errors through the real binary: exit status 2, and the
//! message names the key at fault and where it was set.

mod common;

use common::rliv_bin;

use std::path::Path;
use std::process::{Command, Output};

/// `rliv ARGS` with `env` and no RLIV__* / RLIV_CONFIG inherited from the caller.
fn rliv(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(rliv_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("RLIV__") || k == "RLIV_CONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run rliv")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit status 2 and that stderr holds every one of `needles`.
fn refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p.to_str().expect("utf-8").to_string()
}

#[test]
fn a_bad_value_in_a_config_file_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(dir.path(), "bad.toml", "[learner]\ngamma = 1.5\n");
    let out = rliv(&["--config", &file, "config", "show"], &[]);
    refused(&out, &["learner.gamma = 1.5", &file, "[0, 1)"]);
    assert!(out.stdout.is_empty());
    // The same through RLIV_CONFIG, and on a command that would do work.
    let out = rliv(
        &[
            "replay",
            "--exposures",
            "/dev/null",
            "--state",
            dir.path().join("s").to_str().expect("utf-8"),
        ],
        &[("RLIV_CONFIG", &file)],
    );
    refused(&out, &["learner.gamma = 1.5", &file]);
    assert!(!dir.path().join("s").exists(), "the replay ran");
    // A value of the wrong type.
    let file = write(
        dir.path(),
        "type.toml",
        "[state]\ncompression = \"zip\"\n[serve]\nmax_candidates = \"many\"\n",
    );
    let out = rliv(&["--config", &file, "config", "show"], &[]);
    refused(&out, &["serve.max_candidates = \"many\"", &file]);
}

#[test]
fn a_bad_environment_variable_exits_2_and_names_the_key() {
    let out = rliv(&["config", "show"], &[("RLIV__REPLAY__WORKERS", "0")]);
    refused(
        &out,
        &[
            "replay.workers = 0",
            "environment variable RLIV__REPLAY__WORKERS",
        ],
    );
    let out = rliv(
        &["config", "show"],
        &[("RLIV__JOIN__WINDOW_MS", "half-an-hour")],
    );
    refused(
        &out,
        &["join.window_ms = \"half-an-hour\"", "RLIV__JOIN__WINDOW_MS"],
    );
    let out = rliv(&["config", "show"], &[("RLIV__JOIN", "1")]);
    refused(&out, &["RLIV__JOIN", "RLIV__SECTION__KEY"]);
    // The environment overrides a good file value; the variable is blamed.
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(dir.path(), "ok.toml", "[learner]\ntau = 0.5\n");
    let out = rliv(
        &["--config", &file, "config", "show"],
        &[("RLIV__LEARNER__TAU", "2")],
    );
    refused(&out, &["learner.tau = 2", "RLIV__LEARNER__TAU"]);
}

#[test]
fn an_unknown_key_exits_2_and_names_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(dir.path(), "typo.toml", "[replay]\nchunk_line = 512\n");
    let out = rliv(&["--config", &file, "config", "show"], &[]);
    refused(
        &out,
        &[
            &format!("unknown key replay.chunk_line in {file}"),
            "did you mean replay.chunk_lines?",
        ],
    );
    let out = rliv(&["config", "show"], &[("RLIV__SERVE__MAX_BODY", "10")]);
    refused(
        &out,
        &[
            "unknown key serve.max_body in environment variable RLIV__SERVE__MAX_BODY",
            "serve.max_body_bytes",
        ],
    );
    let file = write(dir.path(), "section.toml", "[learners]\ngamma = 0.5\n");
    let out = rliv(&["--config", &file, "config", "show"], &[]);
    refused(&out, &["unknown key learners in", "did you mean learner?"]);
}

#[test]
fn an_unreadable_config_file_or_bad_listen_address_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().expect("utf-8");
    refused(
        &rliv(&["--config", missing, "config", "show"], &[]),
        &[missing],
    );
    let file = write(dir.path(), "broken.toml", "[join\nwindow_ms = 1\n");
    refused(
        &rliv(&["--config", &file, "config", "show"], &[]),
        &[&file, "not valid TOML"],
    );
    let out = rliv(
        &[
            "serve",
            "--state",
            dir.path().to_str().expect("utf-8"),
            "--checkpoints",
            dir.path().to_str().expect("utf-8"),
            "--addr",
            "localhost",
        ],
        &[],
    );
    refused(&out, &["serve.addr", "\"localhost\""]);
}

#[test]
fn good_overrides_still_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = write(
        dir.path(),
        "good.toml",
        "[replay]\nchunk_lines = 512\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n",
    );
    let out = rliv(
        &["--config", &file, "config", "show"],
        &[("RLIV__LEARNER__GAMMA", "0.5")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("toml");
    assert_eq!(shown["replay"]["chunk_lines"].as_integer(), Some(512));
    assert_eq!(shown["learner"]["gamma"].as_float(), Some(0.5));
    assert_eq!(
        shown["kafka"]["properties"]["security.protocol"].as_str(),
        Some("SSL")
    );
}

#[test]
fn a_state_directory_that_is_not_one_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("nothing-here");
    let state = state.to_str().expect("utf-8");
    for cmd in ["dump", "status"] {
        let out = rliv(&[cmd, "--state", state], &[]);
        refused(&out, &[state, "not an rliv state directory"]);
    }
}
