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
    bin
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

/// A path as a command-line argument.
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
