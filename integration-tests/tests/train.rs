//! The learner through the real binary: `replay --train` writes checkpoints,
//! `train --resume` continues them, and damaged checkpoints are reported by
//! file and skipped.

mod common;

use common::{checkpoints, ok, rliv_bin, s};
use std::path::Path;
use std::process::{Command, Output};

/// A small model and a low update ratio threshold, so tests take seconds.
const SMALL: &[(&str, &str)] = &[
    ("RLIV__LEARNER__ID_ROWS", "4096"),
    ("RLIV__LEARNER__FEATURE_ROWS", "1024"),
    ("RLIV__LEARNER__MIN_BUFFER", "500"),
    ("RLIV__LEARNER__BATCH_SIZE", "128"),
    ("RLIV__LEARNER__UPDATES_PER_TRANSITION", "0.01"),
    ("RLIV__LEARNER__CHECKPOINT_EVERY_UPDATES", "100"),
];

fn rliv(args: &[&str]) -> Output {
    let mut cmd = Command::new(rliv_bin());
    cmd.args(args);
    for (k, v) in SMALL {
        cmd.env(k, v);
    }
    cmd.output().expect("run rliv")
}

fn step_of(ckpt: &Path) -> u64 {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("manifest.json")).expect("manifest"))
            .expect("json");
    m["step"].as_u64().expect("step")
}

#[test]
fn replay_with_training_checkpoints_and_train_resumes_from_the_newest_good_one() {
    let t = tempfile::tempdir().expect("tmp");
    let log = t.path().join("log");
    ok(rliv(&["gen", "--out", s(&log), "--exposures", "20000"]));
    let ck = t.path().join("ck");
    let tr = t.path().join("tr.jsonl");
    let out = ok(rliv(&[
        "replay",
        "-q",
        "--exposures",
        s(&log.join("exposures.jsonl")),
        "--actions",
        s(&log.join("actions.jsonl")),
        "--state",
        s(&t.path().join("st")),
        "--transitions",
        s(&tr),
        "--train",
        "--checkpoints",
        s(&ck),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train:"), "{err}");
    let cks = checkpoints(&ck);
    assert!(!cks.is_empty(), "no checkpoint written");
    let newest = step_of(cks.last().expect("one"));
    // About 19.7k transitions at 0.01 updates each: ~197 updates.
    assert!((150..=250).contains(&newest), "step {newest}");

    // A second run into the same directory without --resume is refused (exit 2).
    let out = rliv(&["train", "--transitions", s(&tr), "--checkpoints", s(&ck)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Damage the newest checkpoint: --resume names the file and uses the previous one.
    let bad = cks.last().expect("one").join("model.safetensors");
    std::fs::write(&bad, b"not a safetensors file").expect("write");
    let older = cks.iter().rev().nth(1).map(|p| step_of(p));
    let out = rliv(&[
        "train",
        "--transitions",
        s(&tr),
        "--checkpoints",
        s(&ck),
        "--resume",
        "--extra-updates",
        "5",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    match older {
        Some(step) => {
            assert!(out.status.success(), "{err}");
            assert!(err.contains("model.safetensors"), "{err}");
            assert!(err.contains(&format!("resumed from step {step}")), "{err}");
        }
        None => {
            // Only one checkpoint existed: nothing usable, a clear error naming the file.
            assert!(!out.status.success());
            assert!(err.contains("model.safetensors"), "{err}");
        }
    }
}
