//! Where a job's state lives. One process: `STATE` is one RocksDB
//! directory. Cluster mode (`--processes N`): process `I` owns
//! `STATE/p{I}` (on its own host, or all of them on a shared mount), and
//! process 0's shard also holds the job's checkpoint.

use std::path::{Path, PathBuf};

use crate::StateError;

/// The state directory of process `process` in cluster mode.
pub fn shard_dir(state: &Path, process: usize) -> PathBuf {
    state.join(format!("p{process}"))
}

/// The shape of a state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One RocksDB directory (a single-process job, or one shard given directly).
    Single(PathBuf),
    /// Shards `p0..pN` of a cluster job, in process order.
    Cluster(Vec<PathBuf>),
}

impl Layout {
    /// Reads the shape of `state`: a store itself, or the shards `p0, p1, ...`
    /// (which must be contiguous from `p0`: a missing shard would silently
    /// drop its users' pairs from a dump).
    pub fn of(state: &Path) -> Result<Layout, StateError> {
        if state.join("CURRENT").exists() {
            return Ok(Layout::Single(state.to_path_buf()));
        }
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(state) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(n) = name.to_str().and_then(|n| n.strip_prefix('p')) else {
                    continue;
                };
                if let Ok(i) = n.parse::<usize>() {
                    if format!("p{i}") == name.to_string_lossy()
                        && e.path().join("CURRENT").exists()
                    {
                        found.push(i);
                    }
                }
            }
        }
        if found.is_empty() {
            return Err(StateError::NotAStore(state.to_path_buf()));
        }
        found.sort_unstable();
        if let Some(missing) = (0..found.len()).find(|i| found[*i] != *i) {
            return Err(StateError::Corrupt(format!(
                "{} holds cluster shards {:?} but not p{missing}: mount every process's shard \
                 (or pass one shard's directory itself)",
                state.display(),
                found
            )));
        }
        Ok(Layout::Cluster(
            found.into_iter().map(|i| shard_dir(state, i)).collect(),
        ))
    }

    /// The store directories, in process order.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Layout::Single(p) => vec![p.clone()],
            Layout::Cluster(v) => v.clone(),
        }
    }

    /// The directory holding the job's checkpoint (process 0's).
    pub fn primary(&self) -> &Path {
        match self {
            Layout::Single(p) => p,
            Layout::Cluster(v) => &v[0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_at(p: &Path) {
        std::fs::create_dir_all(p).expect("mkdir");
        std::fs::write(p.join("CURRENT"), b"MANIFEST-000001\n").expect("write");
    }

    #[test]
    fn a_store_a_cluster_and_a_gap_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let single = dir.path().join("single");
        store_at(&single);
        assert_eq!(
            Layout::of(&single).expect("single"),
            Layout::Single(single.clone())
        );

        let cluster = dir.path().join("cluster");
        store_at(&shard_dir(&cluster, 0));
        store_at(&shard_dir(&cluster, 1));
        std::fs::create_dir_all(cluster.join("p2")).expect("mkdir"); // no CURRENT: not a shard
        std::fs::create_dir_all(cluster.join("checkpoints")).expect("mkdir");
        let l = Layout::of(&cluster).expect("cluster");
        assert_eq!(l.dirs(), vec![cluster.join("p0"), cluster.join("p1")]);
        assert_eq!(l.primary(), cluster.join("p0"));

        let gap = dir.path().join("gap");
        store_at(&shard_dir(&gap, 0));
        store_at(&shard_dir(&gap, 2));
        let e = Layout::of(&gap).expect_err("p1 is missing");
        assert!(e.to_string().contains("not p1"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).expect("mkdir");
        assert!(matches!(Layout::of(&empty), Err(StateError::NotAStore(_))));
    }

    #[test]
    fn users_spread_over_processes_and_one_process_owns_all() {
        let mut counts = [0usize; 3];
        for u in 0..30_000u64 {
            counts[crate::user_process(u, 3)] += 1;
            assert_eq!(crate::user_process(u, 1), 0);
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
