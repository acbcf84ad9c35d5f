//! Helpers shared by the tests that drive the real `rliv` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The `rliv` binary: `RLIV_BIN`, or `target/<profile>/rliv` beside the test
/// executable (built by `cargo build --release --bin rliv`).
pub fn rliv_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RLIV_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("rliv");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release --bin rliv` first (or set RLIV_BIN)",
        bin.display()
    );
    assert_fresh(&bin);
    bin
}

/// Fails when a source file of the workspace is newer than `bin`: the tests
/// would otherwise run, and maybe pass, against a binary that is not the code.
fn assert_fresh(bin: &Path) {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let built = std::fs::metadata(bin)
            .and_then(|m| m.modified())
            .expect("binary mtime");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        // Only the crates' Rust sources: cargo rebuilds (and relinks the
        // binary) when one of them changes, so a newer one means no build ran.
        let mut stack: Vec<PathBuf> = [
            "src",
            "contract/src",
            "state/src",
            "dataflows/src",
            "learner/src",
            "serve/src",
            "sim/src",
        ]
        .iter()
        .map(|d| root.join(d))
        .collect();
        while let Some(p) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&p) else { continue };
            if meta.is_dir() {
                if p.file_name().is_some_and(|n| n == "target" || n == "tests" || n == "benches") {
                    continue;
                }
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
                }
            } else if p.extension().is_some_and(|e| e == "rs")
                && meta.modified().is_ok_and(|m| m > built)
            {
                panic!(
                    "{} is newer than {}: the binary is stale; run `cargo build --release --bin rliv` (scripts/test.sh does)",
                    p.display(),
                    bin.display()
                );
            }
        }
    });
}

/// `out`, after checking that the command succeeded (its stderr otherwise).
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "rliv failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes a new host file in `dir` for `n` cluster processes on
/// 127.0.0.1: free ports (bound, then released for the job), one
/// `host:port` per line.
pub fn host_file(dir: &Path, n: usize) -> PathBuf {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("hosts-{k}"));
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let text: String = listeners
        .iter()
        .map(|l| format!("{}\n", l.local_addr().expect("local address")))
        .collect();
    std::fs::write(&path, text).expect("write the host file");
    path
}

/// Runs the `n` processes of a cluster (`start(i)` spawns process `i`; the
/// later processes first, which then wait for the earlier ones) and returns
/// their outputs in process order.
pub fn run_cluster(n: usize, start: impl Fn(usize) -> std::process::Child) -> Vec<Output> {
    let children: Vec<_> = (0..n).rev().map(&start).collect();
    let mut outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for a cluster process"))
        .collect();
    outs.reverse();
    outs
}

/// A path as a command-line argument.
/// The cluster-mode flags of process `process` of `processes`.
#[allow(dead_code)]
pub fn cluster_args(processes: usize, process: usize, hosts: &Path) -> Vec<String> {
    vec![
        "--processes".into(),
        processes.to_string(),
        "--process".into(),
        process.to_string(),
        "--hosts".into(),
        s(hosts).into(),
    ]
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The finished checkpoint directories in `dir`, oldest first (none if `dir`
/// does not exist; unfinished `.tmp` ones excluded).
pub fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ckpt-") && !n.ends_with(".tmp"))
        })
        .collect();
    v.sort();
    v
}

/// The newest finished checkpoint's `manifest.json`.
pub fn newest_manifest(dir: &Path) -> Option<serde_json::Value> {
    let newest = checkpoints(dir).pop()?;
    let bytes = std::fs::read(newest.join("manifest.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A small, fast learner that checkpoints often, with a buffer small enough
/// for the transition log to be truncated behind it (the learner-crash tests).
/// Small chunks and few in flight pace the job by the learner, so that the
/// job commits many times while the learner trains.
pub const FAST_LEARNER: &[(&str, &str)] = &[
    ("RLIV__REPLAY__CHUNK_LINES", "256"),
    ("RLIV__REPLAY__MAX_INFLIGHT_CHUNKS", "4"),
    ("RLIV__LEARNER__ID_ROWS", "4096"),
    ("RLIV__LEARNER__FEATURE_ROWS", "1024"),
    ("RLIV__LEARNER__MIN_BUFFER", "500"),
    ("RLIV__LEARNER__BUFFER_CAPACITY", "3000"),
    ("RLIV__LEARNER__BATCH_SIZE", "64"),
    ("RLIV__LEARNER__UPDATES_PER_TRANSITION", "0.01"),
    ("RLIV__LEARNER__CHECKPOINT_EVERY_UPDATES", "30"),
    ("RLIV__LEARNER__KEEP_CHECKPOINTS", "3"),
    ("RLIV__REPLAY__TRANSITIONS_CHANNEL_CAPACITY", "256"),
];
